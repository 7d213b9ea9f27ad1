"""A video file source limited to frames start..stop, every step-th: ``clip.mp4?start=2&stop=8&step=3``."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulator.errors import SourceError
from runtime.media import VideoFileSource, open_source


def grey_levels(spec: str, count: int) -> list[int]:
    """Frame i of the test clip is solid grey i * 20: give back the frame indices read."""
    with open_source(spec, name="cam") as source:
        assert isinstance(source, VideoFileSource)
        return [round(float(source.read().image.mean()) / 20) for _ in range(count)]


def test_start_stop_step_plays_that_window_in_a_loop(small_video: Path) -> None:
    assert grey_levels(f"{small_video}?start=2&stop=8&step=3", 5) == [2, 5, 2, 5, 2]


def test_start_alone_loops_back_to_start(small_video: Path) -> None:
    assert grey_levels(f"{small_video}?start=7", 5) == [7, 8, 9, 7, 8]


def test_step_alone_takes_every_nth_frame(small_video: Path) -> None:
    assert grey_levels(f"{small_video}?step=4", 4) == [0, 4, 8, 0]


def test_file_url_takes_the_window_too(small_video: Path) -> None:
    assert grey_levels(f"{small_video.as_uri()}?start=1&stop=3", 3) == [1, 2, 1]


def test_the_source_keeps_the_file_rate_and_the_spec_as_uri(small_video: Path) -> None:
    spec = f"{small_video}?start=1&step=2"
    with open_source(spec, name="cam") as source:
        assert source.uri == spec and source.fps == pytest.approx(12.0) and source.size == (160, 120)
        assert source.codec


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("start=20", "no frame at start=20"),
        ("start=5&stop=5", "start < stop"),
        ("step=0", "step >= 1"),
        ("start=x", "whole number"),
        ("speed=2", "unknown option 'speed'"),
    ],
)
def test_a_bad_window_is_one_line(small_video: Path, query: str, says: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(f"{small_video}?{query}", name="cam")
    message = str(caught.value)
    assert "\n" not in message and says in message and message.startswith("node cam: ")


def test_a_window_on_an_image_folder_is_refused(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(SourceError, match="apply to video files"):
        open_source(f"{tmp_path}?start=1", name="cam")
