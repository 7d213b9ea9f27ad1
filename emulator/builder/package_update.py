"""Reading, checking and updating a project's manifests around a build: everything is read and validated
before the engine is asked for anything, and written only once the asset is safely in ``assets/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.builder.compress import file_mode
from emulator.builder.merge import Merge, add_graph_node, merge_asset, referenced_uris
from emulator.errors import AssetError, ManifestError, Problem, ProjectError
from emulator.manifests import (
    package_folder_parts,
    read_json,
    validate_descriptor,
    validate_package,
    write_json,
)
from emulator.project import Project

__all__ = [
    "DescriptorFile",
    "GraphFile",
    "PackageTarget",
    "delete_stale",
    "label",
    "load_descriptor_file",
    "load_graph_file",
    "load_package_target",
    "write_descriptor",
    "write_manifests",
]

_PLACEHOLDER = "0" * 64
_INTERFACES = "/nodePackage/interfaces"


def label(path: Path) -> str:
    """How a file is named in messages: relative to the working directory when inside it (as panorama-cli
    users type paths), else absolute."""
    absolute = Path(os.path.abspath(path))
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


@dataclass(frozen=True)
class PackageTarget:
    """A package whose package.json will receive an asset.

    Args:
        directory: the package folder (inside ``packages/``).
        package_file: its package.json.
        data: package.json as read and validated.
        account: the account id from the folder name (``<account>-<name>-<version>``), if it has that form.
        package_name: the package name from the folder name, if it has that form.
        adds_node: whether adding the asset will add an interface and a graph node.
    """

    directory: Path
    package_file: Path
    data: Mapping[str, Any]
    account: str | None
    package_name: str | None
    adds_node: bool

    def merge(self, *, name: str, kind: str, asset_uri: str, descriptor_uri: str) -> Merge:
        """Merge an asset into this package's document (see ``emulator.builder.merge.merge_asset``)."""
        return merge_asset(
            self.data,
            name=name,
            kind=kind,
            asset_uri=asset_uri,
            descriptor_uri=descriptor_uri,
            account=self.account or "",
            package_name=self.package_name or "",
        )


def _well_formed(data: object) -> bool:
    body = data.get("nodePackage") if isinstance(data, dict) else None
    return (
        isinstance(body, dict)
        and isinstance(body.get("assets", []), list)
        and isinstance(body.get("interfaces"), list)
    )


def load_package_target(
    project: Project, package_path: Path | str, *, asset_name: str, kind: str
) -> PackageTarget:
    """Resolve a package folder and read and validate its package.json for adding ``asset_name``.

    A package.json fresh from ``panorama-cli create-package`` has no interface yet; that is accepted when the
    asset about to be added brings the package its first one.

    Args:
        project: the project.
        package_path: the package folder as given (relative to the working directory or absolute).
        asset_name: the asset that will be added.
        kind: ``container`` or ``model``.

    Returns:
        The target, ready to merge.

    Raises:
        ProjectError: the folder is not a package of the project, or package.json is missing.
        ManifestError: package.json is not JSON or not a valid package.
    """
    directory = project.resolve_package_path(package_path)
    package_file = directory / "package.json"
    name = label(package_file)
    data = read_json(Path(name))
    parts = package_folder_parts(directory.name)
    account, package_name = (parts[0], parts[1]) if parts else (None, None)
    problems = validate_package(data, name)
    if _well_formed(data):
        assert isinstance(data, dict)
        target = PackageTarget(directory, package_file, data, account, package_name, adds_node=False)
        dry = target.merge(
            name=asset_name,
            kind=kind,
            asset_uri=f"{_PLACEHOLDER}.tar.gz",
            descriptor_uri=f"{_PLACEHOLDER}.json",
        )
        if problems and dry.interface is not None:
            after = {problem.pointer for problem in validate_package(dry.package, name)}
            problems = [p for p in problems if not (p.pointer == _INTERFACES and p.pointer not in after)]
        if problems:
            raise ManifestError(problems)
        if dry.node is not None and parts is None:
            raise ProjectError(
                f"the folder name {directory.name!r} is not <account>-<package>-<version>, so the graph "
                f"node for asset {asset_name} cannot be named; rename the folder "
                f"(e.g. 123456789012-{directory.name}-1.0)",
                file=label(directory),
            )
        return PackageTarget(directory, package_file, data, account, package_name, dry.node is not None)
    raise ManifestError(
        problems or [Problem(name, "/nodePackage", "an object with assets and interfaces", "?")]
    )


@dataclass(frozen=True)
class DescriptorFile:
    """A descriptor as read: its bytes are what gets hashed and copied, whatever happens to the file later.

    Args:
        path: where it was read from.
        content: its bytes.
        sha256: hex digest of ``content``.
    """

    path: Path
    content: bytes
    sha256: str

    @property
    def uri(self) -> str:
        """``<sha256>.json``: its name in ``assets/``."""
        return f"{self.sha256}.json"


