"""The app's side of the bridge: the connection to the appliance, frame slots, and what a lost host does.

One session per process. The first ``node()`` opens the *watch* connection (whose end means the appliance
is gone: the process then exits so the supervisor can restart it) and learns the node's ports. Each thread
that asks for frames or model results gets its own request connection, so a thread blocked in ``get`` never
holds up another thread's ``call`` (the model calls themselves are :mod:`._calls`').
"""

import collections
import contextlib
import mmap
import os
import socket
import sys
import threading
import weakref

import numpy as np

from . import _protocol as P
from ._calls import ModelCalls
from ._errors import ApplianceConnectionError, PortTimeoutError, raise_error
from ._media import media

__all__ = ["Session", "session"]

_CONNECT_TIMEOUT = 10.0
_EXIT_GRACE = 2.0
_LOST_EXIT_CODE = 75

_lock = threading.Lock()
_session = None


def session():
    """The process's session with the appliance, connecting on first use.

    Returns:
        The :class:`Session`.

    Raises:
        RuntimeError: the process does not run on the appliance, or cannot reach it.
    """
    global _session
    current = _session
    if current is not None and current.pid == os.getpid():
        return current
    with _lock:
        if _session is not None and _session.pid != os.getpid():
            raise RuntimeError(
                "panoramasdk: this process was forked from the app (pid {}); only the app process itself "
                "can use the node".format(_session.pid)
            )
        if _session is None:
            _session = Session.connect()
        return _session


