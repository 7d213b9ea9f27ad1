"""The bridge protocol between an app (``panoramasdk``) and the appliance: one definition for both sides.

Control and metadata travel over a unix stream socket, ``<run dir>/<node>.sock``; pixels never do. Camera
frames live in shared-memory slots (memfds), mapped once by both sides, so a frame crosses the bridge as a
slot number. A memfd reaches the app as a file descriptor passed with a message (``SCM_RIGHTS``); the
appliance seals it against shrinking, so the app cannot make the appliance fault on it.

Every message is::

    <u32 little-endian: length of the JSON header> <u32: length of the binary tail> <JSON header> <tail>

The JSON header is an object with an ``"op"``; the tail carries raw array bytes (model tensors, or an image
the app made itself) described by the header's ``"arrays"`` specs.

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
- ``buffer`` (a size) -> ``buffer`` (its size, with the memfd) or ``error``: the connection's *call
  buffer*, made (or grown) by the appliance and mapped by both sides.
- ``call`` (a model node, input arrays) -> ``result`` (output arrays) or ``error``. Arrays whose specs have
  an ``"offset"`` live in the connection's call buffer instead of the tail: the app writes the inputs at
  the offsets it chose, the appliance writes the outputs after them (growing the memfd when they do not
  fit; the answer's ``"size"`` is then larger than the app's mapping). A model call thus crosses the
  bridge as two short messages.
- When the appliance's model nodes run in a model server, the ``buffer`` answer carries a second file
  descriptor (``"channel": 1``): a ``SOCK_SEQPACKET`` socket to the model server, the connection's own
  *model channel*. Calls then skip the appliance: the app sends ``call`` there as one datagram of JSON
  (:func:`encode_call`; the model node and the inputs placed in the call buffer) and gets ``result`` or
  ``error`` back the same way. The model server checks every request against the model node's descriptor.
  When the channel ends during a call (the model server died), the app sends ``lost`` (the model node) on
  its request connection and gets the ``error`` that says why; its next ``buffer`` request gets a new channel.
- Any request may carry ``rel``: slots the app no longer references.

This module runs inside the app's root filesystem (Python 3.8, standard library and numpy only) and on the
host; it imports nothing else from the project.
"""

import array as _array
import json
import os
import socket
import struct

import numpy as np

__all__ = [
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
    "OP_CALL",
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
    "BridgeClosed",
    "ProtocolError",
    "array_specs",
    "arrays_from_tail",
    "arrays_in_buffer",
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

PROTOCOL_VERSION = 3

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
OP_CALL = "call"
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


def array_specs(arrays):
    """Describe arrays for a message tail.

    Args:
        arrays: numpy arrays (made C-contiguous by :func:`tail_buffers` when sent).

    Returns:
        A list of ``{"dtype": str, "shape": [int, ...]}``.

    Raises:
        ValueError: an array holds Python objects.
    """
    specs = []
    for array in arrays:
        if array.dtype.hasobject:
            raise ValueError("arrays of Python objects cannot cross the bridge")
        specs.append({"dtype": array.dtype.str, "shape": list(array.shape)})
    return specs


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
    """Rebuild arrays sent with :func:`array_specs` / :func:`tail_buffers` (views on ``tail``, no copy).

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


def place(specs, start=0):
    """Give each array an ``"offset"`` in a call buffer, one after the other from ``start``, aligned.

    Args:
        specs: array specs (from :func:`array_specs`), changed in place.
        start: the first byte the arrays may use.

    Returns:
        The end of the last array: the buffer size they need.
    """
    end = start
    for spec in specs:
        end = (end + ALIGN - 1) // ALIGN * ALIGN
        spec["offset"] = end
        count = 1
        for size in spec["shape"]:
            count *= int(size)
        end += count * np.dtype(spec["dtype"]).itemsize
    return end


def arrays_in_buffer(specs, buffer):
    """Views of the arrays that specs with offsets (see :func:`place`) describe in a call buffer.

    Args:
        specs: array specs, each with an ``"offset"``.
        buffer: the mapped call buffer (writable views when it is writable).

    Returns:
        A list of numpy arrays sharing the buffer's memory (copy them to keep them past the next call).

    Raises:
        ProtocolError: a spec is malformed, or an array does not lie within the buffer.
    """
    arrays = []
    size = len(buffer)
    for spec in specs:
        dtype, shape, count = parse_spec(spec)
        try:
            offset = int(spec["offset"])
        except (KeyError, TypeError, ValueError) as error:
            raise ProtocolError("bad array offset: {}".format(error)) from None
        if offset < 0 or offset + count * dtype.itemsize > size:
            raise ProtocolError("array outside the call buffer")
        if count == 0:
            arrays.append(np.empty(shape, dtype))
            continue
        arrays.append(np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape))
    return arrays


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
