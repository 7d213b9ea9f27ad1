"""pytest plugin: smoke-test AWS Panorama applications on the emulator.

Installed with panorama-emulator (entry point ``pytest11``), so in an application's own repository::

    def test_counts_people(panorama_app):          # builds missing assets, boots on a synthetic camera
        panorama_app.run_frames(50)
        assert "person" in panorama_app.hdmi.labels()
        panorama_app.reboot()
        assert panorama_app.storage("count.txt").read_text() == "1"

Options (each with an ini equivalent, and each knob an overridable fixture)::

    --panorama-project DIR          panorama_project      the project (default: the nearest folder above the
                                                          test file holding graphs/ and packages/)
    --panorama-camera NODE=SOURCE   panorama_cameras      a camera node's source (repeatable; one a line)
    --panorama-device NAME          panorama_device       the device name (default: pytest)
    --panorama-mode MODE            panorama_mode         lockstep (default) or realtime
    --panorama-state-dir DIR        panorama_state_dir    keep device state there (default: a temp folder)
    --panorama-keep-state           panorama_keep_state   keep the temporary state folder after the session
    --panorama-no-build             panorama_build        do not build missing container assets
    --panorama-timeout SECONDS      panorama_timeout      default wait of run_frames and wait_until (120)
    --panorama-aws MODE             panorama_aws          none (default), host or local: what the app's
                                                          AWS SDK meets (see docs/appliance.md)

The knobs (and ``panorama_appliance_options``, a dict of more fields such as ``{"network": "none"}``) make
one ``emulator.ApplianceOptions``, the fixture ``panorama_options``, that the app boots with.

Every test gets a freshly booted app with empty storage and logs (``panorama_fresh_storage``); the device's
root filesystems stay cached for the whole session, so each boot takes about a second.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from emulator.device.appliance import Appliance
    from emulator.device.figures import BootFigures, DeviceStatus
    from emulator.device.options import ApplianceOptions
    from runtime.media.hdmi import HdmiSink

__all__ = [
    "PanoramaApp",
    "PanoramaNotQuiet",
    "PanoramaTimeout",
    "panorama_app",
    "panorama_appliance_options",
    "panorama_aws",
    "panorama_build",
    "panorama_cameras",
    "panorama_device",
    "panorama_fresh_storage",
    "panorama_graph",
    "panorama_mode",
    "panorama_options",
    "panorama_override",
    "panorama_project_dir",
    "panorama_state_dir",
    "panorama_timeout",
]

T = TypeVar("T")

_BUILT = pytest.StashKey[set[tuple[Path, Path | None]]]()
_KEPT = pytest.StashKey[list[Path]]()
_LOG_LINES = 40


class PanoramaTimeout(AssertionError):
    """What a test waited for did not happen in time (a test failure, not an error)."""


class PanoramaNotQuiet(UserWarning):
    """``run_frames`` returned while an app was still working on its last frame (it never asked again)."""


# --- options -----------------------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    """Declare the ``--panorama-*`` options and their ini equivalents."""
    group = parser.getgroup("panorama", "AWS Panorama applications on panorama-emulator")
    group.addoption("--panorama-project", metavar="DIR", help="the Panorama project (graphs/, packages/ ...)")
    group.addoption(
        "--panorama-camera",
        action="append",
        default=[],
        metavar="NODE=SOURCE",
        help="a camera node's source: synthetic[:WxH@FPS], a video file, a folder of images, a URL",
    )
    group.addoption("--panorama-device", metavar="NAME", help="the emulated device's name (default: pytest)")
    group.addoption(
        "--panorama-mode", choices=("lockstep", "realtime"), help="camera pacing (default: lockstep)"
    )
    group.addoption("--panorama-state-dir", metavar="DIR", help="the device state folder (kept)")
    group.addoption(
        "--panorama-keep-state",
        action="store_true",
        default=None,
        help="keep the temporary device state folder after the session",
    )
    group.addoption(
        "--panorama-no-build",
        dest="panorama_build",
        action="store_false",
        default=None,
        help="do not build missing container assets before booting",
    )
    group.addoption("--panorama-timeout", type=float, metavar="SECONDS", help="default wait (120 s)")
    group.addoption(
        "--panorama-aws",
        choices=("none", "host", "local"),
        help="what the app's AWS SDK meets: no credentials, yours, or local CloudWatch (default: none)",
    )
    parser.addini("panorama_project", "the Panorama project, relative to the ini file", default="")
    parser.addini("panorama_cameras", "NODE=SOURCE camera sources, one per line", type="linelist", default=[])
    parser.addini("panorama_device", "the emulated device's name", default="pytest")
    parser.addini("panorama_mode", "lockstep or realtime", default="lockstep")
    parser.addini("panorama_state_dir", "the device state folder, relative to the ini file", default="")
    parser.addini("panorama_keep_state", "keep the temporary device state folder", type="bool", default=False)
    parser.addini("panorama_build", "build missing container assets", type="bool", default=True)
    parser.addini("panorama_timeout", "default wait in seconds", default="120")
    parser.addini("panorama_memory_limit", "memory of each app in MiB (0: no limit)", default="")
    parser.addini("panorama_pids_limit", "processes and threads of each app (0: no limit)", default="")
    parser.addini("panorama_storage_limit", "size of each app's storage in MiB (0: no limit)", default="")
    parser.addini("panorama_aws", "none, host or local: what the app's AWS SDK meets", default="none")


def _cameras(config: pytest.Config) -> dict[str, str]:
    cameras: dict[str, str] = {}
    given = config.getoption("panorama_camera")
    for value in given or config.getini("panorama_cameras"):
        node, sep, source = str(value).partition("=")
        if not sep or not node.strip() or not source.strip():
            raise pytest.UsageError(f"--panorama-camera expects NODE=SOURCE, found {value!r}")
        cameras[node.strip()] = source.strip()
    return cameras


def pytest_configure(config: pytest.Config) -> None:
    """Refuse malformed ``--panorama-camera`` values before any test runs."""
    _cameras(config)


def _option(config: pytest.Config, name: str) -> Any:
    value = config.getoption(name)
    return value if value not in (None, [], "") else config.getini(name)


def _ini_relative(config: pytest.Config, option: str, ini: str) -> Path | None:
    given = config.getoption(option)
    if given:
        return (config.invocation_params.dir / str(given)).resolve()
    value = config.getini(ini)
    if value:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return (base / str(value)).resolve()
    return None


# --- the knobs, each an overridable fixture ----------------------------------------------------------------


@pytest.fixture
def panorama_project_dir(request: pytest.FixtureRequest) -> Path:
    """The project under test: ``--panorama-project``, ini ``panorama_project``, else the nearest folder
    above the test file that holds ``graphs/`` and ``packages/``."""
    given = _ini_relative(request.config, "panorama_project", "panorama_project")
    if given is not None:
        return given
    start = Path(request.path).resolve().parent
    for folder in (start, *start.parents):
        if (folder / "graphs").is_dir() and (folder / "packages").is_dir():
            return folder
    pytest.fail(
        f"no Panorama project (a folder with graphs/ and packages/) above {start}: "
        "pass --panorama-project DIR or set panorama_project in the pytest configuration",
        pytrace=False,
    )


@pytest.fixture
def panorama_cameras(request: pytest.FixtureRequest) -> dict[str, str]:
    """Camera sources by camera node name (cameras not named show the synthetic scene)."""
    return _cameras(request.config)


@pytest.fixture
def panorama_device(request: pytest.FixtureRequest) -> str:
    """The emulated device's name."""
    return str(_option(request.config, "panorama_device"))


