"""Smoke tests of the people counter, run on panorama-emulator with its pytest plugin.

    pip install panorama-emulator && pytest tests/

The plugin builds the container asset when it is missing, boots the app on a synthetic camera whose scene
has moving people, and gives each test a fresh device storage.
"""

import json


def test_marks_people_on_the_hdmi_output(panorama_app):
    panorama_app.run_frames(30)
    labels = panorama_app.hdmi.labels()
    assert "person" in labels
    assert any(label.startswith("persons: ") and label != "persons: 0" for label in labels)
    assert panorama_app.hdmi.last_frame.shape == (1080, 1920, 3)


def test_count_survives_reboot_and_power_cut(panorama_app):
    panorama_app.run_frames(31)  # the count is saved every 30 frames
    count_file = panorama_app.storage("people_count.json")
    first = json.loads(count_file.read_text())
    assert first["boots"] == 1 and first["frames"] >= 30 and first["detections"] > 0

    panorama_app.reboot()
    panorama_app.run_frames(1)
    assert json.loads(count_file.read_text())["boots"] == 2

    panorama_app.power_cut()
    panorama_app.run_frames(1)
    after = json.loads(count_file.read_text())
    assert after["boots"] == 3 and after["frames"] >= first["frames"]
    assert panorama_app.boots == 3


def test_logs_what_it_does(panorama_app):
    panorama_app.run_frames(5)
    app_log = panorama_app.logs_path() / "app.log"
    assert "people counter started" in app_log.read_text()
