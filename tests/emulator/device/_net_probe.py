"""Test support, run in-process or as a script (``python _net_probe.py ARGS_JSON``, e.g. as the test account):
two sandboxes with network ``app`` that serve on container port 80, each routed to a host port, which try
the host's loopback and an outside server. Prints (as a script) or returns a JSON-able report.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

APP = r"""
import socket, sys
name, blocked, out_host, out_port = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("0.0.0.0", 80))
server.listen(4)
def attempt(how):
    try:
        return how()
    except OSError as error:
        return "refused: " + type(error).__name__
def tcp(host, port):
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"ping")
        conn.shutdown(socket.SHUT_WR)
        return "reached: " + conn.recv(100).decode()
def udp(host, port):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(b"ping", (host, port))
        return "reached: " + sock.recv(100).decode()
print("host-loopback", attempt(lambda: tcp("127.0.0.1", blocked)), flush=True)
if out_port:
    print("outbound-tcp", attempt(lambda: tcp(out_host, out_port)), flush=True)
    print("outbound-udp", attempt(lambda: udp(out_host, out_port)), flush=True)
print("serving", flush=True)
while True:
    client, _ = server.accept()
    client.sendall(("hello from " + name).encode())
    client.close()
"""


def _exchange(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as client:
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer.decode()


def probe(rootfs: Path, blocked_port: int, outbound: tuple[str, int] | None) -> dict[str, Any]:
    """Run two apps on container port 80 and report what each saw and answered.

    Args:
        rootfs: a root filesystem with python3.
        blocked_port: a port the test listens on at the host's 127.0.0.1.
        outbound: an outside server's address and TCP+UDP port, or None.
    """
    from emulator.device.network import PortForwarder, stack_connector
    from emulator.device.sandbox import DEFAULT_PATH, BwrapLauncher, SandboxProcess, SandboxSpec

    out_host, out_port = outbound or ("0.0.0.0", 0)
    processes: dict[str, SandboxProcess] = {}
    forwarders: list[PortForwarder] = []
    report: dict[str, Any] = {"uid": os.geteuid(), "apps": {}}
    try:
        for name in ("one", "two"):
            spec = SandboxSpec(
                rootfs=rootfs,
                command=("python3", "-c", APP, name, str(blocked_port), out_host, str(out_port)),
                env={"PATH": DEFAULT_PATH},
                network="app",
                user_namespace=os.geteuid() != 0,
                inbound_ports=(80,),
            )
            process = BwrapLauncher().launch(spec)
            processes[name] = process
            seen: dict[str, str] = {}
            assert process.stdout is not None
            while True:
                line = process.stdout.readline().decode().strip()
                if not line or line == "serving":
                    break
                key, _, value = line.partition(" ")
                seen[key] = value
            forwarder = PortForwarder(0, 80, connect=stack_connector(processes.get, name, 80))
            forwarder.start()
            forwarders.append(forwarder)
            assert forwarder._server is not None
            port = int(forwarder._server.getsockname()[1])
            seen["answer"] = _exchange(port)
            seen["stack_pid"] = str(process.netstack.pid if process.netstack else None)
            report["apps"][name] = seen
    finally:
        for forwarder in forwarders:
            forwarder.close()
        for process in processes.values():
            process.kill()
            process.wait()
    report["stacks_left"] = [
        pid
        for seen in report["apps"].values()
        if (pid := seen.get("stack_pid")) not in (None, "None") and Path(f"/proc/{pid}").exists()
    ]
    return report


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    args = json.loads(sys.argv[1])
    outbound = tuple(args["outbound"]) if args["outbound"] else None
    print(json.dumps(probe(Path(args["rootfs"]), args["blocked"], outbound)))  # type: ignore[arg-type]
