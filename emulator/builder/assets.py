"""``build-container`` and ``export-container``: an image's filesystem becomes ``assets/<sha256>.tar.gz``, its
descriptor ``assets/<sha256>.json``, and package.json / graph.json learn about them, as with ``panorama-cli``.

Differences from ``panorama-cli``, on purpose:

- the docker SDK instead of the docker CLI; the export is compressed and hashed as it streams (one pass, flat
  memory), and the created container is removed afterwards;
- everything is checked before the engine is asked to build, and nothing in the project changes when a step
  fails; when ``--pull`` cannot reach a registry and the base image is local, the build goes on with it;
- ``--reproducible`` makes the same image give the same asset (see ``emulator.builder.reproducible``);
- a blob that another package still refers to is not deleted when an asset is replaced.
"""

from __future__ import annotations

import platform
import re
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from emulator.builder.compress import compress_to_assets, prefetch
from emulator.builder.docker_build import DockerBuilder, ImageBuilder, PullError
from emulator.builder.dockerfile import (
    Instruction,
    base_images,
    ignored_instruction_warnings,
    parse_dockerfile,
    platform_of,
)
from emulator.builder.package_update import (
    DescriptorFile,
    GraphFile,
    PackageTarget,
    delete_stale,
    label,
    load_descriptor_file,
    load_graph_file,
    load_package_target,
    write_descriptor,
    write_manifests,
)
from emulator.builder.report import BuildReporter, export_progress, progress_callback
from emulator.builder.reproducible import default_epoch, normalise_tar
from emulator.builder.stand_in import (
    StandInBases,
    entry_path_of,
    failure_hint,
    missing_hint,
    python_name_note,
    python_names_used,
)
from emulator.device.arch import binfmt_entry_handles
from emulator.errors import BuildError, EngineError, ProjectError, one_line
from emulator.project import Project

__all__ = [
    "BINFMT_AARCH64",
    "BUILT_MESSAGE",
    "BuiltAsset",
    "build_container",
    "check_asset_name",
    "export_container",
    "finish_asset",
]

#: panorama-cli's closing line, spelling included.
BUILT_MESSAGE = "Container asset for the package has been succesfully built at"
#: Enabled with flag F when the kernel can run aarch64 programs through qemu, also in a build's container.
BINFMT_AARCH64 = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")

_ASSET_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
# One path component of a Docker image reference: what `docker build -t NAME` accepts.
_IMAGE_NAME = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_ARM64 = ("arm64", "aarch64")
_ARM64_SENTENCE = (
    "the image is for arm64 (the device's architecture) and this {host} host has no qemu binfmt for aarch64 "
    "with the F flag (/proc/sys/fs/binfmt_misc/qemu-aarch64), so its programs cannot run here: install "
    "qemu-user-static and run sudo panorama-emulator base-image --arch arm64 (which registers it), or build "
    "FROM the host's stand-in base image (panorama-emulator base-image)"
)


@dataclass(frozen=True)
class BuiltAsset:
    """An asset written to the project's ``assets/`` and recorded in package.json.

    Args:
        asset_name: the asset's name in package.json.
        asset_path: ``assets/<sha256>.tar.gz``.
        descriptor_path: ``assets/<sha256 of the descriptor>.json``.
        sha256: hex digest of the asset file (its name).
        size: the asset file's size in bytes.
        asset: the asset entry as written to package.json (what the CLI prints).
        warnings: Dockerfile instructions that do nothing on the device, and similar notes.
    """

    asset_name: str
    asset_path: Path
    descriptor_path: Path
    sha256: str
    size: int
    asset: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()


def check_asset_name(name: str, *, image_tag: bool = False) -> None:
    """Refuse an asset name package.json or the engine would not accept.

    Args:
        name: the asset name.
        image_tag: the name also becomes the image tag (``build-container``).

    Raises:
        ProjectError: the name is not usable, with the rule it breaks.
    """
    if not _ASSET_NAME.match(name):
        raise ProjectError(
            f"asset name {name!r} is not allowed: use 1-255 letters, digits, '_' and '-'", asset=name or "''"
        )
    if image_tag and not _IMAGE_NAME.match(name):
        raise ProjectError(
            f"asset name {name!r} cannot tag a Docker image (docker build -t {name}): "
            "use lower-case letters, digits and single '_', '.' or '-' between them",
            asset=name,
        )


