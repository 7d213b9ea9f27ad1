"""Read-only browsing of an application's persistent storage.

Paths come from HTTP clients, so they are checked before anything is opened: they are relative, made of
plain names (no ``..``, no empty or ``.`` parts beyond a leading ``./``), and once symbolic links are
followed they must still lead inside the storage root. A link that leads out is listed but never followed.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from emulator.api.errors import NotFoundError, RequestError

__all__ = [
    "MAX_LISTING",
    "StorageEntry",
    "list_storage",
    "open_storage_file",
    "resolve_storage_path",
    "storage_file",
]

MAX_LISTING = 10_000
"""Most entries one listing returns (the rest are left out, sorted by name)."""


@dataclass(frozen=True)
class StorageEntry:
    """One entry of a storage folder.

    Args:
        name: the entry's name.
        path: its path relative to the storage root, with ``/`` separators.
        kind: ``file``, ``dir``, ``link`` (a symbolic link leading out of the storage, never followed) or
            ``other`` (socket, fifo, device).
        size: bytes (files only; 0 otherwise).
        modified: last modification, seconds since the epoch.
    """

    name: str
    path: str
    kind: str
    size: int
    modified: float


def _clean_parts(path: str) -> tuple[str, ...]:
    if "\x00" in path or "\\" in path:
        raise RequestError("a storage path holds only plain names separated by /", file=repr(path))
    if path.startswith("/"):
        raise RequestError("a storage path is relative to the app's storage, not absolute", file=path)
    parts = tuple(part for part in PurePosixPath(path).parts if part != ".")
    if ".." in parts or ".." in path.split("/"):
        raise RequestError("a storage path may not contain '..'", file=path)
    return parts


def _inside(root_real: str, candidate: str) -> bool:
    return candidate == root_real or candidate.startswith(root_real.rstrip(os.sep) + os.sep)


def resolve_storage_path(root: Path, path: str) -> Path:
    """Turn a path relative to the storage root into a real path that is certainly inside it.

    Args:
        root: the storage root.
        path: the path asked for (``""`` or ``.`` for the root itself).

    Returns:
        The real path (symbolic links resolved).

    Raises:
        RequestError: the path is absolute, holds ``..`` or a NUL byte, or leads out of the storage through
            a symbolic link.
        NotFoundError: nothing exists at that path.
    """
    parts = _clean_parts(path)
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, *parts)) if parts else root_real
    if not _inside(root_real, real):
        raise RequestError("the path leads out of the app's storage through a symbolic link", file=path)
    if not os.path.lexists(real):
        raise NotFoundError("no such file or folder in the app's storage", file=path or "/")
    return Path(real)


def _entry(root_real: str, folder: Path, name: str, rel: str) -> StorageEntry:
    full = folder / name
    info = os.lstat(full)
    if stat.S_ISLNK(info.st_mode):
        target = os.path.realpath(full)
        if not _inside(root_real, target) or not os.path.exists(target):
            return StorageEntry(name, rel, "link", 0, info.st_mtime)
        info = os.stat(target)
    if stat.S_ISDIR(info.st_mode):
        kind = "dir"
    elif stat.S_ISREG(info.st_mode):
        kind = "file"
    else:
        kind = "other"
    return StorageEntry(name, rel, kind, info.st_size if kind == "file" else 0, info.st_mtime)


def list_storage(root: Path, path: str = "") -> list[StorageEntry]:
    """List one folder of the storage, sorted by name.

    Args:
        root: the storage root (an absent root lists as empty).
        path: the folder, relative to the root.

    Returns:
        At most :data:`MAX_LISTING` entries.

    Raises:
        RequestError: the path is not allowed (see :func:`resolve_storage_path`) or is not a folder.
        NotFoundError: the folder does not exist.
    """
    if not os.path.isdir(root) and not _clean_parts(path):
        return []
    folder = resolve_storage_path(root, path)
    if not folder.is_dir():
        raise RequestError("not a folder: download it instead", file=path)
    root_real = os.path.realpath(root)
    prefix = "/".join(_clean_parts(path))
    try:
        names = sorted(os.listdir(folder))[:MAX_LISTING]
    except OSError as error:
        raise RequestError(f"cannot list the folder: {error.strerror}", file=path or "/") from None
    entries = []
    for name in names:
        try:
            entries.append(_entry(root_real, folder, name, f"{prefix}/{name}" if prefix else name))
        except OSError:
            continue  # removed by the app while listing
    return entries


def storage_file(root: Path, path: str) -> Path:
    """Return the real path of a regular file in the storage, for download.

    Args:
        root: the storage root.
        path: the file, relative to the root.

    Returns:
        The file's real path, inside the storage.

    Raises:
        RequestError: the path is not allowed, or is not a regular file.
        NotFoundError: the file does not exist.
    """
    if not _clean_parts(path):
        raise RequestError("name a file to download", file="/")
    real = resolve_storage_path(root, path)
    if not real.is_file():
        raise RequestError("not a regular file", file=path)
    return real


def open_storage_file(root: Path, path: str) -> tuple[BinaryIO, int]:
    """Open a regular file of the storage for reading, checking again once it is open.

    The file is opened without following a final symbolic link, and the opened file's real location is
    checked to be inside the storage, so a link swapped in by the app after the path was checked is refused.

    Args:
        root: the storage root.
        path: the file, relative to the root.

    Returns:
        The open file (the caller closes it) and its size.

    Raises:
        RequestError: the path is not allowed, or is not a regular file.
        NotFoundError: the file does not exist.
    """
    real = storage_file(root, path)
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise RequestError(f"cannot open the file: {error.strerror}", file=path) from None
    handle = os.fdopen(fd, "rb")
    try:
        info = os.fstat(fd)
        opened = os.readlink(f"/proc/self/fd/{fd}")
        if not stat.S_ISREG(info.st_mode) or not _inside(os.path.realpath(root), opened):
            raise RequestError("the file changed into something else while it was opened", file=path)
    except BaseException:
        handle.close()
        raise
    return handle, info.st_size
