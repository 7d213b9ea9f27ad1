"""The appliance: deploy an application to an emulated device, then boot, reboot, power-cut and watch it.

``Appliance`` is the Python API that the CLI's ``run``, the HTTP API and the pytest plugin sit on. Each boot:
temporary paths and the run directory start empty, the cameras, HDMI delivery and model nodes come up
(``runtime``), then every ``onAppStart`` business-logic node starts in its own sandbox, supervised and
restarted with backoff when it ends. Storage and logs stay from one boot to the next; so does the boot count.

How it runs is one ``ApplianceOptions`` (``emulator.device.options``); what it says of itself are the records
of ``emulator.device.figures`` (``status()``, ``metrics()``). Power cut then boot (``power_cycle``) and
following a node's log (``follow_logs``) are here too: the CLI, the device API and the plugin call them.
Deploying assets and building a node's sandbox service are in ``emulator.device.services``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from emulator.device import arch
from emulator.device.aws import start_aws
from emulator.device.boot_files import count_boot, read_boot_count
from emulator.device.figures import (
    BootFigures,
    CameraFigures,
    DeviceStatus,
    HdmiFigures,
    ModelFigures,
    NodeFigures,
    NodeStatus,
)
from emulator.device.limits import limits_in_force
from emulator.device.log_follower import LogFollower
from emulator.device.network import open_routes
from emulator.device.options import ApplianceOptions
from emulator.device.records import clear_sandbox_records
from emulator.device.sandbox import BwrapLauncher, ProcessLauncher, check_user_namespaces
from emulator.device.services import (
    CONSOLE_OUTPUT,
    Boot,
    BootPlace,
    Echo,
    camera_sources,
    deploy_assets,
    exit_line,
    node_service,
)
from emulator.device.store import DeviceStore
from emulator.device.supervisor import Supervisor, read_rotated
from emulator.device.volume import StorageVolume
from emulator.errors import DeviceError, EmulatorError
from emulator.plan import AppPlan, CodeNodePlan, plan_application
from emulator.project import Project

if TYPE_CHECKING:
    from emulator.device.runtime_link import QuietPoint

__all__ = ["Appliance"]

log = logging.getLogger(__name__)


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
        self.cameras = camera_sources(self.plan, options.cameras)
        self.quiet_point: QuietPoint | None = None
        """How the last lockstep ``wait_for_frames`` of this boot ended (None before one)."""
        self.app_ended: str | None = None
        """Why the last ``wait_for_frames`` returned False before its timeout: the app ended for good."""
        self._launcher = launcher
        self._echo = Echo(None if options.quiet else sys.stdout, on_line)
        self._rootfs: dict[str, Path] = {}
        self._machines: dict[str, str] = {}  # code node -> its rootfs's CPU (aarch64 runs through qemu-user)
        self._hdmi: Any = None
        self._hdmi_made = False
        self._boot: Boot | None = None
        self._last: Boot | None = None
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
        """``app``, ``host`` or ``none``."""
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
        """Host directory of the app's storage (``/opt/aws/panorama/storage`` inside); while the device is on
        with a storage quota, its sized filesystem is mounted there (``emulator.device.volume``)."""
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

    def follow_logs(self, node: str, file: str | None = None, *, from_start: bool = False) -> LogFollower:
        """Follow a code node's console output (or another file of its log folder) as it grows.

        The follower goes on across rotations and boots; close it when done.

        Args:
            node: a code node of the application.
            file: a plain file name in the node's log folder, such as the ``app.log`` the app writes; None
                for ``console_output`` (what the node printed).
            from_start: read what the file already holds too (default: only what is written from now on).

        Returns:
            The follower; ``read_new()`` gives the lines written since the last call.

        Raises:
            DeviceError: ``node`` is not a code node, or ``file`` is not a plain file name.
        """
        folder = self.logs_path(node)
        name = CONSOLE_OUTPUT if file is None else file
        if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
            raise DeviceError("a log file is named by its plain name, such as app.log", file=name[:100])
        return LogFollower(folder / name, from_start=from_start)

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
        if not self._rootfs:
            self._rootfs, self._machines = deploy_assets(
                self.plan, self.project, self.store, progress=not self.options.quiet
            )

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
            # Imported here: the runtime (OpenCV, numpy) is only needed once a device boots.
            from emulator.device.runtime_link import start_runtime

            with contextlib.ExitStack() as undo:
                held = self.store.hold()
                undo.callback(os.close, held)
                number = count_boot(self.store.root)
                started = time.monotonic()
                self.quiet_point = None
                run_dir = self.store.reset_run_dir()
                clear_sandbox_records(self.store.root)
                aws = start_aws(self.aws, run_dir, network=self.network)
                if aws is not None:
                    undo.callback(aws.close)
                volume = StorageVolume(self.storage_path, self.options.limits.storage_mib)
                volume.open()
                undo.callback(volume.close)
                place = BootPlace.prepare(self.store, self.app, self.options, run_dir, unprivileged)
                runtime = start_runtime(
                    self.plan,
                    run_dir,
                    cameras=self.cameras,
                    hdmi=self.hdmi if self.plan.sinks else None,
                    model_dirs={model.name: self._rootfs[model.name] for model in self.plan.models},
                    mode=self.mode,
                )
                undo.callback(runtime.stop)
                starting = [node for node in self.plan.code_nodes if node.starts_at_boot]
                services = [
                    node_service(node, self._rootfs[node.name], place, runtime, launcher, self.overlays, aws)
                    for node in starting
                ]
                supervisor = Supervisor(
                    services,
                    backoff=self.options.backoff,
                    grace=self.options.grace_period,
                    echo=self._echo,
                    restart_on_exit=self.options.restart_on_exit,
                )
                undo.callback(supervisor.kill)
                supervisor.start()
                routes, forwarders = open_routes(
                    starting,
                    network=self.network,
                    listen_host=self.options.inbound_host,
                    process_of=supervisor.process,
                )
                undo.pop_all()  # booted: shutdown and power_cut stop it from now on
            self._boot = Boot(number, started, supervisor, runtime, forwarders, routes, volume, held, aws)
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

    def power_cycle(self) -> None:
        """Pull the plug, then power on again (``power_cut`` then ``boot``), as a device's power button does.

        Raises:
            EmulatorError: as ``boot`` does; the device then stays off.
        """
        with self._lock:
            self.power_cut()
            self.boot()

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

    def _power_off(self, boot: Boot) -> None:
        clear_sandbox_records(self.store.root)
        boot.runtime.stop()
        if boot.aws is not None:
            boot.aws.close()
        self._uptime_last = time.monotonic() - boot.started
        self._boot = None
        try:
            boot.volume.close()
        finally:
            os.close(boot.held)

    # --- waiting -----------------------------------------------------------------------------------------

    def wait_for_frames(self, n: int, timeout: float | None = None) -> bool:
        """Wait until the HDMI output has received ``n`` outputs in this boot.

        In lockstep mode the cameras make only the frames those outputs need and then hold (until the next
        ``wait_for_frames``, ``release_frames`` or ``run_for``), and once the ``n``-th output is shown this
        waits, at most ``quiet_timeout`` seconds, until every business-logic node has finished its frame: it
        is blocked in its next ``get()`` or has exited. ``quiet_point`` then says how the wait ended. In
        realtime mode it returns at the ``n``-th output (frames may have been dropped, the app may be
        mid-frame). Once every code node has ended for good (``restart_on_exit`` off) it returns False and
        ``app_ended`` says how.

        Args:
            n: outputs to wait for.
            timeout: seconds at most for the outputs; None waits as long as it takes.

        Returns:
            True once ``n`` outputs arrived; False on timeout or when the app ended for good.

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
        self.app_ended = None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            step = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
            if boot.runtime.wait_for_outputs(n, step):
                break
            self._check_boot(boot)
            ended = boot.supervisor.ended()
            if ended is not None and not boot.runtime.wait_for_outputs(n, 0.1):  # the last may be on its way
                before = f"frame {boot.runtime.frames_out + 1} and is not restarted"
                self.app_ended = f"node {ended[0]}: {exit_line(self.store, self.app, *ended, before)}"
                return False
            if deadline is not None and time.monotonic() >= deadline:
                return False
        if lockstep:
            self.quiet_point = boot.runtime.settle(
                n, self.options.quiet_timeout, lambda: self._check_boot(boot)
            )
            if not self.quiet_point.quiet:
                log.warning("%s", self.quiet_point.note)
        return True

    def _check_boot(self, boot: Boot) -> None:
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
        raise DeviceError(exit_line(self.store, self.app, *failure, "its first frame"), node=failure[0])

    def _require_boot(self) -> Boot:
        boot = self._boot
        if boot is None:
            raise DeviceError("the appliance is off: boot it first")
        return boot

    # --- figures -----------------------------------------------------------------------------------------

    def status(self) -> DeviceStatus:
        """The device's state now; after a shutdown the nodes and routes are those of the last boot.

        A node's ``arch`` is the CPU its rootfs is built for (``aarch64``, ``x86_64``; None before the first
        deploy) and ``emulated`` whether it runs through qemu-user.
        """
        boot = self._boot or self._last
        supervised = boot.supervisor.status() if boot is not None else {}
        nodes = {
            plan.name: dataclasses.replace(
                NodeStatus.from_json({**supervised[plan.name], "launch": plan.launch})
                if plan.name in supervised
                else NodeStatus(launch=plan.launch),
                arch=self._machines.get(plan.name),
                emulated=arch.runs_emulated(self._machines.get(plan.name)),
            )
            for plan in self.plan.code_nodes
        }
        return DeviceStatus(
            device=self.device,
            app=self.app,
            state="on" if self._boot is not None else "off",
            boots=self.boots,
            uptime_s=round(self.uptime, 3),
            mode=self.mode,
            network=self.network,
            aws=self.aws,
            routes=tuple(boot.routes) if boot is not None else (),
            nodes=nodes,
        )

    @property
    def uptime(self) -> float:
        """Seconds since this boot (the last boot's length when off)."""
        boot = self._boot
        return time.monotonic() - boot.started if boot is not None else self._uptime_last

    def metrics(self) -> BootFigures:
        """The figures of the current (or last) boot: per code node, camera and model node, and the HDMI."""
        boot = self._boot or self._last
        sink = self._hdmi if self.plan.sinks else None
        hdmi = HdmiFigures.from_json(sink.metrics()) if sink is not None else None
        figures = BootFigures(boots=self.boots, uptime_s=round(self.uptime, 3), mode=self.mode, hdmi=hdmi)
        if boot is None:
            nodes = {plan.name: NodeFigures() for plan in self.plan.code_nodes}
            return dataclasses.replace(figures, nodes=nodes)
        bridge = boot.runtime.metrics()
        supervised = boot.supervisor.status()
        not_started = dataclasses.asdict(NodeFigures())
        return dataclasses.replace(
            figures,
            frames_out=int(bridge["frames_out"]),
            nodes={
                plan.name: NodeFigures.from_parts(
                    supervised.get(plan.name, not_started), bridge["nodes"].get(plan.name)
                )
                for plan in self.plan.code_nodes
            },
            cameras={name: CameraFigures.from_json(camera) for name, camera in bridge["cameras"].items()},
            models={
                name: ModelFigures.from_json(model) for name, model in boot.runtime.model_metrics().items()
            },
            aws=boot.aws.figures() if boot.aws is not None else None,
        )

    # --- cameras -----------------------------------------------------------------------------------------

    def pause_camera(self, name: str) -> None:
        """Stop a camera: it delivers nothing until resumed or until the next boot (every boot starts it).

        Raises:
            DeviceError: the appliance is off, or it has no such camera.
        """
        self._require_boot().runtime.pause_camera(name)

    def resume_camera(self, name: str) -> None:
        """Let a paused camera deliver frames again.

        Raises:
            DeviceError: the appliance is off, or it has no such camera.
        """
        self._require_boot().runtime.resume_camera(name)