def _foreign_architecture(architecture: str) -> bool:
    host = platform.machine().lower()
    return architecture.lower() in _ARM64 and host not in _ARM64 and not binfmt_entry_handles(BINFMT_AARCH64)


def _arm64_sentence() -> str:
    return _ARM64_SENTENCE.format(host=platform.machine())


def _step_line(step: str | None, instructions: Sequence[Instruction]) -> tuple[int | None, str | None]:
    """(Dockerfile line, instruction text) of a ``Step N/M : ...`` message."""
    match = _STEP.match(step or "")
    if not match:
        return None, None
    number = int(match.group(1))
    line = instructions[number - 1].line if 0 < number <= len(instructions) else None
    return line, match.group(3)


def _failure(
    error: BuildError,
    dockerfile: str,
    instructions: Sequence[Instruction],
    stand_ins: StandInBases | None = None,
) -> BuildError:
    """The engine's failure as one line naming Dockerfile:line, the step and the engine's message."""
    line, instruction = _step_line(error.step, instructions)
    engine = one_line(error.message) or "the build failed"
    match = _STEP.match(error.step or "")
    if instruction and match:
        message = f"{instruction} failed (step {match.group(1)}/{match.group(2)}): {engine}"
    else:
        message = engine
    if "exec format error" in " ".join([error.message, *error.log_tail]):
        message += "; " + _arm64_sentence()
    if stand_ins is not None:
        message += failure_hint(" ".join([error.message, *error.log_tail]), stand_ins)
    where = f"{dockerfile}:{line}" if line else dockerfile
    return BuildError(message, step=error.step, log_tail=error.log_tail, file=where)


def _build_image(
    builder: ImageBuilder,
    directory: Path,
    tag: str,
    *,
    pull: bool,
    dockerfile: str,
    instructions: Sequence[Instruction],
    reporter: BuildReporter,
    stand_ins: StandInBases,
) -> str:
    bases = base_images(instructions)
    served = stand_ins.sentence()
    if not pull and served:
        reporter.say(f"Building with the local image: {served}", "yellow")
    try:
        return builder.build(directory, tag, pull=pull, on_event=reporter)
    except PullError as error:
        missing = [ref for ref in bases if builder.image(ref) is None]
        if not pull or missing or not bases:
            failure = _failure(error, dockerfile, instructions, stand_ins)
            if missing:
                failure.message = (
                    f"{failure.message}; the engine has no local {', '.join(missing)} either; "
                    + missing_hint(missing)
                )
            raise failure from error
        reporter.say(
            f"Cannot pull {', '.join(bases)} ({one_line(error.message)}): building with the local image"
            + (f": {served}" if served else ""),
            "yellow",
        )
    except BuildError as error:
        raise _failure(error, dockerfile, instructions, stand_ins) from error
    try:
        return builder.build(directory, tag, pull=False, on_event=reporter)
    except BuildError as error:
        raise _failure(error, dockerfile, instructions, stand_ins) from error


def _graph_for(project: Project, target: PackageTarget, reporter: BuildReporter) -> GraphFile | None:
    """The graph that will receive the asset's new node.

    None when no node is added, or when several graphs make the choice ambiguous (a warning says so).
    """
    if not target.adds_node:
        return None
    graphs = sorted(path for path in project.graphs_dir.glob("*/graph.json") if path.is_file())
    if len(graphs) > 1:
        reporter.say(
            f"warning: several application graphs ({', '.join(label(path) for path in graphs)}): "
            "add the new node to the one that uses it",
            "yellow",
        )
        return None
    return load_graph_file(project)


