"""The project-shaping commands of panorama-cli, done locally: ``init-project``, ``create-package``,
``add-panorama-package`` and ``import-application``.

They write the same folders and files, with the same JSON (``indent=4``), as panorama-cli. Where
panorama-cli asked AWS, the local meaning is:

- the account id (``aws sts get-caller-identity`` in panorama-cli) is the one given (``--account-id`` or
  ``$PANORAMA_EMULATOR_ACCOUNT_ID``), else the caller's AWS account when boto3 is installed and credentials
  are configured, else ``123456789012``, the id the published samples use (see :func:`resolve_account_id`);
- ``create-package`` registers nothing in the cloud (panorama-cli's ``aws panorama create-package`` call was
  allowed to fail offline too).

``import-application`` rewrites the account id in the package folder names and in graph.json, as
panorama-cli does, and also in every override.json under ``graphs/`` and every package.json (where an
``account::name`` reference appears), so the project deploys as a whole after it.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emulator.errors import ProjectError
from emulator.manifests import package_folder_parts, read_json, write_json
from emulator.project import Project

__all__ = [
    "ACCOUNT_ENV",
    "DEFAULT_ACCOUNT_ID",
    "PACKAGE_TYPES",
    "AccountId",
    "CreatedPackage",
    "Imported",
    "add_panorama_package",
    "create_package",
    "import_application",
    "init_project",
    "resolve_account_id",
]

ACCOUNT_ENV = "PANORAMA_EMULATOR_ACCOUNT_ID"
"""Environment variable naming the account id the project commands use."""
DEFAULT_ACCOUNT_ID = "123456789012"
"""The account id when none is given and no AWS account is found (the one the published samples use)."""
PACKAGE_TYPES = ("Container", "Model", "Camera", "Datasink")
"""``create-package --type`` values, as panorama-cli spells them."""

_ACCOUNT = re.compile(r"^[0-9A-Za-z]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")
_ENVELOPE = "2021-01-01"
_DOCKERFILE = (
    "# This Dockerfile fetches the image tagged latest by default\n"
    "# To use a specific version of the image, refer to https://gallery.ecr.aws/panorama/panorama-application\n"
    "# and tag the image in the Dockerfile with the version you're planning to use.\n"
    "FROM public.ecr.aws/panorama/panorama-application\n"
    "COPY src /panorama\n"
)


@dataclass(frozen=True)
class AccountId:
    """An account id and where it came from (``given``, ``environment``, ``aws`` or ``default``)."""

    value: str
    source: str


def _check_account(value: str, where: str) -> str:
    if not _ACCOUNT.fullmatch(value):
        raise ProjectError(f"account id {value!r} ({where}) must be letters and digits only")
    return value


def _aws_account() -> str | None:
    """The caller's AWS account through boto3, when boto3 is installed and credentials are configured."""
    try:
        import boto3  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    try:
        session = boto3.session.Session()
        if session.get_credentials() is None:
            return None
        identity = session.client("sts").get_caller_identity()
    except Exception:  # any failure of the AWS call means: no AWS account here
        return None
    account = identity.get("Account")
    return str(account) if account else None


def resolve_account_id(
    explicit: str | None = None, *, aws: Callable[[], str | None] = _aws_account
) -> AccountId:
    """The account id for package folders and ``account::package`` references.

    Args:
        explicit: ``--account-id``, if given.
        aws: how to ask AWS (the default uses boto3 and the caller's credentials, when both are there).

    Returns:
        The id and its source.

    Raises:
        ProjectError: the id given is not letters and digits.
    """
    if explicit:
        return AccountId(_check_account(explicit, "--account-id"), "given")
    env = os.environ.get(ACCOUNT_ENV)
    if env:
        return AccountId(_check_account(env, f"${ACCOUNT_ENV}"), "environment")
    found = aws()
    if found and _ACCOUNT.fullmatch(found):
        return AccountId(found, "aws")
    return AccountId(DEFAULT_ACCOUNT_ID, "default")


def _check_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name) or name in {".", ".."}:
        raise ProjectError(f"{what} {name!r} must be letters, digits and _ . - only")
    return name


