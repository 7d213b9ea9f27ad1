"""Lockstep mode is deterministic: the same app on the same camera shows the same HDMI frames on every boot.

The probe in ``lockstep`` mode draws, for ``LOCKSTEP_FRAMES`` frames, a picture that depends on every frame
it has seen so far (a running average, and a rectangle where it is brightest), then stops taking frames, so
that the HDMI output's last frame is frame number ``LOCKSTEP_FRAMES``. Three boots (a first, a reboot, and a
fresh appliance on the same device) must show it pixel for pixel the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _e2e_helpers import CODE_NODE, LOCKSTEP_FRAMES, probe_appliance, reports, wait_for

from emulator import Appliance

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]


def frame_n(appliance: Appliance, stopped_before: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Wait for the probe to stop after its frames; the HDMI frame it left, and its report."""
    assert appliance.wait_for_frames(LOCKSTEP_FRAMES, timeout=180)
    stopped = wait_for(
        lambda: len(found := reports(appliance.logs(CODE_NODE), "stopped")) > stopped_before and found,
        "the probe to stop",
    )
    assert appliance.metrics()["frames_out"] == LOCKSTEP_FRAMES  # it put exactly that many, then stopped
    frame = appliance.hdmi.last_frame
    assert frame is not None
    return np.array(frame, copy=True), stopped[-1]


def test_the_same_app_and_camera_give_identical_frames_on_every_boot(
    sdk_probe_project: Path, e2e_state_dir: Path
) -> None:
    first = probe_appliance(sdk_probe_project, e2e_state_dir, "lockstep")
    known = len(reports(first.logs(CODE_NODE), "stopped"))
    with first:
        frame_1, report_1 = frame_n(first, known)
        boot_1 = first.boots
        first.reboot()
        frame_2, report_2 = frame_n(first, known + 1)
        labels = first.hdmi.labels()
    second = probe_appliance(sdk_probe_project, e2e_state_dir, "lockstep")
    with second:
        frame_3, report_3 = frame_n(second, known + 2)
        assert second.boots == boot_1 + 2
    assert report_1["frames"] == report_2["frames"] == report_3["frames"] == LOCKSTEP_FRAMES
    assert report_1["checksum"] == report_2["checksum"] == report_3["checksum"]
    assert report_1["checksum"] != report_1["first_checksum"]  # the scene moved: frame N is not frame 1
    # What was compared is a real picture: camera pixels plus the app's drawing and overlays.
    assert frame_1.shape == (1080, 1920, 3) and frame_1.std() > 10
    assert f"frame {LOCKSTEP_FRAMES - 1}" in labels and f"frame {LOCKSTEP_FRAMES}" not in labels
    assert np.array_equal(frame_1, frame_2), f"{int((frame_1 != frame_2).any(axis=2).sum())} pixels differ"
    assert np.array_equal(frame_1, frame_3), f"{int((frame_1 != frame_3).any(axis=2).sum())} pixels differ"