def finish_asset(
    project: Project,
    *,
    asset_name: str,
    image: str,
    package_path: Path | str,
    descriptor: DescriptorFile,
    builder: ImageBuilder,
    reproducible: bool,
    reporter: BuildReporter,
    warnings: Sequence[str] = (),
    image_name: str | None = None,
) -> BuiltAsset:
    """Export ``image`` into ``assets/``, copy the descriptor, and update package.json and graph.json.

    The steps ``export-container`` runs, and ``build-container`` after its build.

    Args:
        project: the project.
        asset_name: the asset's name.
        image: the image to export (a tag, a reference or an id).
        package_path: the package folder.
        descriptor: the descriptor read before the build.
        builder: the engine.
        reproducible: normalise the tar and the gzip header so the same image gives the same asset.
        reporter: where progress goes.
        warnings: notes gathered so far, returned with the asset.
        image_name: how to name the image in messages (when ``image`` is an id).

    Returns:
        The asset.

    Raises:
        EngineError: the export failed.
        AssetError: the asset cannot be written.
        ManifestError / ProjectError: package.json or graph.json became unusable during the build.
    """
    info = builder.image(image)
    if info is None:
        raise EngineError(f"the Docker engine has no image {image}")
    assets_dir = project.assets_dir
    created_dir = not assets_dir.exists()
    try:
        assets_dir.mkdir(exist_ok=True)
    except OSError as error:
        raise ProjectError(
            f"cannot create the assets folder: {error.strerror}", file=str(assets_dir)
        ) from error
    shown = image_name or image
    reporter.say(f"Exporting the filesystem of {shown} (gzip -1, sha256 in the same pass)", "bold")
    console = reporter.console
    try:
        with builder.export(image) as chunks, export_progress(console, "export", info.size) as progress:
            source = normalise_tar(chunks, default_epoch()) if reproducible else chunks
            with closing(prefetch(source)) as stream:
                blob = compress_to_assets(
                    stream,
                    assets_dir,
                    gzip_name=None if reproducible else f"{asset_name}.tar",
                    mtime=0 if reproducible else int(time.time()),
                    on_progress=progress_callback(progress, info.size),
                )
    except BaseException:
        if created_dir and not any(assets_dir.iterdir()):
            assets_dir.rmdir()
        raise
    # Read the manifests again: someone may have edited them while the image was building.
    target = load_package_target(project, package_path, asset_name=asset_name, kind="container")
    graph = _graph_for(project, target, reporter)
    descriptor_path = write_descriptor(assets_dir, descriptor)
    merge = target.merge(
        name=asset_name, kind="container", asset_uri=blob.path.name, descriptor_uri=descriptor.uri
    )
    if merge.replaced:
        reporter.say("Updating an existing asset with the same name")
    graph_update = None
    if merge.node is not None and graph is not None:
        document, added = graph.with_node(merge.node)
        if added:
            graph_update = (graph.path, document)
        else:
            reporter.say(f"graph.json already has a node named {merge.node['name']}; left as it is")
    write_manifests({target.package_file: merge.package}, graph_update)
    delete_stale(project, merge.stale, {target.package_file: merge.package}, reporter.say)
    return BuiltAsset(
        asset_name=asset_name,
        asset_path=blob.path,
        descriptor_path=descriptor_path,
        sha256=blob.sha256,
        size=blob.size,
        asset=merge.asset,
        warnings=tuple(warnings),
    )


