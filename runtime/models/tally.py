"""Call counters that the model server keeps in shared memory, for calls the appliance does not see.

An app calls model nodes straight on its own channel to the model server (see :mod:`runtime.models.appcalls`),
so the appliance learns of those calls from counters the model server updates before it answers: a memfd
the appliance makes and keeps (the app never gets it), mapped by both processes. Each row counts the calls
and failed calls of one model node (or, for an app connection, of one connection) and keeps the latency of
the last :data:`RING` calls; the last error message is kept with the time it happened. The counters outlive
a model server that dies: a new one maps the same file.

Only the model server writes (under its own lock); the appliance reads without locking, so a figure read
while a call finishes may lag that call.
"""

from __future__ import annotations

import mmap
import os
import threading
import time
from typing import Any

import numpy as np

from runtime.models.protocol import sealed_memfd

__all__ = ["MAX_ERROR", "RING", "Tally"]

RING = 4096
"""Latencies kept per row."""
MAX_ERROR = 1000
"""Bytes of the last error message kept (UTF-8, cut at a character boundary)."""

_ROW = np.dtype([("calls", "<u8"), ("errors", "<u8"), ("running", "<i8"), ("next", "<u8")])
_ERROR = np.dtype([("at", "<f8"), ("length", "<u4"), ("text", "u1", (MAX_ERROR,))])


class Tally:
    """Counters of ``rows`` rows in a memfd.

    Args:
        rows: how many rows (model nodes, or 1 for a connection).
        ring: latencies kept per row (0 for none).
        fd: the memfd of an existing tally (owned from now on), or None to make one.
    """

    def __init__(self, rows: int, ring: int = RING, fd: int | None = None) -> None:
        self.rows, self.ring = rows, ring
        size = _ERROR.itemsize + rows * _ROW.itemsize + rows * ring * 4
        self.fd = sealed_memfd("panorama-model-tally", size, grow=False) if fd is None else fd
        try:
            self._map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        self._error: Any = np.ndarray((), _ERROR, buffer=self._map, offset=0)
        self._rows: Any = np.ndarray((rows,), _ROW, buffer=self._map, offset=_ERROR.itemsize)
        self._ring = np.ndarray(
            (rows, ring), np.float32, buffer=self._map, offset=_ERROR.itemsize + rows * _ROW.itemsize
        )
        self._lock = threading.Lock()

    def start(self, row: int) -> None:
        """Count a call on ``row``, under way from now (the model server)."""
        with self._lock:
            counts = self._rows[row]
            counts["calls"] += 1
            counts["running"] += 1

    def finish(self, row: int, seconds: float, error: str | None = None) -> None:
        """Count the end of a call on ``row`` (the model server).

        Args:
            row: the row.
            seconds: how long it took.
            error: why it failed, or None.
        """
        with self._lock:
            counts = self._rows[row]
            counts["running"] -= 1
            if error is None:
                if self.ring:
                    self._ring[row, int(counts["next"]) % self.ring] = seconds * 1000.0
                    counts["next"] += 1
            else:
                counts["errors"] += 1
                text = error.encode("utf-8")[:MAX_ERROR].decode("utf-8", "ignore").encode("utf-8")
                self._error["text"][: len(text)] = np.frombuffer(text, np.uint8)
                self._error["length"] = len(text)
                self._error["at"] = time.monotonic()

    def calls(self, row: int = 0) -> int:
        """Calls made on ``row``: finished, failed and under way."""
        return int(self._rows[row]["calls"])

    def errors(self, row: int = 0) -> int:
        """Failed calls on ``row``."""
        return int(self._rows[row]["errors"])

    def running(self, row: int = 0) -> int:
        """Calls under way on ``row``."""
        return max(0, int(self._rows[row]["running"]))

    def latencies_ms(self, row: int = 0) -> list[float]:
        """The latencies (ms) of the last successful calls on ``row``, at most ``ring``."""
        kept = min(int(self._rows[row]["next"]), self.ring)
        return [float(value) for value in self._ring[row, :kept]]

    def last_error(self) -> tuple[float, str] | None:
        """``(time.monotonic() when, message)`` of the last failed call on any row, or None."""
        length = min(int(self._error["length"]), MAX_ERROR)
        if not length:
            return None
        text = bytes(self._error["text"][:length]).decode("utf-8", "replace")
        return float(self._error["at"]), text

    def forget_running(self) -> None:
        """Zero the calls under way (the appliance, once the model server that ran them is gone)."""
        self._rows["running"] = 0

    def close(self) -> None:
        """Release the file descriptor (the mapping goes with the last view)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
