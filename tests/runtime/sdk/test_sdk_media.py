"""panoramasdk.media: one per camera, pixels in shared memory, drawings and overlays on the HDMI output."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from runtime.bridge.testing import BridgeLab, app_plan, code_node, numbered_frames
from runtime.media.camera import ArraySource
from runtime.media.hdmi import HdmiSink

PRELUDE = """
import json
import numpy as np
import panoramasdk

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""


def src(body: str) -> str:
    """An app: the prelude, then ``body`` (dedented)."""
    return PRELUDE + textwrap.dedent(body)


def test_get_returns_one_media_per_camera_with_its_stream_id(lab: BridgeLab) -> None:
    runtime = lab.runtime(app_plan(code_node(cameras=("front_door", "back_door"))))
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            streams = node.inputs.video_in.get(timeout=30)
            described = []
            for stream in streams:
                image = stream.image
                described.append({
                    "stream_id": stream.stream_id,
                    "stream_uri": stream.stream_uri,
                    "time_stamp": [type(x).__name__ for x in (stream.time_stamp, *stream.time_stamp)],
                    "is_cached": stream.is_cached,
                    "shape": list(image.shape),
                    "dtype": str(image.dtype),
                    "writable": bool(image.flags.writeable),
                    "pixel": int(image[5, 5, 0]),
                })
            result(described)
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [
        {
            "stream_id": "front_door",
            "stream_uri": "array://front_door",
            "time_stamp": ["tuple", "int", "int"],
            "is_cached": False,
            "shape": [240, 320, 3],
            "dtype": "uint8",
            "writable": True,
            "pixel": 0,
        },
        {
            "stream_id": "back_door",
            "stream_uri": "array://back_door",
            "time_stamp": ["tuple", "int", "int"],
            "is_cached": False,
            "shape": [240, 320, 3],
            "dtype": "uint8",
            "writable": True,
            "pixel": 10,
        },
    ]


def test_time_stamp_is_the_frame_time_in_seconds_and_microseconds(lab: BridgeLab) -> None:
    source = ArraySource(numbered_frames(2), name="camera_node", clock=lambda: 1700000000.25)
    runtime = lab.runtime(cameras={"camera_node": source})
    app = lab.app(
        runtime,
        src(
            """
            streams = panoramasdk.node().inputs.video_in.get(timeout=30)
            result(list(streams[0].time_stamp))
            """
        ),
    )
    assert lab.finish(app).result == [1700000000, 250000]


def test_what_the_app_draws_on_the_image_appears_on_hdmi_with_labels_and_rects(lab: BridgeLab) -> None:
    hdmi = HdmiSink()
    runtime = lab.runtime(hdmi=hdmi)
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            streams = node.inputs.video_in.get(timeout=30)
            image = streams[0].image
            image[:, :, :] = 0
            image[:120, :160] = (255, 255, 255)   # top-left quarter white, drawn in place
            streams[0].add_label("people: 3", 0.55, 0.8)
            streams[0].add_rect(0.6, 0.6, 0.9, 0.9)
            node.outputs.video_out.put(streams)
            result("ok")
            """
        ),
    )
    assert lab.finish(app).result == "ok"
    assert runtime.wait_for_outputs(1, 30)
    screen = hdmi.last_frame
    assert screen is not None and screen.shape == (1080, 1920, 3)
    # A 320x240 (4:3) frame fills the 1920x1080 screen's height: 1440 wide, centred (240 px bars).
    assert screen[100, 240 + 100].tolist() == [255, 255, 255]
    assert screen[900, 240 + 200].tolist() == [0, 0, 0]
    assert "people: 3" in hdmi.labels()
    assert (
        screen[int(0.6 * 1080) : int(0.9 * 1080), 240 + int(0.6 * 1440) : 240 + int(0.9 * 1440)] > 0
    ).any()
    hdmi.close()


def test_a_replaced_image_is_shown_whatever_its_size(lab: BridgeLab) -> None:
    hdmi = HdmiSink()
    runtime = lab.runtime(hdmi=hdmi)
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            streams = node.inputs.video_in.get(timeout=30)
            streams[0].image = np.full((240, 320, 3), 200, np.uint8)  # same size: into the slot
            node.outputs.video_out.put(streams)
            streams = node.inputs.video_in.get(timeout=30)
            streams[0].image = np.full((90, 160, 3), (0, 0, 255), np.uint8)  # another size: as is
            node.outputs.video_out.put(streams)
            result("ok")
            """
        ),
    )
    assert lab.finish(app).result == "ok"
    assert runtime.wait_for_outputs(2, 30)
    screen = hdmi.last_frame
    assert screen is not None
    assert screen[540, 960].tolist() == [0, 0, 255]
    hdmi.close()