def init_project(parent: Path, name: str) -> tuple[Path, bool]:
    """Create a project skeleton ``parent/name`` (``panorama-cli init-project --name NAME``).

    Writes ``assets/``, ``packages/`` and ``graphs/NAME/graph.json`` (an empty node graph).

    Args:
        parent: the folder to create it in (panorama-cli: the current directory).
        name: the project and application name.

    Returns:
        The project folder, and False when it already existed (then nothing is written, as panorama-cli).

    Raises:
        ProjectError: the name is unusable or the folders cannot be written.
    """
    _check_name(name, "project name")
    root = Path(parent) / name
    if root.exists():
        return root, False
    try:
        root.mkdir()
        for sub in ("assets", "graphs", "packages"):
            (root / sub).mkdir()
        (root / "graphs" / name).mkdir()
    except OSError as error:
        raise ProjectError(f"cannot create the project: {error.strerror or error}", file=str(root)) from None
    write_json(root / "graphs" / name / "graph.json", _graph_template())
    return root, True


def _graph_template() -> dict[str, Any]:
    return {"nodeGraph": {"envelopeVersion": _ENVELOPE, "packages": [], "nodes": [], "edges": []}}


def _graph_node(name: str, interface: str) -> dict[str, Any]:
    return {"name": name, "interface": interface, "overridable": False, "launch": "onAppStart"}


def _package_template() -> dict[str, Any]:
    return {
        "nodePackage": {
            "envelopeVersion": _ENVELOPE,
            "name": "",
            "version": "1.0",
            "description": "",
            "assets": [],
            "interfaces": [],
        }
    }


def _camera_template() -> dict[str, Any]:
    inputs = [
        {"description": "Camera username", "name": "username", "type": "string", "default": "<username>"},
        {
            "description": "Camera password. Use empty string if there's no password",
            "name": "password",
            "type": "string",
            "default": "<password>",
        },
        {
            "description": "Camera streamUrl",
            "name": "streamUrl",
            "type": "string",
            "default": "rtsp://<stream url>",
        },
    ]
    return {
        "nodePackage": {
            "envelopeVersion": _ENVELOPE,
            "description": "RTSP/ONVIF camera data source node package",
            "assets": [
                {
                    "name": "rtsp_camera",
                    "implementations": [
                        {"type": "system", "assetUri": "source/video/camera/rtsp/source_rtsp"}
                    ],
                }
            ],
            "interfaces": [
                {
                    "description": "Default desc",
                    "name": "rtsp_interface",
                    "category": "media_source",
                    "asset": "rtsp_camera",
                    "inputs": inputs,
                    "outputs": [{"description": "Video stream output", "name": "video_out", "type": "media"}],
                }
            ],
        }
    }


def _datasink_template() -> dict[str, Any]:
    return {
        "nodePackage": {
            "envelopeVersion": _ENVELOPE,
            "name": "data_sink_node",
            "version": "1.0",
            "description": "Default description for package data_sink_node",
            "assets": [
                {
                    "name": "sink_hdmi",
                    "implementations": [{"type": "system", "assetUri": "sink/video/hdmi/sink_hdmi"}],
                }
            ],
            "interfaces": [
                {
                    "name": "sink_interface",
                    "category": "media_sink",
                    "asset": "sink_hdmi",
                    "inputs": [{"description": "Video stream input", "name": "video_in", "type": "media"}],
                    "outputs": [{"description": "Video stream output", "name": "video_out", "type": "media"}],
                }
            ],
        }
    }


def _container_descriptor() -> dict[str, Any]:
    return {
        "runtimeDescriptor": {
            "envelopeVersion": _ENVELOPE,
            "entry": {"path": "python3", "name": "/panorama/<entry_file_name_under_src>"},
        }
    }


def _model_descriptor() -> dict[str, Any]:
    return {
        "mlModelDescriptor": {
            "envelopeVersion": _ENVELOPE,
            "framework": "",
            "inputs": [{"name": "", "shape": []}],
        }
    }


