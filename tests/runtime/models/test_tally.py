"""Tallies: call counters in shared memory, written by one process and read by another."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from runtime.models.tally import MAX_ERROR, Tally


def _count_in_another_process(fd: int, rows: int, ring: int) -> None:
    tally = Tally(rows, ring, fd=fd)
    tally.start(1)
    tally.finish(1, 0.002)
    tally.start(1)
    tally.finish(1, 0.004)
    tally.start(0)
    tally.finish(0, 0.5, "node a: the model failed: boom")
    tally.start(1)  # still under way when the process ends


def test_counts_written_in_one_process_are_read_in_another() -> None:
    tally = Tally(2, 8)
    try:
        child = multiprocessing.get_context("fork").Process(
            target=_count_in_another_process, args=(tally.fd, 2, 8)
        )
        child.start()
        child.join(60)
        assert child.exitcode == 0
        assert [tally.calls(row) for row in (0, 1)] == [1, 3]  # one under way
        assert [tally.errors(row) for row in (0, 1)] == [1, 0]
        assert tally.latencies_ms(1) == pytest.approx([2.0, 4.0])
        assert tally.latencies_ms(0) == []  # failed calls are counted, not timed
        last = tally.last_error()
        assert last is not None and last[1] == "node a: the model failed: boom"
        assert tally.running(1) == 1
        tally.forget_running()
        assert tally.running(1) == 0
    finally:
        tally.close()


def test_the_ring_keeps_the_latest_latencies() -> None:
    tally = Tally(1, 4)
    for ms in range(1, 11):
        tally.start(0)
        tally.finish(0, ms / 1000)
    assert sorted(tally.latencies_ms(0)) == pytest.approx([7.0, 8.0, 9.0, 10.0])
    assert tally.calls(0) == 10
    tally.close()


def test_a_long_error_is_cut_at_a_character_boundary() -> None:
    tally = Tally(1, 0)
    tally.start(0)
    tally.finish(0, 0.1, "é" * MAX_ERROR)  # two bytes each
    last = tally.last_error()
    assert last is not None and last[1] == "é" * (MAX_ERROR // 2)
    tally.start(0)
    tally.finish(0, 0.1, "short")
    last = tally.last_error()
    assert last is not None and last[1] == "short"
    tally.close()


def test_the_file_cannot_be_resized() -> None:
    tally = Tally(1, 4)
    try:
        with pytest.raises(PermissionError):
            os.ftruncate(tally.fd, 0)
        with pytest.raises(PermissionError):
            os.ftruncate(tally.fd, 1 << 20)
    finally:
        tally.close()
