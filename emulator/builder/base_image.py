"""The offline stand-in for ``public.ecr.aws/panorama/panorama-application``.

Package Dockerfiles start ``FROM public.ecr.aws/panorama/panorama-application`` (often with a tag such as
``1.2.0-py3.8``). No container registry is needed here: :func:`ensure_base_image` builds a local image
under every reference published Dockerfiles use (:data:`STAND_IN_REFERENCES`), plus any the user adds with
``base-image --tag``, from Debian packages.

How it is made:

1. ``debootstrap --variant=minbase`` of Debian 12 (bookworm) from the host's configured Debian mirror, with
   python3, pip, numpy and the shared libraries that PyPI's ``opencv-python`` loads (libGL, GLib, SM, Xext,
   Xrender). Headless OpenCV is PyPI's ``opencv-python-headless`` wheel (fetched by the host's pip) installed
   into the system Python: Debian's ``python3-opencv`` would drag in GTK/Qt, FFmpeg and GStreamer. The
   result is cached as ``rootfs-<recipe>.tar.gz`` in the cache directory, so a rebuild does not run
   debootstrap again (see :mod:`emulator.builder.base_rootfs`).
2. The tarball is imported into the engine, then a small build adds the host's CA bundle (so that
   ``pip install`` in a package's ``RUN`` step works wherever the host's pip works, also behind a
   TLS-intercepting proxy), an ``/etc/pip.conf`` (``cert`` plus the host's http(s) index and proxy settings),
   labels, a default ``CMD`` and the Python names of the real images (``python3.8``, ``python3.7``,
   ``pip3.8``, ``pip3.7``: links to the image's own ``python3`` and ``pip3``). This step's inputs are
   hashed into the ``configuration`` label, apart from the rootfs recipe, so changing it never runs
   debootstrap again.

The device is arm64. ``ensure_base_image(arch="arm64")`` (``base-image --arch arm64``) builds the same recipe
for arm64 (``debootstrap --arch arm64``, its programs run through qemu-user registered with binfmt_misc,
see :mod:`emulator.builder.qemu`), keeps it as :data:`ARM64_STAND_IN` and points the references that name
arm64 (:data:`ARM64_REFERENCES`) at it; ``latest`` and ``1.2.0-py3.8`` stay on the host's stand-in, so
the default Dockerfile builds and runs at native speed. ``arch="host"`` (the default) points the arm64
references back at the host's stand-in.

How the stand-in differs from the real image:

- Debian 12 with Python 3.11 and NumPy 1.24, where the real images are Ubuntu 20.04 based with Python 3.8
  (``1.2.0-py3.8``: Python 3.8.0, NumPy 1.24.3; ``1.2.1-arm64v8``: Python 3.8.10); ``python3.8`` and
  ``python3.7`` here are that Python 3.11.
- Every tag holds the host's architecture unless ``--arch arm64`` pointed the arm64 ones at the arm64 build.
- No CUDA, TensorRT, cuDNN or other Jetson libraries.
- No ``panoramasdk``: the emulator injects its own SDK into the application's sandbox at run time.
- ``pip install`` into the system Python is allowed (the EXTERNALLY-MANAGED marker is removed), as on the
  real image.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import docker
import docker.errors
from docker.utils import parse_repository_tag
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from emulator.builder.base_rootfs import (
    DEBIAN_PACKAGES,
    DEBIAN_SUITE,
    OPENCV_REQUIREMENT,
    RECIPE_VERSION,
    BaseImageError,
    cache_dir,
    debian_arch,
    elf_machine_of,
    recipe_key,
    rootfs_tarball,
    target_arch,
)
from emulator.builder.host_pip import IMAGE_CA_BUNDLE, host_ca_bundle, host_pip_settings, image_pip_conf
from emulator.builder.image_archive import load_rootfs
from emulator.builder.qemu import ensure_binfmt
from emulator.errors import EngineError

__all__ = [
    "ARCHES",
    "ARM64_REFERENCES",
    "ARM64_STAND_IN",
    "ARM64_TAGS",
    "BASE_IMAGE_REPOSITORY",
    "BASE_IMAGE_TAGS",
    "DEBIAN_PACKAGES",
    "DEBIAN_SUITE",
    "LABEL_CONFIGURATION",
    "LABEL_HOST_CONFIG",
    "LABEL_PYTHON",
    "LABEL_PYTHON_NAMES",
    "LABEL_RECIPE",
    "LABEL_STAND_IN",
    "OPENCV_REQUIREMENT",
    "PYTHON_NAMES",
    "RECIPE_VERSION",
    "SDKV1_REPOSITORY",
    "STAND_IN_REFERENCES",
    "BaseImageError",
    "cache_dir",
    "docker_client",
    "ensure_base_image",
    "is_stand_in",
    "normalise_reference",
    "recipe_key",
    "serving_hint",
    "stand_in_reference",
]

BASE_IMAGE_REPOSITORY = "public.ecr.aws/panorama/panorama-application"
#: The tags of :data:`BASE_IMAGE_REPOSITORY` that published Dockerfiles name.
BASE_IMAGE_TAGS: tuple[str, ...] = ("latest", "1.1.0-arm64v8", "1.2.0-py3.8", "1.2.1-arm64v8")
#: The SDK 1 image that people_counter and kinesis_video_streams build FROM.
SDKV1_REPOSITORY = f"{BASE_IMAGE_REPOSITORY}/sdkv1/python3.8/aarch64"
#: Every reference the stand-in is tagged with, whatever ``base-image --tag`` adds.
STAND_IN_REFERENCES: tuple[str, ...] = (
    *(f"{BASE_IMAGE_REPOSITORY}:{tag}" for tag in BASE_IMAGE_TAGS),
    f"{SDKV1_REPOSITORY}:latest",
)
#: The tags of :data:`BASE_IMAGE_REPOSITORY` that name arm64, the device's CPU.
ARM64_TAGS: tuple[str, ...] = ("1.1.0-arm64v8", "1.2.1-arm64v8")
#: What ``base-image --arch arm64`` points at the arm64 stand-in (``--arch host`` points them back).
ARM64_REFERENCES: tuple[str, ...] = (
    *(f"{BASE_IMAGE_REPOSITORY}:{tag}" for tag in ARM64_TAGS),
    f"{SDKV1_REPOSITORY}:latest",
)
#: Where the arm64 stand-in stays, whichever stand-in the public references point at.
ARM64_STAND_IN = "panorama-emulator/stand-in:arm64"
#: What ``base-image --arch`` accepts.
ARCHES: tuple[str, ...] = ("host", "arm64")
#: Interpreter names of the real images, served by the stand-in's own Python (name -> what it links to).
PYTHON_NAMES: dict[str, str] = {
    "python3.8": "/usr/bin/python3",
    "python3.7": "/usr/bin/python3",
    "pip3.8": "/usr/bin/pip3",
    "pip3.7": "/usr/bin/pip3",
}
_PYTHON_NAMES_DIR = "usr/local/bin"

LABEL_PREFIX = "org.panorama-emulator"
LABEL_STAND_IN = f"{LABEL_PREFIX}.stand-in"
LABEL_RECIPE = f"{LABEL_PREFIX}.recipe"
LABEL_HOST_CONFIG = f"{LABEL_PREFIX}.host-config"
LABEL_CONFIGURATION = f"{LABEL_PREFIX}.configuration"
LABEL_PYTHON = f"{LABEL_PREFIX}.python"
LABEL_PYTHON_NAMES = f"{LABEL_PREFIX}.python-names"
# What a reference may be: [host[:port]/]path[:tag] in lower case, as `docker tag` accepts it.
_REFERENCE = re.compile(
    r"^(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$"
)

DEFAULT_CMD = ["python3"]
# The host's pip configuration that the image takes (see emulator.builder.host_pip).
_host_pip_settings = host_pip_settings
_image_pip_conf = image_pip_conf


def docker_client() -> docker.DockerClient:
    """Connect to the Docker engine named by the environment (``DOCKER_HOST``, else the local socket).

    Returns:
        A client whose engine answered a ping.

    Raises:
        EngineError: no engine answers, with how to start one.
    """
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise EngineError(
            f"no Docker engine answers at {where} ({reason}): start one (sudo systemctl start docker, "
            "or sudo dockerd) or set DOCKER_HOST"
        ) from None
    return client


# --- references ------------------------------------------------------------------------------------------


def normalise_reference(reference: str) -> str:
    """A Docker image reference with its tag made explicit (``NAME`` means ``NAME:latest``).

    Args:
        reference: as written after FROM or given to ``base-image --tag``.

    Returns:
        ``repository:tag``.

    Raises:
        BaseImageError: a digest reference (no tag can stand in for it) or not a valid reference.
    """
    text = reference.strip()
    if "@" in text:
        raise BaseImageError(
            f"{text} names an image by digest, which no local tag can stand in for: build FROM a tag "
            f"(such as {BASE_IMAGE_REPOSITORY}:1.2.0-py3.8), or docker load the real image"
        )
    if not _REFERENCE.match(text):
        raise BaseImageError(f"{text!r} is not a Docker image reference (repository[:tag], lower case)")
    last = text.rsplit("/", 1)[-1]
    return text if ":" in last else f"{text}:latest"


def is_stand_in(labels: Mapping[str, str] | None) -> bool:
    """Whether an image carries the stand-in's label (also true of images built FROM it).

    Args:
        labels: the image's labels.

    Returns:
        True for the stand-in and its descendants.
    """
    return bool(labels) and (labels or {}).get(LABEL_STAND_IN) == "true"


def serving_hint(reference: str) -> str:
    """What would serve a base image reference the engine lacks and cannot pull.

    Args:
        reference: the FROM reference.

    Returns:
        A clause naming the command (or, for a digest, the way) that makes the reference buildable.
    """
    try:
        full = normalise_reference(reference)
    except BaseImageError as error:
        return error.message
    if full in STAND_IN_REFERENCES:
        return "build the offline stand-in with: panorama-emulator base-image"
    return f"to build it FROM the offline stand-in: panorama-emulator base-image --tag {reference.strip()}"


# --- the engine side -----------------------------------------------------------------------------------


def stand_in_reference(arch: str = "host") -> str:
    """The reference that always names the stand-in of an architecture.

    Args:
        arch: ``host`` or a Debian architecture (``arm64``).

    Returns:
        ``public.ecr.aws/panorama/panorama-application:latest`` for the host's architecture,
        ``panorama-emulator/stand-in:<arch>`` for another (:data:`ARM64_STAND_IN`).

    Raises:
        BaseImageError: an architecture the stand-in is not made for.
    """
    wanted = target_arch(arch)
    if wanted == debian_arch():
        return f"{BASE_IMAGE_REPOSITORY}:latest"
    return f"panorama-emulator/stand-in:{wanted}"


def _current_image(client: docker.DockerClient, wanted: Mapping[str, str], reference: str) -> Any | None:
    """The image ``reference`` names if it carries the wanted recipe and configuration labels."""
    try:
        image = client.images.get(reference)
    except docker.errors.ImageNotFound:
        return None
    labels = image.labels or {}
    if all(labels.get(name) == value for name, value in wanted.items()):
        return image
    return None


def _import_rootfs(client: docker.DockerClient, tarball: Path, reference: str, progress: Progress) -> None:
    size = tarball.stat().st_size
    task = progress.add_task("importing into the engine", total=size)

    def chunks() -> Iterator[bytes]:
        with tarball.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                progress.advance(task, len(chunk))
                yield chunk

    repository, _, tag = reference.rpartition(":")
    saved = client.api.timeout
    client.api.timeout = None  # the engine answers only once the whole layer is unpacked
    try:
        result = client.api.import_image(src=chunks(), repository=repository, tag=tag, stream_src=True)
    except docker.errors.DockerException as error:
        raise EngineError(f"importing {tarball} into the engine failed: {error}") from None
    finally:
        client.api.timeout = saved
    text = result if isinstance(result, str) else json.dumps(result)
    if '"error"' in text or "errorDetail" in text:
        raise BaseImageError(f"importing {tarball} into the engine failed: {text.strip()[-300:]}")


def _python_names_tar() -> bytes:
    """A tar of the links that give the stand-in the real images' interpreter names (ADD unpacks it)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as archive:
        for name, target in sorted(PYTHON_NAMES.items()):
            info = tarfile.TarInfo(f"{_PYTHON_NAMES_DIR}/{name}")
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            archive.addfile(info)
    return buffer.getvalue()