def _graph_document(project: Project) -> tuple[Path, dict[str, Any]]:
    path = project.graph_path()
    data = read_json(path)
    body = data.get("nodeGraph") if isinstance(data, dict) else None
    if not isinstance(data, dict) or not isinstance(body, dict):
        raise ProjectError("expected an object with nodeGraph", file=str(path))
    for key in ("packages", "nodes"):
        body.setdefault(key, [])
        if not isinstance(body[key], list):
            raise ProjectError(f"/nodeGraph/{key}: expected an array", file=str(path))
    return path, data


@dataclass(frozen=True)
class CreatedPackage:
    """What ``create-package`` did: the folder, and False in ``created`` when it already existed."""

    path: Path
    created: bool
    account: AccountId


def create_package(
    project: Project,
    name: str,
    *,
    package_type: str = "Container",
    version: str = "1.0",
    account: AccountId | None = None,
) -> CreatedPackage:
    """Create ``packages/<account>-<name>-<version>`` (``panorama-cli create-package``).

    A Container package gets ``src/``, ``descriptor.json``, ``package.json`` and a ``Dockerfile``; a Model
    package ``package.json`` and a model ``descriptor.json``; Camera and Datasink packages a ready
    package.json and a graph node of their interface. Every package is added to the graph's ``packages``.

    Args:
        project: the project.
        name: the package name.
        package_type: one of :data:`PACKAGE_TYPES`.
        version: the package version.
        account: the account id (default: :func:`resolve_account_id`).

    Returns:
        What was created.

    Raises:
        ProjectError: a bad type, name or version, or the graph cannot be read or written.
    """
    if package_type not in PACKAGE_TYPES:
        raise ProjectError(
            f"Invalid package type. Provided type {package_type} not in {' '.join(PACKAGE_TYPES)}"
        )
    _check_name(name, "package name")
    if "-" in version or not _NAME.fullmatch(version):
        raise ProjectError(f"package version {version!r} must be letters, digits, _ and . only")
    account = account or resolve_account_id()
    folder = project.packages_dir / f"{account.value}-{name}-{version}"
    if folder.exists():
        return CreatedPackage(folder, False, account)
    graph_path, graph = _graph_document(project)
    ref = f"{account.value}::{name}"
    files: dict[str, dict[str, Any]] = {}
    node: dict[str, Any] | None = None
    if package_type == "Camera":
        files["package.json"] = _camera_template()
        node = _graph_node(name, f"{ref}.rtsp_interface")
    elif package_type == "Datasink":
        files["package.json"] = _datasink_template()
        node = _graph_node(name, f"{ref}.sink_interface")
    elif package_type == "Model":
        files["package.json"] = _package_template()
        files["descriptor.json"] = _model_descriptor()
    else:
        files["descriptor.json"] = _container_descriptor()
        files["package.json"] = _package_template()
    package = files["package.json"]["nodePackage"]
    package["name"] = name
    package["description"] = f"Default description for package {name}"
    try:
        folder.mkdir()
        if package_type == "Container":
            (folder / "src").mkdir()
            (folder / "Dockerfile").write_text(_DOCKERFILE, encoding="utf-8")
    except OSError as error:
        raise ProjectError(
            f"cannot create the package: {error.strerror or error}", file=str(folder)
        ) from None
    for file_name, document in files.items():
        write_json(folder / file_name, document)
    body = graph["nodeGraph"]
    if node is not None:
        body["nodes"].append(node)
    body["packages"].append({"name": ref, "version": version})
    write_json(graph_path, graph)
    return CreatedPackage(folder, True, account)


_PANORAMA_PACKAGES: dict[str, tuple[str, dict[str, Any]]] = {
    "camera": (
        "panorama::abstract_rtsp_media_source",
        {
            "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
            "overridable": True,
            "launch": "onAppStart",
        },
    ),
    "data_sink": (
        "panorama::hdmi_data_sink",
        {"interface": "panorama::hdmi_data_sink.hdmi0", "overridable": False, "launch": "onAppStart"},
    ),
}


