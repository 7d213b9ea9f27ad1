"""How a new asset enters ``package.json`` and ``graph.json``, as ``panorama-cli`` does it.

Pure functions on the decoded JSON: they return new documents and say which blobs became stale, so that the
caller writes nothing until everything is known to have worked.

Rules (``panorama-cli`` 1.1.6):

- A container asset replaces any asset of the same name and goes last; ``requirements`` of the replaced
  implementation are kept. A model asset replaces any asset of the same name and goes first.
- The replaced implementations' ``assetUri`` / ``descriptorUri`` blobs are stale when their names differ from
  the new ones.
- Only when the asset is new and no interface has ``"asset": NAME``: an interface is added
  (``NAME_interface``, category ``business_logic`` for code or ``ml_model`` for a model, ``video_in`` /
  ``video_out`` media ports) and a graph node (``NAME_node`` for code, ``NAME`` for a model) with interface
  ``<account>::<package>.NAME_interface``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CODE_CATEGORY",
    "MODEL_CATEGORY",
    "Merge",
    "add_graph_node",
    "asset_entry",
    "merge_asset",
    "referenced_uris",
]

CODE_CATEGORY = "business_logic"
MODEL_CATEGORY = "ml_model"


@dataclass(frozen=True)
class Merge:
    """The outcome of adding an asset to a package.

    Args:
        package: the new package.json document.
        asset: the asset entry as written (what the CLI prints).
        replaced: whether an asset of the same name was replaced.
        stale: blob file names (in ``assets/``) that the replaced implementations used and the new one
            does not.
        interface: the interface added, if any.
        node: the graph node to add, if any (``name``, ``interface``, ``overridable``, ``launch``).
    """

    package: dict[str, Any]
    asset: dict[str, Any]
    replaced: bool
    stale: tuple[str, ...] = ()
    interface: dict[str, Any] | None = None
    node: dict[str, Any] | None = field(default=None)


def asset_entry(name: str, kind: str, asset_uri: str, descriptor_uri: str) -> dict[str, Any]:
    """An asset as ``panorama-cli`` writes it.

    Args:
        name: the asset name.
        kind: ``container`` or ``model``.
        asset_uri: ``<sha256>.tar.gz``.
        descriptor_uri: ``<sha256>.json``.

    Returns:
        ``{"name": ..., "implementations": [{"type": ..., "assetUri": ..., "descriptorUri": ...}]}``.
    """
    return {
        "name": name,
        "implementations": [{"type": kind, "assetUri": asset_uri, "descriptorUri": descriptor_uri}],
    }


def _interface_entry(name: str, category: str) -> dict[str, Any]:
    return {
        "name": f"{name}_interface",
        "category": category,
        "asset": name,
        "inputs": [{"name": "video_in", "type": "media"}],
        "outputs": [{"name": "video_out", "type": "media"}],
    }


def merge_asset(
    package: Mapping[str, Any],
    *,
    name: str,
    kind: str,
    asset_uri: str,
    descriptor_uri: str,
    account: str,
    package_name: str,
) -> Merge:
    """Add or replace an asset in a package.json document.

    Args:
        package: the decoded package.json (``{"nodePackage": {...}}``; ``assets`` and ``interfaces`` lists).
        name: the asset name.
        kind: ``container`` (goes last, keeps ``requirements``) or ``model`` (goes first).
        asset_uri: the new ``<sha256>.tar.gz``.
        descriptor_uri: the new ``<sha256>.json``.
        account: the account id for a new graph node's interface (from the package folder name).
        package_name: the package name for a new graph node's interface (from the package folder name).

    Returns:
        The merge: new document, printed asset, stale blobs, and the interface / node added, if any.
    """
    document = copy.deepcopy(dict(package))
    body = document["nodePackage"]
    new_asset = asset_entry(name, kind, asset_uri, descriptor_uri)
    implementation = new_asset["implementations"][0]
    kept: list[Any] = []
    replaced = False
    stale: list[str] = []
    for asset in body.get("assets") or []:
        if not (isinstance(asset, dict) and asset.get("name") == name):
            kept.append(asset)
            continue
        replaced = True
        for old in asset.get("implementations") or []:
            if not isinstance(old, dict):
                continue
            old_asset_uri, old_descriptor_uri = old.get("assetUri"), old.get("descriptorUri")
            if isinstance(old_asset_uri, str) and old_asset_uri != asset_uri:
                stale.append(old_asset_uri)
            if isinstance(old_descriptor_uri, str) and old_descriptor_uri != descriptor_uri:
                stale.append(old_descriptor_uri)
            if kind == "container" and "requirements" in old:
                implementation["requirements"] = old["requirements"]
    body["assets"] = [*kept, new_asset] if kind == "container" else [new_asset, *kept]

    interfaces = body.setdefault("interfaces", [])
    interface: dict[str, Any] | None = None
    node: dict[str, Any] | None = None
    referenced = any(isinstance(entry, dict) and entry.get("asset") == name for entry in interfaces)
    if not replaced and not referenced:
        interface = _interface_entry(name, CODE_CATEGORY if kind == "container" else MODEL_CATEGORY)
        interfaces.append(interface)
        node = {
            "name": f"{name}_node" if kind == "container" else name,
            "interface": f"{account}::{package_name}.{interface['name']}",
            "overridable": False,
            "launch": "onAppStart",
        }
    return Merge(document, new_asset, replaced, tuple(dict.fromkeys(stale)), interface, node)


def add_graph_node(graph: Mapping[str, Any], node: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Append a node to a graph.json document, unless a node of that name is already there.

    Args:
        graph: the decoded graph.json (``{"nodeGraph": {"nodes": [...]}}``).
        node: the node to add.

    Returns:
        The new document and whether the node was added.
    """
    document = copy.deepcopy(dict(graph))
    nodes = document["nodeGraph"].setdefault("nodes", [])
    if any(isinstance(entry, dict) and entry.get("name") == node["name"] for entry in nodes):
        return document, False
    nodes.append(dict(node))
    return document, True


def referenced_uris(package: Mapping[str, Any]) -> set[str]:
    """Every ``assetUri`` and ``descriptorUri`` a package.json document refers to (malformed parts are
    ignored)."""
    uris: set[str] = set()
    body = package.get("nodePackage") if isinstance(package, Mapping) else None
    assets = body.get("assets") if isinstance(body, Mapping) else None
    for asset in assets if isinstance(assets, list) else []:
        implementations = asset.get("implementations") if isinstance(asset, Mapping) else None
        for implementation in implementations if isinstance(implementations, list) else []:
            if isinstance(implementation, Mapping):
                for key in ("assetUri", "descriptorUri"):
                    value = implementation.get(key)
                    if isinstance(value, str):
                        uris.add(value)
    return uris
