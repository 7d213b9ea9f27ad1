"""Shared-memory frame slots and the rings that hand them from a camera to an app.

A slot is one memfd holding one H x W x 3 frame, mapped once by the appliance and once by the app (which
gets the memfd with the first frame in it and cannot resize it): a frame crosses the bridge as its slot
number. Each (code node, input port, camera) has a :class:`Ring` of slots. A slot is in exactly one of
these states:

- being written by its camera;
- *pending*: a frame the camera made that the app has not been handed yet (a ring queues at most
  ``depth``: 1 in lockstep, :data:`REALTIME_DEPTH` in realtime, where the oldest is dropped when full);
- *last*: the frame most recently handed to the app, kept so a stream with nothing new can be handed out
  again (``is_cached``);
- *held*: referenced by the app (``holds`` counts the arrays it still has on the slot, plus the
  appliance's own short holds while it renders one);
- free.

A camera only writes into a free slot, so it never overwrites a frame the app still holds. All state is
guarded by the runtime's condition lock; pixels are copied outside it.
"""

from __future__ import annotations

import collections
import logging
import mmap
import os

import numpy as np

from runtime.models.protocol import sealed_memfd

__all__ = ["MAX_SLOTS", "REALTIME_DEPTH", "Ring", "Slot", "SlotPool"]

MAX_SLOTS = 16
"""Most slots one ring grows to (an app that keeps more frames alive makes its camera drop frames)."""

REALTIME_DEPTH = 2
"""Frames a realtime ring queues for a late app before dropping the oldest (absorbs scheduling jitter)."""

_log = logging.getLogger(__name__)


class Slot:
    """One shared-memory frame.

    Attributes:
        id: the number the app sees (never reused within a runtime).
        fd: the memfd (closed when the slot is destroyed).
        shape: ``(height, width, 3)``.
        array: the host's view of the pixels.
    """

    __slots__ = (
        "array",
        "delivered_at",
        "fd",
        "holds",
        "id",
        "mm",
        "queued",
        "ring",
        "shape",
        "time_stamp",
        "writing",
    )

    def __init__(self, slot_id: int, fd: int, shape: tuple[int, int, int], mm: mmap.mmap, ring: Ring) -> None:
        self.id = slot_id
        self.fd = fd
        self.shape = shape
        self.mm = mm
        self.array: np.ndarray = np.frombuffer(
            mm, dtype=np.uint8, count=shape[0] * shape[1] * shape[2]
        ).reshape(shape)
        self.ring = ring
        self.holds = 0
        self.writing = False
        self.queued = False
        self.time_stamp: tuple[int, int] = (0, 0)
        self.delivered_at = 0.0


class SlotPool:
    """Every slot of one runtime."""

    def __init__(self) -> None:
        self._slots: dict[int, Slot] = {}
        self._serial = 0

    def create(self, ring: Ring, shape: tuple[int, int, int]) -> Slot:
        """Make a new slot of ``shape`` for ``ring`` and map it.

        Raises:
            OSError: no memory for it.
        """
        self._serial += 1
        size = shape[0] * shape[1] * shape[2]
        # Pages are not reserved: a 1080p slot would cost 6 MB at once, and a memfd is not bounded by the
        # size of a tmpfs.
        fd = sealed_memfd(f"panorama-frame.{ring.node}.{self._serial}", size, grow=False, reserve=False)
        try:
            mm = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        slot = Slot(self._serial, fd, shape, mm, ring)
        self._slots[slot.id] = slot
        return slot

    def get(self, slot_id: int) -> Slot | None:
        """The slot numbered ``slot_id``, or None."""
        return self._slots.get(slot_id)

    def destroy(self, slot: Slot) -> None:
        """Close a slot's memfd (the memory goes with the last view of its mapping)."""
        if self._slots.pop(slot.id, None) is not None:
            os.close(slot.fd)

    def close(self) -> None:
        """Close every slot's memfd."""
        for slot in list(self._slots.values()):
            self.destroy(slot)

    @property
    def ids(self) -> list[int]:
        """The numbers of the slots that exist."""
        return sorted(self._slots)


