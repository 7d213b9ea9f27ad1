"""Unpack a container (or model) asset into a root filesystem, once, safely and fast.

``unpack_asset(archive, dest)`` extracts a ``.tar.gz`` (or plain ``.tar``) into ``dest``:

- **Once.** The members are written into ``<parent>/.partial-<name>-<random>/``, which is renamed to
  ``dest`` when everything is in place; then the marker ``<parent>/.<name>.complete`` is written. A rootfs
  counts as unpacked only when both exist, so an unpack killed at any point (even with SIGKILL) never leaves
  something that looks complete. The next call, holding the lock ``<parent>/.<name>.lock``, removes what a
  killed unpack left behind (stale partial directories, a renamed directory without its marker) and starts
  again. A second call on a complete rootfs returns at once.
- **Safely.** Absolute member paths and paths with ``..`` are refused rather than re-rooted: a
  ``docker export`` never produces them, so an archive that has them was not made by a build. See
  ``emulator.device._extract`` for the other rules (links, device nodes, special mode bits, limits).
- **Fast.** The gzip stream is decompressed by ISA-L in a separate thread while this thread parses headers
  with a lean reader and writes file data straight from the decompressed chunks; no ``fsync`` is made.

Every rootfs also gets the directories in ``MOUNT_POINTS``, because the sandbox mounts its root read-only
and cannot create them at run time.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from isal import igzip_threaded, isal_zlib
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from emulator.device._extract import Extractor, ExtractStats
from emulator.device._tarstream import TarStream
from emulator.errors import AssetError, DeviceError, EmulatorError

__all__ = [
    "MOUNT_POINTS",
    "UnpackLimits",
    "is_unpacked",
    "remove_tree",
    "unpack_asset",
]

MOUNT_POINTS: tuple[str, ...] = (
    "proc",
    "dev",
    "sys",
    "tmp",
    "var/tmp",
    "run",
    "dev/shm",
    "opt/aws/panorama/storage",
    "opt/aws/panorama/logs",
    "opt/panorama-emulator/sdk",
    "opt/panorama-emulator/run",
)
"""Directories created in every unpacked rootfs (relative to its root), for the sandbox to mount on."""

_MARKER_FORMAT = 1
_PROGRESS_MIN_BYTES = 32 << 20
_DRAIN_LIMIT = 16 << 20
_GZIP_MAGIC = b"\x1f\x8b"
_ISAL_ERROR = cast("type[Exception]", isal_zlib.error)


@dataclass(frozen=True)
class UnpackLimits:
    """Bounds that an archive must stay within; beyond them it is refused as unsafe.

    Args:
        max_members: most members (entries) an archive may hold.
        max_total_bytes: most data bytes all members together may hold.
        max_meta_bytes: largest pax or GNU long-name header.
        max_path_bytes: longest member path.
    """

    max_members: int = 2_000_000
    max_total_bytes: int = 64 << 30
    max_meta_bytes: int = 1 << 20
    max_path_bytes: int = 4096


def _marker_path(dest: Path) -> Path:
    return dest.parent / f".{dest.name}.complete"


def _lock_path(parent: Path, name: str) -> Path:
    return parent / f".{name}.lock"


def is_unpacked(dest: Path) -> bool:
    """Return True if ``dest`` is a rootfs that ``unpack_asset`` completed (directory and marker present).

    Args:
        dest: the rootfs directory.

    Returns:
        Whether it can be used as it is.
    """
    try:
        marker = json.loads(_marker_path(dest).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("format") == _MARKER_FORMAT and dest.is_dir()


def remove_tree(path: Path) -> None:
    """Remove a directory tree without following links, even where its modes deny writing (e.g. 0555 dirs).

    Args:
        path: the tree (or a file / link) to remove; missing is fine.

    Raises:
        DeviceError: it cannot be removed.
    """
    path = Path(path)
    failed: list[str] = []

    def note(*args: Any) -> None:
        failed.append(str(args[1]))

    for _ in range(64):
        failed.clear()
        try:
            st = path.lstat()
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            path.unlink(missing_ok=True)
            return
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=note)
        else:
            shutil.rmtree(path, onerror=note)
        if not path.exists() and not path.is_symlink():
            return
        # Give the owner write and search access to the directories that refused, then try again.
        for failed_path in failed:
            for candidate in (Path(failed_path), Path(failed_path).parent):
                with contextlib.suppress(OSError):
                    if stat.S_ISDIR(candidate.lstat().st_mode):
                        candidate.chmod(0o700)
    raise DeviceError(f"cannot remove {path}")


@contextlib.contextmanager
def _locked(lock_file: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive flock on ``lock_file`` (released on exit, or by the kernel if the process dies)."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _remove_stale(parent: Path, name: str) -> None:
    """Remove partial directories left by killed unpacks: ours (we hold its lock) and any with a free lock."""
    prefix = ".partial-"
    with os.scandir(parent) as entries:
        partials = [entry.name for entry in entries if entry.name.startswith(prefix)]
    for partial in partials:
        owner = partial[len(prefix) :].rpartition("-")[0]
        if owner == name:
            remove_tree(parent / partial)
            continue
        with _locked(_lock_path(parent, owner), wait=False) as acquired:
            if acquired:
                remove_tree(parent / partial)


def unpack_asset(
    archive: Path,
    dest: Path,
    *,
    progress: bool = True,
    limits: UnpackLimits | None = None,
    mount_points: Sequence[str] = MOUNT_POINTS,
) -> Path:
    """Unpack ``archive`` into the directory ``dest`` once; later calls return the existing rootfs.

    Args:
        archive: a gzip-compressed (or plain) tar archive, such as a ``docker export`` asset.
        dest: the rootfs directory to create (its parent is created if needed).
        progress: show a progress bar on a terminal for large archives (bytes of compressed input read).
        limits: bounds on member count and sizes (``UnpackLimits()`` by default).
        mount_points: directories to create in the rootfs after extraction (``()`` for a model asset).

    Returns:
        ``dest``.

    Raises:
        UnsafeArchiveError: a member would escape the root or is not allowed; the message names it.
        AssetError: the archive is missing, not a tar archive, corrupt or truncated.
        DeviceError: the host refused a write (disk full, permissions).
    """
    archive = Path(archive)
    dest = Path(dest)
    if is_unpacked(dest):
        return dest
    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DeviceError(f"cannot create {parent}: {error.strerror}") from None
    with _locked(_lock_path(parent, dest.name)):
        if is_unpacked(dest):
            return dest
        _remove_stale(parent, dest.name)
        remove_tree(dest)
        _marker_path(dest).unlink(missing_ok=True)
        partial = parent / f".partial-{dest.name}-{secrets.token_hex(4)}"
        partial.mkdir(mode=0o700)
        started = time.monotonic()
        try:
            stats = _extract(archive, partial, limits or UnpackLimits(), progress, mount_points)
            partial.rename(dest)
        except BaseException as error:
            remove_tree(partial)
            if isinstance(error, EmulatorError) and error.asset is None:
                error.asset = archive.name
            raise
        _write_marker(dest, archive, stats, time.monotonic() - started)
    return dest


def _write_marker(dest: Path, archive: Path, stats: ExtractStats, seconds: float) -> None:
    marker = _marker_path(dest)
    temporary = marker.with_name(f"{marker.name}.{secrets.token_hex(4)}.tmp")
    record = {
        "format": _MARKER_FORMAT,
        "archive": archive.name,
        "seconds": round(seconds, 3),
        **asdict(stats),
    }
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(marker)


def _extract(
    archive: Path, root: Path, limits: UnpackLimits, progress: bool, mount_points: Sequence[str]
) -> ExtractStats:
    try:
        raw = open(archive, "rb")  # noqa: SIM115 - closed in the finally below, after the reader thread
        raw_fd = raw.fileno()
    except OSError as error:
        raise AssetError(f"cannot read the archive: {error.strerror}", file=str(archive)) from None
    reader: BinaryIO | None = None
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        raw.close()
        raise
    extractor = Extractor(
        root_fd,
        max_members=limits.max_members,
        max_total_bytes=limits.max_total_bytes,
        max_path_bytes=limits.max_path_bytes,
    )
    try:
        size = os.fstat(raw.fileno()).st_size
        if raw.read(2) == _GZIP_MAGIC:
            raw.seek(0)
            reader = igzip_threaded.open(raw, "rb", threads=1)  # type: ignore[no-untyped-call]
        else:
            raw.seek(0)
            reader = raw
        read = _checked_reader(reader)
        with _progress_bar(archive, size, progress) as tick:
            on_refill = None if tick is None else functools.partial(_report_position, tick, raw_fd)
            stream = TarStream(read, max_meta_bytes=limits.max_meta_bytes, on_refill=on_refill)
            extractor.extract(stream)
            if reader is not raw:
                stream.drain(_DRAIN_LIMIT)
        extractor.make_dirs(mount_points)
        extractor.finish()
        return extractor.stats
    finally:
        extractor.close()
        os.close(root_fd)
        if reader is not None and reader is not raw:
            with contextlib.suppress(Exception):
                reader.close()
        raw.close()


def _report_position(tick: Callable[[int], None], fd: int) -> None:
    tick(os.lseek(fd, 0, os.SEEK_CUR))


def _checked_reader(reader: BinaryIO) -> Callable[[int], bytes]:
    """Wrap ``reader.read`` so that decompression and read errors become one-line AssetErrors."""

    def read(size: int) -> bytes:
        try:
            return reader.read(size)
        except (OSError, EOFError, ValueError, _ISAL_ERROR) as error:
            text = str(error) or type(error).__name__
            if isinstance(error, EOFError):
                text = "the compressed stream is truncated"
            raise AssetError(f"cannot decompress the archive: {text}") from None

    return read


@contextlib.contextmanager
def _progress_bar(archive: Path, size: int, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """Yield a ``tick(bytes_read)`` callback driving a rich progress bar, or None when none is shown."""
    console = Console(stderr=True)
    if not enabled or size < _PROGRESS_MIN_BYTES or not console.is_terminal:
        yield None
        return
    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(f"unpacking {archive.name[:16]}", total=size)

        def tick(done: int) -> None:
            bar.update(task, completed=done)

        yield tick