@pytest.fixture
def panorama_mode(request: pytest.FixtureRequest) -> str:
    """``lockstep`` (a camera waits for the app: deterministic) or ``realtime``."""
    return str(_option(request.config, "panorama_mode"))


@pytest.fixture
def panorama_graph() -> Path | None:
    """The graph file, when the project has several (default: its only ``graphs/*/graph.json``)."""
    return None


@pytest.fixture
def panorama_override() -> Path | None:
    """An ``override.json`` to apply to the graph, or None."""
    return None


@pytest.fixture
def panorama_build(request: pytest.FixtureRequest) -> bool:
    """Build the container assets that are missing before booting (once per session)."""
    value = request.config.getoption("panorama_build")
    return bool(value if value is not None else request.config.getini("panorama_build"))


@pytest.fixture
def panorama_timeout(request: pytest.FixtureRequest) -> float:
    """Seconds ``run_frames`` and ``wait_until`` wait by default."""
    return float(_option(request.config, "panorama_timeout"))


@pytest.fixture
def panorama_fresh_storage() -> bool:
    """Empty the app's storage and logs before each test's boot (override to return False to keep them)."""
    return True


@pytest.fixture
def panorama_aws(request: pytest.FixtureRequest) -> str:
    """What the app's AWS SDK meets: ``none``, ``host`` or ``local`` (ini ``panorama_aws``)."""
    return str(_option(request.config, "panorama_aws"))


