"""``package-application``, locally: check the whole application as a device would accept it, then register
each package version in the local package registry.

panorama-cli uploads every package's assets and package.json to the account's S3 location and registers a
*patch version* (the SHA-256 of package.json) with AWS Panorama. Here:

- the check is what a device does before it runs an application: every package folder's package.json and
  descriptors are valid, every container and model asset is in ``assets/`` with the SHA-256 its name says,
  every graph under ``graphs/`` (with the override.json beside it, if any) resolves into a node plan;
- registering writes ``<state-dir>/registry/<account>/<package>/<version>/<patch>.json`` (a copy of the
  package.json registered) and makes it the version's ``latest``; the previous latest patch stays, as a
  deregistered one does in the cloud;
- deploying (``--deploy URL``) uploads the project as a bundle to a running ``serve``.

    result = package_application(Project(Path(".")))
    result.registered[0].patch_version
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.device.store import default_state_dir, sha256_file
from emulator.errors import AssetError, EmulatorError, ProjectError
from emulator.manifests import load_descriptor, load_package, package_folder_parts
from emulator.plan import plan_application
from emulator.project import Project

__all__ = ["PackagedApp", "RegisteredPackage", "deploy_to", "package_application", "registry_dir"]


@dataclass(frozen=True)
class RegisteredPackage:
    """One package version as registered: ``patch_version`` is the SHA-256 of its package.json."""

    account: str
    name: str
    version: str
    patch_version: str
    record: Path
    already: bool


@dataclass
class PackagedApp:
    """What ``package-application`` checked and registered."""

    graphs: list[Path] = field(default_factory=list)
    registered: list[RegisteredPackage] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def registry_dir(state_dir: Path | None = None) -> Path:
    """The local package registry: ``<state-dir>/registry``.

    Args:
        state_dir: the state directory (default: :func:`emulator.device.store.default_state_dir`).

    Returns:
        The folder (it may not exist yet).
    """
    return (state_dir if state_dir is not None else default_state_dir()) / "registry"


def _check_assets(project: Project, package_dir: Path) -> None:
    package = load_package(package_dir / "package.json")
    for asset in package.assets:
        for implementation in asset.implementations:
            if implementation.type == "system":
                continue
            for uri in (implementation.asset_uri, implementation.descriptor_uri):
                if uri is None:
                    continue
                try:
                    path = project.asset_path(uri)
                except ProjectError as error:
                    raise ProjectError(
                        f"package {package_dir.name}, asset {asset.name}: {error}", file=str(package_dir)
                    ) from None
                expected = uri.split(".", 1)[0]
                actual = sha256_file(path)
                if actual != expected:
                    raise AssetError(
                        f"package {package_dir.name}, asset {asset.name}: the file's SHA-256 is {actual}, "
                        "not the one its name says (rebuild the package)",
                        asset=uri,
                    )
                if uri == implementation.descriptor_uri:
                    load_descriptor(path)


def _graphs(project: Project) -> list[tuple[Path, Path | None]]:
    found = []
    for graph in sorted(project.graphs_dir.glob("*/graph.json")):
        override = graph.with_name("override.json")
        found.append((graph, override if override.is_file() else None))
    if not found:
        raise ProjectError("no graphs/<app>/graph.json in the project", file=str(project.graphs_dir))
    return found


def package_application(
    project: Project,
    packages: Sequence[Path] = (),
    *,
    state_dir: Path | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> PackagedApp:
    """Check the application and register its package versions locally (``panorama-cli package-application``).

    Args:
        project: the project.
        packages: ``--packages-path``: register only these package folders (all are still checked).
        state_dir: where the registry lives (default: the state directory).
        say: called with each progress line (panorama-cli's wording).

    Returns:
        What was checked and registered.

    Raises:
        ManifestError: a manifest is invalid (every problem listed, with file and pointer).
        ProjectError: a package, interface or asset file is missing.
        AssetError: an asset's content does not match its SHA-256 name.
    """
    result = PackagedApp()
    folders = [child for child in sorted(project.packages_dir.iterdir()) if child.is_dir()]
    for folder in folders:
        if package_folder_parts(folder.name) is None:
            say(f"{folder} is not a package, ignoring")
            result.skipped.append(folder.name)
            continue
        _check_assets(project, folder)
    for graph, override in _graphs(project):
        plan_application(project, graph, override)
        result.graphs.append(graph)
    chosen = [project.resolve_package_path(path) for path in packages] if packages else folders
    registry = registry_dir(state_dir)
    for folder in chosen:
        parts = package_folder_parts(folder.name)
        if parts is None:
            continue
        account, name, _ = parts
        say(f"Uploading package {name}")
        manifest = folder / "package.json"
        raw = manifest.read_bytes()
        patch = hashlib.sha256(raw).hexdigest()
        version = load_package(manifest).version or "1.0"
        home = registry / account / name / version
        record = home / f"{patch}.json"
        latest = home / "latest"
        already = record.is_file() and latest.is_file() and latest.read_text().strip() == patch
        if already:
            say(f"Patch Version {patch} already registered, ignoring upload")
        else:
            try:
                home.mkdir(parents=True, exist_ok=True)
                record.write_bytes(raw)
                latest.write_text(patch + "\n")
            except OSError as error:
                raise ProjectError(
                    f"cannot write the registry: {error.strerror or error}", file=str(home)
                ) from None
            say(f"Called register package version for {name} with patch version {patch}")
            say(f"Register patch version complete for {name} with patch version {patch}")
        result.registered.append(RegisteredPackage(account, name, version, patch, record, already))
    say("All packages uploaded and registered successfully")
    return result


def deploy_to(project: Project, url: str, token: str | None = None) -> dict[str, object]:
    """Upload the project as a bundle to the ``serve`` at ``url`` and deploy it there.

    Args:
        project: the project.
        url: the device API's base URL, such as ``http://127.0.0.1:8123``.
        token: its bearer token, if it needs one.

    Returns:
        The server's answer (app, packages, assets, status).

    Raises:
        DeviceError: no server answers, or it refused the bundle (its reason).
    """
    from emulator.api.bundle import pack_project
    from emulator.api.client import DeviceClient

    buffer = io.BytesIO()
    pack_project(project.root, buffer)
    client = DeviceClient(url, token=token)
    try:
        answer = client.request(
            "POST", "/api/app/bundle", body=buffer.getvalue(), content_type="application/gzip"
        )
    except EmulatorError:
        raise
    except (ValueError, json.JSONDecodeError) as error:
        raise ProjectError(f"the device at {url} gave an answer that is not JSON: {error}") from None
    return dict(answer)
