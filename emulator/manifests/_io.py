"""Reading and writing manifest files: JSON in, typed models out; JSON written like panorama-cli does."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from emulator.errors import ManifestError, Problem, ProjectError
from emulator.manifests._models import (
    Descriptor,
    Graph,
    Override,
    Package,
)
from emulator.manifests._validate import parse_graph, parse_override
from emulator.manifests._validate_package import parse_descriptor, parse_package

__all__ = [
    "MAX_MANIFEST_BYTES",
    "load_descriptor",
    "load_graph",
    "load_override",
    "load_package",
    "package_folder_parts",
    "read_json",
    "write_json",
]

# Manifests are a few kilobytes; the cap keeps a wrong path (a video, an archive) from being read whole.
MAX_MANIFEST_BYTES = 16 * 1024 * 1024

T = TypeVar("T")


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def read_json(path: Path) -> object:
    """Read and parse a JSON file.

    Args:
        path: the file.

    Returns:
        the parsed JSON value.

    Raises:
        ProjectError: the file is missing, is a directory or cannot be read.
        ManifestError: the file is not JSON (one problem at pointer ``""``).
    """
    path = Path(path)
    file = str(path)
    try:
        size = path.stat().st_size
        if path.is_dir():
            raise ProjectError("is a directory, expected a JSON file", file=file)
        if size > MAX_MANIFEST_BYTES:
            raise ManifestError(
                [Problem(file, "", f"a manifest of at most {MAX_MANIFEST_BYTES} bytes", f"{size} bytes")]
            )
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ProjectError("file not found", file=file) from None
    except OSError as error:
        raise ProjectError(f"cannot read the file: {error.strerror or error}", file=file) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ManifestError(
            [Problem(file, "", "UTF-8 JSON text", f"bytes that are not UTF-8 at offset {error.start}")]
        ) from None
    if not text.strip():
        raise ManifestError([Problem(file, "", "a JSON document", "an empty file")])
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        found = f"{error.msg} at line {error.lineno} column {error.colno}"
        raise ManifestError([Problem(file, "", "valid JSON", found)]) from None
    except RecursionError:
        raise ManifestError(
            [Problem(file, "", "JSON nested less deeply", "nesting too deep to read")]
        ) from None
    except ValueError as error:
        raise ManifestError([Problem(file, "", "valid JSON", str(error))]) from None


def write_json(path: Path, data: object) -> None:
    """Write ``data`` as JSON the way panorama-cli does (``indent=4``, no trailing newline), atomically.

    The file is replaced in one step (a reader sees the old or the new content, never a mix), and an existing
    file keeps its permission bits.

    Args:
        path: the file to write.
        data: JSON-serialisable data.

    Raises:
        ProjectError: the file cannot be written.
    """
    path = Path(path)
    text = json.dumps(data, indent=4)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = None
    except OSError as error:
        raise ProjectError(f"cannot write the file: {error.strerror or error}", file=str(path)) from None
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            if mode is not None:
                os.chmod(temp, mode)
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    except OSError as error:
        raise ProjectError(f"cannot write the file: {error.strerror or error}", file=str(path)) from None


def package_folder_parts(dirname: str) -> tuple[str, str, str] | None:
    """Split a package folder name the panorama-cli way, or return None when it has no such form.

    ``123456789012-SAMPLE_CODE-1.0`` gives ``("123456789012", "SAMPLE_CODE", "1.0")``; the package name is
    everything between the first and the last hyphen.
    """
    parts = dirname.split("-")
    if len(parts) < 3 or not parts[0] or not parts[-1]:
        return None
    name = "-".join(parts[1:-1])
    if not name:
        return None
    return parts[0], name, parts[-1]


def _load(path: Path, parse: Callable[[object, str], tuple[T | None, list[Problem]]]) -> T:
    data = read_json(path)
    model, problems = parse(data, str(path))
    if problems:
        raise ManifestError(problems)
    if model is None:
        raise ManifestError([Problem(str(path), "", "a valid manifest", "a document that cannot be used")])
    return model


def load_graph(path: Path) -> Graph:
    """Load and validate ``graph.json``.

    Args:
        path: the file.

    Returns:
        the graph.

    Raises:
        ProjectError: the file is missing or unreadable.
        ManifestError: the file is not JSON or not a valid graph (every problem listed).
    """
    return _load(Path(path), parse_graph)


def load_override(path: Path) -> Override:
    """Load and validate an ``override.json``.

    Args:
        path: the file.

    Returns:
        the override.

    Raises:
        ProjectError: the file is missing or unreadable.
        ManifestError: the file is not JSON or not a valid override (every problem listed).
    """
    return _load(Path(path), parse_override)


def load_descriptor(path: Path) -> Descriptor:
    """Load and validate a descriptor (``runtimeDescriptor`` or ``mlModelDescriptor``).

    Args:
        path: the file.

    Returns:
        a ``RuntimeDescriptor`` or a ``ModelDescriptor``.

    Raises:
        ProjectError: the file is missing or unreadable.
        ManifestError: the file is not JSON or not a valid descriptor (every problem listed).
    """
    return cast(Descriptor, _load(Path(path), parse_descriptor))


def load_package(path: Path) -> Package:
    """Load and validate ``package.json``.

    A package without ``name`` or ``version`` takes them from its folder name
    (``<account>-<name>-<version>``), as panorama-cli does.

    Args:
        path: the file.

    Returns:
        the package.

    Raises:
        ProjectError: the file is missing or unreadable.
        ManifestError: the file is not JSON or not a valid package (every problem listed).
    """
    path = Path(path)
    parts = package_folder_parts(path.parent.name)
    name, version = (parts[1], parts[2]) if parts else ("", "")

    def parse(data: object, file: str) -> tuple[Package | None, list[Problem]]:
        return parse_package(data, file, default_name=name, default_version=version)

    return _load(path, parse)