def load_descriptor_file(path: Path, *, kind: str) -> DescriptorFile:
    """Read and validate a descriptor of the given kind.

    Args:
        path: the descriptor file.
        kind: ``runtimeDescriptor`` (code) or ``mlModelDescriptor`` (model).

    Returns:
        The descriptor's bytes and hash.

    Raises:
        ProjectError: the file is missing.
        ManifestError: it is not JSON, not a valid descriptor, or a descriptor of the other kind.
    """
    name = label(path)
    data = read_json(Path(name))
    problems = validate_descriptor(data, name)
    if problems:
        raise ManifestError(problems)
    if not (isinstance(data, dict) and kind in data):
        other = next(iter(data)) if isinstance(data, dict) and data else "another descriptor"
        raise ManifestError([Problem(name, "", f"a {kind}", f"a {other}")])
    try:
        content = Path(name).read_bytes()
    except OSError as error:
        raise ProjectError(f"cannot read the file: {error.strerror or error}", file=name) from error
    return DescriptorFile(Path(path), content, hashlib.sha256(content).hexdigest())


@dataclass(frozen=True)
class GraphFile:
    """The project's graph.json, read before the build because a graph node will be added to it."""

    path: Path
    data: Mapping[str, Any]

    def with_node(self, node: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The graph with ``node`` appended (unless a node of that name exists) and whether it was added."""
        return add_graph_node(self.data, node)


def load_graph_file(project: Project) -> GraphFile:
    """Read the project's graph.json, checking only what adding a node needs (``/nodeGraph/nodes``).

    Raises:
        ProjectError: there is no graph, or several and none was chosen.
        ManifestError: it is not JSON, or has no node list.
    """
    path = project.graph_path()
    name = label(path)
    data = read_json(Path(name))
    body = data.get("nodeGraph") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(body, dict):
        where, found = ("/nodeGraph", _kind(body)) if isinstance(data, dict) else ("", _kind(data))
        raise ManifestError([Problem(name, where, "an object", found)])
    if not isinstance(body.get("nodes", []), list):
        raise ManifestError([Problem(name, "/nodeGraph/nodes", "an array of nodes", _kind(body["nodes"]))])
    assert isinstance(data, dict)
    return GraphFile(path, data)


def _kind(value: object) -> str:
    if value is None:
        return "nothing"
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "a number"
    )


def write_descriptor(assets_dir: Path, descriptor: DescriptorFile) -> Path:
    """Copy a descriptor to ``assets/<sha256>.json`` atomically.

    Raises:
        AssetError: the file cannot be written.
    """
    final = assets_dir / descriptor.uri
    try:
        fd, temp = tempfile.mkstemp(dir=assets_dir, prefix=".partial-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(descriptor.content)
            os.chmod(temp, file_mode())
            os.replace(temp, final)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
    except OSError as error:
        raise AssetError(
            f"cannot write the descriptor: {error.strerror or error}", file=str(final)
        ) from error
    return final


def _project_uris(project: Project, exclude: Sequence[Path]) -> set[str]:
    """Blob names still referenced by package.json files of the project, other than ``exclude``."""
    uris: set[str] = set()
    skip = {path.resolve() for path in exclude}
    for package_file in sorted(project.packages_dir.glob("*/package.json")):
        if package_file.resolve() in skip:
            continue
        try:
            uris |= referenced_uris(json.loads(package_file.read_text(encoding="utf-8-sig")))
        except (OSError, ValueError):
            continue
    return uris


def delete_stale(
    project: Project,
    stale: Sequence[str],
    written: Mapping[Path, Mapping[str, Any]],
    say: Callable[[str], None],
) -> list[str]:
    """Delete blobs that a replaced asset used, unless a package of the project still refers to them.

    panorama-cli deletes them unconditionally; a descriptor shared by two packages (same bytes, same name)
    would then vanish from under the other package, so a blob still referenced is kept.

    Args:
        project: the project.
        stale: blob file names in ``assets/``.
        written: the package.json documents just written (path -> document).
        say: where to report each deletion.

    Returns:
        The blob names deleted.
    """
    still_used = _project_uris(project, list(written))
    for document in written.values():
        still_used |= referenced_uris(document)
    deleted: list[str] = []
    for uri in stale:
        kind = "descriptor" if uri.endswith(".json") else "asset"
        if not uri or Path(uri).name != uri or uri in (".", ".."):
            continue  # only plain file names in assets/ are ours to delete
        if uri in still_used:
            say(f"Keeping old {kind} {uri}: another asset still uses it")
            continue
        path = project.assets_dir / uri
        say(f"Deleting old {kind} {uri}")
        try:
            path.unlink(missing_ok=True)
        except OSError:
            say(f"Could not delete old {kind} {uri}")
            continue
        deleted.append(uri)
    return deleted


def write_manifests(
    package_documents: Mapping[Path, Mapping[str, Any]], graph: tuple[Path, Mapping[str, Any]] | None
) -> None:
    """Write package.json documents, then graph.json (indent=4, atomic each)."""
    for path, document in package_documents.items():
        write_json(path, document)
    if graph is not None:
        write_json(graph[0], graph[1])
