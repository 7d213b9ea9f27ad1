"""What an appliance says about itself: typed, frozen records of its status and of a boot's figures.

``Appliance.status()`` gives a :class:`DeviceStatus` (the device, its boots and uptime, and per code node a
:class:`NodeStatus`); ``Appliance.metrics()`` gives :class:`BootFigures` (per code node
:class:`NodeFigures`, per camera :class:`CameraFigures`, per model node :class:`ModelFigures`, and the
:class:`HdmiFigures`). Every record has one ``to_json()`` (plain JSON data, the shape the run summary, the
device API and the Prometheus text render) and a ``from_json()`` that reads that shape back, which is also
how the runtime's own figures are read. Uptime is ``uptime_s`` everywhere, in seconds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from emulator.device.network import Route

__all__ = [
    "BootFigures",
    "CameraFigures",
    "DeviceStatus",
    "HdmiFigures",
    "Latency",
    "ModelFigures",
    "NodeFigures",
    "NodeStatus",
    "plain",
]

Json = dict[str, Any]


def plain(value: object) -> Any:
    """``value`` as plain JSON data: records become dicts, tuples lists, mappings dicts with string keys."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): plain(child) for key, child in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(child) for child in value]
    return value


class _Record:
    def to_json(self) -> Json:
        """The record as plain JSON data (``json.dumps`` takes it as it is)."""
        data: Json = plain(self)
        return data


def _codes(values: object) -> tuple[int, ...]:
    return tuple(int(code) for code in values) if isinstance(values, (list, tuple)) else ()


@dataclass(frozen=True)
class NodeStatus(_Record):
    """A code node's supervision state.

    Attributes:
        state: ``not started``, ``starting``, ``running``, ``backoff`` or ``stopped``.
        pid: the host pid of the app's process while it runs.
        restarts: restarts in this boot.
        exit_codes: the exit statuses of the instances that ended in this boot, oldest first.
        last_cause: the latest limit that ended an instance (``memory limit N MiB``), else None.
        uptime_s: seconds the running instance has run (0 when not running).
        instance: which start of the node this is (0 before the first).
        launch: ``onAppStart``, ``onDemand`` or ``onSignal``.
        arch: the CPU the node's root filesystem is built for (``aarch64``, ``x86_64``; None before the first
            deploy).
        emulated: the node runs through qemu-user.
    """

    state: str = "not started"
    pid: int | None = None
    restarts: int = 0
    exit_codes: tuple[int, ...] = ()
    last_cause: str | None = None
    uptime_s: float = 0.0
    instance: int = 0
    launch: str = "onAppStart"
    arch: str | None = None
    emulated: bool = False

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeStatus:
        """Read what ``to_json`` (or the supervisor's ``status()`` for one node, plus ``launch``) gives."""
        return cls(
            state=str(data["state"]),
            pid=data["pid"],
            restarts=int(data["restarts"]),
            exit_codes=_codes(data["exit_codes"]),
            last_cause=data.get("last_cause"),
            uptime_s=float(data["uptime_s"]),
            instance=int(data["instance"]),
            launch=str(data["launch"]),
            arch=data.get("arch"),
            emulated=bool(data.get("emulated", False)),
        )


@dataclass(frozen=True)
class DeviceStatus(_Record):
    """The device's state now.

    Attributes:
        device: the device name.
        app: the application name.
        state: ``on`` or ``off``.
        boots: boots of the device so far.
        uptime_s: seconds since this boot (the last boot's length when off).
        mode: ``lockstep`` or ``realtime``.
        network: ``host`` or ``none``.
        aws: what the app's AWS SDK meets: ``none``, ``host`` or ``local``.
        routes: the inbound routes of this boot (of the last one when off).
        nodes: per code node, its state (of the last boot when off).
    """

    device: str
    app: str
    state: str
    boots: int
    uptime_s: float
    mode: str
    network: str
    aws: str = "none"
    routes: tuple[Route, ...] = ()
    nodes: Mapping[str, NodeStatus] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceStatus:
        """Read what ``to_json`` gives."""
        return cls(
            device=str(data["device"]),
            app=str(data["app"]),
            state=str(data["state"]),
            boots=int(data["boots"]),
            uptime_s=float(data["uptime_s"]),
            mode=str(data["mode"]),
            network=str(data["network"]),
            aws=str(data["aws"]),
            routes=tuple(Route(**route) for route in data["routes"]),
            nodes={name: NodeStatus.from_json(node) for name, node in data["nodes"].items()},
        )


