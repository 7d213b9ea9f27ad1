"""Support for the end-to-end tests: the SDK probe project, its graphs, and reading its reports back.

The probe (``tests/e2e/apps/sdk-probe``) is one container asset built once per test session by the real
build stage. Its behaviour is chosen by the ``mode`` value node, so each behaviour is its own graph folder
(and so its own application, with its own storage and logs) in one project: ``graphs/sdk-<mode>/graph.json``.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from emulator import Appliance
from emulator.device.supervisor import Backoff

__all__ = [
    "APPS_DIR",
    "CODE_NODE",
    "DEVICE",
    "FAST",
    "LOCKSTEP_FRAMES",
    "PROBE_ASSET",
    "PROBE_PACKAGE",
    "probe_appliance",
    "probe_graph",
    "public_tmp_dir",
    "reports",
    "wait_for",
    "wait_for_report",
    "write_mode_graphs",
]

APPS_DIR = Path(__file__).resolve().parent / "apps"
PROBE_ASSET = "pe_e2e_sdk_probe"
PROBE_PACKAGE = "123456789012-SDK_PROBE-1.0"
CODE_NODE = "code_node"
DEVICE = "e2e-device"
FAST = Backoff(initial=0.1, factor=2.0, maximum=0.5, stable_after=60.0)
LOCKSTEP_FRAMES = 25

_REPORT = re.compile(r"^e2e-report (\{.*\})$", re.MULTILINE)


def public_tmp_dir(prefix: str) -> Path:
    """A new directory under the system temp dir that every user can read (pytest's own is private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def camera_to_hdmi_graph(package: str, node: str) -> dict[str, Any]:
    """A graph of one code node of ``123456789012::PACKAGE`` between a camera and the HDMI output."""
    nodes = [
        {"name": node, "interface": f"123456789012::{package}.code_interface", "overridable": False,
         "launch": "onAppStart"},
        {"name": "camera_node", "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
         "overridable": True, "launch": "onAppStart"},
        {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0", "overridable": True,
         "launch": "onAppStart"},
    ]  # fmt: skip
    return {
        "nodeGraph": {
            "envelopeVersion": "2021-01-01",
            "packages": [
                {"name": f"123456789012::{package}", "version": "1.0"},
                {"name": "panorama::abstract_rtsp_media_source", "version": "1.0"},
                {"name": "panorama::hdmi_data_sink", "version": "1.0"},
            ],
            "nodes": nodes,
            "edges": [
                {"producer": "camera_node.video_out", "consumer": f"{node}.video_in"},
                {"producer": f"{node}.video_out", "consumer": "output_node.video_in"},
            ],
        }
    }


def write_mode_graphs(root: Path) -> None:
    """Add ``graphs/sdk-<mode>/graph.json`` for every probe mode, and the two-camera override.

    Args:
        root: the built probe project (its ``graphs/sdk-probe/graph.json`` runs mode ``sdk``).
    """
    base = json.loads((root / "graphs" / "sdk-probe" / "graph.json").read_text())
    values: dict[str, dict[str, object]] = {
        "multicam": {"mode_param": "multicam"},
        "lockstep": {"mode_param": "lockstep", "count_param": LOCKSTEP_FRAMES},
        "steady": {"mode_param": "steady"},
        "counted": {"mode_param": "counted"},
    }
    for mode, changes in values.items():
        graph = json.loads(json.dumps(base))
        for node in graph["nodeGraph"]["nodes"]:
            if node["name"] in changes:
                node["value"] = changes[node["name"]]
        folder = root / "graphs" / f"sdk-{mode}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "graph.json").write_text(json.dumps(graph, indent=4))
    # Cameras added in the console: no package in the project, the abstract camera replaced by two.
    override = {
        "nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01",
            "packages": [
                {"name": "123456789012::CAMERA_A", "version": "1.0"},
                {"name": "123456789012::CAMERA_B", "version": "1.0"},
            ],
            "nodes": [
                {
                    "name": camera,
                    "interface": f"123456789012::{camera}.{camera}",
                    "overridable": True,
                    "launch": "onAppStart",
                }
                for camera in ("CAMERA_A", "CAMERA_B")
            ],
            "nodeOverrides": [
                {"replace": "camera_node", "with": [{"name": "CAMERA_A"}, {"name": "CAMERA_B"}]}
            ],
        }
    }
    (root / "graphs" / "sdk-multicam" / "override.json").write_text(json.dumps(override, indent=4))


def probe_graph(project: Path, mode: str) -> Path:
    """The graph file that runs the probe in ``mode`` (``sdk`` is the project's own graph)."""
    app = "sdk-probe" if mode == "sdk" else f"sdk-{mode}"
    return project / "graphs" / app / "graph.json"


def probe_appliance(project: Path, state_dir: Path, probe_mode: str, **options: Any) -> Appliance:
    """An appliance running the probe in ``probe_mode`` on the shared test device (quiet, quick restarts).

    Args:
        project: the built probe project.
        state_dir: the device state directory.
        probe_mode: the probe's behaviour (``sdk``, ``multicam``, ``lockstep``, ``steady``, ``counted``).
        options: more ``Appliance`` options (``mode``, ``cameras``, ``override``...).

    Returns:
        The appliance, not booted yet.
    """
    options.setdefault("device", DEVICE)
    options.setdefault("quiet", True)
    options.setdefault("backoff", FAST)
    return Appliance(project, state_dir=state_dir, graph=probe_graph(project, probe_mode), **options)


def reports(text: str, kind: str | None = None) -> list[dict[str, Any]]:
    """Every ``e2e-report {json}`` line in ``text`` (of ``kind`` when given), oldest first."""
    found = [json.loads(match.group(1)) for match in _REPORT.finditer(text)]
    return [report for report in found if kind is None or report.get("kind") == kind]


def wait_for(condition: Callable[[], Any], what: str, timeout: float = 180.0) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after a generous ``timeout``.

    Raises:
        AssertionError: ``condition`` stayed falsy for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def wait_for_report(
    appliance: Appliance, kind: str, count: int = 1, timeout: float = 180.0
) -> list[dict[str, Any]]:
    """Wait until the probe has printed ``count`` reports of ``kind``; returns them all.

    Raises:
        AssertionError: they did not come within ``timeout`` seconds.
        DeviceError: the probe died before its first frame.
    """

    def found() -> list[dict[str, Any]] | None:
        appliance.check()  # a probe that died before its first frame fails here with its output
        got = reports(appliance.logs(CODE_NODE), kind)
        return got if len(got) >= count else None

    result: list[dict[str, Any]] = wait_for(found, f"{count} report(s) of kind {kind!r}", timeout)
    return result
