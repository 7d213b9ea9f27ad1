"""Test support for appliance tests: one container asset holding small test apps, and projects that use it.

The asset is built once by the real build stage from the stand-in base image, with every script in
``appliance_apps/`` under ``/panorama``. A test project is a panorama-cli project whose code nodes all use
that asset, each with its own descriptor (which script, which environment), interface and routing rules.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

APPS_DIR = Path(__file__).resolve().parent / "appliance_apps"
ACCOUNT = "123456789012"
PACKAGE = "TEST_APPS"
TEST_ASSET_NAME = "pe_appliance_test_apps"


def public_tmp_dir(prefix: str) -> Path:
    """A new directory under the system temp dir that every user can read (pytest's own is private)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def result_as(user: str, argv: list[str], cwd: Path | None = None) -> Any:
    """Run ``argv`` as ``user`` (``runuser``) and return the JSON of the ``RESULT `` line it prints.

    Raises:
        AssertionError: it exits non-zero (with its last output) or prints no single ``RESULT`` line.
    """
    result = subprocess.run(
        ["runuser", "-u", user, "--", *argv], capture_output=True, text=True, check=False, cwd=cwd
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def _write_json(path: Path, data: object) -> bytes:
    raw = json.dumps(data, indent=4).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def _descriptor(script: str, env: dict[str, str], program: str = "python3") -> dict[str, object]:
    entry: dict[str, object] = {"path": program, "name": f"/panorama/{script}"}
    if env:
        entry["environment"] = [{"name": name, "value": value} for name, value in env.items()]
    return {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}}


def build_test_apps(root: Path) -> Path:
    """Build the test-apps container asset with the real build stage; returns the ``.tar.gz``."""
    from rich.console import Console

    from emulator.builder import build_container, ensure_base_image
    from emulator.project import Project

    ensure_base_image(console=Console(file=io.StringIO()))
    package = root / "packages" / f"{ACCOUNT}-{PACKAGE}-1.0"
    shutil.copytree(APPS_DIR, package / "src", ignore=shutil.ignore_patterns("__pycache__"))
    (root / "assets").mkdir(parents=True)
    (package / "Dockerfile").write_text(
        "FROM public.ecr.aws/panorama/panorama-application\n"
        "ENV FROM_DOCKERFILE=must-not-reach-the-app\n"
        "COPY src /panorama\n"
    )
    _write_json(package / "descriptor.json", _descriptor("steady.py", {}))
    interface = {"name": "apps_interface", "category": "business_logic", "asset": TEST_ASSET_NAME,
                 "inputs": [], "outputs": []}  # fmt: skip
    _write_json(
        package / "package.json",
        {"nodePackage": {"envelopeVersion": "2021-01-01", "name": PACKAGE, "version": "1.0",
                         "description": "test apps", "assets": [], "interfaces": [interface]}},
    )  # fmt: skip
    _write_json(
        root / "graphs" / "test-apps" / "graph.json",
        {"nodeGraph": {"envelopeVersion": "2021-01-01",
                       "packages": [{"name": f"{ACCOUNT}::{PACKAGE}", "version": "1.0"}],
                       "nodes": [{"name": "apps", "interface": f"{ACCOUNT}::{PACKAGE}.apps_interface",
                                  "overridable": False, "launch": "onAppStart"}],
                       "edges": []}},
    )  # fmt: skip
    built = build_container(
        Project(root), TEST_ASSET_NAME, package, local_image=True, console=Console(file=io.StringIO())
    )
    return built.asset_path


@dataclass(frozen=True)
class NodeSpec:
    """One code node of a test project.

    Args:
        name: node name.
        script: the script in ``appliance_apps/`` it runs.
        env: descriptor environment.
        media: has ``video_in`` from the camera and ``video_out`` to the HDMI node.
        inbound: ports declared in ``network.inboundPorts``.
        routes: ``(containerPort, hostPort)`` routing rules.
        launch: ``onAppStart`` or ``onDemand``.
        program: the descriptor's ``entry.path``.
    """

    name: str
    script: str
    env: dict[str, str] = field(default_factory=dict)
    media: bool = False
    inbound: tuple[int, ...] = ()
    routes: tuple[tuple[int, int], ...] = ()
    launch: str = "onAppStart"
    program: str = "python3"


def make_project(root: Path, app: str, asset: Path, nodes: list[NodeSpec]) -> Path:
    """Write a project at ``root`` whose code nodes all run the test-apps asset.

    Args:
        root: a new directory.
        app: the application (graph folder) name.
        asset: the built test-apps ``.tar.gz``.
        nodes: the code nodes.

    Returns:
        ``root``.
    """
    assets = root / "assets"
    assets.mkdir(parents=True)
    try:
        os.link(asset, assets / asset.name)
    except OSError:
        shutil.copy2(asset, assets / asset.name)
    package_assets = []
    interfaces = []
    graph_nodes: list[dict[str, object]] = []
    edges = []
    rules = []
    for node in nodes:
        raw = json.dumps(_descriptor(node.script, node.env, node.program), indent=4).encode()
        descriptor_name = hashlib.sha256(raw).hexdigest() + ".json"
        (assets / descriptor_name).write_bytes(raw)
        implementation = {"type": "container", "assetUri": asset.name, "descriptorUri": descriptor_name}
        package_assets.append({"name": f"{node.name}_code", "implementations": [implementation]})
        interface: dict[str, object] = {
            "name": f"{node.name}_interface",
            "category": "business_logic",
            "asset": f"{node.name}_code",
            "inputs": [{"name": "video_in", "type": "media"}] if node.media else [],
            "outputs": [{"name": "video_out", "type": "media"}] if node.media else [],
        }
        if node.inbound:
            interface["network"] = {"inboundPorts": [{"port": port} for port in node.inbound]}
        interfaces.append(interface)
        graph_nodes.append({"name": node.name, "interface": f"{ACCOUNT}::{PACKAGE}.{node.name}_interface",
                            "overridable": False, "launch": node.launch})  # fmt: skip
        if node.media:
            edges += [
                {"producer": "camera_node.video_out", "consumer": f"{node.name}.video_in"},
                {"producer": f"{node.name}.video_out", "consumer": "output_node.video_in"},
            ]
        rules += [{"node": node.name, "containerPort": c, "hostPort": h} for c, h in node.routes]
    packages = [{"name": f"{ACCOUNT}::{PACKAGE}", "version": "1.0"}]
    if any(node.media for node in nodes):
        packages += [{"name": "panorama::abstract_rtsp_media_source", "version": "1.0"},
                     {"name": "panorama::hdmi_data_sink", "version": "1.0"}]  # fmt: skip
        graph_nodes += [
            {"name": "camera_node", "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
             "overridable": True, "launch": "onAppStart"},
            {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0", "overridable": True},
        ]  # fmt: skip
    graph: dict[str, object] = {"envelopeVersion": "2021-01-01", "packages": packages, "nodes": graph_nodes,
                                "edges": edges}  # fmt: skip
    if rules:
        graph["networkRoutingRules"] = rules
    _write_json(root / "graphs" / app / "graph.json", {"nodeGraph": graph})
    _write_json(
        root / "packages" / f"{ACCOUNT}-{PACKAGE}-1.0" / "package.json",
        {"nodePackage": {"envelopeVersion": "2021-01-01", "name": PACKAGE, "version": "1.0",
                         "description": "test apps", "assets": package_assets, "interfaces": interfaces}},
    )  # fmt: skip
    return root


def wait_for(condition: Callable[[], object], timeout: float = 120.0, what: str = "condition") -> object:
    """Poll ``condition`` until it returns something truthy; fail after a generous ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def report(text: str, marker: str) -> list[dict[str, object]]:
    """Every JSON report ``<marker> {...}`` found in console output, in order."""
    found = []
    for match in re.finditer(rf"^{re.escape(marker)} (\{{.*\}})$", text, re.MULTILINE):
        found.append(json.loads(match.group(1)))
    return found