@dataclass(frozen=True)
class Latency(_Record):
    """Milliseconds from an app's ``get()`` to its ``put()`` (of the last 1000 frames); None before one."""

    p50: float | None = None
    p99: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Latency:
        """Read what ``to_json`` gives."""
        return cls(p50=data["p50"], p99=data["p99"])


@dataclass(frozen=True)
class NodeFigures(_Record):
    """A code node's figures in a boot: its supervision, and what the bridge counted of its frames and calls.

    The bridge's figures are the defaults until the node's app first connects.

    Attributes:
        state, restarts, exit_codes: as in :class:`NodeStatus`.
        connected: the app is connected to the bridge now.
        pid: the app's pid as the bridge saw it.
        sessions: connections to the bridge in this boot.
        fps: frames the app put per second, lately (None before it connected).
        latency_ms: from ``get()`` to ``put()`` (None before the app connected).
        frames_in, cached_in, frames_out, values_out: frames taken (fresh, repeated), frames and values put.
        dropped: frames the node's inputs dropped because the app was slower than its cameras.
        model_calls, model_errors: model calls the app made, and those that failed.
        errors: bad requests from the app.
        last_error: the last of those errors or failed calls.
    """

    state: str = "not started"
    restarts: int = 0
    exit_codes: tuple[int, ...] = ()
    connected: bool = False
    pid: int | None = None
    sessions: int = 0
    fps: float | None = None
    latency_ms: Latency | None = None
    frames_in: int = 0
    cached_in: int = 0
    frames_out: int = 0
    values_out: int = 0
    dropped: int = 0
    model_calls: int = 0
    model_errors: int = 0
    errors: int = 0
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NodeFigures:
        """Read what ``to_json`` gives."""
        return cls.from_parts(data, data)

    @classmethod
    def from_parts(cls, supervised: Mapping[str, Any], bridge: Mapping[str, Any] | None) -> NodeFigures:
        """The figures of a node from its supervisor's entry and the bridge's (None before it connected).

        Args:
            supervised: ``state``, ``restarts``, ``exit_codes``.
            bridge: the bridge's figures of the node (``runtime.bridge.Runtime.metrics()["nodes"][node]``).
        """
        state = str(supervised["state"])
        restarts = int(supervised["restarts"])
        exit_codes = _codes(supervised["exit_codes"])
        if bridge is None:
            return cls(state=state, restarts=restarts, exit_codes=exit_codes)
        return cls(
            state=state,
            restarts=restarts,
            exit_codes=exit_codes,
            connected=bool(bridge["connected"]),
            pid=bridge["pid"],
            sessions=int(bridge["sessions"]),
            fps=bridge["fps"],
            latency_ms=Latency.from_json(latency) if (latency := bridge["latency_ms"]) is not None else None,
            frames_in=int(bridge["frames_in"]),
            cached_in=int(bridge["cached_in"]),
            frames_out=int(bridge["frames_out"]),
            values_out=int(bridge["values_out"]),
            dropped=int(bridge["dropped"]),
            model_calls=int(bridge["model_calls"]),
            model_errors=int(bridge["model_errors"]),
            errors=int(bridge["errors"]),
            last_error=bridge["last_error"],
        )


@dataclass(frozen=True)
class CameraFigures(_Record):
    """A camera's figures in a boot.

    Attributes:
        uri: its source.
        paused: paused now.
        fps_nominal: the source's own frame rate.
        fps: frames made per second, lately.
        frames_produced, frames_dropped: frames made, and made but taken by no app before the next.
        errors, last_error: failed reads of the source.
    """

    uri: str
    paused: bool = False
    fps_nominal: float = 0.0
    fps: float = 0.0
    frames_produced: int = 0
    frames_dropped: int = 0
    errors: int = 0
    last_error: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CameraFigures:
        """Read what ``to_json`` (or the bridge, for one camera) gives."""
        return cls(
            uri=str(data["uri"]),
            paused=bool(data["paused"]),
            fps_nominal=float(data["fps_nominal"]),
            fps=float(data["fps"]),
            frames_produced=int(data["frames_produced"]),
            frames_dropped=int(data["frames_dropped"]),
            errors=int(data["errors"]),
            last_error=data["last_error"],
        )


