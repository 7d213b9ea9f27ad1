"""The app's side of the bridge: the connection to the appliance, frame slots, and what a lost host does.

One session per process. The first ``node()`` opens the *watch* connection (whose end means the appliance
is gone: the process then exits so the supervisor can restart it) and learns the node's ports. Each thread
that asks for frames or model results gets its own request connection, so a thread blocked in ``get`` never
holds up another thread's ``call``.
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
from ._errors import ApplianceConnectionError, ModelCallError, PortTimeoutError
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
        self.models = {model["name"]: list(model.get("inputs", [])) for model in welcome.get("models", [])}
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
        self._closed = True

    def _drop_connection(self):
        self._local.sock = None
        self._local.repeat = None
        buffer = getattr(self._local, "buffer", None)
        if buffer:
            buffer.close()
        self._local.buffer = None  # the appliance closes its side with the connection
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

    def _request(self, header, buffers=(), reply=True, timeout=None, fds=None):
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
            self._drop_connection()
            if isinstance(error, socket.timeout):
                # The late answer would arrive out of turn: this connection is done with.
                raise PortTimeoutError("panoramasdk: no answer within {} s".format(timeout)) from None
            raise ApplianceConnectionError(
                "panoramasdk: lost the connection to the appliance: {}".format(error)
            ) from None
        except P.ProtocolError as error:
            self._drop_connection()
            raise ApplianceConnectionError(
                "panoramasdk: bad message from the appliance: {}".format(error)
            ) from None
        if answer.get("op") == P.OP_ERROR:
            _raise_error(answer)
        return answer, tail

    # --- frames ------------------------------------------------------------------------------------------

    def get_frames(self, port, timeout):
        fds = []
        try:
            answer, _ = self._request({"op": P.OP_GET, "port": port, "timeout": timeout}, fds=fds)
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
                self._drop_connection()
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
        self._request({"op": P.OP_PUT, "port": port, "items": items}, P.tail_buffers(pixels), reply=False)

    def put_value(self, port, value):
        self._request({"op": P.OP_PUT, "port": port, "value": value}, reply=False)

    # --- models ------------------------------------------------------------------------------------------

    def call(self, model, inputs, timeout):
        if model not in self.models:
            raise KeyError(
                "model node {!r} is not in the application graph (model nodes: {})".format(
                    model, ", ".join(sorted(self.models)) or "none"
                )
            )
        named = self._model_inputs(model, inputs)
        repeat = getattr(self._local, "repeat", None)
        if repeat is not None:
            outputs = self._repeat(repeat, model, named, timeout)
            if outputs is not None:
                return outputs
        names = list(named)
        arrays = [named[name] for name in names]
        specs = P.array_specs(arrays)
        for index, spec in enumerate(specs):
            spec["name"] = names[index]
        header = {"op": P.OP_CALL, "model": model, "inputs": specs}
        answer = None
        direct = None
        attempts = 2
        while answer is None:
            attempts -= 1
            buffer = self._call_buffer(max(P.place(specs), 1))
            if buffer is None:
                for spec in specs:
                    del spec["offset"]
                answer, tail = self._request(header, P.tail_buffers(arrays), timeout=timeout)
                break
            placed = P.arrays_in_buffer(specs, buffer.map)
            for index, view in enumerate(placed):
                np.copyto(view, arrays[index], casting="no")
            if buffer.channel is not None:
                # None when the channel was gone before the call (an idle model server died): again.
                request = P.encode_call({"model": model, "inputs": specs})
                data = self._exchange(buffer, request, model, timeout, again=attempts > 0)
                if data is not None:
                    answer = self._decode_answer(data)
                    direct = (request, data, [(names[index], view) for index, view in enumerate(placed)])
            else:
                header["shm"] = True
                answer, tail = self._request(header, timeout=timeout)
        outputs = answer.get("outputs", [])
        if "size" not in answer:
            return tuple(P.arrays_from_tail(outputs, tail))
        mapped = buffer.map
        buffer = self._call_buffer(answer["size"], grown=True)
        if buffer is None:
            raise ApplianceConnectionError("panoramasdk: the model call buffer is gone")
        views = P.arrays_in_buffer(outputs, buffer.map)
        if direct is not None and buffer.map is mapped:
            request, data, placed = direct
            self._local.repeat = _Repeat(model, buffer, placed, request, data, views)
        return tuple(view.copy() for view in views)

    def _repeat(self, repeat, model, named, timeout):
        """The outputs of a call laid out as this thread's last direct one (same model node, input names,
        types and shapes, same call buffer): its inputs go where the last call's went and its request and
        answer are the same bytes, so neither side builds or parses them again. None for another call."""
        buffer = repeat.buffer
        if (
            repeat.model != model
            or buffer is not getattr(self._local, "buffer", None)
            or buffer.channel is None
            or buffer.map is not repeat.map
            or len(named) != len(repeat.inputs)
        ):
            return None
        for name, view in repeat.inputs:
            array = named.get(name)
            if array is None or array.dtype != view.dtype or array.shape != view.shape:
                return None
        for name, view in repeat.inputs:
            np.copyto(view, named[name], casting="no")
        data = self._exchange(buffer, repeat.request, model, timeout, again=True)
        if data == repeat.reply:
            return tuple(view.copy() for view in repeat.outputs)
        self._local.repeat = None
        if data is None:
            return None  # the channel was gone: the call goes the whole way on a new one
        answer = self._decode_answer(data)
        grown = self._call_buffer(answer["size"], grown=True)
        if grown is None:
            raise ApplianceConnectionError("panoramasdk: the model call buffer is gone")
        return tuple(array.copy() for array in P.arrays_in_buffer(answer.get("outputs", []), grown.map))

    def _exchange(self, buffer, request, model, timeout, again):
        """Send a request on the buffer's model channel; the answer's bytes.

        With ``again``, returns None, dropping the channel, when the channel had ended before the request was
        sent (the call can go on a new one). A channel that ends during the call raises the appliance's word
        on why.
        """
        channel = buffer.channel
        if buffer.timeout != timeout:
            channel.settimeout(timeout)
            buffer.timeout = timeout
        data = b""
        try:
            channel.send(request)
        except OSError:
            if again:
                buffer.drop_channel()
                return None
        else:
            data = self._answer_of(channel)
        if not data:
            # The model server stopped: the appliance says why (and lends a new channel next time).
            buffer.drop_channel()
            answer, _ = self._request({"op": P.OP_LOST, "model": model})
            raise ModelCallError(answer.get("message", "the model channel closed"))
        return data

    def _decode_answer(self, data):
        """The model server's answer (a ``result``), or raise its error."""
        try:
            answer = P.decode_call(data)
        except P.ProtocolError as error:
            self._drop_connection()
            raise ApplianceConnectionError(
                "panoramasdk: bad answer from the model server: {}".format(error)
            ) from None
        if answer.get("op") == P.OP_ERROR:
            _raise_error(answer)
        return answer

    def _answer_of(self, channel):
        try:
            return channel.recv(P.MAX_CALL)
        except socket.timeout:
            # The model server may still write this call's outputs: this connection and buffer are done with.
            timeout = channel.gettimeout()
            self._drop_connection()
            raise PortTimeoutError("panoramasdk: no answer within {} s".format(timeout)) from None
        except OSError:
            return b""

    def _call_buffer(self, size, grown=False):
        """This thread's call buffer, holding ``size`` bytes at least (None: send arrays in the tail).

        With ``grown``, the model server or the appliance has made the memfd ``size`` bytes long already:
        map it again. A buffer that came with a model channel and lost it asks for a new one.
        """
        buffer = getattr(self._local, "buffer", None)
        if buffer is False:
            return None
        if (
            buffer is not None
            and buffer.size >= size
            and (grown or buffer.channel is not None or not buffer.lent)
        ):
            return buffer
        if grown and buffer is not None:
            try:
                buffer.remap(size)
            except (ValueError, OSError):
                buffer.close()
                self._local.buffer = False
                return None
            return buffer
        fds = []
        try:
            answer, _ = self._request({"op": P.OP_BUFFER, "size": size, "channel": True}, fds=fds)
            fresh = _CallBuffer(fds.pop(0), answer["size"])
            if answer.get("channel") and fds:
                fresh.lend(fds.pop(0))
        except ApplianceConnectionError:
            raise
        except (ValueError, KeyError, TypeError, IndexError, OSError, RuntimeError):
            # No shared memory for calls (no memory, unmappable, refused): arrays go through the socket.
            self._local.buffer = False
            return None
        finally:
            for fd in fds:
                os.close(fd)
        if buffer is not None:
            buffer.close()
        self._local.buffer = fresh
        return fresh

    def _model_inputs(self, model, inputs):
        if isinstance(inputs, media):
            inputs = inputs.image
        if isinstance(inputs, dict):
            named = {}
            for name, value in inputs.items():
                if isinstance(value, media):
                    value = value.image
                named[str(name)] = np.asarray(value)
            if not named:
                raise ValueError("model inputs must not be empty")
            return named
        declared = self.models.get(model) or ["data"]
        return {declared[0]: np.asarray(inputs)}

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


