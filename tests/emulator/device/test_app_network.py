"""Network ``app``: each sandbox in a network namespace of its own, with slirp4netns as its way out.

Real bwrap and real slirp4netns, as root and (when the suite runs as root) as the ordinary test account:
apps bind port 80, two of them on the same port, routed to host ports; they cannot reach the host's
loopback but do reach a server in another network namespace the test made.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _appliance_helpers import public_tmp_dir
from _net_probe import probe
from _sandbox_helpers import make_host_rootfs

from emulator.device.netstack import check_network_stack
from emulator.errors import SandboxError

pytestmark = pytest.mark.sandbox

PEER_SERVER = r"""
import socket, threading
tcp = socket.socket()
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("0.0.0.0", 0))
tcp.listen(8)
port = tcp.getsockname()[1]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", port))
def serve_udp():
    while True:
        data, peer = udp.recvfrom(100)
        udp.sendto(b"udp " + data, peer)
threading.Thread(target=serve_udp, daemon=True).start()
print(port, flush=True)
while True:
    client, _ = tcp.accept()
    data = b""
    while chunk := client.recv(100):
        data += chunk
    client.sendall(b"tcp " + data)
    client.close()
"""


@pytest.fixture(scope="module")
def stack_ready() -> None:
    try:
        check_network_stack()
    except SandboxError as error:
        pytest.skip(f"missing prerequisite: {error}")


@pytest.fixture
def public_dir() -> Iterator[Path]:
    path = public_tmp_dir("pe-net-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def peer_server() -> Iterator[tuple[str, int]]:
    """A TCP and UDP echo server in a network namespace of its own, joined to the host by a veth pair."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("making a peer network namespace with a veth pair needs root and iproute2")
    server = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c", PEER_SERVER], stdout=subprocess.PIPE, text=True
    )
    assert server.stdout is not None
    port = int(server.stdout.readline())
    host_end, peer_end = f"pe{server.pid % 100000}h", f"pe{server.pid % 100000}p"
    subnet = f"10.{200 + server.pid % 50}.{server.pid % 250}"
    pid = str(server.pid)
    try:
        for command in (
            ["ip", "link", "add", host_end, "type", "veth", "peer", "name", peer_end, "netns", pid],
            ["ip", "addr", "add", f"{subnet}.1/30", "dev", host_end],
            ["ip", "link", "set", host_end, "up"],
            ["nsenter", "-t", pid, "-n", "ip", "addr", "add", f"{subnet}.2/30", "dev", peer_end],
            ["nsenter", "-t", pid, "-n", "ip", "link", "set", peer_end, "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield f"{subnet}.2", port
    finally:
        server.kill()
        server.wait()
        # The veth pair goes with the peer namespace; remove the host end in case it did not.
        subprocess.run(["ip", "link", "del", host_end], capture_output=True, check=False)


def check_report(report: dict[str, Any], outbound: bool) -> None:
    apps = report["apps"]
    assert apps["one"]["answer"] == "hello from one"
    assert apps["two"]["answer"] == "hello from two"
    for seen in apps.values():
        assert seen["host-loopback"].startswith("refused"), seen
        if outbound:
            assert seen["outbound-tcp"] == "reached: tcp ping", seen
            assert seen["outbound-udp"] == "reached: udp ping", seen
    assert report["stacks_left"] == []


def test_two_apps_on_port_80_routed_isolated_and_reaching_out(
    stack_ready: None, public_dir: Path, blocked_port: int, peer_server: tuple[str, int]
) -> None:
    rootfs = make_host_rootfs(public_dir / "rootfs")
    check_report(probe(rootfs, blocked_port, peer_server), outbound=True)


def test_without_a_peer_namespace_the_apps_still_bind_80_and_stay_off_the_host_loopback(
    stack_ready: None, public_dir: Path, blocked_port: int
) -> None:
    rootfs = make_host_rootfs(public_dir / "rootfs")
    check_report(probe(rootfs, blocked_port, None), outbound=False)


def test_the_same_as_an_ordinary_user(
    stack_ready: None,
    public_dir: Path,
    blocked_port: int,
    peer_server: tuple[str, int],
    test_user: pwd.struct_passwd,
) -> None:
    rootfs = make_host_rootfs(public_dir / "rootfs")
    here = Path(__file__).resolve().parent
    args = json.dumps({"rootfs": str(rootfs), "blocked": blocked_port, "outbound": list(peer_server)})
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(here), "HOME": test_user.pw_dir}
    result = subprocess.run(
        ["runuser", "-u", test_user.pw_name, "--", sys.executable, str(here / "_net_probe.py"), args],
        capture_output=True, text=True, env=env, check=False, cwd=public_dir,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["uid"] == test_user.pw_uid
    check_report(report, outbound=True)


def test_the_host_loopback_server_saw_no_one(stack_ready: None, public_dir: Path) -> None:
    """The refusal above is the namespace's doing: a host server that counts connections gets none."""
    rootfs = make_host_rootfs(public_dir / "rootfs")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                continue

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    try:
        probe(rootfs, int(server.getsockname()[1]), None)
    finally:
        stop.set()
        counter.join()
        server.close()
    assert accepted == []


def test_a_loopback_resolver_is_replaced_by_the_stack_dns(tmp_path: Path) -> None:
    from emulator.device.netstack import STACK_DNS, app_resolver

    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 127.0.0.53\noptions edns0\nsearch lan\n")
    files = app_resolver({"/etc/resolv.conf": host, "/etc/hosts": host}, tmp_path)
    assert files["/etc/hosts"] == host
    assert files["/etc/resolv.conf"].read_text().splitlines() == [
        "options edns0", "search lan", f"nameserver {STACK_DNS}",
    ]  # fmt: skip
    host.write_text("nameserver 10.255.255.53\n")
    assert app_resolver({"/etc/resolv.conf": host}, tmp_path) == {"/etc/resolv.conf": host}
