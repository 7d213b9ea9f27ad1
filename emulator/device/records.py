"""Records of the running nodes' sandboxes, kept in the device's state directory for ``shell``.

While a device is on, every code node's sandbox (root filesystem, storage, logs, the SDK, run directory,
environment, hostname, network mode, capabilities) is recorded in ``<device>/sandboxes/<node>.json``, readable
by its owner only, in a folder no sandbox can see; the records go at boot and at power off. Each start of
the node's sandbox adds the host pid of its init and the identity of its network namespace, so that a shell
can join the namespace of the sandbox that runs now (and knows when that one has ended).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.device.limits import Limits
from emulator.device.sandbox import SandboxSpec
from emulator.device.store import DeviceStore
from emulator.errors import DeviceError

__all__ = [
    "RECORDS_DIR",
    "SandboxRecord",
    "clear_sandbox_records",
    "read_sandbox_record",
    "record_sandbox",
    "record_sandbox_start",
]

RECORDS_DIR = "sandboxes"
"""The folder of the device's state directory that holds the running nodes' sandbox records."""
_PATH_FIELDS = ("rootfs", "storage_dir", "logs_dir", "sdk_dir", "run_dir")


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (tuple, list)):
        return [_encode(item) for item in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(key): _encode(item) for key, item in value.items()}
    return value


@dataclass(frozen=True)
class SandboxRecord:
    """A running node's sandbox as recorded.

    Args:
        spec: how its sandbox is made.
        init_pid: host pid of the init of the node's sandbox while it runs; None between its starts (it is
            restarting, or has stopped) or before the first.
    """

    spec: SandboxSpec
    init_pid: int | None = None


def _namespace(pid: int, kind: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def _write(folder: Path, node: str, body: dict[str, Any]) -> None:
    temporary = folder / f".{node}.json.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "w") as file:
        json.dump(body, file)
    os.replace(temporary, folder / f"{node}.json")


def record_sandbox(device_root: Path, node: str, spec: SandboxSpec) -> None:
    """Record how a node's sandbox is made, for ``shell`` (readable by the owner only).

    Args:
        device_root: the device's state directory (``<state>/devices/<device>``).
        node: the code node.
        spec: its sandbox.
    """
    folder = device_root / RECORDS_DIR
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(folder, node, {"pid": os.getpid(), "node": node, "spec": _encode(dataclasses.asdict(spec))})


def record_sandbox_start(device_root: Path, node: str, init_pid: int) -> None:
    """Add to a node's record the sandbox that has just started: its init's pid and network namespace.

    A record that is gone (the device is powering off) is not made again.

    Args:
        device_root: the device's state directory.
        node: the code node.
        init_pid: host pid of the new sandbox's init.
    """
    folder = device_root / RECORDS_DIR
    try:
        body = json.loads((folder / f"{node}.json").read_text())
    except (OSError, ValueError):
        return
    body["sandbox"] = {"pid": init_pid, "net": _namespace(init_pid, "net")}
    _write(folder, node, body)


def clear_sandbox_records(device_root: Path) -> None:
    """Remove every sandbox record of the device (at boot and at power off)."""
    shutil.rmtree(device_root / RECORDS_DIR, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _decode_spec(raw: dict[str, Any]) -> SandboxSpec:
    known = {spec_field.name for spec_field in dataclasses.fields(SandboxSpec)}
    values: dict[str, Any] = {}
    for name, value in raw.items():
        if name not in known:
            continue
        if name in _PATH_FIELDS:
            values[name] = Path(value) if value is not None else None
        elif name == "ro_files":
            values[name] = tuple((Path(source), str(target)) for source, target in value)
        elif name == "limits":
            values[name] = Limits(**value) if isinstance(value, dict) else None
        elif isinstance(value, list):
            values[name] = tuple(value)
        else:
            values[name] = value
    return SandboxSpec(**values)


def _running(raw: Any) -> int | None:
    """The recorded sandbox init's pid if that sandbox still runs (its pid still has that namespace)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("pid"), int) or not raw.get("net"):
        return None
    pid = int(raw["pid"])
    return pid if _namespace(pid, "net") == raw["net"] else None


def read_sandbox_record(store: DeviceStore, node: str) -> SandboxRecord:
    """The sandbox of a node of the device's running application.

    Args:
        store: the device.
        node: the code node.

    Returns:
        Its sandbox, as recorded at its start, with the pid of its init while it runs.

    Raises:
        DeviceError: the device is off, has no such node, or the record is unusable.
    """
    folder = store.root / RECORDS_DIR
    names = sorted(path.stem for path in folder.glob("*.json")) if folder.is_dir() else []
    if node not in names:
        if not names:
            raise DeviceError(
                f"device {store.device} is not running: start it with `panorama-emulator serve` or `dev` "
                "(with the same --device and --state-dir)"
            )
        raise DeviceError(f"no such node on device {store.device} (its nodes: {', '.join(names)})", node=node)
    path = folder / f"{node}.json"
    try:
        body = json.loads(path.read_text())
        pid = int(body["pid"])
        spec = _decode_spec(body["spec"])
        init_pid = _running(body.get("sandbox"))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DeviceError(f"the sandbox record is unusable: {error}", file=str(path), node=node) from None
    if not _alive(pid):
        raise DeviceError(
            f"device {store.device} is not running (the process that booted it, pid {pid}, has ended)",
            node=node,
        )
    with contextlib.suppress(ValueError):
        spec.rootfs.resolve().relative_to(store.rootfs_root.resolve())
        return SandboxRecord(spec, init_pid)
    raise DeviceError("the sandbox record names a root filesystem outside the device", file=str(path))
