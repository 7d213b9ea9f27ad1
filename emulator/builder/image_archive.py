"""Load a rootfs tarball into the engine as an image of another CPU architecture.

``docker import`` records the engine's own architecture (engines before API 1.43 ignore its ``platform``
parameter), so an arm64 rootfs imported on an x86_64 host would call itself amd64. Instead the tarball
becomes the one layer of a ``docker save`` archive whose image configuration names the architecture, and
the engine loads that archive: the image says ``arm64``, as a real arm64 image ``docker load``-ed from a
saved copy does. The archive is streamed, never written to disk; the gzip'ed tarball is its layer as it is
(the engine decompresses layers it loads).
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
from isal import igzip
from rich.progress import Progress

from emulator.builder.base_rootfs import BaseImageError
from emulator.errors import EngineError

__all__ = ["image_config", "layer_diff_id", "load_rootfs"]

_BLOCK = 512
_CHUNK = 1 << 20


def layer_diff_id(tarball: Path) -> str:
    """The layer's DiffID: the SHA-256 of the tarball's uncompressed bytes.

    Args:
        tarball: a gzip'ed tar.

    Returns:
        ``sha256:<hex>``.
    """
    digest = hashlib.sha256()
    with igzip.open(tarball, "rb") as raw:  # type: ignore[no-untyped-call]
        while chunk := raw.read(_CHUNK):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def image_config(arch: str, diff_id: str) -> dict[str, Any]:
    """The image configuration of a one-layer linux image for ``arch``.

    Args:
        arch: a Debian / OCI architecture name (``arm64``).
        diff_id: the layer's DiffID.

    Returns:
        The configuration (``architecture``, ``os``, ``rootfs``, ``history``), with a fixed creation time.
    """
    created = "1970-01-01T00:00:00Z"
    return {
        "architecture": arch,
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "panorama-emulator base-image (debootstrap)"}],
    }


def _member(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o644, 0
    return info.tobuf(format=tarfile.USTAR_FORMAT)


def _padding(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def _archive(tarball: Path, reference: str, config: bytes, progress: Progress, task: Any) -> Iterator[bytes]:
    """The ``docker save`` archive: manifest, configuration and the layer, as a stream of chunks."""
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_name = "layer/layer.tar"  # gzip'ed inside: the engine detects the compression
    manifest = json.dumps([{"Config": config_name, "RepoTags": [reference], "Layers": [layer_name]}]).encode()
    for name, data in (("manifest.json", manifest), (config_name, config)):
        yield _member(name, len(data)) + data + _padding(len(data))
    size = tarball.stat().st_size
    yield _member(layer_name, size)
    with tarball.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            progress.advance(task, len(chunk))
            yield chunk
    yield _padding(size) + b"\0" * (2 * _BLOCK)


def load_rootfs(
    client: docker.DockerClient, tarball: Path, reference: str, arch: str, progress: Progress
) -> None:
    """Load ``tarball`` as the one-layer image ``reference`` for ``arch``.

    Args:
        client: the engine.
        tarball: the gzip'ed rootfs.
        reference: ``repository:tag`` for the loaded image.
        arch: its architecture (``arm64``).
        progress: where the loading shows.

    Raises:
        EngineError: the engine refused the request.
        BaseImageError: the engine reported an error while loading.
    """
    task = progress.add_task(f"loading the {arch} rootfs into the engine", total=tarball.stat().st_size)
    config = json.dumps(image_config(arch, layer_diff_id(tarball)), sort_keys=True).encode()
    saved = client.api.timeout
    client.api.timeout = None  # the engine answers only once the whole layer is unpacked
    text = io.StringIO()
    try:
        for chunk in client.api.load_image(_archive(tarball, reference, config, progress, task)):
            text.write(json.dumps(chunk) if not isinstance(chunk, str) else chunk)
    except docker.errors.DockerException as error:
        raise EngineError(f"loading {tarball} into the engine failed: {error}") from None
    finally:
        client.api.timeout = saved
    said = text.getvalue()
    if '"error"' in said or "errorDetail" in said:
        raise BaseImageError(f"loading {tarball} into the engine failed: {said.strip()[-300:]}")
