"""The appliance's end of one code node's bridge: a unix socket server speaking the bridge protocol.

One :class:`NodeServer` per code node listens on ``<run dir>/<node>.sock``. The app's watch connection
opens a *session* (a restarted app gets a fresh one; the previous one is closed); its end, however the app
died, releases every slot the app held within moments. Each of the app's request connections is served by
its own thread: ``get`` waits for frames (under the runtime's condition), ``put`` hands frames to the
HDMI output straight from their slots, ``buffer`` and ``lost`` go to the connection's call service
(:mod:`runtime.bridge.calls`): model calls themselves go from the app to the model server on a channel that
service lends, never through here.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import one_line
from runtime.bridge.calls import CallService
from runtime.bridge.contracts import CodeNodeSpec, ModelCaller
from runtime.bridge.frames import Ring, Slot, SlotPool
from runtime.bridge.metrics import NodeStats
from runtime.media.overlay import Output
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["Deliver", "NodeServer"]

Deliver = Callable[[str, str, list[Output]], bool]
"""``deliver(node, port, outputs) -> shown``: shows put frames on the node's sinks."""

_JOIN_TIMEOUT = 2.0
_log = logging.getLogger(__name__)


class _Session:
    def __init__(self, pid: int | None) -> None:
        self.id = uuid.uuid4().hex
        self.pid = pid
        self.held: collections.Counter[int] = collections.Counter()
        self.socks: list[socket.socket] = []
        self.closed = False
        self.waiting: list[list[Ring]] = []  # the rings of each blocked get


