"""The user-space network stack that gives an app's own network namespace its way out: ``pasta``.

With ``network="app"`` (the default) bwrap gives the sandbox a network namespace of its own, holding only a
loopback interface. Before the app starts, ``pasta`` (Debian's ``passt`` package) attaches to that namespace
and adds an interface through which the app's outbound TCP, UDP and DNS traffic leaves by ordinary sockets of
the emulator's user, as a device's containers reached the outside through the device. It is configured so
that the app cannot reach the host's own loopback services: no port of the host is mapped into the
namespace (``-T none -U none``) and the gateway address is not mapped to the host (``--no-map-gw``).

Inbound: each routed ``containerPort`` is forwarded by ``pasta`` from a free port on the host's 127.0.0.1
(``host_ports``), which the appliance's relay on ``hostPort`` connects to; the relay, not ``pasta``, holds
``hostPort`` so that it stays open while the app restarts.

``pasta`` runs in the foreground as a child of the thread that started the sandbox and receives SIGKILL when
that thread ends (``setpriv --pdeathsig``), so no stack outlives the emulator; ``stop`` ends it with its app.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from emulator.errors import SandboxError

__all__ = ["NetStack", "check_network_stack", "find_pasta"]

_TUN = Path("/dev/net/tun")
_READY_TIMEOUT = 30.0


@functools.lru_cache(maxsize=1)
def find_pasta() -> str | None:
    """The ``pasta`` executable, or None when the ``passt`` package is not installed."""
    return shutil.which("pasta")


def check_network_stack() -> None:
    """Check that an app's own network namespace can be given a way out.

    Raises:
        SandboxError: ``pasta`` or ``setpriv`` is missing, or ``/dev/net/tun`` cannot be opened by this user
            (one line saying how to fix it, or to choose ``--network host``).
    """
    if find_pasta() is None:
        raise SandboxError(
            "network 'app' needs pasta to reach the outside: install the passt package "
            "(apt-get install passt) or run with --network host or none"
        )
    if shutil.which("setpriv") is None:
        raise SandboxError("network 'app' needs setpriv (util-linux): install util-linux")
    if not os.access(_TUN, os.R_OK | os.W_OK):
        raise SandboxError(
            f"network 'app' needs {_TUN} to be readable and writable by this user (distributions ship it "
            f"with mode 0666: chmod 0666 {_TUN}) or run with --network host or none"
        )


def _free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class NetStack:
    """One ``pasta`` attached to one sandbox's network namespace.

    Args:
        init_pid: host pid of a process in the namespace (the sandbox's pid 1).
        container_ports: TCP ports of the app to forward from the host's loopback.
        user_namespace: the sandbox has its own user namespace (the emulator is not root).
    """

    def __init__(self, init_pid: int, container_ports: Sequence[int], *, user_namespace: bool) -> None:
        self.init_pid = init_pid
        self.host_ports = {port: _free_loopback_port() for port in container_ports}
        self.user_namespace = user_namespace
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    def start(self) -> None:
        """Start ``pasta`` and return once the namespace's interface and routes are configured.

        Raises:
            SandboxError: ``pasta`` could not attach or configure the namespace (its own message).
        """
        pasta = find_pasta()
        if pasta is None:
            check_network_stack()
            raise AssertionError("unreachable")
        self._dir = Path(tempfile.mkdtemp(prefix="panorama-net-"))
        pid_file = self._dir / "pid"
        log_file = self._dir / "log"
        netns = os.open(f"/proc/{self.init_pid}/ns/net", os.O_RDONLY)
        try:
            argv = ["setpriv", "--pdeathsig", "KILL", pasta, "--config-net", "--foreground", "--quiet"]
            argv += ["-T", "none", "-U", "none", "-u", "none", "--no-map-gw"]
            forwards = ",".join(f"{host}:{port}" for port, host in self.host_ports.items())
            argv += ["-t", f"127.0.0.1/{forwards}" if forwards else "none"]
            argv += ["--pid", str(pid_file), "--log-file", str(log_file)]
            if self.user_namespace:
                argv += ["--userns", f"/proc/{self.init_pid}/ns/user"]
            else:
                # As root pasta would switch to nobody, who may not join the namespace.
                argv += ["--runas", "0:0"]
            # The namespace travels as an open descriptor: as root, pasta (with fewer capabilities than the
            # sandbox) may not open the sandbox's /proc entries, but may reopen its own descriptor.
            argv += ["--netns", f"/proc/self/fd/{netns}"]
            try:
                self._process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    pass_fds=(netns,),
                )
            except OSError as error:
                self.stop()
                raise SandboxError(f"cannot run pasta ({pasta}): {error}") from error
        finally:
            os.close(netns)
        deadline = time.monotonic() + _READY_TIMEOUT
        while not pid_file.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                said = self._last_log_line(log_file)
                self.stop()
                raise SandboxError(f"the app's network stack (pasta) did not start: {said}")
            time.sleep(0.005)

    @staticmethod
    def _last_log_line(log_file: Path) -> str:
        with contextlib.suppress(OSError):
            lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
            if lines:
                return lines[-1].split("ERROR:", 1)[-1].strip()
        return "no message"

    @property
    def pid(self) -> int | None:
        """Host pid of ``pasta`` while it runs."""
        return self._process.pid if self._process is not None else None

    def stop(self) -> None:
        """End ``pasta`` (SIGKILL: it holds no state worth a graceful end) and remove its files."""
        process, self._process = self._process, None
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            process.wait()
        directory, self._dir = self._dir, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
