"""Resolving graph nodes: stock nodes, packages on disk, interfaces, assets and descriptors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from emulator.errors import ManifestError, Problem, ProjectError
from emulator.manifests import (
    Interface,
    ModelDescriptor,
    Node,
    Package,
    Port,
    RuntimeDescriptor,
    UnknownNameError,
    load_descriptor,
)
from emulator.plan._merge import Merged, Origin
from emulator.project import Project

__all__ = ["ACCOUNT_CAMERA_INPUTS", "STOCK_CAMERA", "STOCK_HDMI", "STOCK_INTERFACES", "Resolved", "Resolver"]

STOCK_CAMERA = "panorama::abstract_rtsp_media_source.rtsp_v1_interface"
STOCK_HDMI = "panorama::hdmi_data_sink.hdmi0"
STOCK_INTERFACES: Mapping[str, Interface] = MappingProxyType(
    {
        STOCK_CAMERA: Interface("rtsp_v1_interface", "media_source", None, (), (Port("video_out", "media"),)),
        STOCK_HDMI: Interface("hdmi0", "media_sink", None, (Port("video_in", "media"),), ()),
    }
)
# The inputs of a concrete RTSP camera package (system asset source/video/camera/rtsp/source_rtsp).
ACCOUNT_CAMERA_INPUTS = (Port("username", "string"), Port("password", "string"), Port("streamUrl", "string"))


@dataclass
class Resolved:
    """A live node and what it resolved to: kind is value, camera, sink, model or code."""

    node: Node
    origin: Origin
    kind: str
    interface: Interface | None = None
    package: str = ""
    asset: str = ""
    asset_uri: str = ""
    descriptor_uri: str = ""
    descriptor: RuntimeDescriptor | ModelDescriptor | None = None


class Resolver:
    """Resolves the nodes of a merged graph against a project, loading each package once.

    Args:
        project: the project whose packages and assets are used.
        merged: the graph with its override applied.
    """

    def __init__(self, project: Project, merged: Merged) -> None:
        self.project = project
        self.merged = merged
        self.packages: dict[str, Package] = {}
        self._project_refs: set[str] | None = None

    def _package(self, ref: str) -> tuple[Package, Path]:
        version = self.merged.packages.get(ref)
        folder = self.project.package_dir(ref, version)
        if ref not in self.packages:
            self.packages[ref] = self.project.load_package(ref, version)
        return self.packages[ref], folder / "package.json"

    def _replaces_stock_camera(self, name: str) -> bool:
        replaced = self.merged.replacement_of(name)
        return replaced is not None and replaced.interface == STOCK_CAMERA

    def _in_project(self, ref: str) -> bool:
        if self._project_refs is None:
            self._project_refs = set(self.project.package_dirs())
        return ref in self._project_refs

    def resolve(self, node: Node, origin: Origin) -> Resolved:
        """Resolve one live node.

        Args:
            node: the node.
            origin: where it is defined.

        Returns:
            what the node is and, for code and model nodes, their asset and descriptor.

        Raises:
            ProjectError: a package, interface, asset or asset file is missing.
            ManifestError: a package.json or descriptor is invalid, or a descriptor is of the wrong kind.
        """
        if node.is_value:
            return Resolved(node, origin, "value")
        stock = STOCK_INTERFACES.get(node.interface)
        if stock is not None:
            return Resolved(node, origin, "camera" if stock.category == "media_source" else "sink", stock)
        ref = str(node.package_name)
        if ref.startswith("panorama::"):
            raise ProjectError(
                f"unknown stock interface {node.interface}; "
                f"the emulator provides {STOCK_CAMERA} and {STOCK_HDMI}",
                node=node.name,
                file=origin.file,
            )
        if self._replaces_stock_camera(node.name) and not self._in_project(ref):
            inputs = ACCOUNT_CAMERA_INPUTS
            interface = Interface(
                str(node.interface_name), "media_source", None, inputs, (Port("video_out", "media"),)
            )
            return Resolved(node, origin, "camera", interface, ref)
        package, package_file = self._package(ref)
        try:
            interface = package.interface(str(node.interface_name))
        except UnknownNameError as error:
            raise ProjectError(error.message, node=node.name, file=str(package_file)) from None
        if interface.category == "media_source":
            return Resolved(node, origin, "camera", interface, ref)
        if interface.category == "media_sink":
            return Resolved(node, origin, "sink", interface, ref)
        return self._resolve_asset(node, origin, ref, package, package_file, interface)

    def _resolve_asset(
        self, node: Node, origin: Origin, ref: str, package: Package, package_file: Path, interface: Interface
    ) -> Resolved:
        if interface.asset is None:
            raise ProjectError(
                f"interface {interface.name} of package {ref} names no asset",
                node=node.name,
                file=str(package_file),
            )
        try:
            asset = package.asset(interface.asset)
        except UnknownNameError as error:
            raise ProjectError(
                error.message, node=node.name, asset=interface.asset, file=str(package_file)
            ) from None
        implementation = next(
            (impl for impl in asset.implementations if impl.type in ("container", "model")), None
        )
        if implementation is None:
            kinds = ", ".join(impl.type for impl in asset.implementations) or "none"
            raise ProjectError(
                f"asset {asset.name} has no container or model implementation (found: {kinds}); "
                "build it first",
                node=node.name,
                asset=asset.name,
                file=str(package_file),
            )
        kind = "code" if implementation.type == "container" else "model"
        uris = {}
        for label, uri in (
            ("asset", implementation.asset_uri),
            ("descriptor", implementation.descriptor_uri),
        ):
            if not uri:
                raise ProjectError(
                    f"the {implementation.type} asset {asset.name} has no {label}Uri in package.json",
                    node=node.name,
                    asset=asset.name,
                    file=str(package_file),
                )
            try:
                self.project.asset_path(uri)
            except ProjectError:
                if kind == "model":
                    hint = self.project.add_raw_model_hint(asset.name, package_file.parent)
                    raise ProjectError(
                        f"the model asset {asset.name} is missing: {uri} is not in "
                        f"{self.project.assets_dir}; {hint}",
                        node=node.name,
                        asset=uri,
                    ) from None
                raise ProjectError(
                    f"the {implementation.type} asset {asset.name} is not built: {uri} is missing from "
                    f"{self.project.assets_dir} (build the package first)",
                    node=node.name,
                    asset=uri,
                ) from None
            uris[label] = uri
        descriptor_path = self.project.asset_path(uris["descriptor"])
        descriptor = load_descriptor(descriptor_path)
        wanted = RuntimeDescriptor if kind == "code" else ModelDescriptor
        if not isinstance(descriptor, wanted):
            expected = "runtimeDescriptor" if kind == "code" else "mlModelDescriptor"
            found = "mlModelDescriptor" if kind == "code" else "runtimeDescriptor"
            raise ManifestError(
                [
                    Problem(
                        str(descriptor_path),
                        "",
                        f"a {expected} for the {implementation.type} asset {asset.name} of node {node.name}",
                        f"a {found}",
                    )
                ]
            )
        return Resolved(
            node, origin, kind, interface, ref, asset.name, uris["asset"], uris["descriptor"], descriptor
        )
