"""Smoke tests of the people detector, run on panorama-emulator with its pytest plugin.

    pip install panorama-emulator onnx && pytest tests/

The plugin builds the container asset when it is missing and boots the app; conftest.py makes the model
asset when it is missing and puts the synthetic people scene on the camera. Each test gets a fresh device
storage.
"""

import json

MODEL_NODE = "people_detector_model"


def test_marks_people_on_the_hdmi_output(panorama_app):
    panorama_app.run_frames(30)
    labels = panorama_app.hdmi.labels()
    assert "person" in labels
    counts = [int(label.split(": ")[1]) for label in labels if label.startswith("people: ")]
    assert counts and max(counts) >= 2, sorted(labels)
    assert panorama_app.hdmi.last_frame.shape == (1080, 1920, 3)


def test_every_frame_goes_through_the_model_node(panorama_app):
    frames = panorama_app.run_frames(20)
    metrics = panorama_app.metrics()
    model = metrics.models[MODEL_NODE]
    assert model.calls >= frames >= 20
    assert model.errors == 0
    assert 0 < model.p50_ms <= model.p99_ms
    assert metrics.nodes["code_node"].model_calls >= 20


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
    assert after["detections"] >= first["detections"]
    assert panorama_app.boots == 3


def test_logs_its_detections(panorama_app):
    panorama_app.run_frames(5)
    app_log = (panorama_app.logs_path() / "app.log").read_text()
    assert "people detector started: model node people_detector_model" in app_log
    assert 'detections {"frame": 0, "stream": "camera_node", "people": [[' in app_log