class NodeServer:
    """Serves one code node's app.

    Args:
        spec: the code node.
        path: the socket file to create.
        cond: the runtime's condition (guards rings, slots, stats and sessions).
        rings: the node's media input ports -> their rings, in camera order.
        pool: the runtime's slots.
        stats: the node's counters.
        models: serves model nodes to apps, or None.
        model_inputs: model nodes of the graph -> their declared input names.
        stream_uris: camera node -> the URI apps see as ``stream_uri``.
        mode: ``lockstep`` or ``realtime``.
        deliver: shows put frames on the node's sinks.
    """

    def __init__(
        self,
        spec: CodeNodeSpec,
        path: Path,
        *,
        cond: threading.Condition,
        rings: Mapping[str, Sequence[Ring]],
        pool: SlotPool,
        stats: NodeStats,
        models: ModelCaller | None,
        model_inputs: Mapping[str, Sequence[str]],
        stream_uris: Mapping[str, str],
        mode: str,
        deliver: Deliver,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.path = path
        self.cond = cond
        self.rings = {port: list(items) for port, items in rings.items()}
        for port in spec.interface.inputs:
            if port.type == "media":
                self.rings.setdefault(port.name, [])  # no camera connected: get() waits
        self.pool = pool
        self.stats = stats
        self.models = models
        self.model_inputs = {name: list(inputs) for name, inputs in model_inputs.items()}
        self.stream_uris = dict(stream_uris)
        self.lockstep = mode == "lockstep"
        self.deliver = deliver
        self.output_ports = {port.name for port in spec.interface.outputs}
        self._current: _Session | None = None
        self._listener: socket.socket | None = None
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        self._stopping = False
        self._required = getattr(spec, "launch", "onAppStart") == "onAppStart"

    @property
    def quiet(self) -> bool:
        """True when the app waits in ``get`` for a frame that is not there, or has gone; a node that starts
        at boot and has not connected yet is not quiet (condition held)."""
        session = self._current
        if session is None or session.closed:
            return self.stats.sessions > 0 or not self._required
        # A get just handed a frame may not have woken up yet: it counts only while its rings have nothing.
        return bool(session.waiting) and not any(self._ready(rings) for rings in session.waiting)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the socket and start accepting apps.

        Raises:
            OSError: the socket cannot be created.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            P.bind_unix(listener, str(self.path))
            listener.listen(16)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._spawn(self._accept, f"bridge-{self.name}")

    def stop(self) -> None:
        """Close the socket and every connection, end the session, and wait for the threads."""
        with self.cond:
            self._stopping = True
            if self._current is not None:
                self._end(self._current)
                self._current = None
            conns = list(self._conns)
            self.cond.notify_all()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(_JOIN_TIMEOUT)

    def _spawn(self, target: Callable[..., None], name: str, *args: Any) -> None:
        thread = threading.Thread(target=self._run, args=(target, *args), name=name, daemon=True)
        self._threads.add(thread)
        thread.start()

    def _run(self, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        finally:
            self._threads.discard(threading.current_thread())

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self.cond:
                if self._stopping:
                    conn.close()
                    return
                self._conns.add(conn)
            self._spawn(self._serve, f"bridge-{self.name}-conn", conn)

    # --- sessions ----------------------------------------------------------------------------------------

    def _end(self, session: _Session) -> None:
        """Close ``session`` and give back its slots (condition held)."""
        if session.closed:
            return
        session.closed = True
        for slot_id, count in session.held.items():
            slot = self.pool.get(slot_id)
            if slot is not None:
                slot.holds = max(0, slot.holds - count)
        session.held.clear()
        for rings in self.rings.values():
            for ring in rings:
                ring.end_session()
        self.stats.connected = False
        for sock in session.socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.cond.notify_all()

    def _serve(self, conn: socket.socket) -> None:
        try:
            hello, _ = P.recv_message(conn)
            if hello.get("op") != P.OP_HELLO or hello.get("protocol") != P.PROTOCOL_VERSION:
                self._error(
                    conn,
                    P.ERR_PROTOCOL,
                    f"the appliance speaks bridge protocol {P.PROTOCOL_VERSION}: "
                    "use the panoramasdk the appliance mounts",
                )
                return
            node = hello.get("node")
            if node and node != self.name:
                self._error(conn, P.ERR_PROTOCOL, f"this bridge serves node {self.name}, not {node}")
                return
            if hello.get("role") == P.ROLE_WATCH:
                self._serve_watch(conn, hello)
            elif hello.get("role") == P.ROLE_REQUEST:
                self._serve_requests(conn, hello)
            else:
                self._error(conn, P.ERR_PROTOCOL, "unknown connection role")
        except (OSError, P.ProtocolError) as error:
            if not self._stopping and not isinstance(error, P.BridgeClosed):
                _log.warning("node %s: bridge connection dropped: %s", self.name, one_line(error))
        except Exception as error:
            # A request the server could not handle ends that connection, never the appliance.
            self._note_error(f"bridge connection closed after {type(error).__name__}: {one_line(error)}")
        finally:
            with self.cond:
                self._conns.discard(conn)
            conn.close()

    def _welcome(self, session: _Session) -> dict[str, object]:
        media_ports = set(self.spec.media_inputs)
        inputs: list[dict[str, object]] = []
        for port in self.spec.interface.inputs:
            entry: dict[str, object] = {"name": port.name, "type": port.type}
            if port.type == "media" or port.name in media_ports:
                entry["type"] = "media"
                entry["cameras"] = list(self.spec.media_inputs.get(port.name, ()))
            else:
                entry["value"] = self.spec.params.get(port.name)
            inputs.append(entry)
        outputs = [{"name": port.name, "type": port.type} for port in self.spec.interface.outputs]
        models = [{"name": name, "inputs": inputs} for name, inputs in self.model_inputs.items()]
        return {
            "op": P.OP_WELCOME,
            "session": session.id,
            "node": self.name,
            "mode": "lockstep" if self.lockstep else "realtime",
            "inputs": inputs,
            "outputs": outputs,
            "models": models,
        }

    def _serve_watch(self, conn: socket.socket, hello: dict[str, Any]) -> None:
        pid = hello.get("pid")
        session = _Session(pid if isinstance(pid, int) else None)
        session.socks.append(conn)
        with self.cond:
            if self._stopping:
                return
            if self._current is not None:
                self._end(self._current)
            self._current = session
            self.stats.sessions += 1
            self.stats.connected = True
            self.stats.pid = session.pid
            for rings in self.rings.values():
                for ring in rings:
                    ring.session_active = True
                    ring.ever_connected = True
            self.cond.notify_all()
        try:
            P.send_message(conn, self._welcome(session))
            while conn.recv(4096):
                pass
        finally:
            with self.cond:
                self._end(session)
                if self._current is session:
                    self._current = None

    def _serve_requests(self, conn: socket.socket, hello: dict[str, Any]) -> None:
        with self.cond:
            session = self._current
            ok = session is not None and session.id == hello.get("session") and not session.closed
            if ok and session is not None:
                session.socks.append(conn)
        if not ok or session is None:
            self._error(conn, P.ERR_CLOSED, f"the session of node {self.name} is over")
            return
        P.send_message(conn, {"op": P.OP_READY})
        calls = CallService(self.name, self.models, list(self.model_inputs), self.stats, self.cond)
        mapped: set[int] = set()  # the slots whose memfd this connection was sent
        try:
            while True:
                message, tail = P.recv_message(conn)
                released = message.get("rel")
                if released:
                    self._release(session, released)
                op = message["op"]
                if op == P.OP_GET:
                    self._get(conn, session, message, mapped)
                elif op == P.OP_PUT:
                    self._put(session, message, tail)
                elif op == P.OP_BUFFER:
                    calls.buffer(conn, message)
                elif op == P.OP_LOST:
                    calls.lost(conn, message)
                else:
                    self._error(conn, P.ERR_PROTOCOL, f"unknown request {op!r}")
        finally:
            calls.close()

    def _error(self, conn: socket.socket, kind: str, message: str) -> None:
        P.send_message(conn, {"op": P.OP_ERROR, "kind": kind, "message": message})

    def _note_error(self, message: str) -> None:
        with self.cond:
            self.stats.errors += 1
            self.stats.note_error(message)
        _log.warning("node %s: %s", self.name, message)

    def _release(self, session: _Session, released: object) -> None:
        if not isinstance(released, list):
            return
        with self.cond:
            for slot_id in released:
                if isinstance(slot_id, int) and session.held[slot_id] > 0:
                    session.held[slot_id] -= 1
                    slot = self.pool.get(slot_id)
                    if slot is not None and slot.holds > 0:
                        slot.holds -= 1
            self.cond.notify_all()

    # --- requests ----------------------------------------------------------------------------------------

    def _ready(self, rings: list[Ring]) -> bool:
        if not rings:
            return False
        if self.lockstep:
            return all(ring.has_new() for ring in rings)
        return all(ring.has_any() for ring in rings) and any(ring.has_new() for ring in rings)

    def _get(self, conn: socket.socket, session: _Session, message: dict[str, Any], mapped: set[int]) -> None:
        port = message.get("port")
        rings = self.rings.get(port) if isinstance(port, str) else None
        if rings is None:
            self._error(conn, P.ERR_VALUE, f"{port} is not a media input port of node {self.name}")
            return
        timeout = message.get("timeout")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)):
            self._error(conn, P.ERR_VALUE, f"bad timeout {timeout!r}")
            return
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        fds: list[int] = []
        waiting = False
        with self.cond:
            try:
                while True:
                    if session.closed or self._stopping:
                        reply: dict[str, Any] = {
                            "op": P.OP_ERROR,
                            "kind": P.ERR_CLOSED,
                            "message": "the appliance is shutting down",
                        }
                        break
                    if self._ready(rings):
                        reply = self._take(session, rings, mapped, fds)
                        break
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        paused = [ring.camera for ring in rings if ring.paused]
                        why = f" (paused: {', '.join(paused)})" if paused else ""
                        reply = {
                            "op": P.OP_ERROR,
                            "kind": P.ERR_TIMEOUT,
                            "message": f"no frame on {port} within {float(timeout or 0):g} s{why}",
                        }
                        break
                    if not waiting:
                        waiting = True
                        session.waiting.append(rings)
                        self.cond.notify_all()  # whoever waits for the app to be quiet
                    self.cond.wait(remaining)
            finally:
                if waiting:
                    session.waiting.remove(rings)
        try:
            P.send_message(conn, reply, fds=fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _take(self, session: _Session, rings: list[Ring], mapped: set[int], fds: list[int]) -> dict[str, Any]:
        """Hand out one batch (condition held); ``fds`` gets copies of the memfds the app has not mapped."""
        now = time.monotonic()
        items = []
        forget: list[int] = []
        fresh = 0
        for ring in rings:
            forget.extend(ring.drain_forget())
            slot, cached = ring.take()
            slot.holds += 1
            slot.delivered_at = now
            session.held[slot.id] += 1
            fresh += not cached
            item = {
                "slot": slot.id,
                "shape": list(slot.shape),
                "stream_id": ring.camera,
                "stream_uri": self.stream_uris.get(ring.camera, ""),
                "ts": list(slot.time_stamp),
                "cached": cached,
            }
            if slot.id not in mapped:
                # A copy: the slot's own fd may be closed (camera resized, shutdown) before the send.
                item["fd"] = len(fds)
                fds.append(os.dup(slot.fd))
                mapped.add(slot.id)
            items.append(item)
        self.stats.frames_in += fresh
        self.stats.cached_in += len(rings) - fresh
        self.cond.notify_all()
        reply: dict[str, Any] = {"op": P.OP_FRAMES, "items": items}
        if forget:
            reply["forget"] = forget
        return reply

    def _put(self, session: _Session, message: dict[str, Any], tail: bytearray) -> None:
        port = message.get("port")
        if port not in self.output_ports:
            self._note_error(f"put on {port!r}, which is not an output port of the node")
            return
        if session.closed:
            return  # the app is gone; what it put last is of no use
        if "value" in message:
            with self.cond:
                self.stats.values_out += 1
            return
        try:
            outputs, holds = self._outputs(session, message, tail)
        except (KeyError, TypeError, ValueError) as error:
            self._note_error(f"bad put on {port}: {one_line(error)}")
            return
        try:
            if outputs:
                self.deliver(self.name, str(port), outputs)
        except Exception as error:
            self._note_error(f"frame put on {port} not shown: {one_line(error)}")
        finally:
            now = time.monotonic()
            with self.cond:
                for slot in holds:
                    slot.holds -= 1
                self.stats.frames_out += 1
                self.stats.rate.tick(now)
                if holds:
                    self.stats.latency.add(now - min(slot.delivered_at for slot in holds))
                self.cond.notify_all()

    def _outputs(
        self, session: _Session, message: dict[str, Any], tail: bytearray
    ) -> tuple[list[Output], list[Slot]]:
        items = message.get("items")
        if not isinstance(items, list):
            raise ValueError("no items")
        specs = [{"dtype": "|u1", "shape": item["shape"]} for item in items if int(item.get("slot", -1)) < 0]
        inline = iter(P.arrays_from_tail(specs, tail))
        outputs: list[Output] = []
        holds: list[Slot] = []
        with self.cond:
            for item in items:
                slot_id = int(item.get("slot", -1))
                image: np.ndarray
                if slot_id >= 0:
                    slot = self.pool.get(slot_id)
                    if slot is None or session.held[slot_id] <= 0:
                        raise ValueError(f"frame slot {slot_id} is not held by the app")
                    slot.holds += 1
                    holds.append(slot)
                    image = slot.array
                else:
                    image = next(inline)
                labels = [(str(text), float(x), float(y)) for text, x, y in item.get("labels", ())]
                rects = [(float(a), float(b), float(c), float(d)) for a, b, c, d in item.get("rects", ())]
                outputs.append(
                    Output(image=image, labels=labels, rects=rects, stream_id=str(item.get("stream_id", "")))
                )
        return outputs, holds
