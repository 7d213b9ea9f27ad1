"""The device behind the HTTP API: one emulated appliance and the application deployed on it.

:class:`ApplianceManager` is the Python API that the HTTP routes call; it holds no HTTP concepts. It deploys
a project folder (or an uploaded bundle, unpacked into the device's state directory) as one
``emulator.Appliance``, boots, reboots, cuts power and shuts down, and gives read-only access to logs,
the HDMI output, metrics and the app's storage.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from emulator.api.bundle import BundleInfo, BundleLimits, check_bundle, unpack_bundle
from emulator.api.device import (
    CONSOLE_OUTPUT,
    ApplianceFactory,
    DeviceLike,
    local_path,
    make_appliance,
    plain_path,
)
from emulator.api.errors import NotFoundError
from emulator.api.logs import log_file, log_files, tail_file, tail_lines
from emulator.api.storage import StorageEntry, list_storage, storage_file
from emulator.device.log_follower import LogFollower
from emulator.device.options import ApplianceOptions
from emulator.device.store import DeviceStore
from emulator.errors import DeviceError, EmulatorError, ProjectError
from runtime.media.hdmi import HdmiSink

__all__ = ["ApplianceManager", "Deployment"]


@dataclass(frozen=True)
class Deployment:
    """The application deployed on the device.

    Args:
        project: the project folder it runs from.
        source: ``project`` (a folder on this machine) or ``bundle`` (uploaded, unpacked in the state dir).
        graph: the graph file given at deploy time, if any.
        override: the override file given at deploy time, if any.
        deployed_at: seconds since the epoch.
    """

    project: Path
    source: str
    graph: Path | None
    override: Path | None
    deployed_at: float


class ApplianceManager:
    """One emulated device and the application deployed on it; safe to use from several threads.

    Args:
        options: how every deployment runs (device name, state directory, cameras, mode ...); a deployment's
            own graph and override replace those, and apps never print to the terminal. Default: realtime
            cameras (as on a device), everything else as ``ApplianceOptions()``.
        factory: makes the device of a deployment (``emulator.Appliance`` by default).
        bundle_limits: bounds on uploaded bundles.

    Raises:
        DeviceError: the device name is not allowed.
    """

    def __init__(
        self,
        options: ApplianceOptions | None = None,
        *,
        factory: ApplianceFactory | None = None,
        bundle_limits: BundleLimits | None = None,
    ) -> None:
        self.options = options if options is not None else ApplianceOptions(mode="realtime")
        self.store = DeviceStore(self.options.state_dir, self.options.device)
        self.device_name = self.options.device
        self.bundle_limits = bundle_limits or BundleLimits()
        self._factory = factory or make_appliance
        self._lock = threading.RLock()
        self._device: DeviceLike | None = None
        self._stack: contextlib.ExitStack | None = None
        self._deployment: Deployment | None = None
        self._powered = False
        self._paused: set[str] = set()

    @property
    def bundles_dir(self) -> Path:
        """Where uploaded bundles are unpacked: ``<device>/bundles/<app>/``."""
        return self.store.root / "bundles"

    @property
    def deployment(self) -> Deployment | None:
        """The deployed application, or None."""
        return self._deployment

    @property
    def powered(self) -> bool:
        """True while the deployed application is booted."""
        return self._powered

    @property
    def device(self) -> DeviceLike:
        """The device running the deployed application.

        Raises:
            DeviceError: nothing is deployed.
        """
        device = self._device
        if device is None:
            raise DeviceError("no application is deployed: deploy a project folder or a bundle first")
        return device

    def _running(self) -> DeviceLike:
        device = self.device
        if not self._powered:
            raise DeviceError("the device is shut down: boot it first")
        return device

    # -- deployment -----------------------------------------------------------------------------------------

    def deploy_project(
        self,
        project: Path,
        *,
        graph: Path | None = None,
        override: Path | None = None,
        source: str = "project",
    ) -> Deployment:
        """Deploy the application of a project folder and boot it, replacing what was deployed.

        Args:
            project: the project root (``graphs/``, ``packages/``, ``assets/``) on this machine.
            graph: a graph file other than the only ``graphs/*/graph.json``.
            override: an ``override.json`` to apply.
            source: ``project`` or ``bundle`` (shown in the status).

        Returns:
            The deployment.

        Raises:
            ProjectError: the folder is not a project.
            EmulatorError: the app cannot be planned (the deployed app keeps running) or booted (then nothing
                is deployed).
        """
        root = local_path(project, "project folder")
        graph = plain_path(graph, "graph file") if graph is not None else None
        override = plain_path(override, "override file") if override is not None else None
        if not root.is_dir():
            raise ProjectError("no such project folder on this machine", file=str(project))
        with self._lock:
            # Made before the running app is torn down: a project that cannot be planned leaves it running.
            options = self.options.changed(
                state_dir=self.store.state_dir, graph=graph, override=override, quiet=True
            )
            device = self._factory(root, options)
            self._teardown()
            stack = contextlib.ExitStack()
            stack.enter_context(device)
            self._device, self._stack = device, stack
            self._powered = True
            self._paused.clear()
            self._deployment = Deployment(root, source, graph, override, time.time())
            return self._deployment

    def check_bundle(self, archive: IO[bytes]) -> BundleInfo:
        """Check an uploaded bundle without writing anything (see :func:`emulator.api.bundle.check_bundle`).

        Raises:
            RequestError, ManifestError, AssetError: the bundle would be refused.
        """
        return check_bundle(archive, self.bundle_limits)

    def deploy_bundle(self, archive: IO[bytes]) -> tuple[Deployment, BundleInfo]:
        """Check a bundle, unpack it into ``<device>/bundles/<app>/``, deploy it instead of the current app.

        Nothing is written and the deployed app keeps running when the check fails.

        Args:
            archive: the ``.tar.gz`` bundle, open for reading and seekable.

        Returns:
            The deployment and what the bundle holds.

        Raises:
            RequestError, ManifestError, AssetError: the bundle was refused.
            EmulatorError: the app cannot be planned or booted (its unpacked folder is removed).
        """
        checked = check_bundle(archive, self.bundle_limits)
        with self._lock:
            self._teardown()
            dest, info = unpack_bundle(archive, self.bundles_dir, self.bundle_limits, checked=checked)
            with contextlib.ExitStack() as undo:
                undo.callback(shutil.rmtree, dest, ignore_errors=True)
                deployment = self.deploy_project(dest, source="bundle")
                undo.pop_all()
            return deployment, info

    def remove(self) -> None:
        """Shut the deployed application down and forget it (an uploaded bundle's folder is deleted).

        Storage and logs stay on the device.

        Raises:
            DeviceError: nothing is deployed.
        """
        with self._lock:
            deployment = self._deployment
            if deployment is None:
                raise DeviceError("no application is deployed")
            self._teardown()
            if deployment.source == "bundle" and deployment.project.parent == self.bundles_dir:
                shutil.rmtree(deployment.project, ignore_errors=True)

    def _teardown(self) -> None:
        stack, self._stack = self._stack, None
        self._device = None
        self._deployment = None
        self._powered = False
        self._paused.clear()
        if stack is not None:
            stack.close()

    # -- power ----------------------------------------------------------------------------------------------

    def boot(self) -> None:
        """Boot the deployed application after a shutdown.

        Raises:
            DeviceError: nothing is deployed, or it is already running.
            EmulatorError: the boot failed (the device stays off).
        """
        with self._lock:
            device = self.device
            if self._powered:
                raise DeviceError("the device is already running")
            self._paused.clear()
            with self._tracking(device):
                device.boot()
                self._powered = True

    def shutdown(self) -> None:
        """Shut the device down gracefully (the app stays deployed; boot it again with :meth:`boot`).

        Raises:
            DeviceError: nothing is deployed, or it is already shut down.
        """
        with self._lock:
            device = self._running()
            with self._tracking(device):
                self._powered = False
                device.shutdown()

    def reboot(self) -> None:
        """Reboot gracefully: storage and logs are kept, temporary paths cleared.

        Raises:
            DeviceError: nothing is deployed or the device is shut down.
            EmulatorError: the boot failed (the device stays off).
        """
        with self._lock:
            device = self._running()
            self._paused.clear()
            with self._tracking(device):
                device.reboot()

    def power_cut(self) -> None:
        """Cut the power (every process killed at once), then boot again.

        Raises:
            DeviceError: nothing is deployed or the device is shut down.
            EmulatorError: the boot failed (the device stays off).
        """
        with self._lock:
            device = self._running()
            self._paused.clear()
            with self._tracking(device):
                device.power_cycle()

    @contextlib.contextmanager
    def _tracking(self, device: DeviceLike) -> Iterator[None]:
        """Afterwards, even when it failed, take the device's own word for whether it is on."""
        try:
            yield
        finally:
            self._powered = device.running

    def close(self) -> None:
        """Shut down and forget the deployed application, if any (uploaded bundles stay unpacked)."""
        with self._lock, contextlib.suppress(EmulatorError):
            self._teardown()

    # -- reading --------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Describe the device.

        Returns:
            ``device``, ``state_dir``, ``state`` (``empty``, ``running`` or ``off``), ``app`` (None or
            ``name``, ``project``, ``source``, ``deployed_at``), ``boots``, ``uptime_s`` (seconds since the
            last boot, or None), ``nodes`` (``name``, ``state``, ``pid``, ``restarts``, ``exit_codes``,
            ``last_cause``, ``arch``, ``emulated``), ``cameras`` (``name``, ``paused``, ``source``), ``hdmi``
            (``outputs``, ``labels``; None without an HDMI output) and ``storage_path``.
        """
        device, deployment, powered = self._device, self._deployment, self._powered
        result: dict[str, Any] = {
            "device": self.device_name,
            "state_dir": str(self.store.state_dir),
            "state": "empty" if device is None else ("running" if powered else "off"),
            "app": None,
            "boots": 0,
            "uptime_s": None,
            "nodes": [],
            "cameras": [],
            "hdmi": None,
            "storage_path": None,
        }
        if device is None or deployment is None:
            return result
        status = device.status()
        result.update(
            app={
                "name": status.app,
                "project": str(deployment.project),
                "source": deployment.source,
                "deployed_at": deployment.deployed_at,
            },
            boots=status.boots,
            uptime_s=status.uptime_s if powered else None,
            nodes=[
                {
                    "name": name,
                    "state": node.state,
                    "pid": node.pid,
                    "restarts": node.restarts,
                    "exit_codes": list(node.exit_codes),
                    "last_cause": node.last_cause,
                    "arch": node.arch,
                    "emulated": node.emulated,
                }
                for name, node in status.nodes.items()
            ],
            cameras=self._cameras(device, powered),
            storage_path=str(device.storage_path),
        )
        sink = self._sink(device)
        if sink is not None:
            result["hdmi"] = {"outputs": sink.outputs, "labels": sorted(sink.labels())}
        return result

    def _cameras(self, device: DeviceLike, powered: bool) -> list[dict[str, Any]]:
        live = device.metrics().cameras if powered else {}
        return [
            {
                "name": name,
                "paused": live[name].paused if name in live else name in self._paused,
                "source": source,
            }
            for name, source in device.cameras.items()
        ]

    @staticmethod
    def _sink(device: DeviceLike) -> HdmiSink | None:
        """The device's HDMI sink, or None when its app has no HDMI output node."""
        plan = getattr(device, "plan", None)
        if plan is not None and not getattr(plan, "sinks", ()):
            return None
        return device.hdmi

    def node_names(self) -> list[str]:
        """The deployed application's nodes that have logs (its business-logic nodes)."""
        return [node["name"] for node in self.status()["nodes"]]

    def _check_node(self, node: str) -> None:
        names = self.node_names()
        if node not in names:
            raise NotFoundError(f"no such node; the app's nodes are: {', '.join(names) or 'none'}", node=node)

    def log_files(self, node: str) -> list[str]:
        """The files in a node's log folder (``console_output`` first, then what the app writes there).

        Raises:
            DeviceError: nothing is deployed.
            NotFoundError: the app has no such node.
        """
        device = self.device
        self._check_node(node)
        return log_files(device.logs_path(node), CONSOLE_OUTPUT)

    def logs(self, node: str, lines: int = 200, file: str | None = None) -> list[str]:
        """The last lines of a node's console output, or of another file in its log folder.

        Args:
            node: a business-logic node of the app.
            lines: how many lines at most.
            file: a file of the node's log folder (``/opt/aws/panorama/logs`` in the app), such as the
                ``app.log`` the app writes; None for ``console_output`` (what the node printed).

        Raises:
            DeviceError: nothing is deployed.
            NotFoundError: the app has no such node, or no such log file.
            RequestError: the file name is not a plain name.
        """
        device = self.device
        self._check_node(node)
        if file is None or file == CONSOLE_OUTPUT:
            return tail_lines(device.logs(node), lines)
        return tail_file(log_file(device.logs_path(node), file), lines)

    def follow_logs(self, node: str, file: str | None = None) -> LogFollower:
        """Start following a node's console output (or another log file) from now on; close it when done.

        Raises:
            DeviceError: nothing is deployed.
            NotFoundError: the app has no such node, or no such log file.
            RequestError: the file name is not a plain name.
        """
        device = self.device
        self._check_node(node)
        if file is not None and file != CONSOLE_OUTPUT:
            log_file(device.logs_path(node), file)
        return device.follow_logs(node, file)

    def hdmi(self) -> HdmiSink:
        """The HDMI output of the deployed application.

        Raises:
            DeviceError: nothing is deployed, or the app has no HDMI output node.
        """
        sink = self._sink(self.device)
        if sink is None:
            raise DeviceError("the application has no HDMI output node")
        return sink

    def metrics(self) -> dict[str, Any]:
        """Figures of the device and its app.

        Returns:
            ``device``, ``state``, ``boots``, ``uptime_s``, ``hdmi_outputs``, ``nodes`` (per node ``up``,
            ``restarts``, ``exits``) and ``runtime`` (the app's own figures, ``BootFigures.to_json()``:
            frame rates, latency, drops, model calls; empty unless the device is running).
        """
        status = self.status()
        device = self._device
        return {
            "device": status["device"],
            "state": status["state"],
            "boots": status["boots"],
            "uptime_s": status["uptime_s"],
            "hdmi_outputs": status["hdmi"]["outputs"] if status["hdmi"] else 0,
            "nodes": {
                node["name"]: {
                    "up": node["state"] == "running",
                    "restarts": node["restarts"],
                    "exits": len(node["exit_codes"]),
                }
                for node in status["nodes"]
            },
            "runtime": device.metrics().to_json() if device is not None and self._powered else {},
        }

    def storage_list(self, path: str = "") -> list[StorageEntry]:
        """List a folder of the app's persistent storage (see :func:`emulator.api.storage.list_storage`).

        Raises:
            DeviceError: nothing is deployed.
            RequestError: the path is absolute, holds ``..`` or leads out through a link.
            NotFoundError: no such folder.
        """
        return list_storage(self.device.storage_path, path)

    def storage_file(self, path: str) -> Path:
        """Return a file of the app's storage, for download (see :func:`emulator.api.storage.storage_file`).

        Raises:
            DeviceError: nothing is deployed.
            RequestError: the path is not allowed or not a regular file.
            NotFoundError: no such file.
        """
        return storage_file(self.device.storage_path, path)

    # -- cameras --------------------------------------------------------------------------------------------

    def _check_camera(self, name: str) -> None:
        names = [camera["name"] for camera in self.status()["cameras"]]
        if names and name not in names:
            raise NotFoundError(f"no such camera; the app's cameras are: {', '.join(names)}", node=name)

    def pause_camera(self, name: str) -> None:
        """Stop a camera's frames until it is resumed (the app sees no new frame from it).

        Raises:
            DeviceError: nothing is deployed or the device is shut down.
            NotFoundError: the app has no such camera.
        """
        self._pause(name, True)

    def resume_camera(self, name: str) -> None:
        """Let a paused camera deliver frames again.

        Raises:
            DeviceError: nothing is deployed or the device is shut down.
            NotFoundError: the app has no such camera.
        """
        self._pause(name, False)

    def _pause(self, name: str, paused: bool) -> None:
        with self._lock:
            device = self._running()
            self._check_camera(name)
            try:
                (device.pause_camera if paused else device.resume_camera)(name)
            except KeyError:
                raise NotFoundError("no such camera", node=name) from None
            if paused:
                self._paused.add(name)
            else:
                self._paused.discard(name)
