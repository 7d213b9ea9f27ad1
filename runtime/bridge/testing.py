"""Small plans, a fake model caller and an app launcher, for tests and benchmarks of the bridge.

``app_plan(code_node(...))`` builds a plan of plain frozen dataclasses that satisfy the protocols of
:mod:`runtime.bridge.contracts` (the shape of the appliance's ``emulator.plan.AppPlan``) without a project on
disk; ``FakeModels`` (:mod:`runtime.bridge.fake_models`) answers ``node.call`` with plain functions;
``launch_app`` runs an app script as a plain process (no sandbox) against a started
:class:`~runtime.bridge.Runtime`, with host paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from runtime.bridge.contracts import FrameSink, ModelCaller, ParamValue
from runtime.bridge.fake_models import FakeModels
from runtime.bridge.runtime import Runtime
from runtime.media.camera import ArraySource, CameraSource

__all__ = [
    "APP_MEMFDS",
    "HDMI_INTERFACE",
    "AppResult",
    "BridgeLab",
    "FakeCamera",
    "FakeCodeNode",
    "FakeInterface",
    "FakeModelDescriptor",
    "FakeModelInput",
    "FakeModelNode",
    "FakeModels",
    "FakePlan",
    "FakePort",
    "app_plan",
    "code_node",
    "launch_app",
    "model_plan",
    "new_shared_memory",
    "numbered_frames",
    "shared_memory",
]

HDMI_INTERFACE = "panorama::hdmi_data_sink.hdmi0"
_PYTHON_TYPES = {bool: "boolean", int: "int32", float: "float32", str: "string"}


@dataclass(frozen=True)
class FakePort:
    """A port of a node interface (:class:`~runtime.bridge.contracts.PortSpec`)."""

    name: str
    type: str


@dataclass(frozen=True)
class FakeInterface:
    """A node interface (:class:`~runtime.bridge.contracts.InterfaceSpec`)."""

    inputs: tuple[FakePort, ...]
    outputs: tuple[FakePort, ...]


@dataclass(frozen=True)
class FakeCodeNode:
    """A business-logic node (:class:`~runtime.bridge.contracts.CodeNodeSpec`)."""

    name: str
    interface: FakeInterface
    media_inputs: Mapping[str, tuple[str, ...]]
    params: Mapping[str, ParamValue]
    outputs: Mapping[str, tuple[str, ...]]
    launch: str = "onAppStart"


@dataclass(frozen=True)
class FakeModelInput:
    """A declared model input (:class:`~runtime.bridge.contracts.ModelInputSpec`)."""

    name: str


@dataclass(frozen=True)
class FakeModelDescriptor:
    """A model descriptor (:class:`~runtime.bridge.contracts.ModelDescriptorSpec`)."""

    inputs: tuple[FakeModelInput, ...]


@dataclass(frozen=True)
class FakeModelNode:
    """A model node (:class:`~runtime.bridge.contracts.ModelNodeSpec`)."""

    name: str
    descriptor: FakeModelDescriptor


@dataclass(frozen=True)
class FakeCamera:
    """A camera node of the plan; :class:`BridgeLab` gives each one numbered frames."""

    name: str


@dataclass(frozen=True)
class FakePlan:
    """An application plan (:class:`~runtime.bridge.contracts.PlanSpec`) with its camera nodes."""

    code_nodes: tuple[FakeCodeNode, ...]
    models: tuple[FakeModelNode, ...]
    cameras: tuple[FakeCamera, ...]


def code_node(
    name: str = "code_node",
    *,
    cameras: Sequence[str] = ("camera_node",),
    params: Mapping[str, ParamValue] | None = None,
    param_types: Mapping[str, str] | None = None,
    media_inputs: Mapping[str, Sequence[str]] | None = None,
    outputs: Mapping[str, Sequence[str]] | None = None,
    launch: str = "onAppStart",
) -> FakeCodeNode:
    """A business-logic node with a ``video_in`` fed by ``cameras`` and a ``video_out`` shown on HDMI.

    Args:
        name: the node name.
        cameras: camera nodes on ``video_in`` (ignored when ``media_inputs`` is given).
        params: parameter input ports and their values (types follow the Python type unless given).
        param_types: port -> ``boolean`` / ``int32`` / ``float32`` / ``string``, to override.
        media_inputs: media input port -> camera nodes, instead of ``video_in``.
        outputs: media output port -> sink nodes (default ``{"video_out": ("hdmi0",)}``).
        launch: ``onAppStart``, ``onDemand`` or ``onSignal``.

    Returns:
        The node.
    """
    media = dict(media_inputs) if media_inputs is not None else {"video_in": tuple(cameras)}
    outs = dict(outputs) if outputs is not None else {"video_out": ("hdmi0",)}
    values = dict(params or {})
    types = dict(param_types or {})
    inputs = [FakePort(port, "media") for port in media]
    inputs += [FakePort(port, types.get(port, _PYTHON_TYPES[type(value)])) for port, value in values.items()]
    return FakeCodeNode(
        name=name,
        interface=FakeInterface(tuple(inputs), tuple(FakePort(port, "media") for port in outs)),
        media_inputs={port: tuple(names) for port, names in media.items()},
        params=values,
        outputs={port: tuple(sinks) for port, sinks in outs.items()},
        launch=launch,
    )


def model_plan(name: str = "model_node", inputs: Sequence[str] = ("data",)) -> FakeModelNode:
    """A model node whose descriptor declares ``inputs``."""
    return FakeModelNode(name, FakeModelDescriptor(tuple(FakeModelInput(item) for item in inputs)))


def app_plan(*nodes: FakeCodeNode, models: Sequence[FakeModelNode] = ()) -> FakePlan:
    """An application plan made of ``nodes`` (default: one ``code_node()``), their cameras and models."""
    nodes = nodes or (code_node(),)
    cameras: list[str] = []
    for node in nodes:
        for names in node.media_inputs.values():
            cameras += [name for name in names if name not in cameras]
    return FakePlan(tuple(nodes), tuple(models), tuple(FakeCamera(name) for name in cameras))


def launch_app(
    runtime: Runtime,
    node: str,
    script: Path,
    *,
    python: str | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start ``script`` as the app of ``node``: a plain process using the host paths of the bridge.

    Args:
        runtime: a started runtime.
        node: the code node the app runs as.
        script: the app's Python file.
        python: the interpreter (default: this one).
        env: more environment variables.
        stdin: where the app's stdin comes from.
        stdout: where the app's stdout goes.
        stderr: where the app's stderr goes.

    Returns:
        The running process.
    """
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    environment.update(runtime.node_env(node, sandbox_paths=False))
    environment["PYTHONUNBUFFERED"] = "1"
    environment.update(env or {})
    return subprocess.Popen(
        [python or sys.executable, str(script)],
        env=environment,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd="/",
    )


