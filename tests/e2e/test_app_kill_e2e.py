"""An app killed with SIGKILL in the middle of a frame: the appliance survives, restarts it, frames go on,
and shutting down leaves no shared memory behind.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from _e2e_helpers import CODE_NODE, probe_appliance, reports, wait_for

from emulator.device.figures import DeviceStatus, NodeStatus
from runtime.bridge.frames import MAX_SLOTS
from runtime.bridge.testing import new_shared_memory, shared_memory

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]


def frame_slots(before: dict[int, str]) -> list[str]:
    """This process's frame slot memfds that were not there ``before``."""
    return [name for name in new_shared_memory(before) if name.startswith("panorama-frame.")]


def node_status(status: DeviceStatus) -> NodeStatus:
    return status.nodes[CODE_NODE]


def test_a_killed_app_is_restarted_and_leaves_no_shared_memory(
    sdk_probe_project: Path, e2e_state_dir: Path
) -> None:
    appliance = probe_appliance(sdk_probe_project, e2e_state_dir, "steady")
    known = len(reports(appliance.logs(CODE_NODE), "started"))
    memory_before = shared_memory()  # what other tests' devices hold
    with appliance:
        assert appliance.wait_for_frames(30, timeout=180)
        slots_before = frame_slots(memory_before)
        assert slots_before, "frames travel through shared-memory slots"
        before = node_status(appliance.status())
        pid = before.pid
        assert isinstance(pid, int) and before.restarts == 0
        frames_at_kill = appliance.metrics().frames_out
        # The probe holds each frame for 20 ms of its ~20-25 ms loop: the kill lands while it holds one.
        os.kill(pid, signal.SIGKILL)

        after = wait_for(
            lambda: (state := node_status(appliance.status())).restarts >= 1
            and state.state == "running" and state.pid not in (None, pid) and state,
            "the app to be restarted",
        )  # fmt: skip
        wait_for(lambda: len(reports(appliance.logs(CODE_NODE), "started")) >= known + 2, "the new instance")
        assert appliance.wait_for_frames(frames_at_kill + 30, timeout=180)
        status = appliance.status()
        metrics = appliance.metrics()
        slots_after = frame_slots(memory_before)
    assert status.state == "on"
    assert after.restarts == 1 and len(after.exit_codes) == 1
    assert after.exit_codes[0] != 0  # killed, not a clean exit
    node = metrics.nodes[CODE_NODE]
    assert node.restarts == 1 and node.sessions == 2
    assert metrics.frames_out >= frames_at_kill + 30
    # The frame the killed instance held was given back: the camera needed no extra slot for the new one.
    assert len(slots_after) <= len(slots_before) < MAX_SLOTS
    # After shutdown the device's shared memory is gone.
    assert new_shared_memory(memory_before) == []
