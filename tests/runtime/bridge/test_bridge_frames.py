"""Frame slots and rings: a camera only ever writes into a slot nobody refers to."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator

import numpy as np
import pytest

from runtime.bridge.frames import Ring, SlotPool
from runtime.bridge.testing import new_shared_memory, shared_memory

SHAPE = (4, 6, 3)


@pytest.fixture
def pool() -> Iterator[SlotPool]:
    slot_pool = SlotPool()
    yield slot_pool
    slot_pool.close()


def _publish(ring: Ring, value: int) -> int:
    slot = ring.acquire(SHAPE)
    assert slot is not None
    slot.array[:] = value
    ring.publish(slot, (value, 0))
    return slot.id


def test_slots_are_memfds_mapped_by_the_host_that_cannot_shrink(pool: SlotPool) -> None:
    before = shared_memory()  # what other tests' devices hold
    ring = Ring("node", "video_in", "cam", pool)
    slot = ring.acquire(SHAPE)
    assert slot is not None
    slot.array[:] = 7
    size = 4 * 6 * 3
    assert os.pread(slot.fd, size + 1, 0) == bytes([7]) * size
    assert new_shared_memory(before) == [f"panorama-frame.node.{slot.id}"]
    # What the app gets is the same file: it can neither shrink nor grow it, so the host never faults.
    app_fd = os.open(f"/proc/self/fd/{slot.fd}", os.O_RDWR)
    try:
        for size_change in (0, size - 1, size + 4096):
            with pytest.raises(PermissionError):
                os.ftruncate(app_fd, size_change)
        with pytest.raises(PermissionError):
            fcntl.fcntl(app_fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    finally:
        os.close(app_fd)
    pool.close()
    ring.clear()
    del slot  # the last view of its mapping
    assert new_shared_memory(before) == []


def test_lockstep_ring_hands_out_each_frame_once_in_order(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool)
    first = _publish(ring, 1)
    slot, cached = ring.take()
    assert (slot.id, cached, slot.time_stamp) == (first, False, (1, 0))
    assert not ring.has_new() and ring.has_any()
    again, cached = ring.take()
    assert again is slot and cached


def test_a_held_or_last_slot_is_never_reused(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool)
    _publish(ring, 1)
    held, _ = ring.take()
    held.holds += 1
    second = _publish(ring, 2)
    assert second != held.id
    latest, _ = ring.take()  # slot 2 is now "last"; slot 1 is still held by the app
    third = ring.acquire(SHAPE)
    assert third is not None and third.id not in (held.id, latest.id)
    assert held.array[0, 0, 0] == 1
    held.holds -= 1
    ring.publish(third, (3, 0))
    fourth = ring.acquire(SHAPE)
    assert fourth is not None and fourth.id == held.id  # free again: reused


def test_realtime_ring_queues_two_frames_then_drops_the_oldest(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool, depth=2)
    ring.session_active = True
    ids = [_publish(ring, value) for value in (1, 2, 3)]
    assert ring.dropped == 1
    assert [ring.take()[0].id for _ in range(2)] == ids[1:]


def test_drops_before_an_app_connects_are_not_counted(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool, depth=1)
    for value in range(5):
        _publish(ring, value)
    assert ring.dropped == 0


def test_a_full_ring_gives_no_slot(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool, max_slots=3)
    for _ in range(3):
        slot = ring.acquire(SHAPE)
        assert slot is not None
        slot.holds += 1
        slot.writing = False
    assert ring.acquire(SHAPE) is None


def test_a_new_frame_size_replaces_free_slots_and_tells_the_app(pool: SlotPool) -> None:
    before = shared_memory()
    ring = Ring("node", "video_in", "cam", pool)
    _publish(ring, 1)
    old, _ = ring.take()
    ring.end_session()
    bigger = ring.acquire((8, 8, 3))
    assert bigger is not None and bigger.array.shape == (8, 8, 3)
    old_id = old.id
    del old
    assert ring.drain_forget() == [old_id]
    assert pool.get(old_id) is None and pool.ids == [bigger.id]
    assert new_shared_memory(before) == [f"panorama-frame.node.{bigger.id}"]
    assert ring.drain_forget() == []


def test_pause_hides_new_frames(pool: SlotPool) -> None:
    ring = Ring("node", "video_in", "cam", pool)
    _publish(ring, 1)
    ring.paused = True
    assert not ring.has_new() and not ring.has_any()
    ring.paused = False
    assert ring.has_new()
    assert np.all(ring.take()[0].array == 1)
