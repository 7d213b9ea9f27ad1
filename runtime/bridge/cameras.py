"""Camera feeds: one thread per camera that fills the rings of the nodes watching it.

- ``lockstep``: the camera reads its next frame only once every ring has handed its pending frame to the
  app, so each app sees every frame, in order, and a run is reproducible. Rings of nodes that do not start
  at boot (``onDemand``, ``onSignal``) count only once their app has connected. A ``limit`` holds the
  camera after that many frames of the boot (a run of N frames ends there).
- ``realtime``: the camera produces at its ``fps`` (a live stream at its own pace) whatever the apps do; a
  ring queues a couple of frames for an app that is late; beyond that the oldest is dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from emulator.errors import one_line
from runtime.bridge.frames import Ring, Slot
from runtime.bridge.metrics import CameraStats
from runtime.media.camera import CameraSource

__all__ = ["MODES", "CameraFeed"]

MODES = ("lockstep", "realtime")

_RETRY_DELAY = 1.0
_FULL_DELAY = 0.05
_log = logging.getLogger(__name__)


def _time_stamp(seconds: float) -> tuple[int, int]:
    micros = round(seconds * 1_000_000)
    return micros // 1_000_000, micros % 1_000_000


class CameraFeed:
    """Reads one camera and publishes its frames into rings.

    Args:
        name: the camera node.
        source: where frames come from.
        rings: the rings to fill (one per node input the camera is connected to).
        mode: ``lockstep`` or ``realtime``.
        cond: the runtime's condition (guards rings, slots and stats).
        stats: this camera's counters.
    """

    def __init__(
        self,
        name: str,
        source: CameraSource,
        rings: list[Ring],
        *,
        mode: str,
        cond: threading.Condition,
        stats: CameraStats,
    ) -> None:
        self.name = name
        self.source = source
        self.rings = rings
        self.realtime = mode == "realtime"
        self.cond = cond
        self.stats = stats
        self.paused = False
        self.limit: int | None = None
        self._stopping = False
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the feed's thread (nothing to do for a camera no node watches)."""
        if not self.rings or self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (call with the condition held or not)."""
        self._stopping = True
        self._wake.set()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def set_paused(self, paused: bool) -> None:
        """Pause or resume (call with the condition held)."""
        self.paused = paused
        for ring in self.rings:
            ring.paused = paused
        self.cond.notify_all()
        self._wake.set()

    def set_limit(self, limit: int | None) -> None:
        """Lockstep: make no frame beyond the ``limit``-th of this boot (None: no limit); lock held."""
        self.limit = limit
        self.cond.notify_all()
        self._wake.set()

    @property
    def at_limit(self) -> bool:
        """True when a limit holds the camera now (condition held)."""
        return not self.realtime and self.limit is not None and self.stats.produced >= self.limit

    # --- the thread --------------------------------------------------------------------------------------

    def _ready(self) -> bool:
        if self._stopping:
            return True
        if self.paused:
            return False
        if self.realtime:
            return True
        if self.at_limit:
            return False
        pacing = [ring for ring in self.rings if ring.paces()]
        # No app that counts yet: hold one frame ready rather than spin.
        return bool(pacing) and not any(ring.pending for ring in pacing)

    def _run(self) -> None:
        fps = float(self.source.fps) if self.source.fps else 30.0
        paced = self.realtime and not getattr(self.source, "live", False)
        interval = 1.0 / fps if fps > 0 else 0.0
        next_at = time.monotonic()
        while not self._stopping:
            with self.cond:
                held = not self._ready()
                self.cond.wait_for(self._ready)
                if self._stopping:
                    return
                if held:
                    # Back from a pause: the wake-up that resumed it must not cut the next pacing wait short.
                    self._wake.clear()
                width, height = self.source.size
                slots = [ring.acquire((int(height), int(width), 3)) for ring in self.rings]
            if not self._produce(slots):
                self._wake.wait(_RETRY_DELAY)
                self._wake.clear()
                next_at = time.monotonic()
                continue
            if not self.realtime and None in slots:
                # An app holds every slot of its ring: skip ahead slowly rather than spin.
                self._wake.wait(_FULL_DELAY)
                self._wake.clear()
            if paced:
                if held:
                    next_at = time.monotonic()  # the beat starts again at this frame, with no burst
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    self._wake.clear()
                elif delay < -interval:
                    next_at = time.monotonic()  # fell behind: do not burst to catch up

    def _produce(self, slots: list[Slot | None]) -> bool:
        """Read one frame into the acquired slots and publish it; False after a read error."""
        target = next((slot for slot in slots if slot is not None), None)
        try:
            frame = self.source.read_into(target.array) if target is not None else self.source.read()
            image = frame.image
            if target is not None and image is not target.array:
                slots = self._reshape(slots, image)
            for slot in slots:
                if slot is not None and slot.array is not image:
                    np.copyto(slot.array, image)
        except Exception as error:
            message = one_line(error)
            with self.cond:
                for ring, slot in zip(self.rings, slots, strict=True):
                    if slot is not None:
                        ring.abandon(slot)
                self.stats.errors += 1
                if self.stats.last_error != message:
                    _log.warning("camera %s: %s", self.name, message)
                self.stats.last_error = message
                self.cond.notify_all()
            return False
        stamp = _time_stamp(frame.timestamp)
        with self.cond:
            self.stats.produced += 1
            self.stats.rate.tick()
            for ring, slot in zip(self.rings, slots, strict=True):
                if slot is None:
                    if ring.session_active:
                        ring.dropped += 1
                        self.stats.dropped += 1
                    continue
                if ring.publish(slot, stamp):
                    self.stats.dropped += 1
            self.cond.notify_all()
        return True

    def _reshape(self, slots: list[Slot | None], image: np.ndarray) -> list[Slot | None]:
        """Trade slots for ones shaped like ``image`` (a source whose frame size changed)."""
        shape = (int(image.shape[0]), int(image.shape[1]), 3)
        with self.cond:
            fresh: list[Slot | None] = []
            for ring, slot in zip(self.rings, slots, strict=True):
                if slot is not None:
                    ring.abandon(slot)
                fresh.append(ring.acquire(shape))
        return fresh