def add_panorama_package(project: Project, package_type: str, name: str) -> bool:
    """Add an abstract camera or the HDMI data sink to the graph (``panorama-cli add-panorama-package``).

    Args:
        project: the project.
        package_type: ``camera`` or ``data_sink``.
        name: the graph node's name.

    Returns:
        False when a node of that name already exists (then nothing is written, as panorama-cli).

    Raises:
        ProjectError: a bad type or name, or the graph cannot be read or written.
    """
    if package_type not in _PANORAMA_PACKAGES:
        raise ProjectError(f"Please enter a valid type, camera or data_sink (found {package_type!r})")
    _check_name(name, "node name")
    package_name, fields = _PANORAMA_PACKAGES[package_type]
    graph_path, graph = _graph_document(project)
    body = graph["nodeGraph"]
    if any(isinstance(node, dict) and node.get("name") == name for node in body["nodes"]):
        return False
    if not any(
        isinstance(entry, dict) and entry.get("name") == package_name and entry.get("version") == "1.0"
        for entry in body["packages"]
    ):
        body["packages"].append({"name": package_name, "version": "1.0"})
    node: dict[str, Any] = {"name": name, **fields}
    if package_type == "camera":
        node["decorator"] = {
            "title": f"Camera {name}",
            "description": f"Default description for camera {name}",
        }
    body["nodes"].append(node)
    write_json(graph_path, graph)
    return True


@dataclass
class Imported:
    """What ``import-application`` changed: folder renames (old -> new) and the files rewritten."""

    account: AccountId
    renamed: dict[str, str] = field(default_factory=dict)
    rewritten: list[Path] = field(default_factory=list)


def _rewrite(value: Any, account: str) -> Any:
    """Every ``acct::...`` string (other than ``panorama::``) with ``account`` for ``acct``."""
    if isinstance(value, dict):
        return {key: _rewrite(item, account) for key, item in value.items()}
    if isinstance(value, list):
        return [_rewrite(item, account) for item in value]
    if isinstance(value, str):
        owner, sep, rest = value.partition("::")
        if sep and owner and owner != "panorama" and _ACCOUNT.fullmatch(owner):
            return f"{account}::{rest}"
    return value


def import_application(project: Project, account: AccountId | None = None) -> Imported:
    """Give every package of the project the account id ``account`` (``panorama-cli import-application``).

    Renames ``packages/<old>-<name>-<version>`` to ``packages/<account>-<name>-<version>`` and rewrites
    ``<old>::`` references in every graph.json and override.json under ``graphs/`` and in every package.json.
    Everything is read and checked before anything is changed.

    Args:
        project: the project.
        account: the new account id (default: :func:`resolve_account_id`).

    Returns:
        What changed.

    Raises:
        ProjectError: a renamed folder would replace an existing one, or a file cannot be read or written.
        ManifestError: a manifest is not JSON.
    """
    account = account or resolve_account_id()
    result = Imported(account)
    renames: list[tuple[Path, Path]] = []
    for child in sorted(project.packages_dir.iterdir()):
        parts = package_folder_parts(child.name)
        if parts is None or not child.is_dir() or parts[0] == account.value:
            continue
        target = child.with_name(f"{account.value}-{parts[1]}-{parts[2]}")
        if target.exists():
            raise ProjectError(f"cannot rename {child.name}: {target.name} already exists", file=str(target))
        renames.append((child, target))
    manifests = sorted(project.graphs_dir.glob("**/*.json"))
    manifests = [path for path in manifests if path.name in {"graph.json", "override.json"}]
    manifests += sorted(project.packages_dir.glob("*/package.json"))
    documents: dict[Path, Any] = {}
    for path in manifests:
        data = read_json(path)
        changed = _rewrite(data, account.value)
        if changed != data:
            documents[path] = changed
    for path, document in documents.items():
        write_json(path, document)
        result.rewritten.append(path)
    for source, target in renames:
        try:
            shutil.move(str(source), str(target))
        except OSError as error:
            raise ProjectError(f"cannot rename the package folder: {error}", file=str(source)) from None
        result.renamed[source.name] = target.name
    result.rewritten = [
        project.packages_dir / result.renamed.get(path.parent.name, path.parent.name) / path.name
        if path.parent.parent == project.packages_dir
        else path
        for path in result.rewritten
    ]
    return result
