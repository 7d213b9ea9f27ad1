"""The wire between the appliance and its model server.

Both ends talk over ``AF_UNIX`` / ``SOCK_SEQPACKET`` sockets, so one ``send`` is one message and a dead peer
is seen as end-of-file. Messages are small pickled tuples (both ends are this package); arrays never cross the
socket: each channel owns a memfd (or a file in a shared-memory directory) that both processes map, the
caller writes the inputs into it, the server writes the outputs after them. Either side may grow the file;
the message carries its current size and the other side maps it again.

Control socket (appliance -> server): ``("load", [ModelSpec, ...])`` once, then ``("channel", size)`` with the
fds of a new channel socket and its memfd. Server -> appliance: ``("loading", node)`` before each model,
then ``("ready", {node: ({input: dtype}, [note, ...])})`` or ``("failed", node, message)``.

Channel (one call at a time): ``("call", node, size, [(input, dtype, shape, offset), ...])`` answered by
``("ok", size, [(dtype, shape, offset), ...])`` or ``("error", message)``.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ALIGN", "MAX_MESSAGE", "SharedBuffer", "align", "layout", "receive", "send"]

#: largest message either side reads (messages hold metadata only)
MAX_MESSAGE = 1 << 20
#: alignment of every array in a shared buffer
ALIGN = 64


def align(offset: int) -> int:
    """Round an offset up to :data:`ALIGN`.

    Args:
        offset: a byte offset.

    Returns:
        The next multiple of ALIGN at or after ``offset``.
    """
    return (offset + ALIGN - 1) // ALIGN * ALIGN


def layout(arrays: Sequence[tuple[np.dtype[Any], tuple[int, ...]]], start: int = 0) -> tuple[list[int], int]:
    """Place arrays one after the other in a buffer.

    Args:
        arrays: ``(dtype, shape)`` of each array.
        start: where the first may go.

    Returns:
        The offset of each array and the end of the last one.
    """
    offsets = []
    end = align(start)
    for dtype, shape in arrays:
        offsets.append(end)
        end = align(end + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
    return offsets, end


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


class SharedBuffer:
    """A memfd (or a file) mapped in this process; the other end of the channel maps the same file.

    Mappings are replaced, never closed, when the file grows: arrays handed out earlier (or kept by a
    framework) stay valid until they are garbage. The file's pages are reserved when it grows, so that a
    full tmpfs is an error then, never a SIGBUS when the memory is written.

    Args:
        fd: the memfd (owned from now on), or None to create one.
        size: its current size in bytes (the new file's size when ``fd`` is None).
        path: the file's path when it is a file to remove on :meth:`close`.
    """

    def __init__(self, fd: int | None = None, size: int = 1 << 20, path: Path | None = None) -> None:
        if fd is None:
            fd = os.memfd_create("panorama-model-io", os.MFD_CLOEXEC)
            try:
                os.posix_fallocate(fd, 0, size)
            except BaseException:
                os.close(fd)
                raise
        self.fd = fd
        self.size = size
        self.path = path
        self._map = mmap.mmap(fd, size)

    @classmethod
    def create(cls, path: Path, size: int) -> SharedBuffer:
        """Make a new file (which other processes may open by name) as a shared buffer.

        Args:
            path: where; the file must not exist.
            size: bytes (rounded up to whole pages).

        Returns:
            The buffer; :meth:`close` removes the file.

        Raises:
            OSError: the file exists or cannot be made (tmpfs full).
        """
        size = _pages(max(size, 1))
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.posix_fallocate(fd, 0, size)
            return cls(fd, size, path)
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise

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

    def close(self) -> None:
        """Release the file descriptor (the mapping goes when the last view of it does); remove the file."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None


def _pages(size: int) -> int:
    return (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
