"""``export-logs``: one zip of what a developer sends with a bug report, from a device's state directory.

The zip holds, for the window between two times:

- ``logs/<app>/<node>/<file>``: every node's log folder (``console_output``, its rotations, and what the app
  wrote to ``/opt/aws/panorama/logs``); a file is included when it was written at or after the start (lines
  carry no time of their own, so a file still being written is included whole);
- ``status.json`` and ``metrics.json``: the device's status and figures, when a running ``serve`` gave them;
- ``graph.json`` (and ``override.json``) of the application, when its project is known;
- ``versions.json``: the emulator, Python and platform, and the application's packages and their assets;
- ``info.json``: device, window, when it was made, and the list of files.

    export_logs(out=Path("logs.zip"), state_dir=None, device="default", start=time.time() - 3600)
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import re
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from emulator.device.store import DeviceStore
from emulator.errors import DeviceError, EmulatorError
from emulator.manifests import read_json
from emulator.project import Project

__all__ = ["ExportedLogs", "export_logs", "parse_time"]

_AGO = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, *, now: float | None = None) -> float:
    """A time given on the command line, as seconds since the epoch.

    Args:
        text: ISO 8601 (``2026-12-03T10:00:00``, local time unless it has an offset), seconds since the epoch,
            or a duration ago (``30m``, ``2h``, ``1d``).
        now: the current time (default: the clock).

    Returns:
        Seconds since the epoch.

    Raises:
        DeviceError: the text is none of these.
    """
    value = text.strip()
    match = _AGO.fullmatch(value)
    if match:
        return (now if now is not None else time.time()) - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise DeviceError(
            f"time {text!r}: expected ISO 8601 (2026-12-03T10:00), seconds since the epoch, "
            "or 30m / 2h / 1d ago"
        ) from None


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class ExportedLogs:
    """What went into the zip: its path and the names of its members."""

    path: Path
    files: list[str] = field(default_factory=list)


def _versions(project: Project | None, graph: Path | None) -> dict[str, Any]:
    try:
        emulator_version = metadata.version("panorama-emulator")
    except metadata.PackageNotFoundError:
        emulator_version = "unknown"
    versions: dict[str, Any] = {
        "panorama-emulator": emulator_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "packages": [],
    }
    if project is None or graph is None:
        return versions
    graph_data = read_json(graph)
    body = graph_data.get("nodeGraph", {}) if isinstance(graph_data, dict) else {}
    folders = project.package_dirs()
    for entry in body.get("packages", []) if isinstance(body, dict) else []:
        if not isinstance(entry, dict):
            continue
        ref = str(entry.get("name", ""))
        record: dict[str, Any] = {"name": ref, "version": entry.get("version"), "assets": []}
        folder = folders.get(ref)
        if folder is not None and (folder / "package.json").is_file():
            package = read_json(folder / "package.json")
            node_package = package.get("nodePackage", {}) if isinstance(package, dict) else {}
            record["folder"] = folder.name
            for asset in node_package.get("assets", []) if isinstance(node_package, dict) else []:
                for implementation in asset.get("implementations", []) if isinstance(asset, dict) else []:
                    if isinstance(implementation, dict):
                        record["assets"].append(
                            {
                                "name": asset.get("name"),
                                "type": implementation.get("type"),
                                "assetUri": implementation.get("assetUri"),
                                "descriptorUri": implementation.get("descriptorUri"),
                            }
                        )
        versions["packages"].append(record)
    return versions


def export_logs(
    out: Path,
    *,
    state_dir: Path | None = None,
    device: str = "default",
    start: float | None = None,
    end: float | None = None,
    project: Path | None = None,
    graph: Path | None = None,
    status: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
) -> ExportedLogs:
    """Write the zip of a device's logs, status, metrics, versions and graph.

    Args:
        out: the zip file to write (replaced if it exists).
        state_dir: the state directory (default as for ``run``).
        device: the device name.
        start: include log files written at or after this time (seconds since the epoch; None: all).
        end: the end of the window, recorded in info.json (None: now).
        project: the application's project folder, for graph.json and versions (None: not included).
        graph: its graph file, when the project has several (None: its only one).
        status: the device status a running ``serve`` gave, if any.
        metrics: the device figures a running ``serve`` gave, if any.

    Returns:
        What was written.

    Raises:
        DeviceError: the device has no state yet, the window is empty, or the zip cannot be written.
        ProjectError, ManifestError: the project or its graph is unusable.
    """
    made = time.time()
    end = end if end is not None else made
    if start is not None and end < start:
        raise DeviceError(f"the window ends ({_iso(end)}) before it starts ({_iso(start)})")
    store = DeviceStore(state_dir, device)
    if not store.root.is_dir():
        raise DeviceError(f"device {device} has no state in {store.state_dir} (it has never booted)")
    loaded = Project(project) if project is not None else None
    graph = loaded.graph_path(graph) if loaded is not None else None
    result = ExportedLogs(Path(out))
    members: dict[str, bytes | Path] = {}
    apps = (
        sorted(path for path in store.apps_dir.glob("*") if path.is_dir()) if store.apps_dir.is_dir() else []
    )
    for app in apps:
        logs = app / "logs"
        if not logs.is_dir():
            continue
        for file in sorted(logs.rglob("*")):
            if file.is_symlink() or not file.is_file():
                continue
            if start is not None and file.stat().st_mtime < start:
                continue
            members[f"logs/{app.name}/{file.relative_to(logs).as_posix()}"] = file
    if status is not None:
        members["status.json"] = json.dumps(status, indent=4).encode()
    if metrics is not None:
        members["metrics.json"] = json.dumps(metrics, indent=4).encode()
    if graph is not None:
        members["graph.json"] = graph
        override = graph.with_name("override.json")
        if override.is_file():
            members["override.json"] = override
    members["versions.json"] = json.dumps(_versions(loaded, graph), indent=4).encode()
    result.files = [*sorted(members), "info.json"]
    info = {
        "device": device,
        "state_dir": str(store.state_dir),
        "apps": [app.name for app in apps],
        "project": str(loaded.root) if loaded is not None else None,
        "start": _iso(start),
        "end": _iso(end),
        "created": _iso(made),
        "from_serve": status is not None,
        "files": result.files,
    }
    members["info.json"] = json.dumps(info, indent=4).encode()
    temp = result.path.with_name(f".{result.path.name}.tmp")
    try:
        with zipfile.ZipFile(temp, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as archive:
            for name, content in members.items():
                if isinstance(content, Path):
                    archive.write(content, name)
                else:
                    archive.writestr(name, content)
        temp.replace(result.path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        raise DeviceError(f"cannot write the zip: {error.strerror or error}") from None
    except EmulatorError:
        temp.unlink(missing_ok=True)
        raise
    return result
