"""Camera pacing: lockstep delivers every frame to every app in order; realtime runs at the cameras' fps."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Sequence

from runtime.bridge.frames import MAX_SLOTS
from runtime.bridge.testing import BridgeLab, app_plan, code_node, numbered_frames
from runtime.media.camera import ArraySource
from runtime.media.hdmi import HdmiSink
from runtime.media.overlay import Output

PRELUDE = """
import json, time
import numpy as np
import panoramasdk

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""

# Records, per batch, each stream's id, is_cached and the value of its pixels (the frame number).
RECORDER = """
node = panoramasdk.node()
batches = []
for _ in range({count}):
    streams = node.inputs.video_in.get(timeout=30)
    batches.append([[s.stream_id, s.is_cached, int(s.image[0, 0, 0])] for s in streams])
    node.outputs.video_out.put(streams)
result(batches)
"""


def src(body: str) -> str:
    """An app: the prelude, then ``body`` (dedented)."""
    return PRELUDE + textwrap.dedent(body)


class RecordingHdmi:
    """The real HDMI sink, remembering a digest of every screen it composed."""

    def __init__(self) -> None:
        self.sink = HdmiSink()
        self.screens: list[str] = []

    def show(self, outputs: Sequence[Output]) -> object:
        screen = self.sink.show(outputs)
        self.screens.append(hashlib.sha256(screen.tobytes()).hexdigest())
        return screen


def test_lockstep_delivers_every_frame_in_order_never_cached(lab: BridgeLab) -> None:
    runtime = lab.runtime(app_plan(code_node(cameras=("cam_a", "cam_b"))))
    done = lab.finish(lab.app(runtime, src(RECORDER.format(count=20))))
    assert done.returncode == 0, done.stderr
    assert done.result == [[["cam_a", False, i % 8], ["cam_b", False, 10 + i % 8]] for i in range(20)]
    metrics = runtime.metrics()
    assert metrics["nodes"]["code_node"]["frames_in"] == 40  # type: ignore[index]
    assert metrics["nodes"]["code_node"]["dropped"] == 0  # type: ignore[index]


def test_lockstep_runs_of_the_same_app_and_camera_show_identical_frames(lab: BridgeLab) -> None:
    app = src(
        """
        node = panoramasdk.node()
        for index in range(12):
            streams = node.inputs.video_in.get(timeout=30)
            image = streams[0].image
            level = int(image[:, :, 1].mean())
            image[index * 10 : index * 10 + 20, 40:80] = (0, 0, 255)   # drawn from the frame's content
            streams[0].add_label("level %d" % level, 0.05, 0.05)
            streams[0].add_rect(0.5, 0.5, 0.51 + level / 1000.0, 0.9)
            node.outputs.video_out.put(streams)
        result("done")
        """
    )
    screens = []
    for _ in range(2):
        frames = numbered_frames(5, size=(640, 360))
        for index, frame in enumerate(frames):
            frame[:, :, 1] = (index * 37) % 256
        hdmi = RecordingHdmi()
        runtime = lab.runtime(cameras={"camera_node": ArraySource(frames, name="camera_node")}, hdmi=hdmi)
        assert lab.finish(lab.app(runtime, app)).result == "done"
        runtime.stop()
        screens.append(hdmi.screens)
    assert len(screens[0]) == 12
    assert len(set(screens[0])) > 1
    assert screens[0] == screens[1]


def test_realtime_gives_a_stream_without_a_new_frame_as_cached(lab: BridgeLab) -> None:
    cameras = {
        "fast_cam": ArraySource(numbered_frames(8), name="fast_cam", fps=30),
        "slow_cam": ArraySource(numbered_frames(8, offset=100), name="slow_cam", fps=4),
    }
    runtime = lab.runtime(app_plan(code_node(cameras=tuple(cameras))), cameras=cameras, mode="realtime")
    done = lab.finish(lab.app(runtime, src(RECORDER.format(count=45))))
    assert done.returncode == 0, done.stderr
    batches = done.result
    assert isinstance(batches, list)
    assert [cached for _, cached, _ in batches[0]] == [False, False]  # first frame never cached
    previous: dict[str, int] = {}
    cached_count = {"fast_cam": 0, "slow_cam": 0}
    for batch in batches:
        assert [stream for stream, _, _ in batch] == ["fast_cam", "slow_cam"]
        assert any(not cached for _, cached, _ in batch)  # a get returns when something is new
        for stream, cached, value in batch:
            if cached:
                cached_count[stream] += 1
                assert value == previous[stream]  # the same frame handed out again
            elif stream in previous:
                assert value != previous[stream]
            previous[stream] = value
    assert cached_count["slow_cam"] > 30
    assert cached_count["slow_cam"] > cached_count["fast_cam"]