def build_container(
    project: Project,
    asset_name: str,
    package_path: Path,
    *,
    local_image: bool = False,
    reproducible: bool = False,
    console: Console | None = None,
    builder: ImageBuilder | None = None,
) -> BuiltAsset:
    """Build a package's Dockerfile and make the image a container asset (``panorama-cli build-container``).

    Args:
        project: the project (run from its root, like panorama-cli).
        asset_name: ``--container-asset-name``; also the image tag.
        package_path: ``--package-path``: a folder inside the project's ``packages/``.
        local_image: do not try to pull a newer base image first.
        reproducible: the same inputs give the same asset sha256.
        console: where build output and progress go (default: nowhere).
        builder: the engine (default: the Docker engine from the environment).

    Returns:
        The asset written.

    Raises:
        ProjectError: bad package path, no Dockerfile, unusable asset name.
        ManifestError: package.json, descriptor.json or graph.json is invalid.
        BuildError: a Dockerfile step failed (names Dockerfile:line, the step and the engine's message).
        EngineError: the engine cannot be reached or the export failed.
    """
    console = console if console is not None else Console(quiet=True)
    builder = builder if builder is not None else DockerBuilder()
    reporter = BuildReporter(console)
    check_asset_name(asset_name, image_tag=True)
    target = load_package_target(project, package_path, asset_name=asset_name, kind="container")
    dockerfile = target.directory / "Dockerfile"
    dockerfile_label = label(dockerfile)
    if not dockerfile.is_file():
        raise ProjectError(
            "no Dockerfile: build-container builds the image from the package's Dockerfile",
            file=dockerfile_label,
        )
    try:
        instructions = parse_dockerfile(dockerfile.read_text(encoding="utf-8", errors="replace"))
    except OSError as error:
        raise ProjectError(f"cannot read the Dockerfile: {error.strerror}", file=dockerfile_label) from error
    descriptor = load_descriptor_file(target.directory / "descriptor.json", kind="runtimeDescriptor")
    _graph_for(project, target, BuildReporter(Console(quiet=True)))  # fail now, not after the build

    warnings = ignored_instruction_warnings(instructions, dockerfile_label)
    for warning in warnings:
        reporter.say(f"warning: {warning}", "yellow")
    platform_flag = (platform_of(instructions) or "").split("/")
    architectures = [platform_flag[1] if len(platform_flag) > 1 else ""] + [
        info.architecture for info in (builder.image(ref) for ref in base_images(instructions)) if info
    ]
    if any(_foreign_architecture(architecture) for architecture in architectures):
        note = _arm64_sentence()
        warnings.append(note)
        reporter.say(f"warning: {note}", "yellow")

    stand_ins = StandInBases.find(builder, base_images(instructions))
    python_note = python_name_note(
        python_names_used(instructions, entry_path_of(descriptor.content)), stand_ins.python
    )
    if python_note:
        warnings.append(python_note)
        reporter.say(python_note, "yellow")

    pull = not local_image
    reporter.say(
        f"Building image {asset_name} from {label(target.directory)}"
        + (" (pulling a newer base image first)" if pull else " (local base image)"),
        "bold",
    )
    # Export by id: a concurrent build that moves the tag cannot change what is exported.
    image_id = _build_image(
        builder,
        target.directory,
        asset_name,
        pull=pull,
        dockerfile=dockerfile_label,
        instructions=instructions,
        reporter=reporter,
        stand_ins=stand_ins,
    )
    return finish_asset(
        project,
        asset_name=asset_name,
        image=image_id,
        image_name=f"{asset_name}:latest",
        package_path=target.directory,
        descriptor=descriptor,
        builder=builder,
        reproducible=reproducible,
        reporter=reporter,
        warnings=warnings,
    )


def export_container(
    project: Project,
    asset_name: str,
    image_uri: str,
    package_path: Path,
    *,
    reproducible: bool = False,
    console: Console | None = None,
    builder: ImageBuilder | None = None,
) -> BuiltAsset:
    """Turn an existing image into a container asset (``panorama-cli export-container``).

    Args:
        project: the project.
        asset_name: ``--container-asset-name``.
        image_uri: ``--container-image-uri``: a local image (pulled first if the engine does not have it,
            as ``docker create`` would).
        package_path: ``--package-path``.
        reproducible: the same image gives the same asset sha256.
        console: where progress goes (default: nowhere).
        builder: the engine (default: the Docker engine from the environment).

    Returns:
        The asset written.

    Raises:
        ProjectError: bad package path or asset name.
        ManifestError: package.json, descriptor.json or graph.json is invalid.
        EngineError: the image is unknown and cannot be pulled, or the export failed.
    """
    console = console if console is not None else Console(quiet=True)
    builder = builder if builder is not None else DockerBuilder()
    reporter = BuildReporter(console)
    check_asset_name(asset_name)
    target = load_package_target(project, package_path, asset_name=asset_name, kind="container")
    descriptor = load_descriptor_file(target.directory / "descriptor.json", kind="runtimeDescriptor")
    _graph_for(project, target, BuildReporter(Console(quiet=True)))
    if not image_uri.strip():
        raise ProjectError("--container-image-uri is empty")
    if builder.image(image_uri) is None:
        reporter.say(f"The engine has no image {image_uri}: pulling it", "bold")
        try:
            builder.pull(image_uri, reporter)
        except EngineError as error:
            raise EngineError(
                f"the Docker engine has no image {image_uri} and cannot pull it "
                f"({one_line(error.message)}); "
                "check the name with `docker images`"
            ) from error
    info = builder.image(image_uri)
    warnings: list[str] = []
    if info is not None and _foreign_architecture(info.architecture):
        warnings.append(_arm64_sentence())
        reporter.say(f"warning: {warnings[-1]}", "yellow")
    return finish_asset(
        project,
        asset_name=asset_name,
        image=image_uri,
        package_path=target.directory,
        descriptor=descriptor,
        builder=builder,
        reproducible=reproducible,
        reporter=reporter,
        warnings=warnings,
    )
