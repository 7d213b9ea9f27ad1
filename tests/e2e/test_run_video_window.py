"""`run` with a video file window (``clip.mp4?start=..&stop=..&step=..``) and ``--hdmi-out DIR --every K``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "panorama-emulator")


def write_clip(path: Path, count: int) -> Path:
    """Frame i is solid grey i * 20 (160x120, 12 fps)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 12.0, (160, 120))
    assert writer.isOpened()
    for index in range(count):
        writer.write(np.full((120, 160, 3), index * 20, np.uint8))
    writer.release()
    return path


def test_run_plays_the_window_and_keeps_every_kth_screen(
    people_counter_project: Path, tmp_path: Path
) -> None:
    clip = write_clip(tmp_path / "clip.mp4", 10)
    hdmi = tmp_path / "hdmi"
    result = subprocess.run(
        [
            CLI,
            "run",
            "--project",
            str(people_counter_project),
            "--state-dir",
            str(tmp_path / "state"),
            "--camera",
            f"camera_node={clip}?start=2&stop=8&step=3",
            "--frames",
            "6",
            "--hdmi-out",
            str(hdmi),
            "--every",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr
    kept = sorted(path.name for path in hdmi.glob("hdmi-*.png"))
    assert kept == ["hdmi-000002.png", "hdmi-000004.png", "hdmi-000006.png"]
    # The window is frames 2 and 5 in a loop: screens 2, 4 and 6 show frame 5 (grey 100).
    for name in kept:
        image = cv2.imread(str(hdmi / name))
        assert abs(float(np.median(image)) - 100) < 15, name  # frame 2 would be 40
    assert (hdmi / "last.png").is_file()


def test_every_without_hdmi_out_is_refused(people_counter_project: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [CLI, "run", "--project", str(people_counter_project), "--frames", "1", "--every", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "--hdmi-out" in result.stderr