def test_realtime_counts_the_frames_a_slow_app_drops(lab: BridgeLab) -> None:
    camera = ArraySource(numbered_frames(8), name="camera_node", fps=50)
    runtime = lab.runtime(cameras={"camera_node": camera}, mode="realtime")
    app = src(
        """
        node = panoramasdk.node()
        values = []
        for _ in range(8):
            streams = node.inputs.video_in.get(timeout=30)
            values.append(int(streams[0].image[0, 0, 0]))
            time.sleep(0.15)   # far slower than the camera
            node.outputs.video_out.put(streams)
        result(values)
        """
    )
    done = lab.finish(lab.app(runtime, app))
    assert done.returncode == 0, done.stderr
    metrics = runtime.metrics()
    node = metrics["nodes"]["code_node"]  # type: ignore[index]
    camera_figures = metrics["cameras"]["camera_node"]  # type: ignore[index]
    assert node["dropped"] > 0
    assert camera_figures["frames_dropped"] == node["dropped"]
    assert camera_figures["frames_produced"] > node["frames_in"] + node["dropped"] - 3
    assert node["frames_in"] == 8


def test_the_camera_never_overwrites_frames_the_app_still_holds(lab: BridgeLab) -> None:
    camera = ArraySource(numbered_frames(200), name="camera_node", fps=120)
    runtime = lab.runtime(cameras={"camera_node": camera}, mode="realtime")
    app = src(
        """
        node = panoramasdk.node()
        kept = []          # the app keeps the last 6 images without copying them
        damaged = 0
        for _ in range(60):
            stream = node.inputs.video_in.get(timeout=30)[0]
            kept.append((int(stream.image[0, 0, 0]), stream.image))
            kept = kept[-6:]
            time.sleep(0.01)
            damaged += sum(1 for value, image in kept if not (image == value).all())
        result(damaged)
        """
    )
    done = lab.finish(lab.app(runtime, app))
    assert done.returncode == 0, done.stderr
    assert done.result == 0
    assert len(runtime.slot_ids) <= MAX_SLOTS


def test_a_paused_camera_stays_cached_while_the_others_run(lab: BridgeLab) -> None:
    cameras = {
        "cam_a": ArraySource(numbered_frames(8), name="cam_a", fps=30),
        "cam_b": ArraySource(numbered_frames(8, offset=50), name="cam_b", fps=30),
    }
    runtime = lab.runtime(app_plan(code_node(cameras=tuple(cameras))), cameras=cameras, mode="realtime")
    app = src(
        """
        import sys
        node = panoramasdk.node()
        node.inputs.video_in.get(timeout=30)
        print("first", flush=True)
        sys.stdin.readline()
        batches = []
        for _ in range(10):
            streams = node.inputs.video_in.get(timeout=30)
            batches.append([[s.stream_id, s.is_cached, int(s.image[0, 0, 0])] for s in streams])
        result(batches)
        """
    )
    process = lab.app(runtime, app, stdin=True)
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline() == b"first\n"
    runtime.pause_camera("cam_b")
    assert runtime.metrics()["cameras"]["cam_b"]["paused"] is True  # type: ignore[index]
    process.stdin.write(b"go\n")
    process.stdin.flush()
    done = lab.finish(process)
    assert done.returncode == 0, done.stderr
    batches = done.result
    assert isinstance(batches, list)
    # Frames cam_b queued before the pause are held back too: it is only ever cached, cam_a never.
    assert [batch[1][1] for batch in batches] == [True] * 10
    assert [batch[0][1] for batch in batches] == [False] * 10
