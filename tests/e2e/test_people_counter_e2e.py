"""The people-counter sample end to end: built by the build stage, run on the synthetic people scene.

Through the Python API: after N frames the HDMI output carries the sample's labels and boxes, and its count
is in the app's storage. Through the CLI: ``panorama-emulator run --frames 30`` exits 0, writes a summary with
per-node figures and leaves a decodable ``last.png``; two runs against one device show the count the app
keeps in storage surviving the reboot between them.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from _e2e_helpers import public_tmp_dir

from emulator import Appliance

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "panorama-emulator")
PEOPLE = "synthetic?scene=people"
PEOPLE_IN_SCENE = 3  # the people scene's default number of moving people
FRAMES = 45
GREEN = np.array((0, 255, 0), np.uint8)  # HDMI rectangle outlines


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = public_tmp_dir("pe-e2e-people-")
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def test_hdmi_output_shows_the_people_counters_labels(people_counter_project: Path, state_dir: Path) -> None:
    appliance = Appliance(
        people_counter_project,
        device="people-api",
        state_dir=state_dir,
        cameras={"camera_node": PEOPLE},
        quiet=True,
    )
    with appliance:
        assert appliance.wait_for_frames(FRAMES, timeout=300)
        labels = appliance.hdmi.labels()
        frame = np.array(appliance.hdmi.last_frame, copy=True)
        metrics = appliance.metrics()
        count_file = appliance.storage_path / "people_count.json"
    assert "person" in labels  # the word next to every detection
    counts = sorted(int(label.split(": ")[1]) for label in labels if label.startswith("persons: "))
    assert counts, f"no 'persons: N' label among {sorted(labels)}"
    assert 1 <= counts[-1] <= PEOPLE_IN_SCENE
    # The boxes are drawn by HDMI from the app's add_rect: outlines of pure green.
    assert frame.shape == (1080, 1920, 3)
    assert int((frame == GREEN).all(axis=2).sum()) > 100
    # The count the app keeps in its storage (saved every 30 frames and at boot).
    saved = json.loads(count_file.read_text())
    assert saved["boots"] == 1 and saved["frames"] >= 30 and saved["detections"] > 0
    node = metrics.nodes["code_node"]
    assert node.frames_out >= FRAMES and node.restarts == 0


def test_cli_run_frames_writes_a_summary_a_snapshot_and_a_recording(
    people_counter_project: Path, state_dir: Path, tmp_path: Path
) -> None:
    summary_file = tmp_path / "summary.json"
    hdmi = tmp_path / "hdmi"
    result = subprocess.run(
        [CLI, "run", "--project", str(people_counter_project), "--frames", "30",
         "--summary-json", str(summary_file), "--hdmi-out", str(hdmi), "--state-dir", str(state_dir),
         "--device", "people-cli", "--camera", f"camera_node={PEOPLE}",
         "--hdmi-record", str(tmp_path / "hdmi.mp4")],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["app"] == "people-counter" and summary["mode"] == "lockstep"
    assert summary["frames"] >= 30
    node = summary["nodes"]["code_node"]
    assert isinstance(node["fps"], int | float) and node["fps"] > 0
    assert node["frames_out"] >= 30 and node["dropped"] == 0 and node["restarts"] == 0
    # One instance, ended by the shutdown's SIGTERM, on which the sample saves its count and exits 0.
    assert summary["exit_codes"] == {"code_node": [0]}
    last = hdmi / "last.png"
    assert last.is_file() and summary["paths"]["last_hdmi_frame"] == str(last)
    image = cv2.imread(str(last), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (1080, 1920, 3)
    assert int((image == GREEN).all(axis=2).sum()) > 100  # the people's boxes made it to the file
    assert Path(summary["paths"]["storage"], "people_count.json").is_file()
    # The recording holds every screen shown, full HD, decodable by OpenCV.
    assert summary["paths"]["hdmi_recording"] == str(tmp_path / "hdmi.mp4")
    video = cv2.VideoCapture(str(tmp_path / "hdmi.mp4"))
    try:
        recorded = 0
        while True:
            ok, frame = video.read()
            if not ok:
                break
            assert frame.shape == (1080, 1920, 3)
            recorded += 1
    finally:
        video.release()
    assert recorded >= 30


def test_cli_runs_show_the_count_surviving_a_reboot(people_counter_project: Path, tmp_path: Path) -> None:
    def run_frames(frames: int) -> tuple[int, int, int]:
        result = subprocess.run(
            [CLI, "run", "--project", str(people_counter_project), "--frames", str(frames),
             "--state-dir", str(tmp_path), "--device", "people-reboots", "--camera", f"camera_node={PEOPLE}",
             "--summary-json", str(tmp_path / "summary.json")],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        started = re.findall(
            r"^code_node \| people-counter: boot (\d+); kept in storage from earlier boots: (\d+) frames, "
            r"(\d+) detections$",
            result.stdout,
            re.M,
        )
        assert len(started) == 1, result.stdout
        stopping = r"^code_node \| people-counter: stopping; (\d+) frames counted"
        stopped = re.findall(stopping, result.stdout, re.M)
        assert stopped, result.stdout
        assert int(stopped[0]) >= int(started[0][1]) + frames
        boot, before, detections = (int(value) for value in started[0])
        return boot, before, detections

    assert run_frames(40)[:2] == (1, 0)
    boot, before, detections = run_frames(10)
    # Saved at the first run's SIGTERM, in storage, found by the second boot.
    assert boot == 2 and before >= 40 and detections > 0
    storage = Path(json.loads((tmp_path / "summary.json").read_text())["paths"]["storage"])
    count = json.loads((storage / "people_count.json").read_text())
    assert count["boots"] == 2 and count["frames"] >= before + 10
