"""Inbound ports: the TCP relay from a host port to an app's port, in the host's or the app's network."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _sandbox_helpers import make_host_rootfs

from emulator.device.network import PortForwarder, connect_in_namespace
from emulator.device.sandbox import DEFAULT_PATH, BwrapLauncher, SandboxProcess, SandboxSpec
from emulator.errors import DeviceError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def upper_server() -> Iterator[int]:
    """A host server answering each connection with what it received, upper-cased, once the client is done."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)

    def serve() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            with client:
                data = b""
                while chunk := client.recv(65536):
                    data += chunk
                client.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    yield int(server.getsockname()[1])
    server.close()


def exchange(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        client.sendall(payload)
        client.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


def test_the_relay_carries_both_directions_and_half_closes(upper_server: int) -> None:
    forwarder = PortForwarder(free_port(), upper_server)
    forwarder.start()
    try:
        payload = os.urandom(300_000).hex().encode()
        assert exchange(forwarder.listen_port, payload) == payload.upper()
        assert exchange(forwarder.listen_port, b"again") == b"AGAIN"
        assert forwarder.connections == 2
    finally:
        forwarder.close()


def test_a_closed_app_port_closes_the_connection(tmp_path: Path) -> None:
    forwarder = PortForwarder(free_port(), free_port())
    forwarder.start()
    try:
        try:
            answer = exchange(forwarder.listen_port, b"anyone?")
        except ConnectionResetError:
            answer = b""
        assert answer == b""
        assert forwarder.refused == 1
    finally:
        forwarder.close()


def test_a_busy_host_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(DeviceError) as caught:
            PortForwarder(port, 80, node="web").start()
    message = str(caught.value)
    assert message.startswith("node web: cannot listen on 127.0.0.1:") and "\n" not in message


def test_close_stops_listening(upper_server: int) -> None:
    forwarder = PortForwarder(free_port(), upper_server)
    forwarder.start()
    forwarder.close()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", forwarder.listen_port), timeout=5):
        pass


ISOLATED_SERVER = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(4)
print("listening", flush=True)
while True:
    client, _ = server.accept()
    client.sendall(b"from inside")
    client.close()
"""


@pytest.fixture
def isolated_server(tmp_path: Path) -> Iterator[tuple[SandboxProcess, int]]:
    rootfs = make_host_rootfs(tmp_path / "rootfs")
    port = free_port()
    spec = SandboxSpec(rootfs=rootfs, command=("python3", "-c", ISOLATED_SERVER, str(port)),
                       env={"PATH": DEFAULT_PATH}, network="none",
                       user_namespace=os.geteuid() != 0)  # fmt: skip
    process = BwrapLauncher().launch(spec)
    assert process.stdout is not None
    assert process.stdout.readline() == b"listening\n"
    yield process, port
    process.kill()
    process.wait()


@pytest.mark.sandbox
def test_a_relay_reaches_an_app_in_its_own_network_namespace(
    isolated_server: tuple[SandboxProcess, int],
) -> None:
    if os.geteuid() != 0:
        pytest.skip("entering a sandbox's network namespace needs root")
    process, port = isolated_server
    own_namespace = os.readlink("/proc/thread-self/ns/net")
    # Not reachable from the host's network ...
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
    # ... but from inside its namespace, and through a relay on a host port.
    with connect_in_namespace(f"/proc/{process.init_pid}/ns/net", port) as inside:
        assert inside.recv(100) == b"from inside"
    # The calling thread went back to its own namespace.
    assert os.readlink("/proc/thread-self/ns/net") == own_namespace
    forwarder = PortForwarder(
        free_port(), port, connect=lambda: connect_in_namespace(f"/proc/{process.init_pid}/ns/net", port)
    )
    forwarder.start()
    try:
        assert exchange(forwarder.listen_port, b"") == b"from inside"
    finally:
        forwarder.close()
