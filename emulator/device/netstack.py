"""The user-space network stack that gives an app's own network namespace its way out: ``slirp4netns``.

With ``network="app"`` (the default) bwrap gives the sandbox a network namespace of its own, holding only a
loopback interface. Before the app starts, ``slirp4netns`` attaches to that namespace and adds an interface
(``eth0``, 10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3 forwarded to the host's resolver) through which the
app's outbound TCP, UDP and DNS traffic leaves by ordinary sockets of the emulator's user, as a device's
containers reached the outside through the device. ``--disable-host-loopback`` keeps the host's own
loopback services (databases, the emulator's API) out of the app's reach.

Inbound: each routed ``containerPort`` is forwarded by the stack from a free port on the host's 127.0.0.1
(``host_ports``), which the appliance's relay on ``hostPort`` connects to; the relay, not the stack, holds
``hostPort`` so that it stays open while the app restarts.

The stack exits when its exit pipe closes: ``stop`` closes it with its app, and the kernel closes it when
the emulator's process ends however it ends, so no stack outlives the emulator.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from emulator.errors import SandboxError

__all__ = ["STACK_DNS", "NetStack", "app_resolver", "check_network_stack", "find_slirp4netns"]

_TUN = Path("/dev/net/tun")
_READY_TIMEOUT = 30.0


@functools.lru_cache(maxsize=1)
def find_slirp4netns() -> str | None:
    """The ``slirp4netns`` executable, or None when its package is not installed."""
    return shutil.which("slirp4netns")


def check_network_stack() -> None:
    """Check that an app's own network namespace can be given a way out.

    Raises:
        SandboxError: ``slirp4netns`` is missing, or ``/dev/net/tun`` cannot be opened by this user
            (one line saying how to fix it, or to choose ``--network host``).
    """
    if find_slirp4netns() is None:
        raise SandboxError(
            "network 'app' needs slirp4netns to reach the outside: install the slirp4netns package "
            "(apt-get install slirp4netns) or run with --network host or none"
        )
    if not os.access(_TUN, os.R_OK | os.W_OK):
        raise SandboxError(
            f"network 'app' needs {_TUN} to be readable and writable by this user (distributions ship it "
            f"with mode 0666: chmod 0666 {_TUN}) or run with --network host or none"
        )


STACK_DNS = "10.0.2.3"
"""The stack's DNS address inside the namespace: it forwards queries to the host's resolver."""


def app_resolver(files: Mapping[str, Path], etc_dir: Path) -> dict[str, Path]:
    """The ``/etc`` files for an app with its own network: the host's ``resolv.conf`` unless every
    nameserver in it is on the host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq), which the app
    cannot reach; then one naming the stack's DNS forwarder, the rest of the file kept.

    Args:
        files: sandbox path -> host file, as ``boot_files.etc_files`` made them.
        etc_dir: the device's ``etc`` directory, where a rewritten file goes.

    Returns:
        The files to bind.
    """
    source = files.get("/etc/resolv.conf")
    if source is None:
        return dict(files)
    try:
        lines = source.read_text().splitlines()
    except OSError:
        return dict(files)
    servers = [line.split()[1] for line in lines if line.startswith("nameserver") and len(line.split()) > 1]
    if servers and not all(server.startswith("127.") or server == "::1" for server in servers):
        return dict(files)
    kept = [line for line in lines if not line.startswith("nameserver")]
    target = etc_dir / "resolv.conf.app"
    target.write_text("\n".join([*kept, f"nameserver {STACK_DNS}", ""]))
    return {**files, "/etc/resolv.conf": target}


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NetStack:
    """One ``slirp4netns`` attached to one sandbox's network namespace.

    Args:
        init_pid: host pid of a process in the namespace (the sandbox's pid 1).
        container_ports: TCP ports of the app to forward from the host's loopback.
        user_namespace: the sandbox has its own user namespace (the emulator is not root).
    """

    def __init__(self, init_pid: int, container_ports: Sequence[int], *, user_namespace: bool) -> None:
        self.init_pid = init_pid
        self.container_ports = tuple(container_ports)
        self.host_ports: dict[int, int] = {}
        self.user_namespace = user_namespace
        self._process: subprocess.Popen[bytes] | None = None
        self._exit_fd = -1
        self._dir: Path | None = None

    def start(self) -> None:
        """Start the stack, return once the namespace's interface and routes are configured and the
        routed ports are forwarded.

        Raises:
            SandboxError: the stack could not attach, configure the namespace or forward a port.
        """
        program = find_slirp4netns()
        if program is None:
            check_network_stack()
            raise AssertionError("unreachable")
        self._dir = Path(tempfile.mkdtemp(prefix="panorama-net-"))
        api = self._dir / "api.sock"
        ready_read, ready_write = os.pipe()
        exit_read, self._exit_fd = os.pipe()
        argv = [program, "--configure", "--mtu", "65520", "--disable-host-loopback"]
        argv += ["--ready-fd", str(ready_write), "--exit-fd", str(exit_read), "--api-socket", str(api)]
        if self.user_namespace:
            argv += ["--userns-path", f"/proc/{self.init_pid}/ns/user"]
        argv += ["--netns-type", "path", f"/proc/{self.init_pid}/ns/net", "eth0"]
        try:
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(ready_write, exit_read),
            )
        except OSError as error:
            os.close(ready_read)
            self.stop()
            raise SandboxError(f"cannot run slirp4netns ({program}): {error}") from error
        finally:
            os.close(ready_write)
            os.close(exit_read)
        try:
            ready = os.read(ready_read, 1)
        finally:
            os.close(ready_read)
        if not ready:
            said = self._said()
            self.stop()
            raise SandboxError(f"the app's network stack (slirp4netns) did not start: {said}")
        try:
            for port in self.container_ports:
                self.host_ports[port] = self._forward(api, port)
        except SandboxError:
            self.stop()
            raise

    def _forward(self, api: Path, port: int) -> int:
        host_port = _free_loopback_port()
        request = {
            "execute": "add_hostfwd",
            "arguments": {
                "proto": "tcp",
                "host_addr": "127.0.0.1",
                "host_port": host_port,
                "guest_port": port,
            },
        }
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(_READY_TIMEOUT)
                client.connect(str(api))
                client.sendall(json.dumps(request).encode())
                client.shutdown(socket.SHUT_WR)
                answer = b""
                while chunk := client.recv(4096):
                    answer += chunk
            reply = json.loads(answer or b"{}")
        except (OSError, ValueError) as error:
            raise SandboxError(f"cannot forward port {port} of the app: {error}") from None
        if "error" in reply or "return" not in reply:
            raise SandboxError(f"cannot forward port {port} of the app: {reply.get('error', reply)}")
        return host_port

    def _said(self) -> str:
        process = self._process
        if process is None or process.stderr is None:
            return "no message"
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        lines = [line for line in process.stderr.read().decode(errors="replace").splitlines() if line.strip()]
        return lines[-1] if lines else "no message"

    @property
    def pid(self) -> int | None:
        """Host pid of the stack while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """End the stack (it exits when its exit fd closes; SIGKILL if it has not) and remove its files."""
        if self._exit_fd >= 0:
            os.close(self._exit_fd)
            self._exit_fd = -1
        process, self._process = self._process, None
        if process is not None:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
