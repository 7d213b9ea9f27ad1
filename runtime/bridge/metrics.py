"""Figures the bridge keeps: per-node frame rates and latency, per-camera frames produced and dropped."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from runtime.bridge.contracts import CallTally

__all__ = ["CameraStats", "LatencyMeter", "NodeStats", "RateMeter"]

_RATE_WINDOW = 5.0


class RateMeter:
    """Events per second over the last few seconds.

    Args:
        window: seconds of history used.
    """

    def __init__(self, window: float = _RATE_WINDOW) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque(maxlen=4096)

    def tick(self, now: float | None = None) -> None:
        """Record one event at ``now`` (``time.monotonic()`` when None)."""
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        """Events per second over the window (0.0 with fewer than two recent events).

        Args:
            now: the current ``time.monotonic()`` (taken when None).

        Returns:
            The rate, rounded to two decimals.
        """
        now = time.monotonic() if now is None else now
        times = self._times
        while times and now - times[0] > self.window:
            times.popleft()
        if len(times) < 2:
            return 0.0
        span = times[-1] - times[0]
        return round((len(times) - 1) / span, 2) if span > 0 else 0.0


class LatencyMeter:
    """Percentiles of the last ``size`` durations, in milliseconds.

    Args:
        size: how many samples are kept.
    """

    def __init__(self, size: int = 1000) -> None:
        self._samples: collections.deque[float] = collections.deque(maxlen=size)

    def add(self, seconds: float) -> None:
        """Record one duration given in seconds."""
        self._samples.append(seconds * 1000.0)

    def percentile(self, fraction: float) -> float | None:
        """The ``fraction`` (0..1) percentile in ms, or None without samples (nearest rank)."""
        if not self._samples:
            return None
        ordered = sorted(self._samples)
        index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
        return round(ordered[index], 3)

    def summary(self) -> dict[str, float | None]:
        """``{"p50": ms, "p99": ms}`` (None without samples)."""
        return {"p50": self.percentile(0.5), "p99": self.percentile(0.99)}


@dataclass
class NodeStats:
    """Counters of one code node (guarded by the runtime's lock).

    The model calls an app sends on the channels lent to it are counted by the model server in each
    connection's tally: ``tallies`` holds those of the open connections, and a connection's counts join
    the node's own when it ends (:meth:`fold`).
    """

    frames_in: int = 0
    cached_in: int = 0
    frames_out: int = 0
    values_out: int = 0
    sessions: int = 0
    connected: bool = False
    pid: int | None = None
    model_calls: int = 0
    model_errors: int = 0
    errors: int = 0
    last_error: str | None = None
    last_error_at: float = 0.0
    rate: RateMeter = field(default_factory=RateMeter)
    latency: LatencyMeter = field(default_factory=LatencyMeter)
    tallies: list[CallTally] = field(default_factory=list)

    def note_error(self, message: str) -> None:
        """Keep ``message`` as the node's last error."""
        self.last_error = message
        self.last_error_at = time.monotonic()

    def fold(self, tally: CallTally) -> None:
        """Add the counts of an ended connection's tally to the node's own, and stop watching it."""
        self.tallies.remove(tally)
        self.model_calls += tally.calls()
        self.model_errors += tally.errors()
        last = tally.last_error()
        if last is not None and last[0] > self.last_error_at:
            self.last_error_at, self.last_error = last

    def snapshot(self, dropped: int) -> dict[str, object]:
        """The node's figures as a JSON-able dict."""
        calls, errors, last_error, at = (
            self.model_calls,
            self.model_errors,
            self.last_error,
            self.last_error_at,
        )
        for tally in self.tallies:
            calls += tally.calls()
            errors += tally.errors()
            last = tally.last_error()
            if last is not None and last[0] > at:
                at, last_error = last
        return {
            "connected": self.connected,
            "pid": self.pid,
            "sessions": self.sessions,
            "restarts": max(0, self.sessions - 1),
            "fps": self.rate.rate(),
            "latency_ms": self.latency.summary(),
            "frames_in": self.frames_in,
            "cached_in": self.cached_in,
            "frames_out": self.frames_out,
            "values_out": self.values_out,
            "dropped": dropped,
            "model_calls": calls,
            "model_errors": errors,
            "errors": self.errors,
            "last_error": last_error,
        }


@dataclass
class CameraStats:
    """Counters of one camera (guarded by the runtime's lock)."""

    produced: int = 0
    dropped: int = 0
    errors: int = 0
    last_error: str | None = None
    rate: RateMeter = field(default_factory=RateMeter)

    def snapshot(self) -> dict[str, object]:
        """The camera's figures as a JSON-able dict."""
        return {
            "fps": self.rate.rate(),
            "frames_produced": self.produced,
            "frames_dropped": self.dropped,
            "errors": self.errors,
            "last_error": self.last_error,
        }
