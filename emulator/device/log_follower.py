"""Following a log file as it grows, across rotations, truncations and reboots."""

from __future__ import annotations

import os
from pathlib import Path
from typing import BinaryIO

__all__ = ["LogFollower"]

_MAX_READ = 1024 * 1024


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