class Session(object):
    """A connected app: the node's ports, its model nodes, and the connections to the appliance."""

    def __init__(self, path, node, watch, welcome):
        self.pid = os.getpid()
        self.path = path
        self.node = node
        self.id = welcome["session"]
        self.inputs = welcome.get("inputs", [])
        self.outputs = welcome.get("outputs", [])
        self.calls = ModelCalls(
            self, {model["name"]: list(model.get("inputs", [])) for model in welcome.get("models", [])}
        )
        self.port_sets = {}
        self._watch = watch
        self._local = threading.local()
        self._maps = {}
        self._released = collections.deque()
        self._closed = False
        self._next_id = 0
        self._socks = [watch]
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._after_fork)
        thread = threading.Thread(target=self._watchdog, name="panoramasdk-watchdog", daemon=True)
        thread.start()

    @classmethod
    def connect(cls):
        path = os.environ.get(P.ENV_BRIDGE)
        if not path:
            raise RuntimeError(
                "panoramasdk: {} is not set: this app is not running on an appliance; start it with "
                "`panorama-emulator run` (or on an AWS Panorama device)".format(P.ENV_BRIDGE)
            )
        node = os.environ.get(P.ENV_NODE, "")
        try:
            watch = P.connect_unix(path, timeout=_CONNECT_TIMEOUT)
        except OSError as error:
            raise RuntimeError(
                "panoramasdk: cannot reach the appliance at {}: {}".format(path, error.strerror or error)
            ) from None
        try:
            P.send_message(
                watch,
                {
                    "op": P.OP_HELLO,
                    "protocol": P.PROTOCOL_VERSION,
                    "role": P.ROLE_WATCH,
                    "node": node,
                    "pid": os.getpid(),
                },
            )
            welcome, _ = P.recv_message(watch)
        except (OSError, P.ProtocolError) as error:
            watch.close()
            raise RuntimeError(
                "panoramasdk: the appliance refused the connection: {}".format(error)
            ) from None
        if welcome.get("op") != P.OP_WELCOME:
            watch.close()
            raise RuntimeError(
                "panoramasdk: the appliance refused node {!r}: {}".format(
                    node, welcome.get("message", welcome)
                )
            )
        return cls(path, node, watch, welcome)

    # --- connections -------------------------------------------------------------------------------------

    def _connection(self):
        sock = getattr(self._local, "sock", None)
        if sock is not None:
            return sock
        if self._closed:
            raise ApplianceConnectionError("panoramasdk: the connection to the appliance is closed")
        try:
            sock = P.connect_unix(self.path, timeout=_CONNECT_TIMEOUT)
            P.send_message(
                sock,
                {
                    "op": P.OP_HELLO,
                    "protocol": P.PROTOCOL_VERSION,
                    "role": P.ROLE_REQUEST,
                    "node": self.node,
                    "session": self.id,
                    "pid": os.getpid(),
                },
            )
            reply, _ = P.recv_message(sock)
        except (OSError, P.ProtocolError) as error:
            raise ApplianceConnectionError(
                "panoramasdk: lost the connection to the appliance: {}".format(error)
            ) from None
        if reply.get("op") != P.OP_READY:
            sock.close()
            raise ApplianceConnectionError("panoramasdk: {}".format(reply.get("message", reply)))
        self._local.sock = sock
        self._local.owner = _ThreadConnection(self._socks, sock)
        self._socks.append(sock)
        return sock

    def _after_fork(self):
        # A child must not keep the app's connections open: the appliance would not see the app die.
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.close()
        self._socks = []
        self._local = threading.local()
        self.calls.after_fork()
        self._closed = True

    def drop_connection(self):
        """Close this thread's request connection (and its call buffer, which goes with it)."""
        self._local.sock = None
        self.calls.drop()  # the appliance closes its side with the connection
        self._local.owner = None  # closes the connection

    def _releases(self):
        released = []
        queue = self._released
        while queue:
            try:
                released.append(queue.popleft())
            except IndexError:
                break
        return released

    def request(self, header, buffers=(), reply=True, timeout=None, fds=None):
        """Send a request; return the answer and its tail. ``fds`` (a list) receives the file descriptors
        that came with the answer, which the caller then owns; without it they are refused."""
        sock = self._connection()
        self._next_id += 1
        header["id"] = self._next_id
        released = self._releases()
        if released:
            header["rel"] = released
        try:
            P.send_message(sock, header, buffers)
            if not reply:
                return None, None
            sock.settimeout(timeout)
            try:
                answer, tail = P.recv_message(sock, fds)
            finally:
                if timeout is not None and getattr(self._local, "sock", None) is sock:
                    sock.settimeout(None)
        except OSError as error:
            self.drop_connection()
            if isinstance(error, socket.timeout):
                # The late answer would arrive out of turn: this connection is done with.
                raise PortTimeoutError("panoramasdk: no answer within {} s".format(timeout)) from None
            raise ApplianceConnectionError(
                "panoramasdk: lost the connection to the appliance: {}".format(error)
            ) from None
        except P.ProtocolError as error:
            self.drop_connection()
            raise ApplianceConnectionError(
                "panoramasdk: bad message from the appliance: {}".format(error)
            ) from None
        if answer.get("op") == P.OP_ERROR:
            raise_error(answer)
        return answer, tail

    # --- frames ------------------------------------------------------------------------------------------

    def get_frames(self, port, timeout):
        fds = []
        try:
            answer, _ = self.request({"op": P.OP_GET, "port": port, "timeout": timeout}, fds=fds)
            for slot in answer.get("forget", ()):
                self._maps.pop(slot, None)
            frames = []
            released = self._released.append
            for item in answer["items"]:
                height, width, channels = item["shape"]
                root = np.frombuffer(self._map(item, fds), dtype=np.uint8, count=height * width * channels)
                # The slot stays the app's until every array viewing it is gone.
                weakref.finalize(root, released, item["slot"])
                image = root.reshape(height, width, channels)
                seconds, micros = item["ts"]
                frames.append(
                    media._from_slot(
                        item["slot"],
                        image,
                        item["stream_id"],
                        item["stream_uri"],
                        (seconds, micros),
                        item["cached"],
                    )
                )
            return frames
        finally:
            for fd in fds:
                os.close(fd)

    def _map(self, item, fds):
        """The mapping of a frame's slot: made from the memfd that comes with the slot's first frame."""
        slot = item["slot"]
        mapped = self._maps.get(slot)
        if mapped is None:
            try:
                mapped = mmap.mmap(fds[item["fd"]], 0)
            except (KeyError, IndexError, TypeError):
                self.drop_connection()
                raise ApplianceConnectionError(
                    "panoramasdk: bad message from the appliance: no memfd for frame slot {}".format(slot)
                ) from None
            self._maps[slot] = mapped
        return mapped

    def put_frames(self, port, frames):
        items = []
        pixels = []
        for frame in frames:
            item, array = frame._wire()
            items.append(item)
            if array is not None:
                pixels.append(array)
        self.request({"op": P.OP_PUT, "port": port, "items": items}, P.tail_buffers(pixels), reply=False)

    def put_value(self, port, value):
        self.request({"op": P.OP_PUT, "port": port, "value": value}, reply=False)

    # --- models ------------------------------------------------------------------------------------------

    @property
    def models(self):
        """Model node -> its declared input names."""
        return self.calls.models

    def call(self, model, inputs, timeout):
        return self.calls.call(model, inputs, timeout)

    # --- host loss ---------------------------------------------------------------------------------------

    def _watchdog(self):
        try:
            while self._watch.recv(4096):
                pass
        except OSError:
            pass
        if self._closed:
            return
        self._closed = True
        try:
            sys.stderr.write(
                "panoramasdk: lost the connection to the appliance (node {}); the app stops\n".format(
                    self.node
                )
            )
            sys.stderr.flush()
        except Exception:
            pass
        timer = threading.Timer(_EXIT_GRACE, _hard_exit)
        timer.daemon = True
        timer.start()
        import _thread

        _thread.interrupt_main()


class _ThreadConnection(object):
    """Closes a thread's request connection when the thread ends (and its thread-local data goes), so that
    the appliance frees what it kept for the connection."""

    def __init__(self, socks, sock):
        self.socks = socks
        self.sock = sock

    def __del__(self):
        with contextlib.suppress(Exception):
            self.socks.remove(self.sock)
        with contextlib.suppress(Exception):
            self.sock.close()


def _flush():
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _hard_exit():
    # Flushing may block behind a thread stuck writing; exit regardless after a short wait.
    flusher = threading.Thread(target=_flush, daemon=True)
    flusher.start()
    flusher.join(0.5)
    os._exit(_LOST_EXIT_CODE)
