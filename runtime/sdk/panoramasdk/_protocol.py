"""The bridge protocol between an app (``panoramasdk``) and the appliance: one definition for both sides.

Control and metadata travel over a unix stream socket, ``<run dir>/<node>.sock``; pixels never do. Camera
frames live in shared-memory slots (memfds), mapped once by both sides, so a frame crosses the bridge as a
slot number. A memfd reaches the app as a file descriptor passed with a message (``SCM_RIGHTS``); the
appliance seals it against shrinking, so the app cannot make the appliance fault on it.

Every message is::

    <u32 little-endian: length of the JSON header> <u32: length of the binary tail> <JSON header> <tail>

The JSON header is an object with an ``"op"``; the tail carries the raw bytes of images the app made itself
(described by the header's items).

Conversation:

- The SDK opens a *watch* connection: ``hello`` (role ``watch``) -> ``welcome`` (session id, the node's ports
  with parameter values, the model nodes). The watch connection then stays silent: its end tells either
  side that the other is gone.
- Each app thread that talks to the appliance opens its own *request* connection: ``hello`` (role
  ``request``, the session id) -> ``ready``.
- ``get`` (a media port, a timeout) -> ``frames`` (one item per camera) or ``error`` (kind ``timeout``).
  An item whose slot this connection has not been sent before carries ``"fd"``: the index, among the
  message's file descriptors, of the slot's memfd. ``"forget"`` lists slots that are gone.
- ``put`` (an output port, one item per media) -> no reply.
- ``buffer`` (a model node, a size) -> ``buffer`` (its size, with two file descriptors) or ``error``: the
  connection's *call buffer*, a memfd made (or grown) by the appliance that the app, the appliance and the
  model server map, and the connection's own *model channel*, a ``SOCK_SEQPACKET`` socket to the model
  server. Model calls never pass through the appliance: the app writes the inputs into the call buffer
  and sends ``{"model", "inputs"}`` on the channel as one datagram of JSON (:func:`encode_call`; each input
  an :class:`ArraySlot`); the model server checks the request against the model node's descriptor, writes
  the outputs after the inputs (growing the memfd when they do not fit) and answers ``result`` (the output
  slots and the memfd's ``"size"``, larger than the app's mapping when it grew) or ``error`` the same way.
  When the channel ends during a call (the model server died), the app sends ``lost`` (the model node) on
  its request connection and gets the ``error`` that says why; its next ``buffer`` request gets a new
  channel.
- Any request may carry ``rel``: slots the app no longer references.

This module runs inside the app's root filesystem (Python 3.7 or later, standard library and numpy only)
and on the host; it imports nothing else from the project.
"""

import array as _array
import collections
import json
import os
import socket
import struct

import numpy as np

__all__ = [
    "ALIGN",
    "ENV_BRIDGE",
    "ENV_NODE",
    "ERR_CLOSED",
    "ERR_KEY",
    "ERR_MODEL",
    "ERR_PROTOCOL",
    "ERR_TIMEOUT",
    "ERR_VALUE",
    "HEADER",
    "MAX_CALL",
    "MAX_FDS",
    "MAX_JSON",
    "MAX_TAIL",
    "OP_BUFFER",
    "OP_ERROR",
    "OP_FRAMES",
    "OP_GET",
    "OP_HELLO",
    "OP_LOST",
    "OP_PUT",
    "OP_READY",
    "OP_RESULT",
    "OP_WELCOME",
    "PROTOCOL_VERSION",
    "ROLE_REQUEST",
    "ROLE_WATCH",
    "SANDBOX_RUN_DIR",
    "SANDBOX_SDK_DIR",
    "ArraySlot",
    "BridgeClosed",
    "ProtocolError",
    "align",
    "arrays_from_tail",
    "bind_unix",
    "connect_unix",
    "decode_call",
    "encode_call",
    "parse_spec",
    "place",
    "recv_message",
    "send_message",
    "tail_buffers",
]

PROTOCOL_VERSION = 4

ENV_BRIDGE = "PANORAMA_EMULATOR_BRIDGE"
"""Path of the node's bridge socket, as the app sees it."""
ENV_NODE = "PANORAMA_EMULATOR_NODE"
"""Name of the code node the app process runs."""
"""Directory of the shared-memory frame slots, as the app sees it."""

