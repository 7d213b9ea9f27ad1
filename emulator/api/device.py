"""What the device API needs of a device (``emulator.Appliance`` satisfies it), and reading its answers.

The API accepts any object shaped like :class:`DeviceLike`, so the layers above the appliance can be tested
with ``emulator.api.fake.FakeAppliance``; the helpers turn what a device reports into the API's shapes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from emulator.device.options import ApplianceOptions
from emulator.errors import ProjectError
from runtime.media.hdmi import HdmiSink

__all__ = [
    "CONSOLE_OUTPUT",
    "ApplianceFactory",
    "DeviceLike",
    "as_int",
    "local_path",
    "make_appliance",
    "named_entries",
    "node_status",
    "plain_path",
]

CONSOLE_OUTPUT = "console_output"
"""The file, in a node's log folder, that holds what the node printed."""


class DeviceLike(Protocol):
    """What the manager uses of an ``emulator.Appliance`` (entering it boots, leaving it tears it down)."""

    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> bool | None: ...

    @property
    def boots(self) -> int: ...

    @property
    def hdmi(self) -> HdmiSink | None: ...

    @property
    def storage_path(self) -> Path: ...

    def boot(self) -> None: ...

    def shutdown(self) -> None: ...

    def reboot(self) -> None: ...

    def power_cut(self) -> None: ...

    def logs(self, node: str) -> str: ...

    def logs_path(self, node: str) -> Path:
        """The node's log folder (``console_output`` in it)."""

    def metrics(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...

    def pause_camera(self, name: str) -> None: ...

    def resume_camera(self, name: str) -> None: ...


ApplianceFactory = Callable[[Path, ApplianceOptions], DeviceLike]
"""Makes a device: called as ``factory(project_dir, options)`` like ``emulator.Appliance``."""


def make_appliance(project_dir: Path, options: ApplianceOptions) -> DeviceLike:
    """Make an ``emulator.Appliance`` (the default :data:`ApplianceFactory`).

    Raises:
        ProjectError, ManifestError, DeviceError: as ``Appliance`` does.
    """
    from emulator.device.appliance import Appliance

    device: DeviceLike = Appliance(project_dir, options)
    return device


def plain_path(path: Path, what: str) -> Path:
    """A path given by a client, as given.

    Args:
        path: the path.
        what: what it names, for the error message.

    Raises:
        ProjectError: no file can have that path (a NUL byte, more than 4096 characters).
    """
    text = str(path)
    if "\x00" in text or len(text) > 4096:
        raise ProjectError(f"not a usable {what} path", file=repr(text[:100]))
    return Path(text)


def local_path(path: Path, what: str) -> Path:
    """A path given by a client, made absolute (``~`` expanded, links resolved).

    Args:
        path: the path, absolute or relative to the current directory.
        what: what it names, for the error message.

    Raises:
        ProjectError: no file can have that path, or it cannot be resolved.
    """
    text = str(plain_path(path, what))
    try:
        return Path(text).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as error:
        raise ProjectError(f"not a usable {what} path: {error}", file=text) from None


def as_int(value: object, default: int = 0) -> int:
    """``value`` as an int when it is a number (not a bool), else ``default``."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def node_status(name: str, raw: Mapping[str, Any]) -> dict[str, Any]:
    """A node's entry of ``status()`` as the API shows it: name, state, pid, restarts, exit codes, the limit
    that last ended it, CPU."""
    exits = raw.get("exit_codes", raw.get("exits", []))
    codes = []
    for item in exits if isinstance(exits, (list, tuple)) else []:
        code = item.get("code") if isinstance(item, Mapping) else item
        if isinstance(code, int) and not isinstance(code, bool):
            codes.append(code)
    pid = raw.get("pid")
    return {
        "name": name,
        "state": str(raw.get("state", "unknown")),
        "pid": pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        "restarts": as_int(raw.get("restarts")),
        "exit_codes": codes,
        "last_cause": str(raw["last_cause"]) if raw.get("last_cause") else None,
        "arch": str(raw["arch"]) if raw.get("arch") else None,
        "emulated": raw.get("emulated") is True,
    }


def named_entries(raw: object) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``(name, entry)`` pairs of ``{name: {...}}`` or ``[{"name": ..., ...}]`` (anything else: none)."""
    if isinstance(raw, Mapping):
        return [(str(name), value if isinstance(value, Mapping) else {}) for name, value in raw.items()]
    if isinstance(raw, (list, tuple)):
        return [(str(item.get("name")), item) for item in raw if isinstance(item, Mapping) and "name" in item]
    return []