def test_add_label_and_add_rect_clamp_and_normalise_instead_of_raising(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
            stream = panoramasdk.node().inputs.video_in.get(timeout=30)[0]
            attempts = {
                "rect ok": (stream.add_rect, (0.0, 0.1, 1.0, 0.9)),
                "rect numpy": (stream.add_rect, (np.float32(0.25), 0.125, np.float64(0.5), np.array(0.5))),
                "rect right>1": (stream.add_rect, (0.1, 0.1, 1.2, 0.5)),
                "rect left<0": (stream.add_rect, (-0.1, 0.1, 0.5, 0.5)),
                "rect left=right": (stream.add_rect, (0.5, 0.1, 0.5, 0.5)),
                "rect top>bottom": (stream.add_rect, (0.1, 0.6, 0.5, 0.5)),
                "rect inverted and out": (stream.add_rect, (1.5, 2.0, -1.0, float("-inf"))),
                "rect nan": (stream.add_rect, (float("nan"), 0.1, 0.5, 0.5)),
                "rect text": (stream.add_rect, ("a", 0.1, 0.5, 0.5)),
                "rect none": (stream.add_rect, (None, 0.1, 0.5, 0.5)),
                "label ok": (stream.add_label, ("hi", 0.0, 1.0)),
                "label x>1": (stream.add_label, ("x", 1.5, 0.5)),
                "label y<0": (stream.add_label, ("y", 0.5, -0.01)),
                "label nan": (stream.add_label, ("nan", float("nan"), 0.5)),
            }
            outcome = {}
            for name, (method, args) in attempts.items():
                try:
                    method(*args)
                    outcome[name] = "ok"
                except Exception as error:
                    outcome[name] = type(error).__name__
            item, _ = stream._wire()
            result({"outcome": outcome, "rects": item["rects"], "labels": item["labels"]})
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {
        "outcome": {
            "rect ok": "ok",
            "rect numpy": "ok",
            "rect right>1": "ok",
            "rect left<0": "ok",
            "rect left=right": "ok",
            "rect top>bottom": "ok",
            "rect inverted and out": "ok",
            "rect nan": "ok",
            "rect text": "TypeError",
            "rect none": "TypeError",
            "label ok": "ok",
            "label x>1": "ok",
            "label y<0": "ok",
            "label nan": "ok",
        },
        "rects": [
            [0.0, 0.1, 1.0, 0.9],
            [0.25, 0.125, 0.5, 0.5],
            [0.1, 0.1, 1.0, 0.5],
            [0.0, 0.1, 0.5, 0.5],
            [0.5, 0.1, 0.5, 0.5],
            [0.1, 0.5, 0.5, 0.6],
            [0.0, 0.0, 1.0, 1.0],
        ],
        "labels": [["hi", 0.0, 1.0], ["x", 1.0, 0.5], ["y", 0.5, 0.0]],
    }
    notes = [line for line in done.stderr.splitlines() if line.startswith("panoramasdk: ")]
    # One note per kind of problem: rect outside, rect inverted, rect NaN, label outside, label NaN.
    assert len(notes) == 5, done.stderr
    assert sum("add_rect(" in note and "clamped" in note for note in notes) == 1
    assert sum("add_rect(" in note and "inverted" in note for note in notes) == 1
    assert sum("add_label(" in note and "clamped" in note for note in notes) == 1
    assert sum("not a number" in note for note in notes) == 2
    assert "add_rect(left=0.1, top=0.1, right=1.2, bottom=0.5)" in done.stderr


def test_overlays_outside_the_image_are_drawn_clamped_and_noted_once_over_many_frames(
    lab: BridgeLab,
) -> None:
    hdmi = HdmiSink()
    runtime = lab.runtime(hdmi=hdmi)
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            for index in range(6):
                streams = node.inputs.video_in.get(timeout=30)
                streams[0].image[:, :, :] = 0
                # A box computed from model output that leaves the image on every side, upside down.
                streams[0].add_rect(1.25, 1.5 + index, -0.5, -0.25)
                streams[0].add_label("count", 0.1, 0.1 + 0.4 * index)
                node.outputs.video_out.put(streams)
            result("ok")
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0 and done.result == "ok", done.stderr
    assert runtime.wait_for_outputs(6, 30)
    screen = hdmi.last_frame
    assert screen is not None
    # The 320x240 frame fills the screen's height, 1440 wide from x=240: the clamped box is its outline.
    green = [0, 255, 0]
    assert screen[540, 240].tolist() == green and screen[540, 240 + 1439].tolist() == green
    assert screen[0, 960].tolist() == green and screen[1079, 960].tolist() == green
    assert screen[540, 960].tolist() == [0, 0, 0]
    notes = [line for line in done.stderr.splitlines() if line.startswith("panoramasdk: ")]
    assert len(notes) == 3, done.stderr  # rect outside, rect inverted, label outside: once each
    hdmi.close()


@pytest.mark.parametrize("size", [(1920, 1080)])
def test_full_hd_frames_cross_without_copies_and_keep_their_pixels(
    lab: BridgeLab, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(3)
    frames = [rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8) for _ in range(3)]
    runtime = lab.runtime(cameras={"camera_node": ArraySource(frames, name="camera_node")})
    app = lab.app(
        runtime,
        src(
            """
            import hashlib
            node = panoramasdk.node()
            digests = []
            for _ in range(6):
                streams = node.inputs.video_in.get(timeout=30)
                image = streams[0].image
                digests.append([hashlib.sha256(image.tobytes()).hexdigest(), image.base is not None])
                node.outputs.video_out.put(streams)
            result(digests)
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    import hashlib

    expected = [hashlib.sha256(frames[index % 3].tobytes()).hexdigest() for index in range(6)]
    assert [digest for digest, _ in done.result] == expected  # type: ignore[union-attr]
    assert all(is_view for _, is_view in done.result)  # type: ignore[union-attr]