SANDBOX_SDK_DIR = "/opt/panorama-emulator/sdk"
SANDBOX_RUN_DIR = "/opt/panorama-emulator/run"

ROLE_WATCH = "watch"
ROLE_REQUEST = "request"

OP_HELLO = "hello"
OP_WELCOME = "welcome"
OP_READY = "ready"
OP_GET = "get"
OP_FRAMES = "frames"
OP_PUT = "put"
OP_BUFFER = "buffer"
OP_RESULT = "result"
OP_ERROR = "error"
OP_LOST = "lost"

ERR_TIMEOUT = "timeout"
ERR_KEY = "key"
ERR_VALUE = "value"
ERR_MODEL = "model"
ERR_CLOSED = "closed"
ERR_PROTOCOL = "protocol"

HEADER = struct.Struct("<II")
MAX_JSON = 16 * 1024 * 1024
MAX_TAIL = 2 * 1024 * 1024 * 1024
MAX_CALL = 1 << 20
"""Largest datagram on a model channel."""
MAX_FDS = 64
"""Most file descriptors one message carries."""
ALIGN = 64
"""Alignment of every array in a call buffer."""

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_UNIX_PATH_MAX = 100
_FDS_SPACE = socket.CMSG_SPACE(MAX_FDS * _array.array("i").itemsize)


class BridgeClosed(ConnectionError):
    """The other side closed the connection (or died)."""


class ProtocolError(ValueError):
    """A message did not follow the protocol."""


def send_message(sock, header, buffers=(), fds=()):
    """Send one message: a JSON header and, optionally, a binary tail made of ``buffers``.

    Args:
        sock: a connected stream socket.
        header: a JSON-able dict with an ``"op"``.
        buffers: bytes-like objects (C-contiguous) sent back to back as the tail, without copying.
        fds: file descriptors that travel with the message (at most :data:`MAX_FDS`); the receiver gets
            copies, these stay open.

    Raises:
        BridgeClosed: the peer is gone.
    """
    body = _ENCODER.encode(header).encode("utf-8")
    views = [memoryview(buffer).cast("B") for buffer in buffers]
    tail = sum(view.nbytes for view in views)
    first = HEADER.pack(len(body), tail) + body
    if len(fds) > MAX_FDS:
        raise ValueError("{} file descriptors in one message (at most {})".format(len(fds), MAX_FDS))
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _array.array("i", fds).tobytes())] if fds else []
    try:
        if not views and not ancillary:
            sock.sendall(first)
            return
        pending = [memoryview(first)] + [view for view in views if view.nbytes]
        while pending:
            # The descriptors ride on the first bytes sent; the receiver collects them with the header.
            sent = sock.sendmsg(pending, ancillary)
            ancillary = []
            while sent:
                head = pending[0]
                if sent >= head.nbytes:
                    sent -= head.nbytes
                    pending.pop(0)
                else:
                    pending[0] = head[sent:]
                    sent = 0
    except (BrokenPipeError, ConnectionResetError) as error:
        raise BridgeClosed("the bridge connection is closed") from error
    except OSError as error:
        if error.errno in (9, 107):  # EBADF, ENOTCONN: closed under us
            raise BridgeClosed("the bridge connection is closed") from error
        raise


def encode_call(header):
    """One model-channel datagram: ``header`` (a JSON-able dict) as UTF-8 JSON.

    Raises:
        ProtocolError: the datagram would be longer than :data:`MAX_CALL`.
    """
    data = _ENCODER.encode(header).encode("utf-8")
    if len(data) > MAX_CALL:
        raise ProtocolError("model call message of {} bytes (at most {})".format(len(data), MAX_CALL))
    return data


def decode_call(data):
    """The dict a model-channel datagram holds.

    Raises:
        ProtocolError: the datagram is not a JSON object.
    """
    try:
        header = json.loads(bytes(data))
    except ValueError as error:
        raise ProtocolError("model call message is not JSON: {}".format(error)) from None
    if not isinstance(header, dict):
        raise ProtocolError("model call message is not a JSON object")
    return header