@pytest.fixture
def panorama_appliance_options() -> dict[str, Any]:
    """More ``emulator.ApplianceOptions`` fields, such as ``{"network": "none"}``."""
    return {}


@pytest.fixture
def panorama_options(
    panorama_cameras: dict[str, str],
    panorama_device: str,
    panorama_mode: str,
    panorama_state_dir: Path,
    panorama_graph: Path | None,
    panorama_override: Path | None,
    panorama_aws: str,
    panorama_appliance_options: dict[str, Any],
    request: pytest.FixtureRequest,
) -> ApplianceOptions:
    """The ``emulator.ApplianceOptions`` the app boots with, made of the knobs above and the ini file's
    ``panorama_memory_limit``, ``panorama_pids_limit`` and ``panorama_storage_limit`` (app output quiet)."""
    from emulator.device.limits import Limits
    from emulator.device.options import ApplianceOptions
    from emulator.errors import EmulatorError

    config = request.config
    try:
        limits = Limits(
            **{
                field: int(value)
                for field, name in (
                    ("memory_mib", "panorama_memory_limit"),
                    ("pids", "panorama_pids_limit"),
                    ("storage_mib", "panorama_storage_limit"),
                )
                if (value := str(config.getini(name)).strip())
            }
        )
    except (ValueError, EmulatorError) as error:
        pytest.fail(f"bad appliance limits in the ini file: {error}", pytrace=False)
    try:
        return ApplianceOptions(
            device=panorama_device,
            state_dir=panorama_state_dir,
            graph=panorama_graph,
            override=panorama_override,
            cameras=panorama_cameras,
            mode=panorama_mode,
            aws=panorama_aws,
            quiet=True,
            limits=limits,
        ).changed(**panorama_appliance_options)
    except EmulatorError as error:
        pytest.fail(f"bad appliance options: {error}", pytrace=False)


@pytest.fixture(scope="session")
def panorama_state_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """The device state folder shared by the session's tests (asset and root filesystem caches live there).

    ``--panorama-state-dir`` names one that is kept; otherwise a temporary folder is made and removed after
    the session unless ``--panorama-keep-state`` is given.
    """
    config = request.config
    given = _ini_relative(config, "panorama_state_dir", "panorama_state_dir")
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="panorama-pytest-"))
    yield path
    keep = config.getoption("panorama_keep_state")
    if keep or (keep is None and config.getini("panorama_keep_state")):
        config.stash.setdefault(_KEPT, []).append(path)
    else:
        shutil.rmtree(path, ignore_errors=True)


# --- the app -----------------------------------------------------------------------------------------------


