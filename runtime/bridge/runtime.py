"""The appliance side of every app of one boot: bridges, camera feeds, HDMI delivery and their figures."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

from emulator.errors import DeviceError
from runtime.bridge.cameras import MODES, CameraFeed
from runtime.bridge.contracts import FrameSink, ModelCaller, PlanSpec
from runtime.bridge.frames import REALTIME_DEPTH, Ring, SlotPool
from runtime.bridge.metrics import CameraStats, NodeStats
from runtime.bridge.server import NodeServer
from runtime.media.camera import CameraSource
from runtime.media.overlay import Output
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["SDK_DIR", "Runtime"]

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk"
"""Host directory holding the ``panoramasdk`` package (mounted at ``/opt/panorama-emulator/sdk``)."""

_NODE_NAME = re.compile(r"^[$A-Za-z0-9_\-]{1,128}$")
_STOP_TIMEOUT = 2.0


class Runtime:
    """Serves the code nodes of one application plan for one boot of the appliance.

    Each code node gets a bridge socket ``<run_dir>/<node>.sock``; frames travel through shared-memory slots
    (memfds the app receives over that socket). Cameras feed the nodes in ``lockstep`` (a camera advances
    only when every app watching it has taken its frame: deterministic, nothing dropped) or ``realtime``
    (cameras run at their fps; a slow app drops frames, counted).

    Args:
        plan: the application plan (a :class:`~runtime.bridge.contracts.PlanSpec`: ``emulator.plan.AppPlan``).
        run_dir: host directory for the sockets (mounted in sandboxes at ``/opt/panorama-emulator/run``).
        cameras: camera node -> its source. The runtime reads them; their owner closes them after ``stop``.
        hdmi: where frames put on outputs connected to the HDMI node are shown, or None to count and drop.
        models: runs model nodes for ``node.call``, or None (calls then fail with a clear message).
        mode: ``lockstep`` or ``realtime``.

    Raises:
        DeviceError: unknown mode, a code node name unfit for a file name, or a camera with no source.
    """

    def __init__(
        self,
        plan: PlanSpec,
        run_dir: Path,
        *,
        cameras: Mapping[str, CameraSource],
        hdmi: FrameSink | None,
        models: ModelCaller | None,
        mode: str = "lockstep",
    ) -> None:
        if mode not in MODES:
            raise DeviceError(f"unknown camera mode {mode!r}: expected lockstep or realtime")
        self.plan = plan
        self.run_dir = Path(run_dir)
        self.mode = mode
        self._hdmi = hdmi
        self._hdmi_lock = threading.Lock()
        self._cond = threading.Condition()
        self._pool = SlotPool()
        self._frames_out = 0
        self._started = False
        self._stopped = False
        self._started_at = 0.0
        self._node_stats: dict[str, NodeStats] = {}
        self._camera_stats: dict[str, CameraStats] = {}
        self._sources = dict(cameras)
        camera_rings: dict[str, list[Ring]] = {name: [] for name in self._sources}
        node_rings: dict[str, dict[str, list[Ring]]] = {}
        for spec in plan.code_nodes:
            if not _NODE_NAME.match(spec.name):
                raise DeviceError("a code node name must be 1-128 of A-Z a-z 0-9 $ _ -", node=spec.name)
            rings: dict[str, list[Ring]] = {}
            for port, camera_names in spec.media_inputs.items():
                rings[port] = []
                for camera in camera_names:
                    if camera not in self._sources:
                        raise DeviceError(
                            f"camera node {camera} feeds {spec.name}.{port} but has no camera source",
                            node=camera,
                        )
                    depth = REALTIME_DEPTH if mode == "realtime" else 1
                    ring = Ring(spec.name, port, camera, self._pool, depth=depth)
                    ring.required = spec.launch == "onAppStart"
                    rings[port].append(ring)
                    camera_rings[camera].append(ring)
            node_rings[spec.name] = rings
            self._node_stats[spec.name] = NodeStats()
        self._rings = node_rings
        self._feeds = {
            name: CameraFeed(
                name,
                source,
                camera_rings[name],
                mode=mode,
                cond=self._cond,
                stats=self._camera_stats.setdefault(name, CameraStats()),
            )
            for name, source in self._sources.items()
        }
        model_inputs = {model.name: [item.name for item in model.descriptor.inputs] for model in plan.models}
        uris = {name: str(source.uri) for name, source in self._sources.items()}
        self._outputs = {
            spec.name: {port: tuple(sinks) for port, sinks in spec.outputs.items()}
            for spec in plan.code_nodes
        }
        self._servers = {
            spec.name: NodeServer(
                spec,
                self.run_dir / f"{spec.name}.sock",
                cond=self._cond,
                rings=node_rings[spec.name],
                pool=self._pool,
                stats=self._node_stats[spec.name],
                models=models,
                model_inputs=model_inputs,
                stream_uris=uris,
                mode=mode,
                deliver=self._deliver,
            )
            for spec in plan.code_nodes
        }

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the bridge sockets and start the cameras.

        Raises:
            DeviceError: already started, or a socket cannot be created.
        """
        if self._started:
            raise DeviceError("the runtime is already started")
        self._started = True
        self._started_at = time.monotonic()
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for name, server in self._servers.items():
                try:
                    server.start()
                except OSError as error:
                    raise DeviceError(
                        f"cannot create the bridge socket {server.path}: {error.strerror or error}", node=name
                    ) from None
        except BaseException:
            self.stop()
            raise
        for feed in self._feeds.values():
            feed.start()

    def stop(self) -> None:
        """Close every bridge (apps see the appliance go and exit), stop the cameras, free the frame slots.

        Safe to call more than once. Camera sources are not closed.
        """
        if self._stopped:
            return
        self._stopped = True
        with self._cond:
            for feed in self._feeds.values():
                feed.stop()
            self._cond.notify_all()
        for server in self._servers.values():
            server.stop()
        deadline = time.monotonic() + _STOP_TIMEOUT
        for feed in self._feeds.values():
            feed.join(max(0.0, deadline - time.monotonic()))
        with self._cond:
            for rings in self._rings.values():
                for port_rings in rings.values():
                    for ring in port_rings:
                        ring.clear()
            self._pool.close()
            self._cond.notify_all()

    def __enter__(self) -> Runtime:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # --- what the appliance asks -------------------------------------------------------------------------

    def node_env(self, node: str, *, sandbox_paths: bool = True) -> dict[str, str]:
        """Environment variables the app of ``node`` needs to reach its bridge.

        Args:
            node: a code node of the plan.
            sandbox_paths: paths as seen inside the sandbox (default); False gives host paths, for running an
                app as a plain process.

        Returns:
            ``PANORAMA_EMULATOR_BRIDGE``, ``PANORAMA_EMULATOR_NODE`` and ``PYTHONPATH`` (the SDK directory
            alone: put the app's own entries after it).

        Raises:
            DeviceError: ``node`` is not a code node of the plan.
        """
        if node not in self._servers:
            raise DeviceError("not a code node of the application", node=node)
        if sandbox_paths:
            run, sdk = P.SANDBOX_RUN_DIR, P.SANDBOX_SDK_DIR
        else:
            run, sdk = str(self.run_dir), str(SDK_DIR)
        return {P.ENV_BRIDGE: f"{run}/{node}.sock", P.ENV_NODE: node, "PYTHONPATH": sdk}

    @property
    def frames_out(self) -> int:
        """Outputs delivered to the HDMI sink so far (counted even when there is no sink)."""
        with self._cond:
            return self._frames_out

    def wait_for_outputs(self, n: int, timeout: float | None) -> bool:
        """Wait until at least ``n`` outputs have been delivered.

        While cameras are held (:meth:`hold_frames`) and every node is quiet short of ``n`` outputs (an app
        that does not put one output per frame), the hold is moved on by the outputs still missing.

        Args:
            n: the number of outputs to wait for.
            timeout: seconds to wait at most (None: until done or stopped).

        Returns:
            True when ``frames_out >= n``; False on timeout or when the runtime stops.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._frames_out < n and not self._stopped:
                held = [feed for feed in self._feeds.values() if feed.limit is not None and feed.rings]
                if held and all(feed.at_limit and not feed.paused for feed in held) and not self._busy():
                    for feed in held:
                        feed.set_limit(feed.stats.produced + n - self._frames_out)
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._frames_out >= n

    def hold_frames(self, n: int) -> None:
        """Lockstep: let each camera make only the frames that ``n`` outputs of this boot need, then hold.

        A camera already past that stops where it is. Realtime cameras are never held.

        Args:
            n: the outputs the frames are for (one frame of each camera per output).
        """
        if self.mode != "lockstep":
            return
        with self._cond:
            for feed in self._feeds.values():
                feed.set_limit(max(n, feed.stats.produced))

    def release_frames(self) -> None:
        """Let held cameras run on."""
        with self._cond:
            for feed in self._feeds.values():
                feed.set_limit(None)

    def busy_nodes(self) -> list[str]:
        """The code nodes that are not quiet: neither waiting in ``get`` for a frame that is not there, nor
        gone (a node that starts at boot and has not connected yet is busy)."""
        with self._cond:
            return self._busy()

    def wait_for_quiet(self, timeout: float | None) -> bool:
        """Wait until every code node is quiet (see :meth:`busy_nodes`).

        Args:
            timeout: seconds to wait at most (None: until quiet or stopped).

        Returns:
            True when every node is quiet; False on timeout or when the runtime stops.
        """
        with self._cond:
            self._cond.wait_for(lambda: self._stopped or not self._busy(), timeout)
            return not self._stopped and not self._busy()

    def _busy(self) -> list[str]:
        return [name for name, server in self._servers.items() if not server.quiet]

    def pause_camera(self, name: str) -> None:
        """Stop a camera: it delivers nothing until resumed (a ``get`` on it alone blocks or times out).

        Raises:
            DeviceError: no such camera.
        """
        self._feed(name, paused=True)

    def resume_camera(self, name: str) -> None:
        """Let a paused camera deliver frames again.

        Raises:
            DeviceError: no such camera.
        """
        self._feed(name, paused=False)

    def _feed(self, name: str, *, paused: bool) -> None:
        feed = self._feeds.get(name)
        if feed is None:
            raise DeviceError("no such camera", node=name)
        with self._cond:
            feed.set_paused(paused)

    def metrics(self) -> dict[str, object]:
        """The figures of this boot so far, JSON-able.

        Returns:
            ``{"mode", "uptime_s", "frames_out", "nodes": {node: {...}}, "cameras": {camera: {...}}}``;
            a node has ``connected``, ``pid``, ``sessions``, ``restarts``, ``fps``, ``latency_ms``
            (``p50``/``p99`` from get to put), ``frames_in``, ``cached_in``, ``frames_out``, ``dropped``,
            ``model_calls``, ``model_errors``, ``errors``, ``last_error``; a camera has ``uri``, ``paused``,
            ``fps_nominal``, ``fps``, ``frames_produced``, ``frames_dropped``, ``errors``, ``last_error``.
        """
        with self._cond:
            nodes: dict[str, object] = {}
            for name, stats in self._node_stats.items():
                dropped = sum(ring.dropped for rings in self._rings[name].values() for ring in rings)
                nodes[name] = stats.snapshot(dropped)
            cameras: dict[str, object] = {}
            for name, feed in self._feeds.items():
                entry = {
                    "uri": str(feed.source.uri),
                    "paused": feed.paused,
                    "fps_nominal": float(feed.source.fps),
                }
                entry.update(feed.stats.snapshot())
                cameras[name] = entry
            uptime = time.monotonic() - self._started_at if self._started else 0.0
            return {
                "mode": self.mode,
                "uptime_s": round(uptime, 3),
                "frames_out": self._frames_out,
                "nodes": nodes,
                "cameras": cameras,
            }

    @property
    def slot_ids(self) -> list[int]:
        """The numbers of the frame slots (memfds) this runtime has now."""
        with self._cond:
            return self._pool.ids

    # --- delivery ----------------------------------------------------------------------------------------

    def _deliver(self, node: str, port: str, outputs: Sequence[Output]) -> bool:
        if not self._outputs.get(node, {}).get(port):
            return False
        if self._hdmi is not None:
            with self._hdmi_lock:
                self._hdmi.show(outputs)
        with self._cond:
            self._frames_out += 1
            self._cond.notify_all()
        return True