def _recv_exact(sock, size, fds=None):
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        try:
            if fds is None:
                count = sock.recv_into(view[got:], size - got)
            else:
                count = _recv_with_fds(sock, view[got:], fds)
        except (ConnectionResetError, BrokenPipeError) as error:
            raise BridgeClosed("the bridge connection is closed") from error
        if count == 0:
            raise BridgeClosed("the bridge connection is closed")
        got += count
    return buffer


def _recv_with_fds(sock, view, fds):
    count, ancillary, flags, _ = sock.recvmsg_into([view], _FDS_SPACE, socket.MSG_CMSG_CLOEXEC)
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = _array.array("i")
            received.frombytes(data[: len(data) - len(data) % received.itemsize])
            fds.extend(received)
    if flags & socket.MSG_CTRUNC:
        raise ProtocolError("more file descriptors than a message may carry")
    return count


def recv_message(sock, fds=None):
    """Receive one message.

    Args:
        sock: a connected stream socket.
        fds: a list that receives the file descriptors that came with the message (the caller owns and
            closes them); None to refuse them (the kernel closes any that were sent).

    Returns:
        ``(header, tail)``: the JSON header (a dict) and the binary tail (a bytearray, empty when none).

    Raises:
        BridgeClosed: the peer closed the connection.
        ProtocolError: the message is malformed.
    """
    json_size, tail_size = HEADER.unpack(_recv_exact(sock, HEADER.size, fds))
    if json_size > MAX_JSON or tail_size > MAX_TAIL:
        raise ProtocolError("message too large: {} + {} bytes".format(json_size, tail_size))
    try:
        header = json.loads(bytes(_recv_exact(sock, json_size)))
    except ValueError as error:
        raise ProtocolError("message header is not JSON: {}".format(error)) from None
    if not isinstance(header, dict) or not isinstance(header.get("op"), str):
        raise ProtocolError("message header has no op")
    tail = _recv_exact(sock, tail_size) if tail_size else bytearray()
    return header, tail


def tail_buffers(arrays):
    """Byte views of ``arrays`` (copied only when not C-contiguous), in order, for :func:`send_message`."""
    views = []
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        views.append(memoryview(contiguous.reshape(-1).view(np.uint8)))
    return views


def parse_spec(spec):
    """The dtype, shape and element count an array spec describes.

    Args:
        spec: one array spec (``dtype`` and ``shape``).

    Returns:
        ``(dtype, shape, count)``.

    Raises:
        ProtocolError: the spec is malformed, has a negative dimension, or names an object dtype.
    """
    try:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(int(dim) for dim in spec["shape"])
    except (KeyError, TypeError, ValueError) as error:
        raise ProtocolError("bad array spec: {}".format(error)) from None
    if dtype.hasobject:
        raise ProtocolError("object arrays are not allowed")
    count = 1
    for dim in shape:
        if dim < 0:
            raise ProtocolError("bad array spec: negative dimension {}".format(dim))
        count *= dim
    return dtype, shape, count


def arrays_from_tail(specs, tail):
    """Rebuild arrays sent with :func:`tail_buffers` (views on ``tail``, no copy).

    Args:
        specs: the header's array specs.
        tail: the message tail.

    Returns:
        A list of numpy arrays (writable when ``tail`` is a bytearray).

    Raises:
        ProtocolError: the specs do not match the tail.
    """
    arrays = []
    offset = 0
    for spec in specs:
        dtype, shape, count = parse_spec(spec)
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(tail):
            raise ProtocolError("message tail shorter than its arrays")
        arrays.append(np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape))
        offset += nbytes
    if offset != len(tail):
        raise ProtocolError("message tail longer than its arrays")
    return arrays


