"""Test support for the asset store and the rootfs unpacker: tarball builders (friendly and hostile),
tree snapshots and comparisons, and the layout the rootfs tests unpack into.

Members are described with small constructors (``file``, ``directory``, ``symlink``, ``hardlink``,
``device``, ``fifo``) and written with the standard library's ``tarfile``, which writes whatever names and
link targets it is given, so hostile archives are easy to make.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from emulator.device import _extract

MTIME = 1_600_000_000


@dataclass
class Spec:
    """One member to write: its header and, for regular files, its data."""

    info: tarfile.TarInfo
    data: bytes | None = None


def _info(name: str, kind: bytes, mode: int, mtime: float, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = mtime
    info.uid = uid
    info.gid = gid
    info.uname = info.gname = ""
    return info


def file(
    name: str, data: bytes = b"", mode: int = 0o644, mtime: float = MTIME, uid: int = 0, gid: int = 0
) -> Spec:
    """A regular file member."""
    info = _info(name, tarfile.REGTYPE, mode, mtime, uid, gid)
    info.size = len(data)
    return Spec(info, data)


def directory(name: str, mode: int = 0o755, mtime: float = MTIME, uid: int = 0, gid: int = 0) -> Spec:
    """A directory member."""
    return Spec(_info(name, tarfile.DIRTYPE, mode, mtime, uid, gid))


def symlink(name: str, target: str, mtime: float = MTIME) -> Spec:
    """A symbolic link member."""
    info = _info(name, tarfile.SYMTYPE, 0o777, mtime)
    info.linkname = target
    return Spec(info)


def hardlink(name: str, target: str) -> Spec:
    """A hard link member (``target`` is another member's name)."""
    info = _info(name, tarfile.LNKTYPE, 0o644, MTIME)
    info.linkname = target
    return Spec(info)


def device(name: str, kind: bytes = tarfile.CHRTYPE, major: int = 1, minor: int = 3) -> Spec:
    """A character (default) or block device member."""
    info = _info(name, kind, 0o666, MTIME)
    info.devmajor, info.devminor = major, minor
    return Spec(info)


def fifo(name: str) -> Spec:
    """A FIFO member."""
    return Spec(_info(name, tarfile.FIFOTYPE, 0o644, MTIME))


def raw_type(name: str, kind: bytes) -> Spec:
    """A member with an arbitrary type byte and no data."""
    return Spec(_info(name, kind, 0o644, MTIME))


def tar_bytes(specs: list[Spec], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Return an uncompressed tar archive of ``specs``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as archive:
        for spec in specs:
            archive.addfile(spec.info, io.BytesIO(spec.data) if spec.data is not None else None)
    return buffer.getvalue()


def write_tar(path: Path, specs: list[Spec], fmt: int = tarfile.PAX_FORMAT, compress: bool = True) -> Path:
    """Write ``specs`` as a tar archive (gzip-compressed unless ``compress`` is false) to ``path``."""
    data = tar_bytes(specs, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data, compresslevel=1) if compress else data)
    return path


def write_asset(directory: Path, specs: list[Spec], fmt: int = tarfile.PAX_FORMAT) -> Path:
    """Write ``specs`` as a content-addressed asset ``<sha256>.tar.gz`` in ``directory``."""
    data = gzip.compress(tar_bytes(specs, fmt), compresslevel=1, mtime=0)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(data).hexdigest()}.tar.gz"
    path.write_bytes(data)
    return path


def snapshot(root: Path, exclude: Path | None = None) -> dict[str, tuple[int, int, int, str]]:
    """Describe each entry under ``root`` (mode, size, mtime, content hash or link target) but ``exclude``."""
    found: dict[str, tuple[int, int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if exclude is not None and Path(dirpath) == exclude:
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if exclude is not None and path == exclude:
                continue
            st = path.lstat()
            if stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(path)
            else:
                what = ""
            found[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, what)
    return found


def tree(root: Path, *, directory_mtimes: bool = True) -> dict[str, tuple[str, int, str, int | None]]:
    """Describe a tree for comparing two extractions: (type, mode & 0o777, content or target, mtime)."""
    found: dict[str, tuple[str, int, str, int | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            mode = stat.S_IMODE(st.st_mode) & 0o777
            entry: tuple[str, int, str, int | None]
            if stat.S_ISREG(st.st_mode):
                entry = ("file", mode, hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns // 10**9)
            elif stat.S_ISLNK(st.st_mode):
                entry = ("link", 0, os.readlink(path), st.st_mtime_ns // 10**9)
            elif stat.S_ISDIR(st.st_mode):
                entry = ("dir", mode, "", st.st_mtime_ns // 10**9 if directory_mtimes else None)
            else:
                entry = ("other", mode, "", None)
            found[str(path.relative_to(root))] = entry
    return found


@dataclass
class Place:
    """A test layout: an archive directory, a rootfs destination, and a canary outside the rootfs."""

    base: Path
    assets: Path
    rootfs_root: Path
    dest: Path
    outside: Path
    canary: Path

    def archive(self, specs: list[Spec], name: str = "asset.tar.gz", **kwargs: object) -> Path:
        return write_tar(self.assets / name, specs, **kwargs)  # type: ignore[arg-type]


def make_place(tmp_path: Path) -> Place:
    """Lay out ``tmp_path``: ``outside/canary.txt``, ``assets/`` and ``state/rootfs/r1`` for the rootfs."""
    outside = tmp_path / "outside"
    outside.mkdir()
    canary = outside / "canary.txt"
    canary.write_text("canary\n")
    rootfs_root = tmp_path / "state" / "rootfs"
    rootfs_root.mkdir(parents=True)
    return Place(tmp_path, tmp_path / "assets", rootfs_root, rootfs_root / "r1", outside, canary)


def use_writers(monkeypatch: pytest.MonkeyPatch, count: int) -> int:
    """Make unpacks write files with ``count`` threads (1: the member loop writes them itself)."""
    monkeypatch.setattr(_extract, "_WRITERS", count)
    return count
