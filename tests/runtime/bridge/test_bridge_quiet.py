"""The quiet point of a lockstep run: held cameras, and the bridge knowing when each app waits in get()."""

from __future__ import annotations

import textwrap
from pathlib import Path

from runtime.bridge.runtime import Runtime
from runtime.bridge.testing import BridgeLab, app_plan, code_node

# Takes frames for ever; after each put it finishes its work and then saves how many frames it has done.
COUNTER = """
import os, time
import panoramasdk

node = panoramasdk.node()
done = 0
while True:
    streams = node.inputs.video_in.get()
    done += 1
    if done % {every} == 0:
        node.outputs.video_out.put(streams)
    time.sleep(0.02)  # the rest of the frame's work, after the put
    with open({path!r} + ".tmp", "w") as file:
        file.write(str(done))
    os.replace({path!r} + ".tmp", {path!r})
"""

# Takes {count} frames, then never asks for another.
STOPS = """
import time
import panoramasdk

node = panoramasdk.node()
for _ in range({count}):
    node.outputs.video_out.put(node.inputs.video_in.get())
while True:
    time.sleep(1)
"""


def counter(path: Path, every: int = 1) -> str:
    """The counting app, saving to ``path`` and putting one output every ``every`` frames."""
    return textwrap.dedent(COUNTER).format(path=str(path), every=every)


def produced(runtime: Runtime) -> int:
    """Frames the camera made in this boot."""
    cameras = runtime.metrics()["cameras"]
    assert isinstance(cameras, dict)
    return int(cameras["camera_node"]["frames_produced"])


def test_held_cameras_stop_at_frame_n_and_the_app_is_quiet_once_it_asks_for_the_next(
    lab: BridgeLab, tmp_path: Path
) -> None:
    runtime = lab.runtime()
    runtime.hold_frames(5)
    assert runtime.busy_nodes() == ["code_node"]  # starts at boot and has not connected: not quiet yet
    done = tmp_path / "frames_done"
    lab.app(runtime, counter(done))
    assert runtime.wait_for_outputs(5, 60)
    assert runtime.wait_for_quiet(60)
    assert runtime.busy_nodes() == []
    # Quiet means the app finished frame 5: it saved its count and asked for frame 6, which never came.
    assert done.read_text() == "5"
    assert runtime.frames_out == 5 and produced(runtime) == 5


def test_a_moved_hold_gives_exactly_the_frames_asked_for(lab: BridgeLab, tmp_path: Path) -> None:
    runtime = lab.runtime()
    done = tmp_path / "frames_done"
    lab.app(runtime, counter(done))
    for n in (2, 3, 7):
        runtime.hold_frames(n)
        assert runtime.wait_for_outputs(n, 60) and runtime.wait_for_quiet(60)
        assert runtime.frames_out == n and done.read_text() == str(n)


def test_released_cameras_run_on(lab: BridgeLab, tmp_path: Path) -> None:
    runtime = lab.runtime()
    runtime.hold_frames(2)
    lab.app(runtime, counter(tmp_path / "frames_done"))
    assert runtime.wait_for_outputs(2, 60) and runtime.wait_for_quiet(60)
    runtime.release_frames()
    assert runtime.wait_for_outputs(10, 60)


def test_an_app_that_puts_every_other_frame_gets_the_frames_its_outputs_need(
    lab: BridgeLab, tmp_path: Path
) -> None:
    runtime = lab.runtime()
    runtime.hold_frames(3)
    done = tmp_path / "frames_done"
    lab.app(runtime, counter(done, every=2))
    assert runtime.wait_for_outputs(3, 60) and runtime.wait_for_quiet(60)
    assert runtime.frames_out == 3 and done.read_text() == "6" and produced(runtime) == 6


def test_an_app_that_stops_asking_is_busy_until_it_exits(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    runtime.hold_frames(3)
    app = lab.app(runtime, textwrap.dedent(STOPS).format(count=3))
    assert runtime.wait_for_outputs(3, 60)
    assert not runtime.wait_for_quiet(0.5)
    assert runtime.busy_nodes() == ["code_node"]
    app.kill()
    app.communicate()
    assert runtime.wait_for_quiet(60)  # gone counts as quiet: its session ended
    assert runtime.busy_nodes() == []


def test_a_node_that_does_not_start_at_boot_is_quiet_until_it_connects(
    lab: BridgeLab, tmp_path: Path
) -> None:
    runtime = lab.runtime(app_plan(code_node("boot_node"), code_node("later_node", launch="onDemand")))
    runtime.hold_frames(4)
    lab.app(runtime, counter(tmp_path / "frames_done"), node="boot_node")
    assert runtime.wait_for_outputs(4, 60) and runtime.wait_for_quiet(60)
    assert runtime.frames_out == 4


def test_realtime_cameras_are_never_held(lab: BridgeLab, tmp_path: Path) -> None:
    runtime = lab.runtime(mode="realtime")
    runtime.hold_frames(1)
    lab.app(runtime, counter(tmp_path / "frames_done"))
    assert runtime.wait_for_outputs(5, 60)