class PanoramaApp:
    """The application a test runs: a thin wrapper over ``emulator.Appliance`` (as ``appliance``).

    Args:
        appliance: the booted appliance.
        timeout: default seconds for :meth:`run_frames` and :meth:`wait_until`.
    """

    def __init__(self, appliance: Appliance, *, timeout: float = 120.0) -> None:
        self.appliance = appliance
        self.timeout = timeout
        self._boots_before = appliance.boots

    @property
    def hdmi(self) -> HdmiSink:
        """The HDMI output: ``last_frame``, ``outputs``, ``labels()``, ``last_png()``."""
        sink: HdmiSink = self.appliance.hdmi
        return sink

    @property
    def boots(self) -> int:
        """Boots since this test's first boot (1 after it)."""
        return self.appliance.boots - self._boots_before

    @property
    def storage_path(self) -> Path:
        """The app's persistent storage on this machine (``/opt/aws/panorama/storage`` inside)."""
        return self.appliance.storage_path

    def frames(self) -> int:
        """Outputs the HDMI output has received in this boot."""
        return self.appliance.metrics().frames_out

    def run_frames(self, n: int, timeout: float | None = None) -> int:
        """Let the app put ``n`` more frames on the HDMI output.

        In lockstep mode (the default) the camera then holds, and this returns once the app is quiet
        after the ``n``-th frame: blocked in its next ``get()`` or exited, so what it saved for that frame
        is in storage. An app that does not come back to ``get()`` within the appliance's
        ``quiet_timeout`` (10 s; set it in ``panorama_appliance_options``) gets a ``PanoramaNotQuiet``
        warning and the call returns anyway. In realtime mode it returns at the ``n``-th output.

        Args:
            n: frames to wait for, counted from now.
            timeout: seconds at most (default: ``panorama_timeout``).

        Returns:
            The frames of this boot so far.

        Raises:
            PanoramaTimeout: fewer frames came in time.
            DeviceError: the app has no HDMI output, or a node crashed before its first frame.
        """
        start = self.frames()
        limit = self.timeout if timeout is None else timeout
        if not self.appliance.wait_for_frames(start + n, timeout=limit):
            got = self.frames() - start
            raise PanoramaTimeout(f"the HDMI output received {got} of {n} frames in {limit:g} s")
        point = self.appliance.quiet_point
        if point is not None and not point.quiet:
            warnings.warn(PanoramaNotQuiet(point.note), stacklevel=2)
        return self.frames()

    def wait_until(
        self,
        condition: Callable[[], T],
        timeout: float | None = None,
        interval: float = 0.1,
        message: str | None = None,
    ) -> T:
        """Let the app run until ``condition()`` returns something true, and return it.

        Cameras that ``run_frames`` held run on again.

        Args:
            condition: checked every ``interval`` seconds.
            timeout: seconds at most (default: ``panorama_timeout``).
            interval: seconds between two checks.
            message: what was awaited, for the failure message.

        Raises:
            PanoramaTimeout: it stayed false.
            DeviceError: a node crashed before the app's first frame.
        """
        if self.appliance.running:
            self.appliance.release_frames()  # the app runs on: cameras held by run_frames go on
        limit = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while True:
            value = condition()
            if value:
                return value
            self.appliance.check()
            if time.monotonic() >= deadline:
                what = message or getattr(condition, "__name__", "the condition")
                raise PanoramaTimeout(f"{what} did not come true in {limit:g} s")
            time.sleep(interval)

    def storage(self, path: str = "") -> Path:
        """A path inside the app's persistent storage (it may not exist yet).

        Args:
            path: relative to ``/opt/aws/panorama/storage``.

        Raises:
            ValueError: the path is absolute or holds ``..``.
        """
        parts = PurePosixPath(path).parts
        if PurePosixPath(path).is_absolute() or ".." in parts:
            raise ValueError(f"a storage path is relative and stays inside the storage, not {path!r}")
        return self.storage_path.joinpath(*parts)

    def _node(self, node: str | None) -> str:
        if node is not None:
            return node
        names = [plan.name for plan in self.appliance.plan.code_nodes]
        if len(names) != 1:
            raise ValueError(f"name the node: the app has {', '.join(names) or 'no code nodes'}")
        return names[0]

    def logs(self, node: str | None = None) -> str:
        """What a code node printed, every boot (``node`` may be left out when the app has one)."""
        return self.appliance.logs(self._node(node))

    def logs_path(self, node: str | None = None) -> Path:
        """A code node's log folder (``/opt/aws/panorama/logs`` inside, plus ``console_output``)."""
        return self.appliance.logs_path(self._node(node))

    def metrics(self) -> BootFigures:
        """The figures of this boot: per node fps, latency, frames, drops; cameras; models; HDMI."""
        return self.appliance.metrics()

    def status(self) -> DeviceStatus:
        """Boots, uptime and per node state, pid, restarts and exit codes."""
        return self.appliance.status()

    def reboot(self) -> None:
        """Graceful reboot: storage and logs kept, temporary paths cleared."""
        self.appliance.reboot()

    def power_cut(self) -> None:
        """Kill every process at once, then boot again."""
        self.appliance.power_cycle()

    def shutdown(self) -> None:
        """Graceful shutdown (``boot()`` powers on again)."""
        self.appliance.shutdown()

    def boot(self) -> None:
        """Power on after a shutdown."""
        self.appliance.boot()

    def pause_camera(self, name: str) -> None:
        """Stop a camera's frames until resumed or until the next boot."""
        self.appliance.pause_camera(name)

    def resume_camera(self, name: str) -> None:
        """Let a paused camera deliver frames again."""
        self.appliance.resume_camera(name)


