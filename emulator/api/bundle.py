"""Application bundles: a project's ``graphs/``, ``packages/`` and ``assets/`` in one ``.tar.gz`` upload.

A bundle is checked whole before anything is written: every member is a plain file or folder under one of
the three top folders with a safe name, manifests are valid, each asset's SHA-256 is its name, and sizes
and member counts stay within :class:`BundleLimits`. Only then is it unpacked, into a staging folder next to
its destination, and moved into place with one rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, cast

from isal import igzip

from emulator.api.errors import RequestError
from emulator.errors import AssetError, ManifestError, Problem, ProjectError
from emulator.manifests import validate_descriptor, validate_graph, validate_package
from emulator.project import split_package_dirname

__all__ = [
    "BundleInfo",
    "BundleLimits",
    "check_bundle",
    "pack_project",
    "unpack_bundle",
]

MiB = 1024 * 1024
_TOP = ("assets", "graphs", "packages")
_SAFE_PART = re.compile(r"^[A-Za-z0-9_.@+=,-][A-Za-z0-9_.@+=, -]*$")
_ASSET = re.compile(r"^[0-9a-f]{64}\.(tar\.gz|json)$")
_APP = re.compile(r"^[A-Za-z0-9_.-]+$")
_CHUNK = 1024 * 1024
_MAX_MANIFEST = 4 * MiB


@dataclass(frozen=True)
class BundleLimits:
    """Bounds on an uploaded bundle.

    Args:
        max_bytes: largest upload (compressed) accepted.
        max_unpacked_bytes: largest total size of the files inside.
        max_members: most members (files and folders).
    """

    max_bytes: int = 1024 * MiB
    max_unpacked_bytes: int = 4096 * MiB
    max_members: int = 20_000


@dataclass(frozen=True)
class BundleInfo:
    """What a valid bundle holds.

    Args:
        app: the application name (``graphs/<app>/graph.json``).
        packages: package folder names.
        assets: asset file names.
        files: number of files.
        unpacked_bytes: total size of the files.
    """

    app: str
    packages: tuple[str, ...]
    assets: tuple[str, ...]
    files: int
    unpacked_bytes: int


def _refuse(message: str, member: str | None = None) -> RequestError:
    return RequestError(message, file=f"bundle:{member}" if member else "bundle")


def _member_parts(member: tarfile.TarInfo) -> tuple[str, ...]:
    name = member.name
    if "\x00" in name or "\\" in name or len(name.encode()) > 1024:
        raise _refuse("member name is not allowed", repr(name)[:80])
    if name.startswith("/"):
        raise _refuse("absolute member names are not allowed", name)
    parts = tuple(part for part in PurePosixPath(name).parts if part != ".")
    if not parts:
        return ()
    if ".." in name.split("/"):
        raise _refuse("member names may not contain '..'", name)
    for part in parts:
        if not _SAFE_PART.match(part) or len(part.encode()) > 255:
            raise _refuse("member name holds characters that are not allowed", name)
    if parts[0] not in _TOP:
        raise _refuse("a bundle holds only graphs/, packages/ and assets/", name)
    return parts


def _gzip(archive: IO[bytes], mode: str, level: int = 1) -> IO[bytes]:
    stream = igzip.IGzipFile(fileobj=archive, mode=mode, compresslevel=level)  # type: ignore[no-untyped-call]
    return cast(IO[bytes], stream)


def _open(archive: IO[bytes]) -> tarfile.TarFile:
    archive.seek(0)
    try:
        return tarfile.open(fileobj=_gzip(archive, "rb"), mode="r|")
    except (tarfile.TarError, OSError, EOFError) as error:
        raise _refuse(f"not a .tar.gz bundle: {error}") from None


def _members(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from tar
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise _refuse(f"the bundle is not a valid .tar.gz file: {error}") from None


def _read(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Iterator[bytes]:
    stream = tar.extractfile(member)
    if stream is None:
        raise _refuse("member cannot be read", member.name)
    try:
        while chunk := stream.read(_CHUNK):
            yield chunk
    except (tarfile.TarError, OSError, EOFError, ValueError) as error:
        raise _refuse(f"the bundle is truncated or corrupted: {error}", member.name) from None


def _check_manifest(parts: tuple[str, ...], data: bytes) -> list[Problem]:
    file = "/".join(parts)
    try:
        parsed = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as error:
        return [Problem(file, "", "a JSON document", f"text that is not JSON ({error})")]
    if parts[0] == "graphs":
        return validate_graph(parsed, file)
    if parts[-1] == "package.json":
        return validate_package(parsed, file)
    return validate_descriptor(parsed, file)


def _is_manifest(parts: tuple[str, ...]) -> bool:
    if parts[0] == "graphs":
        return len(parts) == 3 and parts[2] == "graph.json"
    if parts[0] == "packages":
        return len(parts) == 3 and parts[2] in ("package.json", "descriptor.json")
    return parts[-1].endswith(".json")


def _ignored(parts: tuple[str, ...], member: tarfile.TarInfo) -> bool:
    """Dot files directly in assets/ (``.gitkeep``) are accepted and left out."""
    return len(parts) == 2 and parts[0] == "assets" and parts[1].startswith(".") and member.isfile()


def _check_place(parts: tuple[str, ...], member: tarfile.TarInfo) -> None:
    name = member.name
    if parts[0] == "assets" and len(parts) > 1:
        if len(parts) > 2 or not member.isfile() or not _ASSET.match(parts[1]):
            raise _refuse("assets/ holds only files named <sha256>.tar.gz or <sha256>.json", name)
    elif parts[0] == "graphs" and len(parts) > 1 and not _APP.match(parts[1]):
        raise _refuse("application folder name is not allowed", name)
    elif parts[0] == "packages" and len(parts) > 1:
        if len(parts) == 2 and not member.isdir():
            raise _refuse("packages/ holds only package folders", name)
        try:
            split_package_dirname(parts[1])
        except ProjectError as error:
            raise _refuse(error.message, name) from None


def _check_member(member: tarfile.TarInfo) -> None:
    if member.type == tarfile.GNUTYPE_SPARSE or not (member.isfile() or member.isdir()):
        raise _refuse("only files and folders are allowed (no links, devices or fifos)", member.name)
    if member.size < 0:
        raise _refuse("member has a negative size", member.name)


def check_bundle(archive: IO[bytes], limits: BundleLimits | None = None) -> BundleInfo:
    """Check an uploaded bundle without writing anything.

    Args:
        archive: the ``.tar.gz`` file, open for reading and seekable.
        limits: bounds on sizes and member count (defaults of :class:`BundleLimits`).

    Returns:
        What the bundle holds.

    Raises:
        RequestError: it is not a ``.tar.gz``, a member name or type is not allowed, a limit is passed, a
            member appears twice, or ``graphs/<app>/graph.json`` or a package's ``package.json`` is missing.
        ManifestError: a graph, package or descriptor is not valid (every problem listed).
        AssetError: an asset's SHA-256 differs from its name.
    """
    limits = limits or BundleLimits()
    seen: set[tuple[str, ...]] = set()
    graphs: list[str] = []
    package_dirs: set[str] = set()
    package_files: set[str] = set()
    assets: list[str] = []
    problems: list[Problem] = []
    total = files = 0
    with _open(archive) as tar:
        for count, member in enumerate(_members(tar), start=1):
            if count > limits.max_members:
                raise _refuse(f"more than {limits.max_members} members")
            parts = _member_parts(member)
            _check_member(member)
            if member.isfile():
                total += member.size
                if total > limits.max_unpacked_bytes:
                    raise _refuse(f"unpacks to more than {limits.max_unpacked_bytes} bytes")
            if not parts or _ignored(parts, member):
                continue
            _check_place(parts, member)
            if parts in seen:
                raise _refuse("member appears twice", member.name)
            seen.add(parts)
            if parts[0] == "packages" and len(parts) > 1:
                package_dirs.add(parts[1])
            if not member.isfile():
                continue
            files += 1
            manifest = _is_manifest(parts)
            if manifest and member.size > _MAX_MANIFEST:
                raise _refuse(f"a manifest of more than {_MAX_MANIFEST} bytes", member.name)
            digest = hashlib.sha256()
            buffer = bytearray()
            for chunk in _read(tar, member):
                digest.update(chunk)
                if manifest:
                    buffer += chunk
            if manifest:
                problems.extend(_check_manifest(parts, bytes(buffer)))
            if parts[0] == "assets":
                expected = parts[1].split(".", 1)[0]
                if digest.hexdigest() != expected:
                    raise AssetError(
                        f"SHA-256 of the file is {digest.hexdigest()} but its name says {expected}",
                        file=f"bundle:{member.name}",
                        asset=parts[1],
                    )
                assets.append(parts[1])
            elif parts[0] == "graphs" and manifest:
                graphs.append(parts[1])
            elif parts[0] == "packages" and len(parts) == 3 and parts[2] == "package.json":
                package_files.add(parts[1])
    if problems:
        raise ManifestError(problems)
    if len(graphs) != 1:
        found = ", ".join(sorted(graphs)) or "none"
        raise _refuse(f"a bundle holds exactly one graphs/<app>/graph.json, found {found}")
    missing = sorted(package_dirs - package_files)
    if missing:
        raise _refuse("package folder has no package.json", f"packages/{missing[0]}")
    return BundleInfo(graphs[0], tuple(sorted(package_dirs)), tuple(sorted(assets)), files, total)


def _extract(archive: IO[bytes], staging: Path) -> None:
    with _open(archive) as tar:
        for member in _members(tar):
            parts = _member_parts(member)
            _check_member(member)
            if not parts or _ignored(parts, member):
                continue
            _check_place(parts, member)
            target = staging.joinpath(*parts)
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = 0o755 if member.mode & 0o111 else 0o644
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "wb") as out:
                for chunk in _read(tar, member):
                    out.write(chunk)


def unpack_bundle(
    archive: IO[bytes], parent: Path, limits: BundleLimits | None = None, *, checked: BundleInfo | None = None
) -> tuple[Path, BundleInfo]:
    """Check a bundle, then unpack it as ``parent/<app>``, replacing what was there.

    Nothing is written when the check fails; the bundle is unpacked next to its destination and moved into
    place with one rename.

    Args:
        archive: the ``.tar.gz`` file, open for reading and seekable.
        parent: the folder that receives ``<app>/`` (created if needed).
        limits: bounds on sizes and member count.
        checked: what :func:`check_bundle` found in this same, unchanged archive, to skip checking its
            manifests and asset hashes again (member names and types are checked while unpacking anyway).

    Returns:
        The unpacked project folder and what it holds.

    Raises:
        RequestError, ManifestError, AssetError: see :func:`check_bundle`.
        ProjectError: the folder cannot be written.
    """
    info = checked if checked is not None else check_bundle(archive, limits)
    dest = parent / info.app
    staging = parent / f".incoming-{uuid.uuid4().hex}"
    old = parent / f".replaced-{uuid.uuid4().hex}"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        for top in _TOP:
            (staging / top).mkdir(exist_ok=True)
        _extract(archive, staging)
        if dest.exists():
            dest.rename(old)
        staging.rename(dest)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise ProjectError(f"cannot unpack the bundle: {error.strerror or error}", file=str(parent)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
    return dest, info


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def pack_project(project_dir: Path, out: IO[bytes]) -> None:
    """Write a project's ``graphs/``, ``packages/`` and ``assets/`` as a bundle.

    Only files and folders are included; ``__pycache__`` folders, symbolic links and dot files in
    ``assets/`` (``.gitkeep``) are left out.

    Args:
        project_dir: the project root.
        out: where the ``.tar.gz`` bytes go.

    Raises:
        ProjectError: the project has no ``graphs/`` or ``packages/``.
    """
    root = Path(project_dir)
    for top in ("graphs", "packages"):
        if not (root / top).is_dir():
            raise ProjectError(f"not a project: no {top}/ folder", file=str(root))
    with _gzip(out, "wb") as gz, tarfile.open(fileobj=gz, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for top in _TOP:
            base = root / top
            if not base.is_dir():
                continue
            for folder, dirs, names in os.walk(base):
                dirs[:] = sorted(
                    name for name in dirs if name != "__pycache__" and not (Path(folder) / name).is_symlink()
                )
                rel = Path(folder).relative_to(root).as_posix()
                tar.addfile(_reset(tar.gettarinfo(folder, rel)))
                for name in sorted(names):
                    path = Path(folder) / name
                    if path.is_symlink() or not path.is_file() or (top == "assets" and name.startswith(".")):
                        continue
                    with path.open("rb") as handle:
                        tar.addfile(_reset(tar.gettarinfo(str(path), f"{rel}/{name}")), handle)
