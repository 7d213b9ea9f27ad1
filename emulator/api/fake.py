"""An in-process stand-in for ``emulator.Appliance``, for fast tests of the layers above it.

It reads the project's graph to learn its node names, then "runs" the app in a thread: every camera that is
not paused yields a small synthetic frame labelled ``person`` on the HDMI output, each boot appends a line to
every node's console log and clears a temporary folder. No sandbox, no Docker, no app code.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from types import TracebackType

import numpy as np

from emulator.device.figures import (
    BootFigures,
    CameraFigures,
    DeviceStatus,
    HdmiFigures,
    NodeFigures,
    NodeStatus,
)
from emulator.device.log_follower import LogFollower
from emulator.device.options import ApplianceOptions
from emulator.device.store import DeviceStore
from emulator.errors import DeviceError
from emulator.manifests import load_graph
from emulator.project import Project
from runtime.media.hdmi import HdmiSink
from runtime.media.overlay import Output

__all__ = ["FakeAppliance"]

_CAMERA = "panorama::abstract_rtsp_media_source"
_HDMI = "panorama::hdmi_data_sink"
_VALUE = ("boolean", "int32", "float32", "string")


class FakeAppliance:
    """Looks like ``emulator.Appliance`` from outside: same constructor, lifecycle, logs, HDMI and storage.

    Args:
        project_dir: a panorama-cli project (its graph gives the node names).
        options: as for ``Appliance``; the device name, state directory, graph and cameras (only recorded)
            are used, the rest is ignored.
        frame_interval: seconds between two frames.

    Raises:
        ProjectError, ManifestError: the project or its graph is not usable.
    """

    def __init__(
        self,
        project_dir: Path,
        options: ApplianceOptions | None = None,
        *,
        frame_interval: float = 0.05,
    ) -> None:
        options = options or ApplianceOptions()
        project = Project(Path(project_dir))
        graph_path = project.graph_path(options.graph)
        self.app = project.app_name(graph_path)
        nodes = load_graph(graph_path).nodes
        self.camera_names = [node.name for node in nodes if node.interface.startswith(_CAMERA)]
        has_hdmi = any(node.interface.startswith(_HDMI) for node in nodes)
        self.code_names = [
            node.name
            for node in nodes
            if node.interface not in _VALUE and not node.interface.startswith(("panorama::",))
        ]
        self.cameras = {name: options.cameras.get(name, "synthetic") for name in self.camera_names}
        self.store = DeviceStore(options.state_dir, options.device)
        self.storage_path = self.store.storage_dir(self.app)
        self.temp_path = self.store.root / "fake-tmp"
        self.hdmi: HdmiSink | None = HdmiSink((320, 180)) if has_hdmi else None
        self.device = options.device
        self.frame_interval = frame_interval
        self.options = options
        self.app_ended: str | None = None
        """As ``Appliance.app_ended``; always None: the fake's app never ends."""
        self._paused: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._booted_at: float | None = None
        self._frames = 0
        self._frames_at_boot = 0

    @property
    def running(self) -> bool:
        """True between a boot and the next shutdown or power cut."""
        return self._thread is not None

    # -- lifecycle ------------------------------------------------------------------------------------------

    def boot(self) -> None:
        """Start the app: clear temp, count the boot, log it, start the frames."""
        if self._thread is not None:
            raise DeviceError("the device is already running")
        shutil.rmtree(self.temp_path, ignore_errors=True)
        self.temp_path.mkdir(parents=True)
        self.store.root.mkdir(parents=True, exist_ok=True)
        (self.store.root / "boots").write_text(f"{self.boots + 1}\n")
        self._frames_at_boot = self._frames
        for node in self.code_names:
            with (self.logs_path(node) / "console_output").open("a", encoding="utf-8") as log:
                log.write(f"{node}: boot {self.boots}\n")
        self._paused.clear()
        self._stop.clear()
        self._booted_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="fake-appliance", daemon=True)
        self._thread.start()

    def shutdown(self) -> None:
        """Stop the app (nothing happens when it is not running)."""
        thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None:
            thread.join()
        self._booted_at = None

    def reboot(self) -> None:
        """Stop, then boot again."""
        self.shutdown()
        self.boot()

    def power_cut(self) -> None:
        """Stop at once (``boot()`` powers on again)."""
        self.shutdown()

    def power_cycle(self) -> None:
        """Stop at once, then boot again."""
        self.power_cut()
        self.boot()

    def __enter__(self) -> FakeAppliance:
        self.boot()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
        if self.hdmi is not None:
            self.hdmi.close()

    def _run(self) -> None:
        while not self._stop.wait(self.frame_interval):
            live = [name for name in self.camera_names if name not in self._paused]
            if not live or self.hdmi is None:
                continue
            self._frames += 1
            outputs = []
            for index, name in enumerate(live):
                image = np.zeros((90, 160, 3), np.uint8)
                x = (self._frames * 4 + index * 40) % 140
                image[30:60, x : x + 20] = (255, 255, 255)
                rect = (x / 160, 0.33, (x + 20) / 160, 0.66)
                outputs.append(Output(image, [("person", x / 160, 0.2)], [rect], name))
            self.hdmi.show(outputs)

    # -- reading --------------------------------------------------------------------------------------------

    @property
    def boots(self) -> int:
        """How many times this device has booted (kept in the device's folder, as the appliance does)."""
        try:
            return int((self.store.root / "boots").read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    def wait_for_frames(self, n: int, timeout: float | None = None) -> bool:
        """Wait until the HDMI output has shown ``n`` frames in this boot; False when ``timeout`` passed."""
        if self.hdmi is None:
            raise DeviceError("the application has no HDMI output node")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._frames - self._frames_at_boot < n:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self.hdmi.wait_for_output(self.hdmi.outputs, timeout=min(remaining or 0.1, 0.1))
        return True

    def logs_path(self, node: str) -> Path:
        """The log folder of a node (``console_output`` in it holds what the node printed)."""
        if node not in self.code_names:
            raise DeviceError("not a code node", node=node)
        return self.store.logs_dir(self.app, node)

    def logs(self, node: str) -> str:
        """The console output of a node, as text."""
        path = self.logs_path(node) / "console_output"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    def status(self) -> DeviceStatus:
        """Device, app, on/off, boots, uptime and node states, as ``Appliance.status()`` gives them."""
        running = self._thread is not None
        return DeviceStatus(
            device=self.device,
            app=self.app,
            state="on" if running else "off",
            boots=self.boots,
            uptime_s=time.monotonic() - self._booted_at if self._booted_at is not None else 0.0,
            mode=self.options.mode,
            network=self.options.network,
            nodes={
                name: NodeStatus(
                    state="running" if running else "stopped",
                    pid=os.getpid() if running else None,
                    instance=1,
                )
                for name in self.code_names
            },
        )

    def metrics(self) -> BootFigures:
        """Frames shown and per-camera state, as ``Appliance.metrics()`` gives them."""
        frames = self._frames - self._frames_at_boot
        state = "running" if self._thread is not None else "stopped"
        return BootFigures(
            boots=self.boots,
            uptime_s=self.status().uptime_s,
            mode=self.options.mode,
            frames_out=frames,
            nodes={name: NodeFigures(state=state, frames_out=frames) for name in self.code_names},
            cameras={
                name: CameraFigures(uri=uri, paused=name in self._paused)
                for name, uri in self.cameras.items()
            },
            hdmi=HdmiFigures.from_json(self.hdmi.metrics()) if self.hdmi is not None else None,
        )

    def follow_logs(self, node: str, file: str | None = None) -> LogFollower:
        """Follow a node's console output (or another file of its log folder) from now on."""
        return LogFollower(self.logs_path(node) / (file or "console_output"))

    def _camera(self, name: str) -> str:
        if self._thread is None:
            raise DeviceError("the appliance is off: boot it first")
        if name not in self.camera_names:
            raise DeviceError("no such camera", node=name)
        return name

    def pause_camera(self, name: str) -> None:
        """Stop a camera's frames."""
        self._paused.add(self._camera(name))

    def resume_camera(self, name: str) -> None:
        """Let a camera's frames flow again."""
        self._paused.discard(self._camera(name))