@dataclass(frozen=True)
class ModelFigures(_Record):
    """A model node's figures in a boot: calls, failed calls, latency percentiles in milliseconds, and the
    backend that serves it (None when the model host does not say)."""

    calls: int = 0
    errors: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    backend: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModelFigures:
        """Read what ``to_json`` (or the model host, for one node) gives."""
        return cls(
            calls=int(data["calls"]),
            errors=int(data["errors"]),
            p50_ms=float(data["p50_ms"]),
            p99_ms=float(data["p99_ms"]),
            backend=data["backend"],
        )


@dataclass(frozen=True)
class HdmiFigures(_Record):
    """The HDMI output's figures since the appliance was made.

    Attributes:
        outputs: screens shown.
        streams: live viewers now.
        labels: distinct label texts shown.
        render_ms_p50, render_ms_p99: drawing time of a screen (None before one).
        recorded: frames written to the MP4 recording.
        snapshots: times ``last.png`` was written.
    """

    outputs: int = 0
    streams: int = 0
    labels: int = 0
    render_ms_p50: float | None = None
    render_ms_p99: float | None = None
    recorded: int = 0
    snapshots: int = 0

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HdmiFigures:
        """Read what ``to_json`` (or ``HdmiSink.metrics()``) gives."""
        return cls(
            outputs=int(data["outputs"]),
            streams=int(data["streams"]),
            labels=int(data["labels"]),
            render_ms_p50=data["render_ms_p50"],
            render_ms_p99=data["render_ms_p99"],
            recorded=int(data["recorded"]),
            snapshots=int(data["snapshots"]),
        )


@dataclass(frozen=True)
class BootFigures(_Record):
    """The figures of the current (or last) boot.

    Attributes:
        boots: boots of the device so far.
        uptime_s: seconds since this boot (the last boot's length when off).
        mode: ``lockstep`` or ``realtime``.
        frames_out: outputs the HDMI node received in this boot.
        nodes: per code node.
        cameras: per camera node (none before the first boot).
        models: per model node (none before the first boot).
        hdmi: the HDMI output; None when the app has none (or nothing was shown or asked of it yet).
        aws: the boot's AWS endpoint as it reports itself (``mode``; with ``local`` also ``cloudwatch``, the
            metrics the app put); None with ``aws="none"``.
    """

    boots: int
    uptime_s: float
    mode: str
    frames_out: int = 0
    nodes: Mapping[str, NodeFigures] = field(default_factory=dict)
    cameras: Mapping[str, CameraFigures] = field(default_factory=dict)
    models: Mapping[str, ModelFigures] = field(default_factory=dict)
    hdmi: HdmiFigures | None = None
    aws: Mapping[str, Any] | None = None

    @property
    def dropped_frames(self) -> int:
        """Frames dropped at the inputs of every code node."""
        return sum(node.dropped for node in self.nodes.values())

    @property
    def restarts(self) -> int:
        """Restarts of every code node."""
        return sum(node.restarts for node in self.nodes.values())

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BootFigures:
        """Read what ``to_json`` gives."""
        hdmi = data["hdmi"]
        return cls(
            boots=int(data["boots"]),
            uptime_s=float(data["uptime_s"]),
            mode=str(data["mode"]),
            frames_out=int(data["frames_out"]),
            nodes={name: NodeFigures.from_json(node) for name, node in data["nodes"].items()},
            cameras={name: CameraFigures.from_json(camera) for name, camera in data["cameras"].items()},
            models={name: ModelFigures.from_json(model) for name, model in data["models"].items()},
            hdmi=HdmiFigures.from_json(hdmi) if hdmi is not None else None,
            aws=data["aws"],
        )