def _configuration(parent: str, pip_conf: str, ca_bundle: bytes | None) -> dict[str, bytes]:
    """The files of the configuring build: its Dockerfile and what that Dockerfile copies in."""
    lines = [f"FROM {parent}"]
    files = {"pip.conf": pip_conf.encode(), "python-names.tar": _python_names_tar()}
    if ca_bundle is not None:
        files["ca-certificates.crt"] = ca_bundle
        lines.append(f"COPY ca-certificates.crt {IMAGE_CA_BUNDLE}")
    lines += [
        "COPY pip.conf /etc/pip.conf",
        # ADD unpacks the tar: links, not a RUN step, so no program of the image has to run here.
        "ADD python-names.tar /",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8",
        f"CMD {json.dumps(DEFAULT_CMD)}",
    ]
    files["Dockerfile"] = ("\n".join(lines) + "\n").encode()
    return files


def _configuration_key(files: Mapping[str, bytes]) -> str:
    """Hash of the configuring build without its parent (the recipe label covers that)."""
    digest = hashlib.sha256()
    for name, data in sorted(files.items()):
        if name == "Dockerfile":
            data = b"\n".join(data.split(b"\n")[1:])
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()[:16]


def _context(files: Mapping[str, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 0
            archive.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _build_final(
    client: docker.DockerClient,
    parent: str,
    labels: dict[str, str],
    context: IO[bytes],
    progress: Progress,
    *,
    reference: str,
    platform: str | None,
) -> str:
    task = progress.add_task("configuring the image", total=None)
    tail: list[str] = []
    image_id = ""
    options: dict[str, Any] = {"platform": platform} if platform else {}
    try:
        for chunk in client.api.build(
            fileobj=context, custom_context=True, tag=reference, labels=labels,
            rm=True, forcerm=True, pull=False, network_mode="host", decode=True, **options,
        ):  # fmt: skip
            if "error" in chunk:
                raise BaseImageError(
                    f"configuring the base image failed: {str(chunk['error']).strip()}", log_tail=tail
                )
            line = str(chunk.get("stream", "")).strip()
            if line:
                tail = [*tail[-19:], line]
                progress.update(task, description=f"configuring the image: {line[:60]}")
            if isinstance(chunk.get("aux"), dict) and "ID" in chunk["aux"]:
                image_id = str(chunk["aux"]["ID"])
    except docker.errors.DockerException as error:
        raise EngineError(f"configuring the base image failed: {error}") from None
    progress.update(task, description="configuring the image: done", total=1, completed=1)
    if not image_id:
        image_id = str(client.images.get(reference).id)
    return image_id


def _names_a_real_image(client: docker.DockerClient, reference: str) -> bool:
    """Whether ``reference`` names an image that is not the stand-in (pulled, or ``docker load``-ed)."""
    try:
        labels = (client.api.inspect_image(reference).get("Config") or {}).get("Labels")
    except docker.errors.ImageNotFound:
        return False
    return not is_stand_in(labels)


def _tag_all(
    client: docker.DockerClient, image_id: str, references: Sequence[str], *, native: bool = True
) -> list[str]:
    """Point the stand-in's references at ``image_id``: all of them for the host's, the arm64 ones else.

    A published reference that names a real image (pulled or loaded) is left to it, ``latest`` apart (it
    is where the stand-in lives); ``references`` (``--tag``) are always taken. Returns those left alone.
    """
    own = STAND_IN_REFERENCES if native else ARM64_REFERENCES
    left: list[str] = []
    for reference in dict.fromkeys([*own, *references]):
        keep = reference not in references and reference != f"{BASE_IMAGE_REPOSITORY}:latest"
        if keep and _names_a_real_image(client, reference):
            left.append(reference)
            continue
        repository, tag = parse_repository_tag(reference)
        client.api.tag(image_id, repository, tag or "latest", force=True)
    return left


def _say_left(console: Console, left: Sequence[str]) -> None:
    if left:
        console.print(
            f"left {', '.join(left)} as {'it is' if len(left) == 1 else 'they are'}: not the stand-in "
            "(a pulled or docker load-ed image); docker rmi it for the stand-in to serve that name",
            soft_wrap=True,
        )


def _tags_of(client: docker.DockerClient, image_id: str | None) -> list[str]:
    """The references an image carries (a rebuilt stand-in takes over those ``--tag`` added)."""
    if not image_id:
        return []
    with contextlib.suppress(docker.errors.DockerException):
        return [str(tag) for tag in client.api.inspect_image(image_id).get("RepoTags") or []]
    return []


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """Serialise builds of the base image between processes sharing the cache."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / "base-image.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_base_image(
    *,
    arch: str = "host",
    force: bool = False,
    tags: Sequence[str] = (),
    client: docker.DockerClient | None = None,
    console: Console | None = None,
) -> str:
    """Make sure the stand-in base image exists and the references in :data:`STAND_IN_REFERENCES` name it.

    Does nothing but (re)tag (one line says so) when the stand-in already carries the current recipe and
    configuration. Otherwise imports the cached Debian rootfs (running debootstrap first if it is not cached)
    and configures it; references that pointed at the previous stand-in move to the new one.

    ``arch="arm64"`` on another CPU builds the stand-in for the device's architecture, kept as
    :data:`ARM64_STAND_IN`, and points :data:`ARM64_REFERENCES` (and ``tags``) at it; first it makes sure
    qemu-user is registered with binfmt_misc with the F flag (registering it when root). ``arch="host"``
    points every reference, the arm64 ones included, at the host's stand-in.

    Args:
        arch: ``host`` (the default) or ``arm64``.
        force: rebuild the image even if it is up to date (the cached rootfs is reused).
        tags: further references to give the stand-in (``base-image --tag``), e.g. ``my-base:1.0``.
        client: the Docker client to use; by default one from the environment.
        console: where progress and messages go; by default stderr.

    Returns:
        The image id (``sha256:...``).

    Raises:
        EngineError: no engine answers, or it refused a request.
        BaseImageError: a reference or architecture is not usable, debootstrap or qemu-user-static is
            missing, root is needed (debootstrap, binfmt registration), or a build step failed.
    """
    extra = [normalise_reference(tag) for tag in tags]
    deb_arch = target_arch(arch)
    native = deb_arch == debian_arch()
    console = console or Console(stderr=True, highlight=False)
    if not native and ensure_binfmt(elf_machine_of(deb_arch)):
        console.print(
            f"registered qemu-user for {elf_machine_of(deb_arch)} programs with binfmt_misc (flag F)",
            soft_wrap=True,
        )
    client = client or docker_client()
    cache = cache_dir()
    settings = host_pip_settings()
    pip_conf = image_pip_conf(settings)
    ca_bundle = host_ca_bundle(settings)
    key = recipe_key(deb_arch)
    host_config = hashlib.sha256(pip_conf.encode() + b"\0" + (ca_bundle or b"")).hexdigest()[:16]
    parent = f"panorama-emulator/base-rootfs:{key}"
    own = stand_in_reference(deb_arch)
    platform = None if native else f"linux/{deb_arch}"
    files = _configuration(parent, pip_conf, ca_bundle)
    wanted = {
        LABEL_RECIPE: key,
        LABEL_HOST_CONFIG: host_config,
        LABEL_CONFIGURATION: _configuration_key(files),
    }
    added = f"; also tagged {', '.join(extra)}" if extra else ""
    pointed = "" if native else f"; {', '.join(ARM64_REFERENCES)} point at it"
    with _locked(cache):
        try:
            current = None if force else _current_image(client, wanted, own)
            if current is not None:
                _say_left(console, _tag_all(client, str(current.id), extra, native=native))
                short = str(current.id)[7:19]
                console.print(
                    f"{own.rsplit(':', 1)[0] if native else own} is up to date ({short}, recipe {key})"
                    f"{pointed}{added}",
                    soft_wrap=True,
                )
                return str(current.id)
            previous = None
            with contextlib.suppress(docker.errors.ImageNotFound):
                previous = str(client.images.get(own).id)
        except docker.errors.DockerException as error:
            raise EngineError(f"the Docker engine refused a request: {error}") from None
        started = time.monotonic()
        columns = (
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
            TimeElapsedColumn(),
        )  # fmt: skip
        with Progress(*columns, console=console, transient=False) as progress:
            tarball, versions = rootfs_tarball(cache, console, progress, arch=deb_arch)
            if native:
                _import_rootfs(client, tarball, parent, progress)
            else:
                load_rootfs(client, tarball, parent, deb_arch, progress)
            architecture = (
                f"{deb_arch} (the host's, for every tag)" if native else f"{deb_arch} (run through qemu-user)"
            )
            labels = {
                "org.opencontainers.image.title": "panorama-emulator stand-in for " + BASE_IMAGE_REPOSITORY,
                "org.opencontainers.image.description": (
                    f"Offline stand-in built by panorama-emulator: Debian, not Ubuntu; {architecture}; "
                    "no CUDA/TensorRT/Jetson libraries; panoramasdk is injected at run time"
                ),
                LABEL_STAND_IN: "true",
                **wanted,
                f"{LABEL_PREFIX}.debian": f"{versions.get('debian', '?')} ({DEBIAN_SUITE})",
                LABEL_PYTHON: versions.get("python", "?"),
                LABEL_PYTHON_NAMES: " ".join(name for name in PYTHON_NAMES if name.startswith("python")),
                f"{LABEL_PREFIX}.numpy": versions.get("numpy", "?"),
                f"{LABEL_PREFIX}.opencv": versions.get("opencv", "?"),
                f"{LABEL_PREFIX}.architecture": architecture,
            }
            image_id = _build_final(
                client, parent, labels, _context(files), progress, reference=own, platform=platform
            )
        try:
            public = STAND_IN_REFERENCES if native else ARM64_REFERENCES
            moved = [tag for tag in _tags_of(client, previous) if tag not in public and tag != own]
            left = _tag_all(client, image_id, [*moved, *extra], native=native)
            # Only the tag goes: the configured image is built on top of this one.
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(parent, noprune=True)
            if previous and previous != image_id:
                with contextlib.suppress(docker.errors.APIError):
                    client.api.remove_image(previous)
        except docker.errors.DockerException as error:
            raise EngineError(f"the Docker engine refused a request: {error}") from None
    elapsed = time.monotonic() - started
    _say_left(console, left)
    if native:
        names = f"{BASE_IMAGE_REPOSITORY}:{{{','.join(BASE_IMAGE_TAGS)}}} and {SDKV1_REPOSITORY}:latest"
    else:
        names = f"{own} ({', '.join(ARM64_REFERENCES)})"
    console.print(
        f"built the offline stand-in {names} ({image_id[7:19]}, Debian {versions.get('debian', '?')} "
        f"{deb_arch}, Python {versions.get('python', '?')}) in {elapsed:.0f} s{added}",
        soft_wrap=True,
    )
    return image_id
