"""The developer's loop of ``panorama-emulator dev``: boot the app, watch its code packages, restart on save.

:class:`DevSession` builds the assets that are missing, deploys the project on an
:class:`~emulator.api.ApplianceManager` (which the CLI serves with the console and API, as ``serve``), and
lays every code package's sources over its node's read-only root filesystem, at the image paths its
Dockerfile COPYs them to (extra read-only bubblewrap binds: still read-only to the app). Then it polls the
package folders:

- a saved file that a COPY brings into the image restarts the nodes of that package (storage kept, temporary
  paths empty, as a node restart on a device): no rebuild; one line says what changed and how long it took,
  from the save to the first frame the new code took;
- the Dockerfile, ``descriptor.json``, a file a RUN step names (``requirements.txt``), or a file that is new
  or gone where only single files are overlaid: the asset is rebuilt with the engine's cache and the app
  redeployed, saying so; a failed build keeps the last good one running;
- the graph or override file: the app is redeployed;
- a node that ends (a syntax error, a crash of the new code) is not restarted: its traceback is shown once,
  and the next save starts it again.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from emulator.api.manager import ApplianceManager
from emulator.builder.copies import ImageSources, image_sources
from emulator.device.appliance import Appliance
from emulator.device.figures import NodeStatus
from emulator.device.options import ApplianceOptions
from emulator.errors import EmulatorError
from emulator.plan import CodeNodePlan
from emulator.project import Project
from emulator.run import build_missing_assets

__all__ = ["DevEvent", "DevSession", "overlay_binds"]

_SKIP_DIRS = {"__pycache__", ".git", ".ipynb_checkpoints", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
_FIRST_FRAME_WAIT = 30.0
Snapshot = dict[PurePosixPath, tuple[int, int]]


def _editor_noise(name: str) -> bool:
    """Swap, backup and probe files editors write beside the file being saved."""
    return (
        name.startswith(".#")
        or name.endswith(("~", ".swp", ".swx", ".swo", ".tmp", ".pyc"))
        or name == "4913"
        or (name.startswith(".") and name.endswith(".kate-swp"))
    )


def _files(folder: Path) -> Iterator[tuple[PurePosixPath, Path]]:
    for top, dirs, names in os.walk(folder):
        dirs[:] = sorted(name for name in dirs if name not in _SKIP_DIRS)
        for name in names:
            if not _editor_noise(name):
                path = Path(top) / name
                yield PurePosixPath(path.relative_to(folder).as_posix()), path


def snapshot(folder: Path) -> Snapshot:
    """(mtime in ns, size) of every file of a folder, by relative path, editor noise left out."""
    found: Snapshot = {}
    for relative, path in _files(folder):
        with contextlib.suppress(OSError):
            stat = path.stat()
            found[relative] = (stat.st_mtime_ns, stat.st_size)
    return found


def overlay_binds(package_dir: Path, sources: ImageSources, rootfs: Path) -> tuple[tuple[Path, str], ...]:
    """The read-only binds that show a package's sources at their image paths, over the unpacked image.

    A copied folder is bound whole when everything the image holds under its target came from it and the
    build context holds all of it (new files then show too); otherwise each of its files that the build
    context holds is bound over the image's copy of it, so a file ``.dockerignore`` leaves out stays out.

    Args:
        package_dir: the package folder.
        sources: what its Dockerfile copies where.
        rootfs: the unpacked image.

    Returns:
        ``(host path, image path)`` pairs, in the order to mount them.
    """
    binds: list[tuple[Path, str]] = []
    for copy in sources.copies:
        host = package_dir / str(copy.source)
        inside = rootfs / copy.target.lstrip("/")
        if not copy.directory:
            if inside.is_file() and host.is_file():
                binds.append((host, copy.target))
            continue
        if not inside.is_dir():
            continue
        found = {relative for relative, _ in _files(host)}
        ours = {relative for relative in found if sources.in_context(copy.source / relative)}
        image = {relative for relative, _ in _files(inside)}
        if image <= ours and ours == found:
            binds.append((host, copy.target))
            continue
        for relative in sorted(ours & image):
            binds.append((host / str(relative), f"{copy.target.rstrip('/')}/{relative}"))
    return tuple(binds)


@dataclass
class DevEvent:
    """Something the loop did, as it told the developer.

    Args:
        kind: ``restart``, ``rebuild``, ``redeploy``, ``exit``, ``failed`` (a build or deploy that failed) or
            ``ignored``.
        message: the line printed.
        files: the changed files (relative to the project).
        node: the node it concerns, if one.
        seconds: for a restart, from the save to the first frame of the new code (None: no frame yet).
    """

    kind: str
    message: str
    files: tuple[str, ...] = ()
    node: str | None = None
    seconds: float | None = None


@dataclass
class _Pending:
    """A restarted node waiting for its first frame."""

    node: str
    files: tuple[str, ...]
    saved: float
    up: float
    frames: int
    exits: int


@dataclass
class _Package:
    ref: str
    folder: Path
    asset: str
    nodes: list[str]
    sources: ImageSources
    files: Snapshot = field(default_factory=dict)


class DevSession:
    """Boot a project for development and restart or rebuild it as its sources change.

    Args:
        project_dir: the panorama-cli project.
        options: how the appliance runs (device, state directory, graph, override, cameras...); the mode is
            ``realtime`` unless given, as for ``serve``, and a node that ends is never restarted on its own.
        say: called with each line the loop prints (restarts, rebuilds, exits).
        echo: called with (node, line) for every line the apps print.
        poll_interval: seconds between two looks at the files.
        changes: fields of ``ApplianceOptions`` given as keywords; they replace those of ``options``.

    Raises:
        ProjectError, ManifestError: the project cannot be read.
        DeviceError: bad options.
    """

    def __init__(
        self,
        project_dir: str | Path,
        options: ApplianceOptions | None = None,
        *,
        say: Callable[[str], None] | None = None,
        echo: Callable[[str, str], None] | None = None,
        poll_interval: float = 0.1,
        **changes: Any,
    ) -> None:
        base = options if options is not None else ApplianceOptions(mode="realtime")
        self.options = base.changed(**changes).changed(restart_on_exit=False)
        self.project = Project(Path(project_dir))
        self.graph = self.options.graph
        self.override = self.options.override
        self.poll_interval = poll_interval
        self.events: list[DevEvent] = []
        self._say = say
        self._echo = echo
        self._appliance: Appliance | None = None
        self._packages: list[_Package] = []
        self._pending: dict[str, _Pending] = {}
        self._exits: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._manifests: dict[Path, tuple[int, int] | None] = {}
        self._boots = 0
        self.manager = ApplianceManager(self.options, factory=self._make_appliance)

    # --- life ----------------------------------------------------------------------------------------------

    @property
    def appliance(self) -> Appliance:
        """The appliance running the app (a new one after each rebuild)."""
        if self._appliance is None:
            raise EmulatorError("the development session has not started")
        return self._appliance

    def start(self, *, watch: bool = True) -> DevSession:
        """Build what is missing, deploy and boot the app, then watch the sources in a thread.

        Args:
            watch: start the watching thread (False: call :meth:`poll` yourself).

        Raises:
            BuildError, EngineError: a missing asset could not be built.
            EmulatorError: the app could not be deployed or booted.
        """
        built = build_missing_assets(self.project.root, self.graph, say=self._tell)
        self._deploy()
        if built:
            self._tell(f"built {', '.join(built)}")
        if watch:
            self._thread = threading.Thread(target=self._watch, name="panorama-dev-watch", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Stop watching and shut the app down."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.manager.close()

    def __enter__(self) -> DevSession:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _watch(self) -> None:
        said = ""
        while not self._stop.wait(self.poll_interval):
            try:
                self.poll()
                said = ""
            except Exception as error:  # the loop must outlive whatever one change does
                if str(error) != said:  # once, not at every look
                    said = str(error)
                    self._event("failed", f"error: {error}")

    def _tell(self, line: str) -> None:
        if self._say is not None:
            self._say(line)

    def _event(self, kind: str, message: str, **details: Any) -> DevEvent:
        event = DevEvent(kind, message, **details)
        self.events.append(event)
        self._tell(message)
        return event

    # --- deploy --------------------------------------------------------------------------------------------

    def _make_appliance(self, project_dir: Path, options: ApplianceOptions) -> Appliance:
        appliance = Appliance(project_dir, options.changed(quiet=True), on_line=self._line)
        appliance.deploy()
        packages: dict[str, _Package] = {}
        for node in appliance.plan.code_nodes:
            package = packages.get(node.package)
            rootfs = appliance.store.rootfs(node.asset_uri, progress=False)
            if package is None:
                folder = appliance.project.package_dir(node.package)
                package = _Package(node.package, folder, node.asset, [], image_sources(folder, rootfs))
                packages[node.package] = package
            package.nodes.append(node.name)
            appliance.overlays[node.name] = overlay_binds(package.folder, package.sources, rootfs)
        for package in packages.values():
            package.files = snapshot(package.folder)
        self._packages = list(packages.values())
        self._appliance = appliance
        return appliance

    def _deploy(self) -> None:
        self._pending.clear()
        self.manager.deploy_project(self.project.root, graph=self.graph, override=self.override)
        self._exits = {name: len(self._status(name).exit_codes) for name in self._node_names()}
        self._boots = self.appliance.boots
        self._manifests = self._manifest_stamps()

    def _manifest_stamps(self) -> dict[Path, tuple[int, int] | None]:
        files = [self.project.graph_path(self.graph)]
        if self.override is not None:
            files.append(self.override)
        stamps: dict[Path, tuple[int, int] | None] = {}
        for path in files:
            try:
                stat = path.stat()
                stamps[path] = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                stamps[path] = None
        return stamps

    def _line(self, node: str, line: str) -> None:
        if self._echo is not None:
            self._echo(node, line)

    def _node_names(self) -> list[str]:
        return [node.name for node in self._code_nodes()]

    def _code_nodes(self) -> list[CodeNodePlan]:
        return [node for node in self.appliance.plan.code_nodes if node.starts_at_boot]

    def _status(self, node: str) -> NodeStatus:
        return self.appliance.status().nodes[node]

    def _frames(self, node: str) -> int:
        return self.appliance.metrics().nodes[node].frames_in

    # --- one look ------------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Look at the files once and act on what changed; report first frames and exits."""
        if self._manifest_stamps() != self._manifests:
            self._redeploy("the graph changed")
        for package in self._packages:
            changed, saved = self._changes(package)
            if changed:
                self._act(package, changed, saved)
        self._check_nodes()

    def _changes(self, package: _Package) -> tuple[list[PurePosixPath], float]:
        """The files of a package that changed since the last look, once they are quiet."""
        now = snapshot(package.folder)
        if now == package.files:
            return [], 0.0
        # Let a save that writes several files (or one file in several writes) finish.
        for _ in range(20):
            time.sleep(0.02)
            again = snapshot(package.folder)
            if again == now:
                break
            now = again
        changed = sorted(
            path for path in now.keys() | package.files.keys() if now.get(path) != package.files.get(path)
        )
        stamps = [now[path][0] for path in changed if path in now]
        saved = max(stamps) / 1e9 if stamps else time.time()
        package.files = now
        return changed, saved

    def _act(self, package: _Package, changed: list[PurePosixPath], saved: float) -> None:
        names = tuple(f"{package.folder.name}/{path}" for path in changed)
        rebuild = [path for path in changed if package.sources.needs_build(path)]
        shown = [path for path in changed if package.sources.targets(path)]
        missing = [path for path in shown if not self._overlaid(package, path)]
        if rebuild or missing:
            why = ", ".join(str(path) for path in (rebuild or missing))
            self._rebuild(package, f"{why} changed" if rebuild else f"{why}: new or removed", names)
            return
        if not shown:
            self._event("ignored", f"{', '.join(names)}: not in the image, nothing to do", files=names)
            return
        if not self.appliance.running:
            self._redeploy(f"{', '.join(names)} changed")
            return
        for node in package.nodes:
            self._restart(node, names, saved)

    def _overlaid(self, package: _Package, path: PurePosixPath) -> bool:
        """True when the overlay of the package's sources shows this file's current state."""
        host = package.folder / str(path)
        for name in package.nodes:
            for source, _ in self.appliance.overlays.get(name, ()):
                if source == host and host.is_file():
                    return True
                if source.is_dir() and (source == package.folder or source in host.parents):
                    return True
        return False

    def _restart(self, node: str, files: tuple[str, ...], saved: float) -> None:
        started = time.monotonic()
        try:
            self.appliance.restart_node(node)
        except EmulatorError as error:
            self._event("failed", f"{node} could not restart: {error}", files=files, node=node)
            return
        self._pending[node] = _Pending(
            node, files, saved, time.monotonic() - started, self._frames(node),
            len(self._status(node).exit_codes),
        )  # fmt: skip
        self._exits[node] = self._pending[node].exits
        plan = next(plan for plan in self._code_nodes() if plan.name == node)
        if not plan.media_inputs:
            # No camera: the new code is running once its sandbox is.
            del self._pending[node]
            seconds = time.time() - saved
            self._event(
                "restart",
                f"{node} restarted ({', '.join(files)}): running {seconds:.2f} s after the save",
                files=files,
                node=node,
                seconds=seconds,
            )

    def _check_nodes(self) -> None:
        boots = self.appliance.boots
        if boots != self._boots:
            # A reboot from the console or the API: a new supervisor, exit counts from zero.
            self._boots = boots
            self._pending.clear()
            self._exits = {name: 0 for name in self._node_names()}
        for node in self._node_names():
            status = self._status(node)
            codes = status.exit_codes
            pending = self._pending.get(node)
            if len(codes) > self._exits.get(node, 0) and status.state != "running":
                self._exits[node] = len(codes)
                self._pending.pop(node, None)
                self._event(
                    "exit",
                    f"{node} exited with status {codes[-1]}: waiting for the next save",
                    node=node,
                    files=pending.files if pending else (),
                )
                continue
            if pending is None:
                continue
            waited = time.time() - pending.saved
            if self._frames(node) > pending.frames:
                del self._pending[node]
                self._event(
                    "restart",
                    f"{node} restarted ({', '.join(pending.files)}): new code took its first frame "
                    f"{waited:.2f} s after the save (restart {pending.up:.2f} s)",
                    files=pending.files,
                    node=node,
                    seconds=waited,
                )
            elif waited > _FIRST_FRAME_WAIT:
                del self._pending[node]
                self._event(
                    "restart",
                    f"{node} restarted ({', '.join(pending.files)}) {pending.up:.2f} s, "
                    f"no frame yet after {waited:.0f} s",
                    files=pending.files,
                    node=node,
                )

    # --- rebuild and redeploy ------------------------------------------------------------------------------

    def _rebuild(self, package: _Package, why: str, files: tuple[str, ...]) -> None:
        from rich.console import Console

        from emulator.builder import build_container

        self._tell(f"{why}: rebuilding {package.asset} (with the engine's cache)")
        started = time.monotonic()
        try:
            build_container(
                self.project, package.asset, package.folder, local_image=True, console=Console(quiet=True)
            )
        except EmulatorError as error:
            tail = getattr(error, "log_tail", None) or []
            for line in tail[-10:]:
                self._tell(f"  {line}")
            self._event(
                "failed", f"the build failed: {error}; the last good build keeps running", files=files
            )
            package.files = snapshot(package.folder)
            return
        built = time.monotonic() - started
        try:
            self._deploy()
        except EmulatorError as error:
            self._event(
                "failed",
                f"rebuilt {package.asset} in {built:.1f} s, but it did not deploy: {error}",
                files=files,
            )
            return
        self._event(
            "rebuild",
            f"rebuilt {package.asset} in {built:.1f} s and redeployed (boot {self.appliance.boots})",
            files=files,
            seconds=time.monotonic() - started,
        )

    def _redeploy(self, why: str) -> None:
        try:
            self._deploy()
        except EmulatorError as error:
            self._manifests = self._manifest_stamps()
            self._event("failed", f"{why}, but it did not deploy: {error}")
            return
        self._event("redeploy", f"{why}: redeployed (boot {self.appliance.boots})")