APP_MEMFDS = '''
def memfds(kind):
    """{inode: size} of the bridge's memfds of ``kind`` ("model-io", "frame") this app holds open."""
    import os
    found = {}
    for fd in os.listdir("/proc/self/fd"):
        path = "/proc/self/fd/" + fd
        try:
            if os.readlink(path).startswith("/memfd:panorama-" + kind):
                info = os.stat(path)
                found[info.st_ino] = info.st_size
        except OSError:
            pass
    return found
'''
"""App source (Python 3.8) defining ``memfds(kind)``: what :func:`shared_memory` tells of a process, from
inside an app."""


def shared_memory(pid: int | str = "self") -> dict[int, str]:
    """The bridge's memfds a process holds open (frame slots, call buffers, model channels).

    A mapping holds its memfd open too (Python's ``mmap`` keeps a copy of the fd), so a memfd listed here
    is memory still in use.

    Args:
        pid: the process (default: this one).

    Returns:
        ``{inode: name}``; names are ``panorama-frame.<node>.<n>``, ``panorama-model-io`` or
        ``panorama-model-tally``.
    """
    found: dict[int, str] = {}
    for fd in Path("/proc", str(pid), "fd").iterdir():
        with contextlib.suppress(OSError):
            name = os.readlink(fd)
            if name.startswith("/memfd:panorama-"):
                found[os.stat(fd).st_ino] = name[len("/memfd:") :].removesuffix(" (deleted)")
    return found


