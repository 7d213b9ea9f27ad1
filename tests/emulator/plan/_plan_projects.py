"""Small panorama-cli style projects for the node plan tests: packages, assets, graphs and overrides."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from emulator.project import Project

ACCOUNT = "123456789012"
CAMERA = "panorama::abstract_rtsp_media_source.rtsp_v1_interface"
HDMI = "panorama::hdmi_data_sink.hdmi0"
Doc = dict[str, Any]


def media(name: str) -> Doc:
    """A media port."""
    return {"name": name, "type": "media"}


class ProjectBuilder:
    """Builds a panorama-cli project: package folders, content-addressed assets, graphs and overrides.

    Args:
        root: the project directory (created).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("assets", "graphs", "packages"):
            (root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def project(self) -> Project:
        """The project as the emulator sees it."""
        return Project(self.root)

    def blob(self, content: bytes, suffix: str) -> str:
        """Store ``content`` in assets/ under its sha256 name and return that name."""
        name = hashlib.sha256(content).hexdigest() + suffix
        (self.root / "assets" / name).write_bytes(content)
        return name

    def package_folder(self, name: str, account: str = ACCOUNT, version: str = "1.0") -> Path:
        """The package folder, created if needed."""
        folder = self.root / "packages" / f"{account}-{name}-{version}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def write_package(
        self,
        name: str,
        assets: list[Doc],
        interfaces: list[Doc],
        account: str = ACCOUNT,
        version: str = "1.0",
    ) -> Path:
        """Write packages/<account>-<name>-<version>/package.json."""
        doc = {
            "nodePackage": {
                "envelopeVersion": "2021-01-01",
                "name": name,
                "version": version,
                "description": f"Default description for package {name}",
                "assets": assets,
                "interfaces": interfaces,
            }
        }
        path = self.package_folder(name, account, version) / "package.json"
        path.write_text(json.dumps(doc, indent=4))
        return path

    def code_package(
        self,
        name: str = "SAMPLE_CODE",
        *,
        inputs: list[Doc] | None = None,
        outputs: list[Doc] | None = None,
        inbound_ports: list[int] | None = None,
        interface: str = "interface",
        asset: str = "code_asset",
        descriptor: Doc | None = None,
        built: bool = True,
    ) -> str:
        """A business-logic package with a built container asset; returns ``account::name``."""
        spec: Doc = {
            "name": interface,
            "category": "business_logic",
            "asset": asset,
            "inputs": inputs if inputs is not None else [media("video_in")],
            "outputs": outputs if outputs is not None else [media("video_out")],
        }
        if inbound_ports is not None:
            spec["network"] = {"inboundPorts": [{"port": port} for port in inbound_ports]}
        assets = []
        if built:
            descriptor = descriptor or {
                "runtimeDescriptor": {
                    "envelopeVersion": "2021-01-01",
                    "entry": {"path": "python3", "name": "/panorama/app.py"},
                }
            }
            descriptor_uri = self.blob(json.dumps(descriptor, indent=4).encode(), ".json")
            asset_uri = self.blob(f"container {name}".encode(), ".tar.gz")
            assets.append(
                {
                    "name": asset,
                    "implementations": [
                        {"type": "container", "assetUri": asset_uri, "descriptorUri": descriptor_uri}
                    ],
                }
            )
        self.write_package(name, assets, [spec])
        return f"{ACCOUNT}::{name}"

    def model_package(
        self, name: str = "SSD_MODEL", *, framework: str = "ONNX", asset: str = "model_asset"
    ) -> str:
        """An ml_model package with a model asset and its descriptor; returns ``account::name``."""
        descriptor = {
            "mlModelDescriptor": {
                "envelopeVersion": "2021-01-01",
                "framework": framework,
                "inputs": [{"name": "data", "shape": [1, 3, 224, 224]}],
            }
        }
        descriptor_uri = self.blob(json.dumps(descriptor).encode(), ".json")
        asset_uri = self.blob(f"model {name}".encode(), ".tar.gz")
        self.write_package(
            name,
            [
                {
                    "name": asset,
                    "implementations": [
                        {"type": "model", "assetUri": asset_uri, "descriptorUri": descriptor_uri}
                    ],
                }
            ],
            [
                {
                    "name": "interface",
                    "category": "ml_model",
                    "asset": asset,
                    "inputs": [media("video_in")],
                    "outputs": [media("video_out")],
                }
            ],
        )
        return f"{ACCOUNT}::{name}"

    def camera_package(self, name: str, stream_url: str | None = "rtsp://10.0.0.1:554/stream0") -> str:
        """A concrete RTSP camera package (system asset), like those the console creates."""
        inputs: list[Doc] = [
            {"name": "username", "type": "string", "default": "admin"},
            {"name": "password", "type": "string", "default": "secret"},
            {"name": "streamUrl", "type": "string"},
        ]
        if stream_url is not None:
            inputs[2]["default"] = stream_url
        self.write_package(
            name,
            [
                {
                    "name": "rtsp_camera",
                    "implementations": [
                        {"type": "system", "assetUri": "source/video/camera/rtsp/source_rtsp"}
                    ],
                }
            ],
            [
                {
                    "name": name,
                    "category": "media_source",
                    "asset": "rtsp_camera",
                    "inputs": inputs,
                    "outputs": [media("video_out")],
                }
            ],
        )
        return f"{ACCOUNT}::{name}"

    def graph(
        self,
        nodes: list[Doc],
        edges: list[Doc],
        *,
        app: str = "app",
        rules: list[Doc] | None = None,
        packages: list[str] | None = None,
    ) -> Path:
        """Write graphs/<app>/graph.json; packages default to those the nodes use."""
        refs = packages if packages is not None else _refs(nodes)
        body: Doc = {
            "envelopeVersion": "2021-01-01",
            "packages": [{"name": ref, "version": "1.0"} for ref in refs],
            "nodes": nodes,
            "edges": edges,
        }
        if rules is not None:
            body["networkRoutingRules"] = rules
        path = self.root / "graphs" / app / "graph.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"nodeGraph": body}, indent=4))
        return path

    def override(
        self,
        *,
        nodes: list[Doc] | None = None,
        replace: dict[str, list[str]] | None = None,
        edges: list[Doc] | None = None,
        rules: list[Doc] | None = None,
        packages: list[str] | None = None,
        app: str = "app",
        name: str = "override.json",
    ) -> Path:
        """Write graphs/<app>/<name> (an override)."""
        nodes = nodes or []
        body: Doc = {
            "envelopeVersion": "2021-01-01",
            "packages": [
                {"name": ref, "version": "1.0"}
                for ref in (packages if packages is not None else _refs(nodes))
            ],
            "nodes": nodes,
            "nodeOverrides": [
                {"replace": old, "with": [{"name": new} for new in news]}
                for old, news in (replace or {}).items()
            ],
        }
        if edges is not None:
            body["edges"] = edges
        if rules is not None:
            body["networkRoutingRules"] = rules
        path = self.root / "graphs" / app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"nodeGraphOverrides": body}, indent=4))
        return path


def _refs(nodes: list[Doc]) -> list[str]:
    refs: list[str] = []
    for node in nodes:
        interface = node.get("interface", "")
        if "::" in interface:
            ref = interface.rpartition(".")[0]
            if ref not in refs:
                refs.append(ref)
    return refs


def node(name: str, interface: str, **extra: Any) -> Doc:
    """An interface node as panorama-cli writes it."""
    return {"name": name, "interface": interface, "overridable": False, "launch": "onAppStart", **extra}


def value(name: str, value_type: str, val: object, **extra: Any) -> Doc:
    """A value node."""
    return {"name": name, "interface": value_type, "value": val, **extra}


def edge(producer: str, consumer: str) -> Doc:
    """An edge."""
    return {"producer": producer, "consumer": consumer}