class _Repeat(object):
    """What a call laid out as this thread's last direct call reuses (see ``Session._repeat``)."""

    def __init__(self, model, buffer, inputs, request, reply, outputs):
        self.model = model
        self.buffer = buffer
        self.map = buffer.map
        self.inputs = inputs
        """``(name, view)``: where each input goes in the call buffer."""
        self.request = request
        self.reply = reply
        self.outputs = outputs
        """Views of the outputs in the call buffer, where the same answer puts them."""


class _CallBuffer(object):
    """This side's mapping of a connection's call buffer (a memfd the appliance sent)."""

    def __init__(self, fd, size):
        try:
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.size = size
        self.channel = None
        """The socket of the model channel lent with the buffer, or None."""
        self.lent = False
        self.timeout = None

    def lend(self, fd):
        """Take the model channel (a socket fd) that came with the buffer."""
        self.channel = socket.socket(fileno=fd)
        self.lent = True
        self.timeout = None

    def drop_channel(self):
        """Close the model channel (it ended)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def remap(self, size):
        """Map the memfd again after the appliance grew it to ``size`` bytes."""
        self.map = mmap.mmap(self.fd, size)
        self.size = size

    def close(self):
        """Close the memfd (the mapping goes with its last view) and the model channel."""
        self.drop_channel()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        # A thread that ends drops its buffer without a word: its fd must not outlive it.
        with contextlib.suppress(Exception):
            self.close()


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


def _raise_error(answer):
    kind = answer.get("kind")
    message = answer.get("message", "error")
    if kind == P.ERR_TIMEOUT:
        raise PortTimeoutError(message)
    if kind == P.ERR_KEY:
        raise KeyError(message)
    if kind == P.ERR_VALUE:
        raise ValueError(message)
    if kind == P.ERR_MODEL:
        raise ModelCallError(message)
    if kind == P.ERR_CLOSED:
        raise ApplianceConnectionError(message)
    raise RuntimeError(message)
