"""``add-raw-model``: a model archive becomes ``assets/<sha256>.tar.gz``, its descriptor
``assets/<sha256>.json``, and the packages given learn about it, with ``panorama-cli``'s rules (the model
asset goes first; a new asset brings an ``ml_model`` interface ``NAME_interface`` and a graph node ``NAME``).

Only local files are taken (``panorama-cli``'s ``--model-s3-uri`` needs AWS). The file must be a
gzip-compressed tar archive; that is checked before anything in the project changes.
"""

from __future__ import annotations

import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from isal import igzip
from rich.console import Console

from emulator.builder.assets import BuiltAsset, check_asset_name
from emulator.builder.compress import copy_to_assets
from emulator.builder.merge import asset_entry
from emulator.builder.package_update import (
    GraphFile,
    delete_stale,
    label,
    load_descriptor_file,
    load_graph_file,
    load_package_target,
    write_descriptor,
    write_manifests,
)
from emulator.builder.report import BuildReporter
from emulator.errors import AssetError, ProjectError
from emulator.project import Project

__all__ = ["COPY_MESSAGE", "MODEL_MESSAGE", "add_raw_model", "verify_model_archive"]

#: panorama-cli's closing line.
MODEL_MESSAGE = "Successfully downloaded the model to"
#: panorama-cli's line before the asset JSON when no package was given.
COPY_MESSAGE = "Copy the following in the assets section of package.json"


def verify_model_archive(path: Path, shown_as: str) -> None:
    """Check that ``path`` is a complete gzip-compressed tar archive with at least one member.

    Reads it once, as a stream; memory does not depend on its size.

    Args:
        path: the file.
        shown_as: how to name the file in the error.

    Raises:
        AssetError: it is not gzip, is truncated or corrupted, or is not a tar archive.
    """
    try:
        with open(path, "rb") as raw:
            if raw.read(2) != b"\x1f\x8b":
                raise AssetError(
                    "a model must be a .tar.gz archive: the file is not gzip-compressed", file=shown_as
                )
            raw.seek(0)
            with igzip.GzipFile(fileobj=raw, mode="rb") as unzipped:  # type: ignore[no-untyped-call]
                members = 0
                with tarfile.open(fileobj=unzipped, mode="r|") as archive:
                    for _ in archive:
                        members += 1
                # Read to the end so that the gzip trailer (CRC and length) is checked too.
                while unzipped.read(1 << 20):
                    pass
    except AssetError:
        raise
    except (OSError, EOFError, tarfile.TarError, zlib.error) as error:
        raise AssetError(f"a model must be a .tar.gz archive: {error}", file=shown_as) from None
    if members == 0:
        raise AssetError(
            "a model must be a .tar.gz archive with files in it: this one is empty", file=shown_as
        )


def add_raw_model(
    project: Project,
    asset_name: str,
    model_path: Path,
    descriptor_path: Path,
    packages: Sequence[Path] = (),
    *,
    console: Console | None = None,
) -> BuiltAsset:
    """Add a local model archive to the project (``panorama-cli add-raw-model``).

    Args:
        project: the project.
        asset_name: ``--model-asset-name``.
        model_path: ``--model-local-path``: a ``.tar.gz`` file.
        descriptor_path: ``--descriptor-path``: an ``mlModelDescriptor`` file.
        packages: ``--packages-path``: package folders whose package.json get the asset (none: only
            ``assets/``).
        console: where messages go (default: nowhere).

    Returns:
        The asset written.

    Raises:
        ProjectError: a file or package folder is missing, or the asset name is unusable.
        ManifestError: the descriptor or a package.json is invalid.
        AssetError: the model file is not a gzip-compressed tar archive.
    """
    reporter = BuildReporter(console if console is not None else Console(quiet=True))
    check_asset_name(asset_name)
    source = project.resolve_file(model_path)
    descriptor = load_descriptor_file(project.resolve_file(descriptor_path), kind="mlModelDescriptor")
    targets = [load_package_target(project, path, asset_name=asset_name, kind="model") for path in packages]
    if len({target.directory for target in targets}) != len(targets):
        raise ProjectError("a package is given twice in --packages-path", asset=asset_name)
    graph: GraphFile | None = None
    if any(target.adds_node for target in targets):
        graph = load_graph_file(project)

    assets_dir = project.assets_dir
    created_dir = not assets_dir.exists()
    try:
        assets_dir.mkdir(exist_ok=True)
        blob = copy_to_assets(source, assets_dir, lambda temp: verify_model_archive(temp, label(source)))
    except OSError as error:
        raise ProjectError(
            f"cannot create the assets folder: {error.strerror}", file=str(assets_dir)
        ) from error
    except BaseException:
        if created_dir and assets_dir.is_dir() and not any(assets_dir.iterdir()):
            assets_dir.rmdir()
        raise
    descriptor_file = write_descriptor(assets_dir, descriptor)

    written: dict[Path, dict[str, Any]] = {}
    stale: list[str] = []
    graph_document = dict(graph.data) if graph is not None else None
    graph_changed = False
    asset: dict[str, Any] = {}
    for target in targets:
        merge = target.merge(
            name=asset_name, kind="model", asset_uri=blob.path.name, descriptor_uri=descriptor.uri
        )
        if merge.replaced:
            reporter.say("Updating an existing asset with the same name")
        written[target.package_file] = merge.package
        stale.extend(merge.stale)
        asset = merge.asset
        if merge.node is not None and graph is not None and graph_document is not None:
            graph_document, added = GraphFile(graph.path, graph_document).with_node(merge.node)
            graph_changed = graph_changed or added
    if not targets:
        asset = asset_entry(asset_name, "model", blob.path.name, descriptor.uri)
        reporter.say(COPY_MESSAGE)
    graph_update = (
        (graph.path, graph_document) if graph is not None and graph_changed and graph_document else None
    )
    write_manifests(written, graph_update)
    delete_stale(project, list(dict.fromkeys(stale)), written, reporter.say)
    return BuiltAsset(
        asset_name=asset_name,
        asset_path=blob.path,
        descriptor_path=descriptor_file,
        sha256=blob.sha256,
        size=blob.size,
        asset=asset,
    )