def _build_once(config: pytest.Config, project: Path, graph: Path | None) -> None:
    built = config.stash.setdefault(_BUILT, set())
    if (project, graph) in built:
        return
    from emulator.errors import EmulatorError
    from emulator.run import build_missing_assets

    try:
        build_missing_assets(project, graph)
    except EmulatorError as error:
        pytest.fail(f"cannot build the app's assets: {error}", pytrace=False)
    built.add((project, graph))


def _empty(folder: Path) -> None:
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


@pytest.fixture
def panorama_app(
    request: pytest.FixtureRequest,
    panorama_project_dir: Path,
    panorama_options: ApplianceOptions,
    panorama_build: bool,
    panorama_timeout: float,
    panorama_fresh_storage: bool,
) -> Iterator[PanoramaApp]:
    """The app, built if needed and booted; shut down after the test."""
    from emulator.device.appliance import Appliance
    from emulator.errors import EmulatorError

    if panorama_build:
        _build_once(request.config, panorama_project_dir, panorama_options.graph)
    with contextlib.ExitStack() as stack:
        try:
            appliance = Appliance(panorama_project_dir, panorama_options)
            if panorama_fresh_storage:
                _empty(appliance.storage_path)
                for node in appliance.plan.code_nodes:
                    _empty(appliance.logs_path(node.name))
            app = PanoramaApp(appliance, timeout=panorama_timeout)
            stack.enter_context(appliance)
        except EmulatorError as error:
            pytest.fail(f"the app did not boot: {error}", pytrace=False)
        yield app


# --- reporting ---------------------------------------------------------------------------------------------


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the last lines each node printed to the report of a failed test that used ``panorama_app``."""
    report = yield
    funcargs = getattr(item, "funcargs", {})
    app = funcargs.get("panorama_app") if isinstance(funcargs, dict) else None
    if report.failed and isinstance(app, PanoramaApp):
        for plan in app.appliance.plan.code_nodes:
            try:
                lines = app.appliance.logs(plan.name).splitlines()[-_LOG_LINES:]
            except Exception:  # the report must not fail because a log cannot be read
                continue
            report.sections.append((f"panorama {plan.name} console_output", "\n".join(lines)))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say where kept device state is."""
    for path in config.stash.get(_KEPT, []):
        terminalreporter.write_line(f"panorama-emulator device state kept in {path}")
