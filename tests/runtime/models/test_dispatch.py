"""The model server's dispatcher: calls on the serving thread, overflow threads for concurrent calls."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from _model_factory import WAIT

from runtime.models.dispatch import Dispatcher
from runtime.models.protocol import SharedBuffer

Handler = Callable[[bytes, SharedBuffer], bytes]


class Served:
    """A dispatcher looping on a thread of its own, and the callers' ends of its channels."""

    def __init__(self, handle: Handler, releases: dict[bytes, threading.Event]) -> None:
        self.releases = releases
        self.dispatcher = Dispatcher(handle)
        self.loop_thread = threading.Thread(target=self.dispatcher.loop, name="serving", daemon=True)
        self.loop_thread.start()
        self.buffers: list[SharedBuffer] = []

    def channel(self) -> socket.socket:
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        near.settimeout(WAIT)
        buffer = SharedBuffer(size=4096)
        self.buffers.append(buffer)
        self.dispatcher.add(far, buffer)
        return near


@pytest.fixture
def threads_seen() -> list[str]:
    return []


@pytest.fixture
def served(threads_seen: list[str]) -> Iterator[Served]:
    releases: dict[bytes, threading.Event] = {}

    def handle(request: bytes, buffer: SharedBuffer) -> bytes:
        threads_seen.append(threading.current_thread().name)
        if request.startswith(b"wait:"):
            releases.setdefault(request, threading.Event()).wait(WAIT)
        if request == b"raise":
            raise RuntimeError("the handler failed")
        return b"re:" + request

    yield Served(handle, releases)


def test_calls_one_at_a_time_run_on_the_serving_thread(served: Served, threads_seen: list[str]) -> None:
    one, two = served.channel(), served.channel()
    for index in range(20):
        sock = one if index % 2 else two
        sock.send(b"call %d" % index)
        assert sock.recv(100) == b"re:call %d" % index
    assert threads_seen == ["serving"] * 20


def test_a_blocked_call_does_not_hold_up_another_channel_and_its_thread_ends(
    served: Served, threads_seen: list[str]
) -> None:
    slow, fast = served.channel(), served.channel()
    slow.send(b"wait:slow")
    while not threads_seen:
        time.sleep(0.001)
    for index in range(3):
        fast.send(b"fast %d" % index)
        assert fast.recv(100) == b"re:fast %d" % index
    assert threads_seen[0] == "serving" and threads_seen[1:] == ["model-call"] * 3
    served.releases[b"wait:slow"].set()
    assert slow.recv(100) == b"re:wait:slow"
    deadline = time.monotonic() + WAIT
    while any(t.name == "model-call" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not any(t.name == "model-call" for t in threading.enumerate())
    fast.send(b"after")
    assert fast.recv(100) == b"re:after" and threads_seen[-1] == "serving"


def test_a_second_request_on_a_busy_channel_waits_for_the_first_answer(
    served: Served, threads_seen: list[str]
) -> None:
    sock = served.channel()
    sock.send(b"wait:first")
    sock.send(b"second")
    while not threads_seen:
        time.sleep(0.001)
    time.sleep(0.05)  # time for a wrong dispatcher to start the second request
    assert len(threads_seen) == 1
    served.releases[b"wait:first"].set()
    assert sock.recv(100) == b"re:wait:first"
    assert sock.recv(100) == b"re:second"


def test_a_closed_channel_is_let_go(served: Served) -> None:
    sock = served.channel()
    sock.send(b"hello")
    assert sock.recv(100) == b"re:hello"
    sock.close()
    deadline = time.monotonic() + WAIT
    while served.buffers[0].fd >= 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert served.buffers[0].fd == -1
    other = served.channel()
    other.send(b"still")
    assert other.recv(100) == b"re:still"


def test_a_handler_fault_closes_that_channel_only(served: Served) -> None:
    bad, good = served.channel(), served.channel()
    bad.send(b"raise")
    assert bad.recv(100) == b""
    good.send(b"fine")
    assert good.recv(100) == b"re:fine"
