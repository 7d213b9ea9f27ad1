"""Smoke tests of the HOG people detector, run on panorama-emulator with its pytest plugin.

    pip install panorama-emulator && pytest tests/

The plugin builds the container asset when it is missing, boots the app on a synthetic camera and gives each
test a fresh device storage. The detector is OpenCV's, loaded by the app inside its own container.
"""

import json
import re

import pytest

HOG_LABEL = re.compile(r"^HOG people: (\d+) \((\d+) ms\)$")
PERSON_LABEL = re.compile(r"^person \d+\.\d\d$")


def test_frames_go_through_with_the_hog_label(panorama_app):
    panorama_app.run_frames(10)
    labels = [label for label in panorama_app.hdmi.labels() if HOG_LABEL.match(label)]
    assert labels, panorama_app.hdmi.labels()
    assert panorama_app.hdmi.last_frame.shape == (1080, 1920, 3)
    node = panorama_app.metrics().nodes["code_node"]
    assert node.frames_out >= 10 and node.restarts == 0


class TestOnThePeopleScene:
    @pytest.fixture
    def panorama_cameras(self):
        """The synthetic camera's scene of upright figures, which the HOG detector takes for people."""
        return {"camera_node": "synthetic?scene=people"}

    def test_marks_the_people_it_finds(self, panorama_app):
        panorama_app.run_frames(20)
        labels = panorama_app.hdmi.labels()
        counts = [int(HOG_LABEL.match(label).group(1)) for label in labels if HOG_LABEL.match(label)]
        assert counts and max(counts) >= 1, labels
        assert any(PERSON_LABEL.match(label) for label in labels), labels
        found = json.loads(panorama_app.storage("hog_people.json").read_text())
        assert found["frames"] >= 10 and found["detections"] >= 1


def test_frame_count_survives_reboot_and_power_cut(panorama_app):
    panorama_app.run_frames(11)  # the count is saved every 10 frames
    count_file = panorama_app.storage("hog_people.json")
    first = json.loads(count_file.read_text())
    assert first["boots"] == 1 and first["frames"] >= 10

    panorama_app.reboot()  # graceful: the app saves its count when it is stopped
    panorama_app.run_frames(1)
    second = json.loads(count_file.read_text())
    assert second["boots"] == 2 and second["frames"] >= 11

    panorama_app.power_cut()  # no chance to save: the count is the last one written
    panorama_app.run_frames(1)
    after = json.loads(count_file.read_text())
    assert after["boots"] == 3 and after["frames"] >= second["frames"]
    assert panorama_app.boots == 3


def test_logs_that_it_loaded_its_model(panorama_app):
    panorama_app.run_frames(2)
    app_log = (panorama_app.logs_path() / "app.log").read_text()
    assert "HOG people detector loaded in" in app_log
    assert "detection width 640" in app_log
