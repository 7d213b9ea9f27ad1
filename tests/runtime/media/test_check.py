"""``camera check``: open sources as the emulator would and report what they give, passwords hidden."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from _media_helpers import MjpegServer

from runtime.media.check import check_source

EMULATOR = str(Path(sys.executable).with_name("panorama-emulator"))


def test_check_a_video_file(small_video: Path) -> None:
    report = check_source(str(small_video), frames=5)
    assert report.ok and report.kind == "video" and (report.width, report.height) == (160, 120)
    assert report.fps == 12.0 and report.codec.lower() in {"mp4v", "fmp4"} and report.frames == 5
    assert report.first_frame_ms > 0 and report.measured_fps > 0


def test_check_an_image_folder(tmp_path: Path) -> None:
    for index in range(3):
        cv2.imwrite(str(tmp_path / f"{index}.jpg"), np.full((48, 64, 3), index * 40, np.uint8))
    cv2.imwrite(str(tmp_path / "3.png"), np.zeros((48, 64, 3), np.uint8))
    report = check_source(str(tmp_path), frames=4)
    assert report.ok and report.kind == "images" and (report.width, report.height) == (64, 48)
    assert report.codec == "jpg/png" and report.fps == 30.0


def test_check_an_mjpeg_stream_hides_the_password(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server()
    url = server.url().replace("http://", "http://viewer:s3cret@")
    result = subprocess.run(
        [EMULATOR, "camera", "check", url, "--json", "--frames", "10"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr
    [report] = json.loads(result.stdout)
    assert report["ok"] and report["kind"] == "stream" and (report["width"], report["height"]) == (160, 120)
    assert report["source"].startswith("http://viewer:***@") and report["codec"].lower() in {"mjpg", "mjpeg"}
    assert report["frames"] == 10 and report["measured_fps"] > 0


def test_check_reports_a_source_that_does_not_open(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.mp4"
    result = subprocess.run(
        [EMULATOR, "camera", "check", str(missing), "rtsp://u:pw@127.0.0.1:1/x", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 2 and all("FAILED" in line for line in lines)
    assert "pw" not in result.stdout.replace("rtsp://u:***@", "")
