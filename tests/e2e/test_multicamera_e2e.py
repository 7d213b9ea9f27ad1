"""Two cameras on one input port, through an override.json that replaces the graph's abstract camera.

The probe reports every batch ``video_in.get()`` gave it: the streams in it (id, is_cached, shape, time stamp,
URI). In lockstep both cameras advance together, so no stream is ever cached; in realtime a paused camera
stays in the batch, cached, beside the camera that still delivers.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from _e2e_helpers import CODE_NODE, probe_appliance, reports, wait_for

from emulator import Appliance

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CAMERAS = {"CAMERA_A": "synthetic:640x360@15", "CAMERA_B": "synthetic:320x240@15?scene=people"}
SHAPES = {"CAMERA_A": [360, 640, 3], "CAMERA_B": [240, 320, 3]}


def two_camera_appliance(project: Path, state_dir: Path, mode: str) -> Appliance:
    override = project / "graphs" / "sdk-multicam" / "override.json"
    return probe_appliance(project, state_dir, "multicam", override=override, cameras=CAMERAS, mode=mode)


def batches_after(appliance: Appliance, seen: int) -> list[dict[str, Any]]:
    """The batch reports of this boot (the app's logs hold every boot's)."""
    return reports(appliance.logs(CODE_NODE), "batch")[seen:]


def check_cached_rule(batches: list[dict[str, Any]]) -> None:
    """is_cached is True exactly when a stream's frame is the one it had in the previous batch."""
    previous: dict[str, list[int]] = {}
    for batch in batches:
        for stream in batch["streams"]:
            before = previous.get(stream["id"])
            if stream["cached"]:
                assert before is not None, f"batch {batch['number']}: first frame of {stream['id']} cached"
                assert stream["time_stamp"] == before, f"batch {batch['number']}: a cached frame changed"
            elif before is not None:
                assert stream["time_stamp"] > before, f"batch {batch['number']}: a new frame is not newer"
            previous[stream["id"]] = stream["time_stamp"]


def test_two_cameras_in_one_get_in_lockstep(sdk_probe_project: Path, e2e_state_dir: Path) -> None:
    appliance = two_camera_appliance(sdk_probe_project, e2e_state_dir, "lockstep")
    assert [camera.name for camera in appliance.plan.cameras] == ["CAMERA_A", "CAMERA_B"]
    seen = len(reports(appliance.logs(CODE_NODE), "batch"))
    with appliance:
        assert appliance.wait_for_frames(20, timeout=180)
        batches = wait_for(lambda: (found := batches_after(appliance, seen)) and len(found) >= 20 and found,
                           "20 batches")  # fmt: skip
        metrics = appliance.metrics()
        hdmi_streams = appliance.hdmi.streams
        labels = appliance.hdmi.labels()
        frame = appliance.hdmi.last_frame
    uris = {name: metrics.cameras[name].uri for name in CAMERAS}
    for batch in batches:
        streams = batch["streams"]
        assert [stream["id"] for stream in streams] == ["CAMERA_A", "CAMERA_B"]  # distinct, in graph order
        assert [stream["shape"] for stream in streams] == [SHAPES["CAMERA_A"], SHAPES["CAMERA_B"]]
        assert [stream["uri"] for stream in streams] == [uris["CAMERA_A"], uris["CAMERA_B"]]
        assert [stream["cached"] for stream in streams] == [False, False]
    check_cached_rule(batches)
    assert uris["CAMERA_B"].endswith("scene=people") or "people" in uris["CAMERA_B"]
    assert metrics.nodes[CODE_NODE].frames_in >= 2 * 20
    assert metrics.nodes[CODE_NODE].cached_in == 0
    # HDMI shows both streams side by side, each with the label the app put on it.
    assert hdmi_streams == ("CAMERA_A", "CAMERA_B")
    assert {"camera CAMERA_A", "camera CAMERA_B"} <= labels
    assert frame is not None and frame.shape == (1080, 1920, 3)
    assert frame[:, :960].any() and frame[:, 960:].any()


def seconds(stream: dict[str, Any]) -> float:
    """A stream's time stamp, (seconds, microseconds), as seconds."""
    whole, micros = stream["time_stamp"]
    return float(whole) + float(micros) / 1e6


def test_a_paused_camera_stays_cached_beside_a_live_one_in_realtime(
    sdk_probe_project: Path, e2e_state_dir: Path
) -> None:
    appliance = two_camera_appliance(sdk_probe_project, e2e_state_dir, "realtime")
    seen = len(reports(appliance.logs(CODE_NODE), "batch"))
    settle = 0.5  # frames read this close to a pause or a resume may be handed out on either side of it

    def taken_between(start: float, end: float) -> list[dict[str, Any]]:
        """Batches whose new CAMERA_A frame was read between ``start`` and ``end`` (wall-clock seconds)."""
        return [
            batch for batch in batches_after(appliance, seen)
            if not batch["streams"][0]["cached"] and start < seconds(batch["streams"][0]) < end
        ]  # fmt: skip

    with appliance:
        wait_for(lambda: len(batches_after(appliance, seen)) >= 5, "5 batches")
        paused = time.time()  # camera time stamps are wall-clock times
        appliance.pause_camera("CAMERA_B")
        wait_for(
            lambda: len(taken_between(paused + settle, time.time() - settle)) >= 10,
            "10 batches while CAMERA_B is paused",
        )
        resumed = time.time()
        appliance.resume_camera("CAMERA_B")
        wait_for(
            lambda: sum(
                1 for batch in batches_after(appliance, seen)
                if not batch["streams"][1]["cached"] and seconds(batch["streams"][1]) > resumed
            ) >= 3,
            "new CAMERA_B frames after resume",
        )  # fmt: skip
        batches = batches_after(appliance, seen)
        metrics = appliance.metrics()
    first = batches[0]["streams"]
    assert [stream["id"] for stream in first] == ["CAMERA_A", "CAMERA_B"]
    assert [stream["cached"] for stream in first] == [False, False]  # never for the app's first frame
    for batch in batches:
        assert [stream["id"] for stream in batch["streams"]] == ["CAMERA_A", "CAMERA_B"]
        assert any(not stream["cached"] for stream in batch["streams"])  # get() waits for something new
    check_cached_rule(batches)
    # While CAMERA_B was paused it stayed in every batch, cached, with the time stamp of its last frame.
    while_paused = taken_between(paused + settle, resumed - settle)
    assert len(while_paused) >= 10
    assert all(batch["streams"][1]["cached"] is True for batch in while_paused)
    assert len({tuple(batch["streams"][1]["time_stamp"]) for batch in while_paused}) == 1
    assert seconds(while_paused[0]["streams"][1]) < paused + settle
    assert metrics.nodes[CODE_NODE].cached_in >= 10
    assert metrics.cameras["CAMERA_B"].paused is False
