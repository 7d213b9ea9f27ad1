"""The pieces of an appliance's boot: its assets deployed into the device, and its code nodes as services.

``deploy_assets`` installs and unpacks every asset of a plan once per appliance; ``node_service`` turns a
code node into the supervised ``Service`` that launches its sandbox (environment, mounts, command);
``Echo`` writes what the apps print to the terminal and to a listener; ``exit_line`` says how a node ended.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from emulator.device import arch
from emulator.device.boot_files import etc_files
from emulator.device.limits import Limits
from emulator.device.netstack import app_resolver
from emulator.device.network import routed_ports
from emulator.device.options import ApplianceOptions
from emulator.device.records import record_sandbox, record_sandbox_start
from emulator.device.sandbox import DEFAULT_PATH, SDK_MOUNT, LaunchedProcess, ProcessLauncher, SandboxSpec
from emulator.device.store import DeviceStore
from emulator.device.supervisor import ExitRecord, Service, Supervisor
from emulator.errors import AssetError, DeviceError, EmulatorError, ProjectError
from emulator.plan import AppPlan, CodeNodePlan, ModelPlan
from emulator.project import Project

if TYPE_CHECKING:
    from emulator.device.aws import AwsEndpoint
    from emulator.device.network import PortForwarder, Route
    from emulator.device.runtime_link import BootRuntime
    from emulator.device.volume import StorageVolume

__all__ = [
    "CONSOLE_OUTPUT",
    "Boot",
    "BootPlace",
    "Echo",
    "base_env",
    "camera_sources",
    "deploy_assets",
    "exit_line",
    "node_service",
]

CONSOLE_OUTPUT = "console_output"
"""The file, in a node's log folder, that holds what the node printed."""


class Echo:
    """Writes app output to a terminal, one line at a time prefixed by the node name, and to a listener.

    Args:
        stream: the terminal, or None to write nowhere.
        listener: called with (node, line) for every line, or None.
    """

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


def exit_line(store: DeviceStore, app: str, node: str, record: ExitRecord, before: str) -> str:
    """One line on how an instance of a code node ended: its status, its last line and where its output is.

    Args:
        store: the device.
        app: the application.
        node: the code node.
        record: how the instance ended.
        before: what it ended before (``its first frame``, ``frame 3 and is not restarted``).

    Returns:
        ``the app exited with status N before ...: last line (output in ...)``.
    """
    said = f": {record.last_line.strip()}" if record.last_line.strip() else ""
    where = store.logs_dir(app, node) / CONSOLE_OUTPUT
    return f"the app exited with status {record.code} before {before}{said} (output in {where})"


def base_env(node: CodeNodePlan) -> dict[str, str]:
    """The environment of a code node's app before the bridge's variables: defaults, then its descriptor's."""
    env = {"PATH": DEFAULT_PATH, "HOME": "/root", "LANG": "C.UTF-8"}
    env.update({variable.name: variable.value for variable in node.descriptor.environment})
    return env


def _model_file(project: Project, model: ModelPlan, uri: str) -> Path:
    """A model asset's file in the project; if it went since the graph was read, how to put it back."""
    try:
        return project.asset_path(uri)
    except ProjectError:
        try:
            hint = "; " + project.add_raw_model_hint(model.asset, project.package_dir(model.package))
        except ProjectError:
            hint = ""
        raise ProjectError(
            f"the model asset {model.asset} is missing: {uri} is not in {project.assets_dir}{hint}",
            node=model.name,
            asset=uri,
        ) from None


def deploy_assets(
    plan: AppPlan, project: Project, store: DeviceStore, *, progress: bool
) -> tuple[dict[str, Path], dict[str, str]]:
    """Install every asset of the application into the device and unpack it (verified: SHA-256 = name).

    Args:
        plan: the application plan.
        project: the project the assets come from.
        store: the device's state directory.
        progress: show unpacking progress.

    Returns:
        Per code node its unpacked root filesystem and per model node its model directory; and per code
        node the CPU its root filesystem is built for (``aarch64``, ``x86_64``).

    Raises:
        ProjectError: an asset file is missing from the project.
        AssetError: an asset is corrupted or cannot be unpacked (a model asset's error names its node).
        SandboxError: an entry point is missing from its rootfs or built for a CPU this host cannot run.
    """
    unpacked: dict[str, Path] = {}
    machines: dict[str, str] = {}
    for node in plan.code_nodes:
        store.install_asset(project.asset_path(node.asset_uri), project.asset_path(node.descriptor_uri))
        rootfs = store.rootfs(node.asset_uri, progress=progress)
        search_path = base_env(node)["PATH"]
        machines[node.name] = arch.check_architecture(
            rootfs, node.descriptor.path, search_path, node=node.name
        )
        unpacked[node.name] = rootfs
    for model in plan.models:
        try:
            store.install_asset(
                _model_file(project, model, model.asset_uri),
                _model_file(project, model, model.descriptor_uri),
            )
            # A model asset is files only: no mount points for a sandbox.
            unpacked[model.name] = store.rootfs(model.asset_uri, progress=progress, mount_points=())
        except AssetError as error:
            error.node = error.node or model.name
            raise
    return unpacked, machines