class ArraySlot(collections.namedtuple("ArraySlot", "name dtype shape offset")):
    """An array in shared memory (a call buffer): its name (empty for an output), its numpy dtype string
    (``"<f4"``), its shape (a tuple) and the byte offset of its first element. The one record for such an
    array on both sides of the bridge and of the model server's channels."""

    __slots__ = ()

    @property
    def nbytes(self):
        """The bytes the array takes."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count * np.dtype(self.dtype).itemsize

    @property
    def end(self):
        """The offset just after the array."""
        return self.offset + self.nbytes

    def to_json(self):
        """The slot as a JSON-able dict (``name``, ``dtype``, ``shape``, ``offset``)."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "offset": self.offset}

    @classmethod
    def from_json(cls, spec, what="input"):
        """The slot a JSON dict describes, checked (it comes from the other side of a trust boundary).

        Args:
            spec: the decoded dict.
            what: what the array is, for the messages (``input``, ``output``).

        Returns:
            The slot (``dtype`` in numpy's canonical spelling). Its offset may lie outside any buffer:
            :meth:`view` checks that.

        Raises:
            ProtocolError: the spec is not a dict, or its name, dtype, shape or offset is malformed (an object
                dtype, a negative dimension).
        """
        if not isinstance(spec, dict):
            raise ProtocolError("bad array spec: not an object: {!r:.80}".format(spec))
        name = spec.get("name", "")
        if not isinstance(name, str):
            raise ProtocolError("an {} has no name: {!r:.80}".format(what, spec))
        dims = spec.get("shape")
        if not isinstance(dims, list) or any(isinstance(d, bool) or not isinstance(d, int) for d in dims):
            raise ProtocolError("bad array spec: the shape is not a list of integers: {!r:.80}".format(dims))
        dtype, shape, _ = parse_spec(spec)
        offset = spec.get("offset")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise ProtocolError("{} {!r} has no offset in the call buffer".format(what, name))
        return cls(name, dtype.str, shape, offset)

    def view(self, buffer):
        """A numpy view of the array in ``buffer`` (no copy; writable when the buffer is).

        Raises:
            ProtocolError: the array does not lie within the buffer.
        """
        dtype = np.dtype(self.dtype)
        count = 1
        for dim in self.shape:
            count *= dim
        if self.offset < 0 or self.offset + count * dtype.itemsize > len(buffer):
            raise ProtocolError("array {!r} lies outside the call buffer".format(self.name))
        if count == 0:
            return np.empty(self.shape, dtype)
        return np.frombuffer(buffer, dtype=dtype, count=count, offset=self.offset).reshape(self.shape)


def align(offset):
    """``offset`` rounded up to :data:`ALIGN`."""
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def place(arrays, start=0):
    """Lay arrays out one after the other in a call buffer, from ``start``, each aligned to :data:`ALIGN`.

    Args:
        arrays: ``(name, dtype, shape)`` of each array (any numpy dtype spelling).
        start: the first byte the arrays may use.

    Returns:
        ``(slots, end)``: an :class:`ArraySlot` for each array, and the end of the last one (the buffer size
        they need).
    """
    slots = []
    end = start
    for name, dtype, shape in arrays:
        dtype = np.dtype(dtype)
        if type(shape) is not tuple:
            shape = tuple(int(dim) for dim in shape)
        offset = (end + ALIGN - 1) // ALIGN * ALIGN
        count = 1
        for dim in shape:
            count *= dim
        slots.append(ArraySlot(name, dtype.str, shape, offset))
        end = offset + count * dtype.itemsize
    return slots, end


def _short_path(path):
    """A path to ``path`` that fits in a unix socket address, and the directory fd to close after use."""
    if len(os.fsencode(path)) < _UNIX_PATH_MAX:
        return path, None
    # A socket address holds about 107 bytes: reach a long path through the directory's fd instead.
    directory, name = os.path.split(os.path.abspath(path))
    fd = os.open(directory or ".", os.O_PATH | os.O_DIRECTORY)
    return "/proc/self/fd/{}/{}".format(fd, name), fd


def connect_unix(path, timeout=None):
    """Connect a stream socket to the unix socket at ``path`` (however long the path is).

    Args:
        path: the socket's path.
        timeout: seconds to wait for the connection, or None.

    Returns:
        The connected socket (blocking, close-on-exec).

    Raises:
        OSError: nothing listens there.
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address, fd = _short_path(path)
    try:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.settimeout(None)
    except BaseException:
        sock.close()
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return sock


def bind_unix(sock, path):
    """Bind ``sock`` to ``path`` (however long the path is).

    Args:
        sock: an unbound AF_UNIX socket.
        path: where the socket file is created.
    """
    address, fd = _short_path(path)
    try:
        sock.bind(address)
    finally:
        if fd is not None:
            os.close(fd)
