"""How the model server serves its channels: on its main thread, with overflow for concurrent calls.

A call runs on the model server's main thread, where the models were loaded and warmed up: frameworks run
measurably slower on other threads (OpenMP thread teams and malloc arenas are per thread). The main thread
waits for requests itself (epoll over every channel socket), so a call costs the model server one wake-up
and no hand-off between threads: on a machine with few CPUs each hand-off adds tens of microseconds.

While the main thread runs a call, a watcher thread serves the other channels: it waits on the main thread's
epoll, armed only for the length of a call, and runs any request that arrives meanwhile on an overflow thread,
which ends when no call has come for it for :data:`OVERFLOW_IDLE` seconds. It never wakes while the main
thread is free. Calls from several app nodes are thus served
concurrently, and a long call never holds up calls to other models.

A channel carries one call at a time. Whoever receives a request (the main thread, or the watcher for an
overflow thread) marks its channel as serving until the answer is sent; the main thread's epoll reports a
channel once (``EPOLLONESHOT``) and is re-armed when its call is answered, so a channel that sends a second
request before the first is answered is not read again until then.
"""

from __future__ import annotations

import contextlib
import queue
import select
import socket
import threading
from collections.abc import Callable, Iterable

from runtime.models.protocol import MAX_MESSAGE, SharedBuffer

__all__ = ["OVERFLOW_IDLE", "Dispatcher", "Handler"]

Handler = Callable[[bytes, SharedBuffer], bytes]
"""Answers one request on a channel: ``(request bytes, the channel's shared memory) -> reply bytes``."""

_READ = select.EPOLLIN | select.EPOLLRDHUP
_WATCH = select.EPOLLIN | select.EPOLLONESHOT

OVERFLOW_IDLE = 0.5
"""Seconds an overflow thread waits for another call before it ends."""


class _Channel:
    def __init__(
        self, sock: socket.socket, buffer: SharedBuffer, handle: Handler, closed: Callable[[], None] | None
    ) -> None:
        self.sock = sock
        self.buffer = buffer
        self.handle = handle
        self.on_close = closed
        self.fd = sock.fileno()
        self.lock = threading.Lock()
        self.serving = False
        self.closed = False