class Ring:
    """The slots that carry one camera's frames to one media input port of one code node.

    Args:
        node: the code node.
        port: its media input port.
        camera: the camera node.
        pool: where slots are made.
        depth: most frames queued for the app.
        max_slots: most slots this ring may have.
    """

    def __init__(
        self,
        node: str,
        port: str,
        camera: str,
        pool: SlotPool,
        *,
        depth: int = 1,
        max_slots: int = MAX_SLOTS,
    ) -> None:
        self.node = node
        self.port = port
        self.camera = camera
        self.pool = pool
        self.depth = depth
        self.max_slots = max_slots
        self.slots: list[Slot] = []
        self.pending: collections.deque[Slot] = collections.deque()
        self.last: Slot | None = None
        self.paused = False
        self.session_active = False
        self.required = True
        self.ever_connected = False
        self.dropped = 0
        self.forget: list[int] = []

    def is_free(self, slot: Slot) -> bool:
        """True when nothing refers to ``slot``."""
        return slot.holds == 0 and not slot.writing and not slot.queued and slot is not self.last

    def acquire(self, shape: tuple[int, int, int]) -> Slot | None:
        """A free slot of ``shape`` marked as being written, or None when every slot is taken.

        Free slots of another shape are removed to make room (a camera whose frame size changed).
        """
        for slot in self.slots:
            if slot.shape == shape and self.is_free(slot):
                slot.writing = True
                return slot
        for slot in list(self.slots):
            if slot.shape != shape and self.is_free(slot):
                self.slots.remove(slot)
                self.pool.destroy(slot)
                self.forget.append(slot.id)
        if len(self.slots) >= self.max_slots:
            return None
        try:
            slot = self.pool.create(self, shape)
        except OSError as error:
            _log.error("cannot make a frame slot for camera %s: %s", self.camera, error)
            return None
        slot.writing = True
        self.slots.append(slot)
        return slot

    def abandon(self, slot: Slot) -> None:
        """Give back a slot that was acquired but not filled."""
        slot.writing = False

    def publish(self, slot: Slot, time_stamp: tuple[int, int]) -> bool:
        """Queue ``slot`` for the app, dropping the oldest queued frame when the queue is full.

        Returns:
            True when a frame was dropped while an app was connected.
        """
        slot.writing = False
        slot.time_stamp = time_stamp
        dropped = False
        while len(self.pending) >= self.depth:
            self.pending.popleft().queued = False
            dropped = dropped or self.session_active
        if dropped:
            self.dropped += 1
        slot.queued = True
        self.pending.append(slot)
        return dropped

    def has_new(self) -> bool:
        """True when a new frame may be handed out."""
        return bool(self.pending) and not self.paused

    def has_any(self) -> bool:
        """True when a frame (new or cached) may be handed out."""
        return self.has_new() or self.last is not None

    def take(self) -> tuple[Slot, bool]:
        """Hand out the oldest pending frame, or the last one again when nothing is new.

        Returns:
            ``(slot, cached)``; the caller adds its hold on the slot.
        """
        if self.has_new():
            slot = self.pending.popleft()
            slot.queued = False
            self.last = slot
            return slot, False
        assert self.last is not None
        return self.last, True

    def paces(self) -> bool:
        """True when a lockstep camera waits for this ring: its node starts at boot, or has connected."""
        return self.required or self.ever_connected

    def end_session(self) -> None:
        """Forget what the last app was shown: the next app's first frame is new."""
        self.last = None
        self.session_active = False

    def clear(self) -> None:
        """Let go of every slot (at shutdown), so their memory goes with the app's last view of it."""
        self.slots.clear()
        self.pending.clear()
        self.last = None

    def drain_forget(self) -> list[int]:
        """Numbers of removed slots the app should unmap (each reported once)."""
        ids, self.forget = self.forget, []
        return ids
