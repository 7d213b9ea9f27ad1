"""Projects for the model-node end-to-end tests: the model-caller app (built once), model assets, graphs.

A project here is a panorama-cli project whose code nodes all run the model-caller container asset (built once
per session from ``apps/model-caller``) and whose model nodes are model assets made by the test: a ``.tar.gz``
holding the model files, named by its SHA-256 like every asset, with an ``mlModelDescriptor``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from _e2e_helpers import APPS_DIR

__all__ = [
    "ACCOUNT",
    "CALLER_ASSET",
    "CALLER_PACKAGE",
    "CallerNode",
    "ModelNode",
    "build_caller",
    "make_model_project",
    "model_tarball",
]

ACCOUNT = "123456789012"
CALLER_ASSET = "pe_e2e_model_caller"
CALLER_PACKAGE = f"{ACCOUNT}-MODEL_CALLER-1.0"
MODELS_PACKAGE = "E2E_MODELS"


def build_caller(root: Path) -> Path:
    """Copy ``apps/model-caller`` to ``root`` and build its container asset with the real build stage.

    Args:
        root: a new directory.

    Returns:
        ``root``, a project whose ``assets/`` holds the asset and whose package.json names it.
    """
    from rich.console import Console

    from emulator.builder import build_container, ensure_base_image
    from emulator.project import Project

    quiet = Console(file=io.StringIO())
    ensure_base_image(console=quiet)
    shutil.copytree(APPS_DIR / "model-caller", root, ignore=shutil.ignore_patterns("__pycache__"))
    build_container(
        Project(root), CALLER_ASSET, root / "packages" / CALLER_PACKAGE, local_image=True, console=quiet
    )
    return root


def model_tarball(files: Mapping[str, bytes]) -> bytes:
    """A gzip-compressed tar archive holding ``files`` (name -> content), as a model asset is.

    Args:
        files: archive member names and their bytes.

    Returns:
        The archive's bytes.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            info.mode = 0o644
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass(frozen=True)
class ModelNode:
    """A model node of a test project.

    Args:
        name: the node's name (what apps pass to ``self.call``).
        archive: the model asset's bytes (usually from :func:`model_tarball`).
        framework: the descriptor's ``framework``.
        inputs: the descriptor's inputs, ``(name, shape)``.
    """

    name: str
    archive: bytes
    framework: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class CallerNode:
    """A code node running the model-caller app.

    Args:
        name: the node's name.
        mode: the app's scenario (``errors``, ``raiser``, ``concurrent``).
        model: the model node it calls.
        shape: the model's input shape.
        value: what the good input is filled with.
        count: calls made by the ``concurrent`` scenario.
        media: takes the camera's frames and puts them to HDMI.
    """

    name: str
    mode: str
    model: str
    shape: tuple[int, ...]
    value: float = 1.0
    count: int = 1
    media: bool = False


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def _write_json(path: Path, data: object) -> bytes:
    raw = json.dumps(data, indent=4).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def _blob(assets: Path, data: bytes, suffix: str) -> str:
    name = hashlib.sha256(data).hexdigest() + suffix
    (assets / name).write_bytes(data)
    return name


def make_model_project(
    root: Path, app: str, caller: Path, models: list[ModelNode], callers: list[CallerNode]
) -> Path:
    """Write a project at ``root``: the built model-caller package, a package of model assets, one graph.

    Args:
        root: a new directory.
        app: the application (graph folder) name.
        caller: the project made by :func:`build_caller`.
        models: the model nodes.
        callers: the code nodes.

    Returns:
        ``root``.
    """
    shutil.copytree(caller / "assets", root / "assets", copy_function=_link_or_copy)
    shutil.copytree(caller / "packages" / CALLER_PACKAGE, root / "packages" / CALLER_PACKAGE)
    assets = root / "assets"
    package_assets: list[dict[str, object]] = []
    interfaces: list[dict[str, object]] = []
    media_port = [{"name": "video_in", "type": "media"}], [{"name": "video_out", "type": "media"}]
    for model in models:
        descriptor = {
            "mlModelDescriptor": {
                "envelopeVersion": "2021-01-01",
                "framework": model.framework,
                "inputs": [{"name": name, "shape": list(shape)} for name, shape in model.inputs],
            }
        }
        descriptor_uri = _blob(assets, json.dumps(descriptor, indent=4).encode(), ".json")
        asset_uri = _blob(assets, model.archive, ".tar.gz")
        implementation = {"type": "model", "assetUri": asset_uri, "descriptorUri": descriptor_uri}
        package_assets.append({"name": f"{model.name}_asset", "implementations": [implementation]})
        interfaces.append(
            {
                "name": f"{model.name}_interface",
                "category": "ml_model",
                "asset": f"{model.name}_asset",
                "inputs": media_port[0],
                "outputs": media_port[1],
            }
        )
    if models:
        _write_json(
            root / "packages" / f"{ACCOUNT}-{MODELS_PACKAGE}-1.0" / "package.json",
            {
                "nodePackage": {
                    "envelopeVersion": "2021-01-01",
                    "name": MODELS_PACKAGE,
                    "version": "1.0",
                    "description": "models made by the tests",
                    "assets": package_assets,
                    "interfaces": interfaces,
                }
            },
        )
    _write_json(root / "graphs" / app / "graph.json", {"nodeGraph": _graph(models, callers)})
    return root


def _graph(models: list[ModelNode], callers: list[CallerNode]) -> dict[str, object]:
    packages = [{"name": f"{ACCOUNT}::MODEL_CALLER", "version": "1.0"}]
    if models:
        packages.append({"name": f"{ACCOUNT}::{MODELS_PACKAGE}", "version": "1.0"})
    nodes: list[dict[str, object]] = []
    edges: list[dict[str, str]] = []
    for caller in callers:
        interface = "caller_interface" if caller.media else "worker_interface"
        nodes.append(
            {
                "name": caller.name,
                "interface": f"{ACCOUNT}::MODEL_CALLER.{interface}",
                "overridable": False,
                "launch": "onAppStart",
            }
        )
        values: dict[str, tuple[str, object]] = {
            "mode": ("string", caller.mode),
            "model": ("string", caller.model),
            "shape": ("string", ",".join(str(dim) for dim in caller.shape)),
            "value": ("float32", caller.value),
            "count": ("int32", caller.count),
        }
        for port, (kind, value) in values.items():
            param = f"{caller.name}_{port}"
            nodes.append({"name": param, "interface": kind, "value": value, "overridable": False})
            edges.append({"producer": param, "consumer": f"{caller.name}.{port}"})
        if caller.media:
            edges += [
                {"producer": "camera_node.video_out", "consumer": f"{caller.name}.video_in"},
                {"producer": f"{caller.name}.video_out", "consumer": "output_node.video_in"},
            ]
    if any(caller.media for caller in callers):
        packages += [
            {"name": "panorama::abstract_rtsp_media_source", "version": "1.0"},
            {"name": "panorama::hdmi_data_sink", "version": "1.0"},
        ]
        nodes += [
            {
                "name": "camera_node",
                "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
                "overridable": True,
                "launch": "onAppStart",
            },
            {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0", "overridable": True},
        ]
    for model in models:
        nodes.append(
            {
                "name": model.name,
                "interface": f"{ACCOUNT}::{MODELS_PACKAGE}.{model.name}_interface",
                "overridable": False,
                "launch": "onAppStart",
            }
        )
    return {"envelopeVersion": "2021-01-01", "packages": packages, "nodes": nodes, "edges": edges}
