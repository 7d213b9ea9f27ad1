"""An in-package ``ImageBuilder`` for fast tests: it "builds" by reading the Dockerfile's steps and "exports"
a generated tar stream, of any size, without holding it in memory.

    files = [FakeFile("panorama/app.py", b"print('hi')\\n"), FakeFile("data.bin", size=300 << 20)]
    builder = FakeBuilder(files)
    build_container(project, "code", package_dir, builder=builder)
"""

from __future__ import annotations

import hashlib
import json
import random
import tarfile
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from emulator.builder.docker_build import BuildEvent, EventHandler, ImageInfo, PullError
from emulator.builder.dockerfile import base_images, parse_dockerfile
from emulator.errors import BuildError, EngineError

__all__ = ["DEFAULT_FILES", "FakeBuilder", "FakeFile", "generate_tar"]

_CHUNK = 1 << 20
_RANDOM_BLOCK = random.Random(20240601).randbytes(_CHUNK)
_TEXT_BLOCK = (b"the quick brown fox jumps over the lazy dog 0123456789\n" * (_CHUNK // 55 + 1))[:_CHUNK]


@dataclass(frozen=True)
class FakeFile:
    """A member of a generated filesystem.

    Args:
        name: path inside the archive (no leading slash, as ``docker export`` writes them).
        data: the content, when given literally.
        size: otherwise, the size of generated content.
        compressible: generated content is text (compresses well) rather than random bytes.
        mtime: modification time.
        kind: ``file``, ``dir`` or ``symlink``.
        target: a symlink's target.
    """

    name: str
    data: bytes = b""
    size: int = 0
    compressible: bool = False
    mtime: int = 1_700_000_000
    kind: str = "file"
    target: str = ""


DEFAULT_FILES: tuple[FakeFile, ...] = (
    FakeFile("bin/", kind="dir"),
    FakeFile("bin/sh", b"#!fake shell\n"),
    FakeFile("opt/aws/panorama/storage/", kind="dir"),
    FakeFile("panorama/", kind="dir"),
    FakeFile("panorama/app.py", b"import panoramasdk\n"),
)


def _content(member: FakeFile) -> Iterator[bytes]:
    if member.data:
        yield member.data
        return
    block = _TEXT_BLOCK if member.compressible else _RANDOM_BLOCK
    left = member.size
    while left > 0:
        piece = block[: min(left, _CHUNK)]
        left -= len(piece)
        yield piece


def generate_tar(members: Sequence[FakeFile], *, volatile_time: float | None = None) -> Iterator[bytes]:
    """A tar stream like ``docker export``'s, generated chunk by chunk.

    Args:
        members: the files, in order.
        volatile_time: when set, the stream also holds the per-container entries the engine adds
            (``.dockerenv``, ``etc/hostname``...), stamped with this time and an engine-host user name,
            with PAX access / change times: what makes two exports of one image differ.

    Returns:
        Chunks of the archive.
    """
    entries = list(members)
    extra: list[tarfile.TarInfo] = []
    if volatile_time is not None:
        for name in (".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf"):
            info = tarfile.TarInfo(name)
            info.mtime = int(volatile_time)
            info.uname, info.gname = "engine-host-user", "engine-host-group"
            info.pax_headers = {
                "mtime": f"{volatile_time:.6f}",
                "atime": f"{volatile_time:.6f}",
                "ctime": f"{volatile_time:.6f}",
            }
            extra.append(info)
    for info in extra:
        yield info.tobuf(tarfile.PAX_FORMAT)
    for member in entries:
        info = tarfile.TarInfo(member.name.rstrip("/") if member.kind == "dir" else member.name)
        info.mtime = member.mtime
        info.uname = info.gname = "root"
        if member.kind == "dir":
            info.type, info.mode = tarfile.DIRTYPE, 0o755
        elif member.kind == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, member.target
        else:
            info.size, info.mode = len(member.data) if member.data else member.size, 0o644
        yield info.tobuf(tarfile.PAX_FORMAT)
        if info.isfile():
            yield from _content(member)
            if info.size % tarfile.BLOCKSIZE:
                yield bytes(tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE)
    yield bytes(2 * tarfile.BLOCKSIZE)


@dataclass
class FakeBuilder:
    """``ImageBuilder`` without an engine.

    Args:
        files: what every exported image holds.
        architecture: what ``image()`` reports for every image.
        volatile: exports differ like real ones (per-container entries stamped with the current time).
        failure: raised by ``build`` (after its steps were reported), e.g. a ``BuildError`` of a failing RUN.
        pull_failure: raised as a ``PullError`` by ``build(pull=True)``, as when no registry is reachable, and
            by any build FROM a base image the fake does not have.
        local_images: references ``image()`` knows besides the images built (e.g. base images).
        labels: labels ``image()`` reports per reference (e.g. the stand-in's), none for others.
        pullable: references ``pull()`` can fetch.

    Attributes:
        builds: ``(context, tag, pull)`` of every build call.
        exports: how many exports started; ``removed``: how many of their containers were removed.
    """

    files: Sequence[FakeFile] = DEFAULT_FILES
    architecture: str = "amd64"
    volatile: bool = False
    failure: BuildError | None = None
    pull_failure: str | None = None
    local_images: set[str] = field(default_factory=set)
    labels: dict[str, dict[str, str]] = field(default_factory=dict)
    pullable: set[str] = field(default_factory=set)
    builds: list[tuple[Path, str, bool]] = field(default_factory=list)
    exports: int = 0
    removed: int = 0
    _built: set[str] = field(default_factory=set)

    @staticmethod
    def _key(ref: str) -> str:
        return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"

    def build(self, context: Path, tag: str, *, pull: bool, on_event: EventHandler) -> str:
        """Report the Dockerfile's steps, then fail as configured or record the image."""
        self.builds.append((context, tag, pull))
        instructions = parse_dockerfile((context / "Dockerfile").read_text(encoding="utf-8"))
        if pull and self.pull_failure is not None:
            first = instructions[0] if instructions else None
            step = f"Step 1/{len(instructions)} : {first}" if first else None
            on_event(BuildEvent("step", step or "", 1, len(instructions)))
            raise PullError(self.pull_failure, step=step)
        missing = [ref for ref in base_images(instructions) if self.image(ref) is None]
        if missing and self.pull_failure is not None:
            # Like the classic builder: a base it lacks is pulled even without --pull, and that fails.
            step = f"Step 1/{len(instructions)} : {instructions[0]}"
            on_event(BuildEvent("step", step, 1, len(instructions)))
            raise PullError(f"pull access denied for {missing[0]}: {self.pull_failure}", step=step)
        for number, instruction in enumerate(instructions, start=1):
            on_event(
                BuildEvent(
                    "step", f"Step {number}/{len(instructions)} : {instruction}", number, len(instructions)
                )
            )
            on_event(BuildEvent("output", " ---> fake"))
        if self.failure is not None:
            raise self.failure
        image_id = "sha256:" + hashlib.sha256(f"{tag}\0{len(self.builds)}".encode()).hexdigest()
        self._built |= {self._key(tag), image_id}
        return image_id

    def image(self, ref: str) -> ImageInfo | None:
        """Images built or listed in ``local_images``."""
        known = self._built | {self._key(image) for image in self.local_images}
        if self._key(ref) not in known:
            return None
        size = sum(len(member.data) or member.size for member in self.files)
        labels = next((value for key, value in self.labels.items() if self._key(key) == self._key(ref)), {})
        image_id = "sha256:" + hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()
        return ImageInfo(image_id, self.architecture, size, has_command=True, labels=dict(labels))

    def pull(self, ref: str, on_event: EventHandler) -> None:
        """Succeeds for ``pullable`` references."""
        if ref not in self.pullable:
            raise EngineError(f"cannot pull {ref}: no registry in the fake engine")
        on_event(BuildEvent("status", f"Pulled {ref}"))
        self.local_images.add(ref)

    @contextmanager
    def _export(self, ref: str) -> Iterator[Iterator[bytes]]:
        if self.image(ref) is None:
            raise EngineError(f"the fake engine has no image {ref}")
        self.exports += 1
        try:
            yield generate_tar(self.files, volatile_time=time.time() if self.volatile else None)
        finally:
            self.removed += 1

    def export(self, ref: str) -> AbstractContextManager[Iterator[bytes]]:
        """The generated filesystem of ``files``."""
        return self._export(ref)