def new_shared_memory(before: Mapping[int, str], pid: int | str = "self") -> list[str]:
    """Names of the bridge's memfds a process holds now that it did not hold in ``before``.

    Args:
        before: what :func:`shared_memory` said earlier (other tests' memory may have gone since).
        pid: the process (default: this one).

    Returns:
        The names, sorted.
    """
    return sorted(name for inode, name in shared_memory(pid).items() if inode not in before)


def numbered_frames(count: int, size: tuple[int, int] = (320, 240), offset: int = 0) -> list[np.ndarray]:
    """``count`` frames of ``size`` (w, h) whose every pixel holds ``(offset + index) % 256``."""
    width, height = size
    return [np.full((height, width, 3), (offset + index) % 256, np.uint8) for index in range(count)]


@dataclass
class AppResult:
    """How an app process ended: exit code, output, and the JSON it printed after ``RESULT``."""

    returncode: int
    stdout: str
    stderr: str
    result: object


class BridgeLab:
    """Starts runtimes and app processes in a scratch directory, and cleans all of them up.

    Args:
        workdir: a directory for run dirs and app scripts.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._runtimes: list[Runtime] = []
        self._apps: list[subprocess.Popen[bytes]] = []
        self._count = 0

    def runtime(
        self,
        plan: FakePlan | None = None,
        *,
        cameras: Mapping[str, CameraSource] | None = None,
        hdmi: FrameSink | None = None,
        models: ModelCaller | None = None,
        mode: str = "lockstep",
        run_dir: Path | None = None,
        start: bool = True,
    ) -> Runtime:
        """A runtime for ``plan`` (default: one node, one camera); cameras default to numbered frames."""
        plan = plan or app_plan()
        if cameras is None:
            cameras = {}
            for index, camera in enumerate(plan.cameras):
                frames = numbered_frames(8, offset=10 * index)
                cameras[camera.name] = ArraySource(frames, name=camera.name, uri=f"array://{camera.name}")
        self._count += 1
        runtime = Runtime(
            plan,
            run_dir or self.workdir / f"run{self._count}",
            cameras=cameras,
            hdmi=hdmi,
            models=models,
            mode=mode,
        )
        self._runtimes.append(runtime)
        if start:
            runtime.start()
        return runtime

    def script(self, source: str) -> Path:
        """Write an app script (dedented) and return its path."""
        self._count += 1
        path = self.workdir / f"app{self._count}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def app(
        self,
        runtime: Runtime,
        source: str,
        *,
        node: str = "code_node",
        python: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start the app ``source`` (Python code, dedented) as a plain process for ``node``.

        ``stdin=True`` gives the app a pipe the test can write to.
        """
        pipe = subprocess.PIPE if stdin else subprocess.DEVNULL
        process = launch_app(runtime, node, self.script(source), python=python, env=env, stdin=pipe)
        self._apps.append(process)
        return process

    def track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        """Kill ``process`` on close if it still runs."""
        self._apps.append(process)
        return process

    @staticmethod
    def finish(process: subprocess.Popen[bytes], timeout: float = 60.0) -> AppResult:
        """Wait for an app to end; ``result`` is the JSON after the last ``RESULT `` line it printed."""
        out, err = process.communicate(timeout=timeout)
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        result: object = None
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        return AppResult(process.returncode, stdout, stderr, result)

    def close(self) -> None:
        """Kill the apps still running, stop the runtimes."""
        for process in self._apps:
            if process.poll() is None:
                process.kill()
            process.communicate()
        for runtime in self._runtimes:
            runtime.stop()

    def __enter__(self) -> BridgeLab:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()
