"""Per-app resource limits: memory and processes in a control group of the app's own, storage in a
filesystem of its size (``emulator.device.volume``).

A device had a fixed memory and an app could not starve the device's own services. Each sandbox instance
gets a cgroup of its own, made under the emulator's own cgroup, before the app starts: its memory is capped
(past it the kernel's OOM killer ends the app, and the supervisor restarts it with the cause
``memory limit N MiB``), and so is its number of processes and threads (``fork`` and thread creation fail
with EAGAIN past it). The cgroup goes with the instance.

cgroup v2 is used where the emulator may write to its own cgroup's subtree (root, or a subtree delegated by
systemd) and the ``memory`` and ``pids`` controllers are on; on a v1 hierarchy (hybrid hosts) the ``memory``
and ``pids`` hierarchies are used as root. Where neither is writable (an ordinary user without a delegated
subtree) weaker stand-ins apply: processes by ``RLIMIT_NPROC`` (``nproc_rlimit``: the user's processes and
threads now plus the limit, so a fork loop stops there, though the apps of one user share that headroom),
memory by ``MemoryWatch``, which samples the sandbox's resident memory every 0.1 s and kills it past the
limit (an app allocating fast can overshoot between samples). ``limits_in_force`` says at boot which apply.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from emulator.device.volume import volume_support
from emulator.errors import DeviceError

__all__ = [
    "DEFAULT_MEMORY_MIB",
    "DEFAULT_PIDS",
    "DEFAULT_STORAGE_MIB",
    "AppCgroup",
    "Limits",
    "MemoryWatch",
    "cgroup_support",
    "limits_in_force",
    "nproc_rlimit",
    "sweep_stale_cgroups",
]

DEFAULT_MEMORY_MIB = 2048
DEFAULT_PIDS = 512
DEFAULT_STORAGE_MIB = 10240
MiB = 1024 * 1024
_ROOT = Path("/sys/fs/cgroup")
_counter = itertools.count(1)


@dataclass(frozen=True)
class Limits:
    """What one app may take; 0 means no limit.

    Args:
        memory_mib: memory (resident, page cache included) in MiB.
        pids: processes and threads at once.
        storage_mib: size of the filesystem that holds the app's storage while the device is on
            (``emulator.device.volume``).

    Raises:
        DeviceError: a negative limit.
    """

    memory_mib: int = DEFAULT_MEMORY_MIB
    pids: int = DEFAULT_PIDS
    storage_mib: int = DEFAULT_STORAGE_MIB

    def __post_init__(self) -> None:
        for name in ("memory_mib", "pids", "storage_mib"):
            if getattr(self, name) < 0:
                raise DeviceError(f"{name} must be 0 (no limit) or more, not {getattr(self, name)}")


def _own_cgroups() -> dict[str, str]:
    """Controller (``""`` for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    found: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                found[controller] = path
    return found


def _writable_dir(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def cgroup_support() -> dict[str, Path]:
    """Where this process may make app cgroups: controller (``memory``, ``pids``) -> parent directory.

    Returns:
        The parents found; empty when no cgroup can be made here.
    """
    own = _own_cgroups()
    v2 = _ROOT / own.get("", "/").lstrip("/")
    controllers_file = _ROOT / "cgroup.controllers"
    if controllers_file.is_file():
        with contextlib.suppress(OSError):
            enabled = (v2 / "cgroup.subtree_control").read_text().split()
            if _writable_dir(v2) and {"memory", "pids"} <= set(enabled):
                return {"memory": v2, "pids": v2}
        return {}
    parents: dict[str, Path] = {}
    for controller in ("memory", "pids"):
        parent = _ROOT / controller / own.get(controller, "/").lstrip("/")
        if _writable_dir(parent):
            parents[controller] = parent
    return parents


def sweep_stale_cgroups() -> list[Path]:
    """Remove the app cgroups an emulator process that no longer runs left behind (it was SIGKILLed).

    Returns:
        The cgroups removed.
    """
    removed = []
    for parent in set(cgroup_support().values()):
        for path in parent.glob("panorama-*-*"):
            owner = path.name.split("-")[1]
            if not owner.isdigit() or Path(f"/proc/{owner}").exists():
                continue
            with contextlib.suppress(OSError):
                path.rmdir()
                removed.append(path)
    return removed


def limits_in_force(limits: Limits) -> str:
    """One line for the boot saying which limits are in force and how (and, first, the cgroups that an
    emulator killed without its shutdown left behind are removed).

    Args:
        limits: the configured limits.
    """
    sweep_stale_cgroups()
    support = cgroup_support()
    parts = []
    for name, value, unit, controller in (
        ("memory", limits.memory_mib, " MiB", "memory"),
        ("processes", limits.pids, "", "pids"),
    ):
        if value == 0:
            parts.append(f"{name} unlimited")
        elif controller in support:
            parts.append(f"{name} {value}{unit} (cgroup)")
        elif controller == "pids":
            parts.append(f"{name} {value} (RLIMIT_NPROC over the user's processes: no writable cgroup here)")
        else:
            parts.append(f"{name} {value}{unit} (sampled every 0.1 s: no writable cgroup here)")
    if limits.storage_mib == 0:
        parts.append("storage unlimited")
    elif (missing := volume_support()) is None:
        parts.append(f"storage {limits.storage_mib} MiB (a filesystem of that size)")
    else:
        parts.append(f"storage unlimited ({missing})")
    return "app limits: " + ", ".join(parts)


def nproc_rlimit(extra: int) -> int:
    """``RLIMIT_NPROC`` that lets this user's processes and threads grow by ``extra`` from now.

    The kernel counts every process and thread of the real user id (sandboxes included), so the value is the
    count now plus ``extra``.
    """
    uid = os.getuid()
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = dict(
                line.split(":", 1) for line in (entry / "status").read_text().splitlines() if ":" in line
            )
            if int(fields["Uid"].split()[0]) == uid:
                count += int(fields["Threads"])
    return count + extra


class MemoryWatch:
    """Kills a sandbox whose processes hold more resident memory than the limit, sampled every 0.1 s.

    Args:
        init_pid: host pid of the sandbox's pid 1 (its descendants are counted).
        memory_mib: the limit.
        kill: ends the whole sandbox.
    """

    def __init__(self, init_pid: int, memory_mib: int, kill: Callable[[], None]) -> None:
        self.init_pid = init_pid
        self.memory_mib = memory_mib
        self.fired = False
        self._kill = kill
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"panorama-memory-{init_pid}", daemon=True)

    def start(self) -> None:
        """Start sampling."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling (the sandbox has ended)."""
        self._stop.set()

    def cause(self) -> str | None:
        """``memory limit N MiB`` once the watch has killed the sandbox, else None."""
        return f"memory limit {self.memory_mib} MiB" if self.fired else None

    def resident(self) -> int:
        """Bytes resident in the sandbox's processes now."""
        total = 0
        pending = [self.init_pid]
        while pending:
            pid = pending.pop()
            with contextlib.suppress(OSError, ValueError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            with contextlib.suppress(OSError, ValueError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    pending += [int(child) for child in (task / "children").read_text().split()]
        return total

    def _run(self) -> None:
        limit = self.memory_mib * MiB
        while not self._stop.wait(0.1):
            if not Path(f"/proc/{self.init_pid}").exists():
                return
            if self.resident() > limit:
                self.fired = True
                self._kill()
                return


class AppCgroup:
    """The cgroup(s) of one sandbox instance.

    Args:
        name: a name for the node (part of the directory name).
        limits: the limits to apply.
    """

    def __init__(self, name: str, limits: Limits) -> None:
        self.limits = limits
        leaf = f"panorama-{os.getpid()}-{next(_counter)}-{''.join(c if c.isalnum() else '-' for c in name)}"
        self.dirs: dict[str, Path] = {}
        support = cgroup_support()
        if limits.memory_mib and "memory" in support:
            self.dirs["memory"] = support["memory"] / leaf
        if limits.pids and "pids" in support:
            self.dirs["pids"] = support["pids"] / leaf

    def create(self) -> None:
        """Make the cgroups and set the limits.

        Raises:
            DeviceError: a cgroup cannot be made or configured.
        """
        memory = self.limits.memory_mib * MiB
        try:
            for controller, path in self.dirs.items():
                path.mkdir(exist_ok=True)
                if controller == "pids":
                    (path / "pids.max").write_text(str(self.limits.pids))
                elif (path / "memory.max").exists():
                    (path / "memory.max").write_text(str(memory))
                    with contextlib.suppress(OSError):
                        (path / "memory.swap.max").write_text("0")
                else:
                    (path / "memory.limit_in_bytes").write_text(str(memory))
        except OSError as error:
            self.remove()
            raise DeviceError(f"cannot set the app's limits in {error.filename}: {error.strerror}") from None

    def add(self, pid: int) -> None:
        """Move a process (before it starts the app) into every cgroup.

        Raises:
            DeviceError: it cannot be moved.
        """
        try:
            for path in set(self.dirs.values()):
                (path / "cgroup.procs").write_text(str(pid))
        except OSError as error:
            raise DeviceError(
                f"cannot put the app in its cgroup {error.filename}: {error.strerror}"
            ) from None

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed so far."""
        path = self.dirs.get("memory")
        if path is None:
            return 0
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError, ValueError):
                for line in (path / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        return 0

    def cause(self) -> str | None:
        """``memory limit N MiB`` once the memory limit has killed a process of the app, else None."""
        return f"memory limit {self.limits.memory_mib} MiB" if self.oom_kills() else None

    def remove(self) -> None:
        """Remove the cgroups (their processes have ended; waits briefly for the kernel to let go of them)."""
        for path in set(self.dirs.values()):
            for _ in range(200):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