class Dispatcher:
    """Serves every channel of the model server (see the module docstring).

    Args:
        handle: answers one request on a channel added without a handler of its own; it must not raise.
    """

    def __init__(self, handle: Handler) -> None:
        self._handle = handle
        self._channels: dict[int, _Channel] = {}
        self._lock = threading.Lock()
        self._main = select.epoll()
        # The watcher waits on the main thread's epoll (an epoll is readable when it has events), armed only
        # while the main thread runs a call.
        self._watch = select.epoll()
        self._watch.register(self._main.fileno(), 0)
        self._busy = False
        self._busy_lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[_Channel, bytes]] = queue.SimpleQueue()
        self._spare = 0
        self._spare_lock = threading.Lock()
        threading.Thread(target=self._watcher, name="model-call-watcher", daemon=True).start()

    def add(
        self,
        sock: socket.socket,
        buffer: SharedBuffer,
        handle: Handler | None = None,
        closed: Callable[[], None] | None = None,
    ) -> None:
        """Serve a new channel (from any thread).

        Args:
            sock: the channel's socket, owned from now on.
            buffer: its shared memory, owned from now on.
            handle: what answers this channel's requests (default: the dispatcher's).
            closed: called when the channel is closed (to release what ``handle`` holds).
        """
        channel = _Channel(sock, buffer, handle or self._handle, closed)
        with self._lock:
            self._channels[channel.fd] = channel
        self._main.register(channel.fd, _READ | select.EPOLLONESHOT)

    def loop(self) -> None:
        """Serve calls on this thread (the main thread) forever."""
        while True:
            try:
                ready = self._main.poll()
            except InterruptedError:
                continue
            channels = self._take_all(fd for fd, _ in ready)
            if not channels:
                continue
            self._set_busy(True)
            # Requests that came after the poll but before the watcher was armed.
            channels += self._take_all(fd for fd, _ in self._main.poll(0))
            for channel, request in channels[1:]:
                self._overflow(channel, request)
            self._serve(*channels[0], main=True)

    def _set_busy(self, busy: bool) -> None:
        with self._busy_lock:
            self._busy = busy
            self._watch.modify(self._main.fileno(), _WATCH if busy else 0)

    def _take_all(self, fds: Iterable[int]) -> list[tuple[_Channel, bytes]]:
        taken = []
        for fd in fds:
            channel = self._channels.get(fd)
            if channel is not None:
                request = self._take(channel)
                if request is not None:
                    taken.append((channel, request))
        return taken

    def _take(self, channel: _Channel) -> bytes | None:
        """The channel's next request, marking it serving; None if it has none, is serving, or closed."""
        with channel.lock:
            if channel.serving or channel.closed:
                return None
            try:
                request = channel.sock.recv(MAX_MESSAGE, socket.MSG_DONTWAIT)
            except BlockingIOError:
                self._arm(channel)  # another thread took it: watch the channel again
                return None
            except OSError:
                request = b""
            if not request:
                self._close(channel)
                return None
            channel.serving = True
            return request

    def _overflow(self, channel: _Channel, request: bytes) -> None:
        with self._spare_lock:
            if self._spare > 0:
                self._spare -= 1
                self._jobs.put((channel, request))
                return
        threading.Thread(
            target=self._overflow_thread, args=(channel, request), name="model-call", daemon=True
        ).start()

    def _overflow_thread(self, channel: _Channel, request: bytes) -> None:
        # Such a thread lives while calls keep coming and ends after OVERFLOW_IDLE seconds without one: a
        # thread that has run an OpenMP framework keeps its thread team while it lives, and with more OpenMP
        # threads than CPUs libgomp cuts its spinning, which made every torch call on the main thread 40 %
        # slower for as long as such a thread lived.
        # _spare counts the threads waiting for a call less the calls queued for them, so that a call is
        # queued only when a waiting thread is sure to take it.
        while True:
            self._serve(channel, request)
            with self._spare_lock:
                self._spare += 1
            try:
                channel, request = self._jobs.get(timeout=OVERFLOW_IDLE)
            except queue.Empty:
                with self._spare_lock:
                    try:
                        channel, request = self._jobs.get_nowait()
                    except queue.Empty:
                        self._spare -= 1
                        return

    def _serve(self, channel: _Channel, request: bytes, *, main: bool = False) -> None:
        try:
            reply: bytes | None = channel.handle(request, channel.buffer)
        except Exception:
            reply = None  # a fault of the server's own: the caller sees the channel close
        if main:
            # Before the answer: the caller's next request must find the main thread's epoll, not the watcher.
            self._set_busy(False)
        with channel.lock:
            channel.serving = False
            if channel.closed:
                return
            if reply is None:
                self._close(channel)
                return
            try:
                channel.sock.send(reply)
            except OSError:
                self._close(channel)
                return
            self._arm(channel)

    def _arm(self, channel: _Channel) -> None:
        with contextlib.suppress(OSError):  # closed meanwhile
            self._main.modify(channel.fd, _READ | select.EPOLLONESHOT)

    def _close(self, channel: _Channel) -> None:
        """Stop serving a channel whose peer went away (its lock held)."""
        channel.closed = True
        with self._lock:
            self._channels.pop(channel.fd, None)
        with contextlib.suppress(OSError):
            self._main.unregister(channel.fd)
        channel.sock.close()
        channel.buffer.close()
        if channel.on_close is not None:
            channel.on_close()

    def _watcher(self) -> None:
        while True:
            try:
                self._watch.poll()
            except InterruptedError:
                continue
            for channel, request in self._take_all(fd for fd, _ in self._main.poll(0)):
                self._overflow(channel, request)
            with self._busy_lock:
                if self._busy:
                    self._watch.modify(self._main.fileno(), _WATCH)