def camera_sources(plan: AppPlan, given: Mapping[str, str]) -> dict[str, str]:
    """Each camera node's source: the one given for it, else ``synthetic``.

    Raises:
        DeviceError: a source is given for a node that is not a camera node of the application.
    """
    names = {camera.name for camera in plan.cameras}
    for name in given:
        if name not in names:
            known = ", ".join(sorted(names)) or "none"
            raise DeviceError(f"no camera node {name!r} in the application (camera nodes: {known})")
    return {camera.name: given.get(camera.name, "synthetic") for camera in plan.cameras}


@dataclass
class Boot:
    """What one boot holds while the appliance is on."""

    number: int
    started: float
    supervisor: Supervisor
    runtime: BootRuntime
    forwarders: list[PortForwarder]
    routes: list[Route]
    volume: StorageVolume
    held: int
    """The descriptor that holds the device's lock (``DeviceStore.hold``) while it is on."""
    aws: AwsEndpoint | None = None


@dataclass(frozen=True)
class BootPlace:
    """Where one boot's code nodes run.

    Attributes:
        app: the application name.
        device: the device name (the sandboxes' hostname).
        network: ``app``, ``host`` or ``none``.
        store: the device's state directory (storage and logs).
        run_dir: this boot's run directory (bridge sockets).
        etc: ``/etc`` files of the device, by path inside.
        unprivileged: the emulator is not root (sandboxes get a user namespace).
        limits: memory and process limits of each app.
    """

    app: str
    device: str
    network: str
    store: DeviceStore
    run_dir: Path
    etc: Mapping[str, Path]
    unprivileged: bool
    limits: Limits

    @classmethod
    def prepare(
        cls, store: DeviceStore, app: str, options: ApplianceOptions, run_dir: Path, unprivileged: bool
    ) -> BootPlace:
        """The place of a boot about to start: the device's ``/etc`` files written for it (with the network
        stack's resolver when the app has a network of its own)."""
        etc = etc_files(store.root, options.device)
        if options.network == "app":
            etc = app_resolver(etc, store.root / "etc")
        return cls(app, options.device, options.network, store, run_dir, etc, unprivileged, options.limits)


def node_service(
    node: CodeNodePlan,
    rootfs: Path,
    place: BootPlace,
    runtime: BootRuntime,
    launcher: ProcessLauncher,
    overlays: Mapping[str, tuple[tuple[Path, str], ...]] | None = None,
    aws: AwsEndpoint | None = None,
) -> Service:
    """A code node as a supervised service: each start launches its sandbox afresh.

    How the sandbox is made is recorded in the device's state directory (for ``shell``), and at each start
    which sandbox runs now.

    Args:
        node: the code node.
        rootfs: its unpacked root filesystem.
        place: where this boot runs.
        runtime: this boot's runtime (the bridge's environment for the node, the SDK).
        launcher: starts sandboxes.
        overlays: per node, ``(host path, image path)`` read-only binds laid over the root filesystem.
        aws: this boot's AWS endpoint (its environment and gate for the app), if any.

    Returns:
        The service; its output goes to the node's ``console_output``.
    """
    env = base_env(node)
    bridge = runtime.node_env(node.name)
    sdk_path = bridge.pop("PYTHONPATH", SDK_MOUNT)
    app_path = env.get("PYTHONPATH")
    env.update(bridge)
    env["PYTHONPATH"] = f"{sdk_path}:{app_path}" if app_path else sdk_path
    env.setdefault("PYTHONUNBUFFERED", "1")
    ro_files = tuple(
        (source, target) for target, source in place.etc.items() if (rootfs / target.lstrip("/")).is_file()
    ) + (overlays or {}).get(node.name, ())
    descriptor = node.descriptor
    command = (descriptor.path, *([descriptor.name] if descriptor.name else []), *descriptor.arguments)
    if aws is not None:
        env.update(aws.app_env())
        command = aws.gate(command, rootfs, env["PATH"])
    logs_dir = place.store.logs_dir(place.app, node.name)
    spec = SandboxSpec(
        rootfs=rootfs,
        command=command,
        env=env,
        hostname=place.device,
        storage_dir=place.store.storage_dir(place.app),
        logs_dir=logs_dir,
        sdk_dir=runtime.sdk_dir,
        run_dir=place.run_dir,
        network=place.network,
        user_namespace=place.unprivileged,
        ro_files=ro_files,
        inbound_ports=routed_ports(node),
        limits=place.limits,
        name=node.name,
    )
    record_sandbox(place.store.root, node.name, spec)

    def launch() -> LaunchedProcess:
        try:
            process = launcher.launch(spec)
        except EmulatorError as error:
            error.node = error.node or node.name
            raise
        init_pid = getattr(process, "init_pid", None)
        if isinstance(init_pid, int):
            record_sandbox_start(place.store.root, node.name, init_pid)
        return process

    return Service(node.name, launch, logs_dir / CONSOLE_OUTPUT)
