"""Call counters that the model server keeps in shared memory, for calls the appliance does not see.

An app calls model nodes straight on its own channel to the model server (see
:class:`runtime.models.serving.AppChannel`), so the appliance learns of those calls from counters the model
server updates before it answers: a memfd the appliance makes and keeps (the app never gets it), mapped by
both processes. Each row counts the calls and failed calls of one model node (or, for an app connection, of
one connection) and keeps the latency of the last :data:`RING` calls; the last error message is kept with the
time it happened. The counters outlive a model server that dies: a new one maps the same file.

Only the model server writes (under its own lock); the appliance reads without locking, so a figure read
while a call finishes may lag that call.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time

from runtime.models.protocol import sealed_memfd

__all__ = ["MAX_ERROR", "RING", "Tally"]

RING = 4096
"""Latencies kept per row."""
MAX_ERROR = 1000
"""Bytes of the last error message kept (UTF-8, cut at a character boundary)."""

# The file: the last error's time (f8) and length (u4), its text, then per row calls, errors, calls under
# way and the ring's next index (i8 each), then per row the ring of latencies in ms (f4). Native byte order:
# both processes run on this machine.
_ERROR_AT = struct.Struct("=dI")
_TEXT = _ERROR_AT.size
_ROWS = (_TEXT + MAX_ERROR + 7) // 8 * 8
_CALLS, _ERRORS, _RUNNING, _NEXT = range(4)


class Tally:
    """Counters of ``rows`` rows in a memfd.

    Args:
        rows: how many rows (model nodes, or 1 for a connection).
        ring: latencies kept per row (0 for none).
        fd: the memfd of an existing tally (owned from now on), or None to make one.
    """

    def __init__(self, rows: int, ring: int = RING, fd: int | None = None) -> None:
        self.rows, self.ring = rows, ring
        ring_at = _ROWS + rows * 4 * 8
        size = ring_at + rows * ring * 4
        self.fd = sealed_memfd("panorama-model-tally", size, grow=False) if fd is None else fd
        try:
            self._map = mmap.mmap(self.fd, size)
        except BaseException:
            os.close(self.fd)
            raise
        whole = memoryview(self._map)
        self._ints = whole[_ROWS:ring_at].cast("q")
        self._ring = whole[ring_at:size].cast("f")
        self._lock = threading.Lock()

    def start(self, row: int) -> None:
        """Count a call on ``row``, under way from now (the model server)."""
        ints, at = self._ints, row * 4
        with self._lock:
            ints[at + _CALLS] += 1
            ints[at + _RUNNING] += 1

    def finish(self, row: int, seconds: float, error: str | None = None) -> None:
        """Count the end of a call on ``row`` (the model server).

        Args:
            row: the row.
            seconds: how long it took.
            error: why it failed, or None.
        """
        ints, at = self._ints, row * 4
        with self._lock:
            ints[at + _RUNNING] -= 1
            if error is None:
                if self.ring:
                    self._ring[row * self.ring + ints[at + _NEXT] % self.ring] = seconds * 1000.0
                    ints[at + _NEXT] += 1
            else:
                ints[at + _ERRORS] += 1
                text = error.encode("utf-8")[:MAX_ERROR].decode("utf-8", "ignore").encode("utf-8")
                self._map[_TEXT : _TEXT + len(text)] = text
                _ERROR_AT.pack_into(self._map, 0, time.monotonic(), len(text))

    def calls(self, row: int = 0) -> int:
        """Calls made on ``row``: finished, failed and under way."""
        return int(self._ints[row * 4 + _CALLS])

    def errors(self, row: int = 0) -> int:
        """Failed calls on ``row``."""
        return int(self._ints[row * 4 + _ERRORS])

    def running(self, row: int = 0) -> int:
        """Calls under way on ``row``."""
        return max(0, int(self._ints[row * 4 + _RUNNING]))

    def latencies_ms(self, row: int = 0) -> list[float]:
        """The latencies (ms) of the last successful calls on ``row``, at most ``ring``."""
        kept = min(int(self._ints[row * 4 + _NEXT]), self.ring)
        return list(self._ring[row * self.ring : row * self.ring + kept])

    def last_error(self) -> tuple[float, str] | None:
        """``(time.monotonic() when, message)`` of the last failed call on any row, or None."""
        at, length = _ERROR_AT.unpack_from(self._map, 0)
        if not length:
            return None
        text = self._map[_TEXT : _TEXT + min(length, MAX_ERROR)].decode("utf-8", "replace")
        return float(at), text

    def forget_running(self) -> None:
        """Zero the calls under way (the appliance, once the model server that ran them is gone)."""
        for row in range(self.rows):
            self._ints[row * 4 + _RUNNING] = 0

    def close(self) -> None:
        """Release the file descriptor (the mapping goes with the last view)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
