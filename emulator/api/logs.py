"""Reading a node's log folder for the device API: its files by plain name, and their last lines."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from emulator.api.errors import NotFoundError, RequestError

__all__ = ["log_file", "log_files", "tail_file", "tail_lines"]

_TAIL_BYTES = 4 * 1024 * 1024


def tail_lines(text: str, count: int) -> list[str]:
    """Return the last ``count`` lines of ``text`` (without line ends).

    Args:
        text: a log's content.
        count: how many lines at most (0 gives none).

    Returns:
        The lines, oldest first.
    """
    if count <= 0:
        return []
    return text.splitlines()[-count:]


def log_files(folder: Path, first: str) -> list[str]:
    """The regular files of a log folder, ``first`` first (listed even before it exists), the rest sorted.

    Args:
        folder: the node's log folder.
        first: the name to put first (the console output).

    Returns:
        File names.
    """
    try:
        names = sorted(
            entry.name
            for entry in os.scandir(folder)
            if entry.is_file(follow_symlinks=False) and entry.name != first and not entry.name.startswith(".")
        )
    except OSError:
        names = []
    return [first, *names]


def log_file(folder: Path, name: str) -> Path:
    """A file of a node's log folder, by plain name.

    Args:
        folder: the node's log folder.
        name: the file's name (no ``/``, not starting with a dot).

    Returns:
        The file's path.

    Raises:
        RequestError: the name is not a plain file name.
        NotFoundError: the folder has no regular file of that name.
    """
    if not name or "/" in name or "\\" in name or "\x00" in name or name.startswith("."):
        raise RequestError("a log file is named by its plain name, such as app.log", file=name[:100])
    path = folder / name
    try:
        regular = stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        regular = False
    if not regular:
        raise NotFoundError("no such log file in the node's log folder", file=name)
    return path


def tail_file(path: Path, count: int) -> list[str]:
    """The last ``count`` lines of a file, reading at most its last 4 MiB.

    Args:
        path: the file.
        count: how many lines at most.

    Returns:
        The lines, oldest first (decoded as UTF-8, bad bytes replaced).
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(0, size - _TAIL_BYTES)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    text = data.decode("utf-8", "replace")
    if start > 0:
        text = text.partition("\n")[2]
    return tail_lines(text, count)
