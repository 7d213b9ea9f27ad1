"""Following a node's console log as it grows, across rotations and reboots."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from emulator.api.errors import NotFoundError, RequestError

__all__ = ["LogFollower", "log_file", "log_files", "tail_file", "tail_lines"]

_MAX_READ = 1024 * 1024
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


class LogFollower:
    """Read the lines appended to a log file since the last read.

    The file may not exist yet, may be rotated (renamed and started again) or truncated: each case is noticed
    and reading goes on from the start of the new file.

    Args:
        path: the log file.
        from_start: read what the file already holds too (default: only what is written from now on).
    """

    def __init__(self, path: Path, *, from_start: bool = False) -> None:
        self.path = Path(path)
        self._file: BinaryIO | None = None
        self._inode: int | None = None
        self._partial = b""
        self._open(at_end=not from_start)

    def _open(self, *, at_end: bool) -> None:
        try:
            handle = self.path.open("rb")
        except OSError:
            self._file = None
            self._inode = None
            return
        self._file = handle
        self._inode = os.fstat(handle.fileno()).st_ino
        if at_end:
            handle.seek(0, os.SEEK_END)

    def _replaced(self) -> bool:
        if self._file is None:
            return True
        try:
            info = os.stat(self.path)
        except OSError:
            return False
        return info.st_ino != self._inode or info.st_size < self._file.tell()

    def read_new(self) -> list[str]:
        """Return the complete lines written since the last call (a partial last line waits for its end).

        Returns:
            The new lines, without line ends, decoded as UTF-8 (bad bytes replaced).
        """
        lines: list[str] = []
        if self._file is not None:
            lines += self._drain()
        if self._replaced():
            if self._file is not None:
                self._file.close()
            self._partial = b""
            self._open(at_end=False)
            if self._file is not None:
                lines += self._drain()
        return lines

    def _drain(self) -> list[str]:
        assert self._file is not None
        data = self._file.read(_MAX_READ)
        if not data:
            return []
        data = self._partial + data
        *complete, self._partial = data.split(b"\n")
        return [line.rstrip(b"\r").decode("utf-8", "replace") for line in complete]

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
