"""The wire between the appliance and its model server.

Both ends talk over ``AF_UNIX`` / ``SOCK_SEQPACKET`` sockets, so one ``send`` is one message and a dead peer
is seen as end-of-file. Messages are small pickled tuples (both ends are this package); arrays never cross the
socket: each channel owns a memfd that both processes map (and an app, for a channel lent to it), the
caller writes the inputs into it, the server writes the outputs after them. Either side may grow the file;
the message carries its current size and the other side maps it again.

Control socket (appliance -> server): ``("load", [ModelSpec, ...])`` once, with the memfd of the model
nodes' tally (:mod:`runtime.models.tally`); then ``("channel", size)`` with the fds of a new channel socket
and its memfd, or ``("app", size, [model node, ...])`` with the fds of a channel lent to an app, its memfd
and the tally of the app's connection (the channel then speaks the app's JSON, see
:class:`runtime.models.serving.AppChannel`). Server -> appliance: ``("loading", node)`` before each model,
then ``("ready", {node: ({input: dtype}, [note, ...])})`` or ``("failed", node, message)``.

Channel (one call at a time): ``("call", node, size, [ArraySlot, ...])`` (the inputs) answered by
``("ok", size, [ArraySlot, ...])`` (the outputs) or ``("error", message)``; an
:class:`~runtime.sdk.panoramasdk._protocol.ArraySlot` is the one record of an array in shared memory on every
channel, the app's included.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import pickle
import socket
from collections.abc import Sequence
from typing import Any

import numpy as np

from runtime.sdk.panoramasdk._protocol import ArraySlot

__all__ = ["MAX_MESSAGE", "SharedBuffer", "receive", "sealed_memfd", "send"]

#: largest message either side reads (messages hold metadata only)
MAX_MESSAGE = 1 << 20


def send(sock: socket.socket, message: object, fds: Sequence[int] = ()) -> None:
    """Send one message (and, optionally, file descriptors with it).

    Args:
        sock: a SOCK_SEQPACKET socket.
        message: any picklable value.
        fds: file descriptors to pass along.

    Raises:
        OSError: the peer is gone (BrokenPipeError, ConnectionResetError).
    """
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if fds:
        socket.send_fds(sock, [data], list(fds))
    else:
        sock.send(data)


def receive(sock: socket.socket, maxfds: int = 0) -> tuple[Any, list[int]] | None:
    """Receive one message.

    Args:
        sock: a SOCK_SEQPACKET socket.
        maxfds: how many file descriptors the message may carry.

    Returns:
        The message and the received fds, or None when the peer closed the socket (or died).

    Raises:
        OSError: the socket failed for another reason than the peer going away.
    """
    try:
        if maxfds:
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, maxfds)
        else:
            data, fds = sock.recv(MAX_MESSAGE), []
    except ConnectionResetError:
        return None
    if not data:
        for fd in fds:
            os.close(fd)
        return None
    return pickle.loads(data), fds


def sealed_memfd(name: str, size: int, *, grow: bool = True, reserve: bool = True) -> int:
    """A new memfd of ``size`` bytes that can never shrink.

    A process that maps a file another process may truncate gets SIGBUS when it touches the lost pages; an
    app handed this fd cannot do that to the appliance or the model server. Sealed against further seals.

    Args:
        name: the name shown in ``/proc/<pid>/fd`` (for debugging).
        size: bytes.
        grow: allow the file to grow later (else its size is sealed too).
        reserve: allocate the pages now, so that running out of memory is an error here, never a SIGBUS
            when the memory is written.

    Returns:
        The file descriptor (close-on-exec), owned by the caller.

    Raises:
        OSError: no memory for it.
    """
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        if reserve and size:
            os.posix_fallocate(fd, 0, size)
        else:
            os.ftruncate(fd, size)
        seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL | (0 if grow else fcntl.F_SEAL_GROW)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedBuffer:
    """A memfd mapped in this process; the other end of the channel maps the same file.

    Mappings are replaced, never closed, when the file grows: arrays handed out earlier (or kept by a
    framework) stay valid until they are garbage. The file's pages are reserved when it grows, so that a
    full memory is an error then, never a SIGBUS when the memory is written; a memfd made here cannot
    shrink (see :func:`sealed_memfd`).

    Args:
        fd: the memfd (owned from now on), or None to create one.
        size: its current size in bytes (the new file's size when ``fd`` is None).
    """

    def __init__(self, fd: int | None = None, size: int = 1 << 20) -> None:
        if fd is None:
            fd = sealed_memfd("panorama-model-io", size)
        self.fd = fd
        self.size = size
        self._map = mmap.mmap(fd, size)

    def ensure(self, size: int) -> None:
        """Grow the file (and the mapping) to hold at least ``size`` bytes.

        Args:
            size: the bytes needed.

        Raises:
            OSError: no memory for the file to grow (tmpfs full).
        """
        if size <= self.size:
            return
        new_size = _pages(max(size, self.size * 2))
        os.posix_fallocate(self.fd, 0, new_size)
        self.follow(new_size)

    def follow(self, size: int) -> None:
        """Map the file again after the other side grew it.

        Args:
            size: the size the other side reported.
        """
        if size != self.size:
            self._map = mmap.mmap(self.fd, size)
            self.size = size

    def array(self, dtype: np.dtype[Any] | str, shape: Sequence[int], offset: int) -> np.ndarray:
        """A numpy view of part of the buffer (no copy).

        Args:
            dtype: element type.
            shape: array shape.
            offset: byte offset of the first element.

        Returns:
            A writable array backed by the shared memory.
        """
        return np.ndarray(tuple(shape), dtype=np.dtype(dtype), buffer=self._map, offset=offset)

    def view(self, slot: ArraySlot) -> np.ndarray:
        """A writable numpy view of the array ``slot`` describes (no copy; the caller checked its bounds)."""
        return self.array(slot.dtype, slot.shape, slot.offset)

    def close(self) -> None:
        """Release the file descriptor (the mapping goes when the last view of it does)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _pages(size: int) -> int:
    return (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
