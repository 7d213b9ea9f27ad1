"""The appliance: deploy an application to an emulated device, then boot, reboot, power-cut and watch it.

``Appliance`` is the Python API that the CLI's ``run``, the HTTP API and the pytest plugin sit on. Each boot:
temporary paths and the run directory start empty, the cameras, HDMI delivery and model nodes come up
(``runtime``), then every ``onAppStart`` business-logic node starts in its own sandbox, supervised and
restarted with backoff when it ends. Storage and logs stay from one boot to the next; so does the boot count.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from emulator.device import arch
from emulator.device.aws import AwsEndpoint, start_aws
from emulator.device.boot_files import count_boot, etc_files, read_boot_count
from emulator.device.limits import limits_in_force
from emulator.device.netstack import app_resolver
from emulator.device.network import PortForwarder, Route, open_routes, routed_ports
from emulator.device.options import ApplianceOptions
from emulator.device.records import clear_sandbox_records, record_sandbox
from emulator.device.sandbox import (
    DEFAULT_PATH,
    SDK_MOUNT,
    BwrapLauncher,
    LaunchedProcess,
    ProcessLauncher,
    SandboxSpec,
    check_user_namespaces,
)
from emulator.device.store import DeviceStore
from emulator.device.supervisor import Service, Supervisor, read_rotated
from emulator.errors import AssetError, DeviceError, EmulatorError, ProjectError
from emulator.plan import AppPlan, CodeNodePlan, ModelPlan, plan_application
from emulator.project import Project

if TYPE_CHECKING:
    from emulator.device.runtime_link import BootRuntime, QuietPoint

__all__ = ["Appliance"]

log = logging.getLogger(__name__)

CONSOLE_OUTPUT = "console_output"


@dataclass
class _Boot:
    """What one boot holds while the appliance is on."""

    number: int
    started: float
    supervisor: Supervisor
    runtime: BootRuntime
    forwarders: list[PortForwarder]
    routes: list[Route]
    aws: AwsEndpoint | None = None


class _Echo:
    """Writes app output to a terminal, one line at a time prefixed by the node name, and to a listener."""

    def __init__(self, stream: TextIO | None, listener: Callable[[str, str], None] | None) -> None:
        self._stream = stream
        self._listener = listener
        self._lock = threading.Lock()

    def __call__(self, node: str, line: str) -> None:
        if self._listener is not None:
            self._listener(node, line)
        if self._stream is not None:
            with self._lock:
                self._stream.write(f"{node} | {line}\n")
                self._stream.flush()


class Appliance:
    """An emulated AWS Panorama appliance running one application.

    Constructing it plans the application (bad manifests fail here, nothing is written); the first ``boot``
    deploys it: every asset is verified against its SHA-256 and copied into the device, and container assets
    are unpacked once into read-only root filesystems. Use it as a context manager to boot on entry and shut
    down on exit.

    Args:
        project_dir: the panorama-cli project (the folder holding ``graphs/``, ``packages/``, ``assets/``).
        options: how the appliance runs (device, state directory, cameras, mode, network ...; see
            :class:`ApplianceOptions`); default ``ApplianceOptions()``.
        on_line: called with (node, line) for every line the apps print, whether quiet or not.
        launcher: starts sandboxes (default: bubblewrap).
        changes: fields of ``ApplianceOptions`` given as keywords (``device="dev", cameras={...}``); they
            replace those of ``options``.

    Raises:
        TypeError: a keyword is not a field of ``ApplianceOptions``.
        ProjectError: the project, graph or a package is missing or unusable.
        ManifestError: a manifest is invalid (every problem listed).
        DeviceError: a bad device name, mode, network or camera node.

    ``overlays`` changes the next boot (``emulator.dev`` sets it once the assets are unpacked): it maps a code
    node to ``(host path, image path)`` read-only binds laid over its root filesystem.
    """

    def __init__(
        self,
        project_dir: str | Path,
        options: ApplianceOptions | None = None,
        *,
        on_line: Callable[[str, str], None] | None = None,
        launcher: ProcessLauncher | None = None,
        **changes: Any,
    ) -> None:
        self.options = (options or ApplianceOptions()).changed(**changes)
        options = self.options
        self.project = Project(Path(project_dir))
        self.plan: AppPlan = plan_application(self.project, options.graph, options.override)
        self.store = DeviceStore(options.state_dir, options.device)
        camera_names = {camera.name for camera in self.plan.cameras}
        for name in options.cameras:
            if name not in camera_names:
                known = ", ".join(sorted(camera_names)) or "none"
                raise DeviceError(f"no camera node {name!r} in the application (camera nodes: {known})")
        self.cameras = {
            camera.name: options.cameras.get(camera.name, "synthetic") for camera in self.plan.cameras
        }
        self.quiet_point: QuietPoint | None = None
        """How the last lockstep ``wait_for_frames`` of this boot ended (None before one)."""
        self._launcher = launcher
        self._echo = _Echo(None if options.quiet else sys.stdout, on_line)
        self._rootfs: dict[str, Path] = {}
        self._machines: dict[str, str] = {}  # code node -> its rootfs's CPU (aarch64 runs through qemu-user)
        self._hdmi: Any = None
        self._hdmi_made = False
        self._boot: _Boot | None = None
        self._last: _Boot | None = None
        self._uptime_last = 0.0
        self._lock = threading.RLock()
        self.limits_line = ""
        """Which app limits are in force, as the last boot said it (``limits.limits_in_force``)."""
        self.overlays: dict[str, tuple[tuple[Path, str], ...]] = {}

    @property
    def device(self) -> str:
        """The device name."""
        return self.options.device

    @property
    def mode(self) -> str:
        """``lockstep`` or ``realtime``."""
        return self.options.mode

    @property
    def network(self) -> str:
        """``host`` or ``none``."""
        return self.options.network

    @property
    def aws(self) -> str:
        """What the app's AWS SDK meets: ``none``, ``host`` or ``local``."""
        return self.options.aws

    # --- context manager ---------------------------------------------------------------------------------

    def __enter__(self) -> Appliance:
        self.boot()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Shut down if on, and release the HDMI sink."""
        self.shutdown()
        if self._hdmi is not None:
            self._hdmi.close()

    # --- what the device holds ---------------------------------------------------------------------------

    @property
    def app(self) -> str:
        """The application name (its graph folder)."""
        return self.plan.app

    @property
    def storage_path(self) -> Path:
        """Host directory of the app's storage (``/opt/aws/panorama/storage`` inside)."""
        return self.store.storage_dir(self.app)

    def logs_path(self, node: str) -> Path:
        """Host directory of a code node's logs (``/opt/aws/panorama/logs`` inside, plus ``console_output``).

        Raises:
            DeviceError: ``node`` is not a code node of the application.
        """
        self._code_node(node)
        return self.store.logs_dir(self.app, node)

    def logs(self, node: str) -> str:
        """Everything a code node printed (stdout and stderr, every boot), oldest first, as far as kept.

        Raises:
            DeviceError: ``node`` is not a code node of the application.
        """
        return read_rotated(self.logs_path(node) / CONSOLE_OUTPUT)

    @property
    def boots(self) -> int:
        """How many times this device has booted (kept in the device's state directory)."""
        return read_boot_count(self.store.root)

    @property
    def hdmi(self) -> Any:
        """The HDMI sink (``runtime.media.hdmi.HdmiSink``): ``last_frame``, ``outputs``, ``labels()``..."""
        if not self._hdmi_made:
            self._hdmi_made = True
            from runtime.media.hdmi import HdmiSink

            self._hdmi = HdmiSink(
                out_dir=self.options.hdmi_out, record=self.options.hdmi_record, every=self.options.hdmi_every
            )
        return self._hdmi

    @property
    def running(self) -> bool:
        """True between a boot and the next shutdown or power cut."""
        return self._boot is not None

    def _code_node(self, node: str) -> CodeNodePlan:
        for plan in self.plan.code_nodes:
            if plan.name == node:
                return plan
        known = ", ".join(plan.name for plan in self.plan.code_nodes) or "none"
        raise DeviceError(f"not a code node of {self.app} (code nodes: {known})", node=node)

    # --- deploy ------------------------------------------------------------------------------------------

    def deploy(self) -> None:
        """Install every asset of the application into the device and unpack the container assets.

        Done once per Appliance, by the first boot if not before. Assets are verified (SHA-256 = name).

        Raises:
            ProjectError: an asset file is missing from the project.
            AssetError: an asset is corrupted or cannot be unpacked (a model asset's error names its node).
            SandboxError: an entry point is missing from its rootfs or built for a CPU this host cannot run.
        """
        if self._rootfs:
            return
        unpacked: dict[str, Path] = {}
        for node in self.plan.code_nodes:
            self.store.install_asset(
                self.project.asset_path(node.asset_uri), self.project.asset_path(node.descriptor_uri)
            )
            rootfs = self.store.rootfs(node.asset_uri, progress=not self.options.quiet)
            search_path = self._base_env(node)["PATH"]
            machine = arch.check_architecture(rootfs, node.descriptor.path, search_path, node=node.name)
            self._machines[node.name] = machine
            unpacked[node.name] = rootfs
        for model in self.plan.models:
            try:
                self.store.install_asset(
                    self._model_file(model, model.asset_uri), self._model_file(model, model.descriptor_uri)
                )
                # A model asset is files only: no mount points for a sandbox.
                model_dir = self.store.rootfs(
                    model.asset_uri, progress=not self.options.quiet, mount_points=()
                )
                unpacked[model.name] = model_dir
            except AssetError as error:
                error.node = error.node or model.name
                raise
        self._rootfs = unpacked

    def _model_file(self, model: ModelPlan, uri: str) -> Path:
        """A model asset's file in the project; if it went since the graph was read, how to put it back."""
        try:
            return self.project.asset_path(uri)
        except ProjectError:
            try:
                hint = "; " + self.project.add_raw_model_hint(
                    model.asset, self.project.package_dir(model.package)
                )
            except ProjectError:
                hint = ""
            raise ProjectError(
                f"the model asset {model.asset} is missing: {uri} is not in {self.project.assets_dir}{hint}",
                node=model.name,
                asset=uri,
            ) from None

    # --- power -------------------------------------------------------------------------------------------

    def boot(self) -> None:
        """Power on: fresh temp and run directories, the runtime, then every ``onAppStart`` code node.

        Raises:
            DeviceError: already running, or the runtime could not start.
            AssetError: the first boot's deploy found an asset corrupted or unusable.
            SandboxError: a sandbox cannot be created (no user namespaces, missing mount points...).
            ModelError: a model node cannot be loaded (not a model, or its framework's runtime is missing).
            SourceError: a camera source cannot be opened.
        """
        with self._lock:
            if self._boot is not None:
                raise DeviceError("the appliance is already on: shut it down or reboot it first")
            self.deploy()
            launcher = self._launcher or BwrapLauncher()
            unprivileged = os.geteuid() != 0
            if unprivileged and isinstance(launcher, BwrapLauncher):
                check_user_namespaces(launcher.bwrap)
            self.limits_line = limits_in_force(self.options.limits)
            log.info("%s", self.limits_line)
            number = count_boot(self.store.root)
            started = time.monotonic()
            self.quiet_point = None
            run_dir = self.store.reset_run_dir()
            clear_sandbox_records(self.store.root)
            etc = etc_files(self.store.root, self.device)
            if self.options.network == "app":
                etc = app_resolver(etc, self.store.root / "etc")
            aws = start_aws(self.aws, run_dir, network=self.network)
            # Imported here: the runtime (OpenCV, numpy) is only needed once a device boots.
            from emulator.device.runtime_link import start_runtime

            try:
                runtime = start_runtime(
                    self.plan,
                    run_dir,
                    cameras=self.cameras,
                    hdmi=self.hdmi if self.plan.sinks else None,
                    model_dirs={model.name: self._rootfs[model.name] for model in self.plan.models},
                    mode=self.mode,
                )
            except BaseException:
                if aws is not None:
                    aws.close()
                raise
            supervisor: Supervisor | None = None
            forwarders: list[PortForwarder] = []
            try:
                services = [
                    self._service(node, launcher, runtime, run_dir, etc, unprivileged, aws)
                    for node in self.plan.code_nodes
                    if node.starts_at_boot
                ]
                supervisor = Supervisor(
                    services,
                    backoff=self.options.backoff,
                    grace=self.options.grace_period,
                    echo=self._echo,
                    restart_on_exit=self.options.restart_on_exit,
                )
                supervisor.start()
                routes, forwarders = open_routes(
                    [node for node in self.plan.code_nodes if node.starts_at_boot],
                    network=self.network,
                    listen_host=self.options.inbound_host,
                    process_of=supervisor.process,
                )
            except BaseException:
                for forwarder in forwarders:
                    forwarder.close()
                if supervisor is not None:
                    supervisor.kill()
                runtime.stop()
                if aws is not None:
                    aws.close()
                raise
            self._boot = _Boot(number, started, supervisor, runtime, forwarders, routes, aws)
            self._last = self._boot

    def shutdown(self, grace: float | None = None) -> None:
        """Graceful power off: SIGTERM to every app, ``grace`` seconds (default ``grace_period``), SIGKILL.

        Storage and logs stay; temp paths, the run directory and shared memory go. Does nothing when off.
        """
        with self._lock:
            boot = self._boot
            if boot is None:
                return
            for forwarder in boot.forwarders:
                forwarder.close()
            boot.supervisor.stop(self.options.grace_period if grace is None else grace)
            self._power_off(boot)

    def power_cut(self) -> None:
        """Pull the plug: SIGKILL every app at once, no grace. ``boot()`` powers on again."""
        with self._lock:
            boot = self._boot
            if boot is None:
                return
            boot.supervisor.kill()
            for forwarder in boot.forwarders:
                forwarder.close()
            self._power_off(boot)

    def reboot(self, grace: float | None = None) -> None:
        """Graceful shutdown, then boot."""
        with self._lock:
            self.shutdown(grace)
            self.boot()

    def restart_node(self, node: str, grace: float | None = None) -> None:
        """Restart one code node as the device restarts an app's process: storage and logs kept, its
        temporary paths empty again, the rest of the application running on.

        Args:
            node: a code node started at boot.
            grace: seconds between SIGTERM and SIGKILL (default ``grace_period``).

        Raises:
            DeviceError: the appliance is off or ``node`` is not one of its running code nodes.
            SandboxError: the new sandbox could not start (the node stays stopped).
        """
        self._code_node(node)
        boot = self._require_boot()
        try:
            boot.supervisor.restart(node, self.options.grace_period if grace is None else grace)
        except EmulatorError as error:
            error.node = error.node or node
            raise

    def _power_off(self, boot: _Boot) -> None:
        clear_sandbox_records(self.store.root)
        boot.runtime.stop()
        if boot.aws is not None:
            boot.aws.close()
        self._uptime_last = time.monotonic() - boot.started
        self._boot = None

    # --- waiting -----------------------------------------------------------------------------------------

    def wait_for_frames(self, n: int, timeout: float | None = None) -> bool:
        """Wait until the HDMI output has received ``n`` outputs in this boot.

        In lockstep mode the cameras make only the frames those outputs need and then hold (until the next
        ``wait_for_frames``, ``release_frames`` or ``run_for``), and once the ``n``-th output is shown this
        waits, at most ``quiet_timeout`` seconds, until every business-logic node has finished its frame: it
        is blocked in its next ``get()`` or has exited. ``quiet_point`` then says how the wait ended. In
        realtime mode it returns at the ``n``-th output (frames may have been dropped, the app may be
        mid-frame).

        Args:
            n: outputs to wait for.
            timeout: seconds at most for the outputs; None waits as long as it takes.

        Returns:
            True once ``n`` outputs arrived; False on timeout.

        Raises:
            DeviceError: the appliance is off, the application has no HDMI output, or a node crashed before
                its first frame (the message has its exit status and last line of output).
        """
        boot = self._require_boot()
        if not self.plan.sinks:
            raise DeviceError(f"application {self.app} has no HDMI output node: no frames to wait for")
        lockstep = self.mode == "lockstep"
        if lockstep:
            boot.runtime.hold_frames(n)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            if boot.runtime.wait_for_outputs(n, step):
                break
            self._check_boot(boot)
            if deadline is not None and time.monotonic() >= deadline:
                return False
        if lockstep:
            self.quiet_point = boot.runtime.settle(
                n, self.options.quiet_timeout, lambda: self._check_boot(boot)
            )
            if not self.quiet_point.quiet:
                log.warning("%s", self.quiet_point.note)
        return True

    def _check_boot(self, boot: _Boot) -> None:
        self.check()
        if self._boot is not boot:
            raise DeviceError("the appliance was powered off while waiting for frames")

    def release_frames(self) -> None:
        """Lockstep: let the cameras that ``wait_for_frames`` held run on.

        Raises:
            DeviceError: the appliance is off.
        """
        self._require_boot().runtime.release_frames()

    def run_for(self, seconds: float) -> None:
        """Keep the appliance running for ``seconds``, watching for a node that crashes at once.

        Cameras that ``wait_for_frames`` held run on.

        Raises:
            DeviceError: the appliance is off, or a node crashed before its first frame.
        """
        self._require_boot().runtime.release_frames()
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(0.1, remaining))
            self.check()

    def check(self) -> None:
        """Raise if a node's first instance of this boot crashed before the app delivered any frame.

        Raises:
            DeviceError: with the node, its exit status, its last line of output and where its log is.
        """
        boot = self._boot
        if boot is None:
            return
        failure = boot.supervisor.first_failure()
        if failure is None or boot.runtime.frames_out > 0:
            return
        node, record = failure
        said = f": {record.last_line.strip()}" if record.last_line.strip() else ""
        where = self.store.logs_dir(self.app, node) / CONSOLE_OUTPUT
        raise DeviceError(
            f"the app exited with status {record.code} before its first frame{said} (output in {where})",
            node=node,
        )

    def _require_boot(self) -> _Boot:
        boot = self._boot
        if boot is None:
            raise DeviceError("the appliance is off: boot it first")
        return boot

    # --- figures -----------------------------------------------------------------------------------------

    def status(self) -> dict[str, object]:
        """The device's state now.

        Returns:
            ``{"device", "app", "state" (on | off), "boots", "uptime_s", "mode", "network", "routes",
            "nodes": {node: {"state", "pid", "restarts", "exit_codes", "uptime_s", "launch", "arch",
            "emulated"}}}``; ``arch`` is the CPU the node's rootfs is built for (``aarch64``, ``x86_64``;
            None before the first deploy) and ``emulated`` whether it runs through qemu-user. After a
            shutdown the nodes are those of the last boot.
        """
        boot = self._boot or self._last
        nodes: dict[str, object] = {}
        supervised = boot.supervisor.status() if boot is not None else {}
        for plan in self.plan.code_nodes:
            entry: dict[str, object] = {
                "state": "not started", "pid": None, "restarts": 0, "exit_codes": [], "uptime_s": 0.0,
            }  # fmt: skip
            entry.update(supervised.get(plan.name, {}))
            entry["launch"] = plan.launch
            machine = self._machines.get(plan.name)
            entry["arch"] = machine
            entry["emulated"] = arch.runs_emulated(machine)
            nodes[plan.name] = entry
        return {
            "device": self.device,
            "app": self.app,
            "state": "on" if self._boot is not None else "off",
            "boots": self.boots,
            "uptime_s": round(self.uptime, 3),
            "mode": self.mode,
            "network": self.network,
            "aws": self.aws,
            "routes": [route.__dict__ for route in (boot.routes if boot is not None else [])],
            "nodes": nodes,
        }

    @property
    def uptime(self) -> float:
        """Seconds since this boot (the last boot's length when off)."""
        boot = self._boot
        return time.monotonic() - boot.started if boot is not None else self._uptime_last

    def metrics(self) -> dict[str, object]:
        """The figures of the current (or last) boot, JSON-able.

        Returns:
            ``{"boots", "uptime_s", "frames_out", "mode", "nodes": {node: {fps, latency_ms, frames_in,
            frames_out, dropped, model_calls, restarts, exit_codes, ...}}, "cameras", "models", "hdmi"}``.
        """
        boot = self._boot or self._last
        figures: dict[str, object] = boot.runtime.metrics() if boot is not None else {}
        supervised = boot.supervisor.status() if boot is not None else {}
        nodes_value = figures.get("nodes")
        nodes: dict[str, Any] = dict(nodes_value) if isinstance(nodes_value, dict) else {}
        for plan in self.plan.code_nodes:
            entry = dict(nodes.get(plan.name, {}))
            state = supervised.get(plan.name, {})
            entry["restarts"] = state.get("restarts", 0)
            entry["exit_codes"] = state.get("exit_codes", [])
            entry["state"] = state.get("state", "not started")
            nodes[plan.name] = entry
        figures["nodes"] = nodes
        figures["boots"] = self.boots
        figures["uptime_s"] = round(self.uptime, 3)
        figures["mode"] = self.mode
        figures["models"] = boot.runtime.model_metrics() if boot is not None else {}
        if boot is not None and boot.aws is not None:
            figures["aws"] = boot.aws.figures()
        if self.plan.sinks and self._hdmi is not None:
            figures["hdmi"] = self._hdmi.metrics()
        return figures

    # --- pieces of a boot --------------------------------------------------------------------------------

    def _base_env(self, node: CodeNodePlan) -> dict[str, str]:
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
        env.update({variable.name: variable.value for variable in node.descriptor.environment})
        return env

    def _service(
        self,
        node: CodeNodePlan,
        launcher: ProcessLauncher,
        runtime: BootRuntime,
        run_dir: Path,
        etc: Mapping[str, Path],
        unprivileged: bool,
        aws: AwsEndpoint | None = None,
    ) -> Service:
        env = self._base_env(node)
        bridge = runtime.node_env(node.name)
        sdk_path = bridge.pop("PYTHONPATH", SDK_MOUNT)
        app_path = env.get("PYTHONPATH")
        env.update(bridge)
        env["PYTHONPATH"] = f"{sdk_path}:{app_path}" if app_path else sdk_path
        env.setdefault("PYTHONUNBUFFERED", "1")
        rootfs = self._rootfs[node.name]
        ro_files = tuple(
            (source, target) for target, source in etc.items() if (rootfs / target.lstrip("/")).is_file()
        ) + self.overlays.get(node.name, ())
        descriptor = node.descriptor
        command = (descriptor.path, *([descriptor.name] if descriptor.name else []), *descriptor.arguments)
        if aws is not None:
            env.update(aws.app_env())
            command = aws.gate(command, rootfs, env["PATH"])
        logs_dir = self.store.logs_dir(self.app, node.name)
        spec = SandboxSpec(
            rootfs=rootfs,
            command=command,
            env=env,
            hostname=self.device,
            storage_dir=self.store.storage_dir(self.app),
            logs_dir=logs_dir,
            sdk_dir=runtime.sdk_dir,
            run_dir=run_dir,
            network=self.network,
            user_namespace=unprivileged,
            ro_files=ro_files,
            inbound_ports=routed_ports(node),
            limits=self.options.limits,
            name=node.name,
        )

        record_sandbox(self.store.root, node.name, spec)

        def launch() -> LaunchedProcess:
            try:
                return launcher.launch(spec)
            except EmulatorError as error:
                error.node = error.node or node.name
                raise

        return Service(node.name, launch, logs_dir / CONSOLE_OUTPUT)

    # --- cameras -----------------------------------------------------------------------------------------

    def pause_camera(self, name: str) -> None:
        """Stop a camera: it delivers nothing until resumed or until the next boot (every boot starts it).

        Raises:
            DeviceError: the appliance is off, or it has no such camera.
        """
        self._require_boot().runtime.runtime.pause_camera(name)

    def resume_camera(self, name: str) -> None:
        """Let a paused camera deliver frames again.

        Raises:
            DeviceError: the appliance is off, or it has no such camera.
        """
        self._require_boot().runtime.runtime.resume_camera(name)
