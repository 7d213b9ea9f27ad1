"""Synthetic cameras: spec parsing, determinism, seeds, the people scene."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from emulator.errors import SourceError
from runtime.media import SyntheticSource, SyntheticSpec, open_source


@pytest.mark.parametrize(
    ("spec", "size", "fps"),
    [
        ("synthetic", (1920, 1080), 30.0),
        ("synthetic:1280x720@15", (1280, 720), 15.0),
        ("synthetic:640x360", (640, 360), 30.0),
        ("synthetic:@12.5", (1920, 1080), 12.5),
        ("synthetic:320x240@5?seed=2", (320, 240), 5.0),
        ("synthetic?scene=people&objects=2", (1920, 1080), 30.0),
    ],
)
def test_spec_gives_size_and_fps(spec: str, size: tuple[int, int], fps: float) -> None:
    with open_source(spec, name="cam") as source:
        assert source.size == size
        assert source.fps == fps
        assert source.uri == spec
        frame = source.read()
        assert frame.image.shape == (size[1], size[0], 3)
        assert frame.image.dtype == np.uint8


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("synthetic:abc", "expected synthetic[:WxH]"),
        ("synthetic:0x0", "16..8192"),
        ("synthetic:99999x10", "16..8192"),
        ("synthetic:640x480@0", "fps must be"),
        ("synthetic:640x480@fast", "expected synthetic[:WxH]"),
        ("synthetic:640x480@500", "fps must be"),
        ("synthetic?seed=x", "seed must be"),
        ("synthetic?scene=cats", "scene must be one of"),
        ("synthetic?objects=0", "objects must be"),
        ("synthetic?bogus=1", "unknown key 'bogus'"),
    ],
)
def test_bad_spec_is_one_line_naming_node_and_spec(spec: str, expected: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(spec, name="front_door")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("node front_door: ")
    assert spec in message
    assert expected in message


def test_same_spec_twice_gives_identical_frames() -> None:
    first = open_source("synthetic:640x360@30", name="cam")
    second = open_source("synthetic:640x360@30", name="cam")
    for _ in range(5):
        a, b = first.read(), second.read()
        assert a.index == b.index
        assert np.array_equal(a.image, b.image)


def test_frames_move() -> None:
    source = open_source("synthetic:640x360", name="cam")
    frames = [source.read().image for _ in range(3)]
    assert not np.array_equal(frames[0], frames[1])
    assert not np.array_equal(frames[1], frames[2])
    assert source.objects(0) != source.objects(1)


def test_seeds_and_names_make_cameras_differ() -> None:
    seeded_a = open_source("synthetic:640x360?seed=1", name="cam")
    seeded_b = open_source("synthetic:640x360?seed=2", name="cam")
    assert not np.array_equal(seeded_a.read().image, seeded_b.read().image)
    # Without a seed each camera node gets its own scene, fixed by its name.
    left = open_source("synthetic:640x360", name="left")
    right = open_source("synthetic:640x360", name="right")
    assert left.objects(0) != right.objects(0)
    # An explicit seed fixes the scene whatever the node is called.
    assert open_source("synthetic?seed=9", name="a").objects(4) == open_source(
        "synthetic?seed=9", name="b"
    ).objects(4)


def test_frame_k_is_the_same_in_separate_processes() -> None:
    """Nothing depends on per-process state such as Python's string hash seed."""
    script = (
        "import hashlib; from runtime.media import open_source;"
        "s = open_source('synthetic:320x180@30?scene=people', name='cam');"
        "print(hashlib.sha256(s.render(37).tobytes()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
        )
        digests.add(result.stdout.strip())
    here = open_source("synthetic:320x180@30?scene=people", name="cam").render(37)
    digests.add(hashlib.sha256(here.tobytes()).hexdigest())
    assert len(digests) == 1


def test_render_is_random_access_and_read_into_fills_the_buffer() -> None:
    source = open_source("synthetic:320x180", name="cam")
    expected = source.render(2)
    source.read()
    source.read()
    buffer = np.zeros((180, 320, 3), np.uint8)
    frame = source.read_into(buffer)
    assert frame.index == 2
    assert frame.image is buffer
    assert np.array_equal(buffer, expected)
    # A buffer of another shape is left alone and the frame comes in a new array.
    other = np.zeros((10, 10, 3), np.uint8)
    frame = source.read_into(other)
    assert frame.image is not other
    assert not other.any()
    assert np.array_equal(frame.image, source.render(3))


def test_fps_argument_overrides_the_spec() -> None:
    assert open_source("synthetic:320x180@30", fps=7).fps == 7


def test_canonical_spec_round_trips() -> None:
    spec = SyntheticSpec.parse("synthetic:320x240@15?seed=4&scene=people&objects=2")
    assert str(spec) == "synthetic:320x240@15?seed=4&scene=people&objects=2"
    assert SyntheticSpec.parse(str(spec)) == spec


def test_people_scene_bright_blobs_are_found_by_a_threshold_detector() -> None:
    source = SyntheticSource(
        SyntheticSpec.parse("synthetic:1280x720?scene=people&objects=3&seed=5"), name="cam"
    )
    for index in (0, 40, 81):
        image = source.render(index)
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        mask = (grey > 200).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        boxes = [tuple(stats[label, :4]) for label in range(1, count) if stats[label, cv2.CC_STAT_AREA] > 200]
        truth = source.objects(index)
        assert all(item.kind == "person" for item in truth)
        # Every blob found lies inside one of the true boxes (a head and body may be found apart or merged).
        for x, y, w, h in boxes:
            assert any(
                left <= x and top <= y and x + w <= right and y + h <= bottom
                for left, top, right, bottom in (item.box for item in truth)
            )
        # Every person has bright pixels, and nothing bright lies outside the people.
        for item in truth:
            left, top, right, bottom = item.box
            assert mask[top:bottom, left:right].any()
        outside = mask.copy()
        for item in truth:
            left, top, right, bottom = item.box
            outside[top:bottom, left:right] = 0
        assert not outside.any()


def test_shapes_scene_has_no_bright_pixels_outside_the_corner_text() -> None:
    source = open_source("synthetic:640x360?seed=3", name="cam")
    grey = cv2.cvtColor(source.read().image, cv2.COLOR_BGR2GRAY)
    grey[:40, :200] = 0  # the stream name and frame number
    assert grey.max() < 235


def test_corner_text_changes_with_the_frame_index() -> None:
    source = SyntheticSource(SyntheticSpec.parse("synthetic:640x360?objects=1&seed=1"), name="cam")
    # The one shape stays clear of the corner in these frames, so only the text can differ there.
    for index in (1, 2):
        left, top, _, _ = source.objects(index)[0].box
        assert left >= 150 or top >= 30
    first, second = source.render(1), source.render(2)
    assert not np.array_equal(first[:30, :150], second[:30, :150])
    assert np.array_equal(first[:30, :150], source.render(1)[:30, :150])
