"""Every panoramasdk behaviour an app relies on, seen from inside a real sandbox on the real appliance.

The SDK probe (built by the build stage, unpacked into a read-only rootfs, run under bubblewrap with the
bridge) reports what the SDK gave it; these tests assert on those reports and on the HDMI output's pixels.
One boot serves the whole module: the probe's parameters, error cases and first frames, then a paused camera
(``get(timeout)`` times out) and a resumed one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _e2e_helpers import CODE_NODE, probe_appliance, reports, wait_for_report

from emulator.device.figures import DeviceStatus

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

MARKER = (255, 0, 255)  # what the probe paints into every frame (BGR)
MARKER_CENTRE = (540, 960)  # row, column of the painted box's centre (the camera is 1920x1080, as HDMI)
RECT_ROW, RECT_COLUMN = 271, 960  # on the outline of the probe's rect (0.25, 0.25, 0.75, 0.75), 3 px thick
GREEN = (0, 255, 0)
SDK_LABEL = "e2e-sdk-label"


@dataclass
class ProbeRun:
    """What one boot of the probe in ``sdk`` mode showed."""

    params: dict[str, Any]
    errors: dict[str, Any]
    first: dict[str, Any]
    frames: dict[str, Any]
    timeout: dict[str, Any]
    resumed: dict[str, Any]
    paused_metric: bool
    hdmi_frame: np.ndarray
    hdmi_labels: set[str]
    hdmi_streams: tuple[str, ...]
    camera_uri: str
    outputs_after_resume: int
    outputs_at_resume: int
    status: DeviceStatus


@pytest.fixture(scope="module")
def probe(sdk_probe_project: Path, e2e_state_dir: Path) -> Iterator[ProbeRun]:
    appliance = probe_appliance(sdk_probe_project, e2e_state_dir, "sdk")
    with appliance:
        (frames,) = wait_for_report(appliance, "frames")
        assert appliance.wait_for_frames(20, timeout=180)
        hdmi_frame = np.array(appliance.hdmi.last_frame, copy=True)
        hdmi_streams = tuple(appliance.hdmi.streams)
        appliance.release_frames()  # lockstep holds the cameras after the frames asked for

        appliance.pause_camera("camera_node")
        metrics = appliance.metrics()
        paused_metric = metrics.cameras["camera_node"].paused
        (timeout,) = wait_for_report(appliance, "timeout")[:1]
        appliance.resume_camera("camera_node")
        (resumed,) = wait_for_report(appliance, "resumed")
        at_resume = appliance.metrics().frames_out
        assert appliance.wait_for_frames(at_resume + 10, timeout=180)
        after = appliance.metrics().frames_out

        log = appliance.logs(CODE_NODE)
        (params,) = reports(log, "params")
        (errors,) = reports(log, "errors")
        (first,) = reports(log, "first")
        yield ProbeRun(
            params=params,
            errors=errors,
            first=first,
            frames=frames,
            timeout=timeout,
            resumed=resumed,
            paused_metric=paused_metric,
            hdmi_frame=hdmi_frame,
            hdmi_labels=appliance.hdmi.labels(),
            hdmi_streams=hdmi_streams,
            camera_uri=metrics.cameras["camera_node"].uri,
            outputs_after_resume=after,
            outputs_at_resume=at_resume,
            status=appliance.status(),
        )


# --- parameters -------------------------------------------------------------------------------------------


def test_parameters_arrive_typed_by_their_port(probe: ProbeRun) -> None:
    params = probe.params
    # The graph's float32 node holds the JSON integer 20: the app gets a float.
    assert params["threshold"] == {"type": "float", "value": 20.0}
    assert params["count"] == {"type": "int", "value": 7}
    assert params["flag"] == {"type": "bool", "value": True}
    assert params["title"] == {"type": "str", "value": "probe"}
    assert params["mode"] == {"type": "str", "value": "sdk"}


def test_an_unconnected_parameter_port_gives_its_default(probe: ProbeRun) -> None:
    assert probe.params["fallback"] == {"type": "float", "value": 0.25}


def test_ports_work_without_super_init(probe: ProbeRun) -> None:
    params = probe.params
    assert params["is_node"] is True
    assert params["inputs"] == ["count", "fallback", "flag", "mode", "threshold", "title", "video_in"]
    assert params["outputs"] == ["video_out"]


def test_environment_is_the_descriptors_only(probe: ProbeRun) -> None:
    assert probe.params["descriptor_env"] == "descriptor-value"
    assert probe.params["dockerfile_env"] is None


# --- error cases ------------------------------------------------------------------------------------------


def test_put_of_an_empty_list_raises_value_error(probe: ProbeRun) -> None:
    for case in ("put_empty", "put_empty_tuple"):
        outcome = probe.errors[case]
        assert outcome is not None, f"{case} did not raise"
        assert outcome["type"] == "ValueError" and outcome["value_error"] is True
        assert "empty" in outcome["message"]


def test_call_of_an_unknown_model_node_raises_key_error(probe: ProbeRun) -> None:
    outcome = probe.errors["call_unknown"]
    assert outcome is not None and outcome["type"] == "KeyError" and outcome["key_error"] is True
    assert "no_such_model_node" in outcome["message"]


def test_add_rect_and_add_label_take_coordinates_outside_the_range_without_raising(probe: ProbeRun) -> None:
    checks = probe.first["checks"]
    for case in (
        "rect_negative",
        "rect_above_one",
        "rect_left_not_less_than_right",
        "rect_top_not_less_than_bottom",
        "rect_nan",
        "label_x_above_one",
        "label_y_negative",
        "rect_bounds_inclusive",
        "label_bounds_inclusive",
    ):
        assert checks[case] is None, f"{case} raised: {checks[case]}"
    assert checks["label_not_a_number"] is not None and checks["label_not_a_number"]["type_error"] is True


# --- media ------------------------------------------------------------------------------------------------


def test_one_media_per_camera_named_after_the_camera_node(probe: ProbeRun) -> None:
    first = probe.first
    assert first["count"] == 1 and first["stream_ids"] == ["camera_node"] and first["is_media"] is True
    assert first["stream_uri"] == probe.camera_uri and first["stream_uri"].startswith("synthetic")


def test_media_image_is_a_writable_bgr_uint8_array(probe: ProbeRun) -> None:
    first = probe.first
    assert first["is_ndarray"] is True
    assert first["shape"] == [1080, 1920, 3] and first["dtype"] == "uint8"
    assert first["writeable"] is True


def test_time_stamp_is_a_seconds_microseconds_tuple(probe: ProbeRun) -> None:
    first = probe.first
    assert first["time_stamp_type"] == "tuple" and first["time_stamp_ok"] is True
    seconds, micros = first["time_stamp"]
    assert seconds > 1_600_000_000 and 0 <= micros < 1_000_000
    assert abs(first["seconds_from_now"]) < 600  # wall-clock seconds, not a frame counter
    assert probe.frames["time_stamps_ok"] is True and probe.frames["increasing"] is True


def test_fresh_frames_are_not_cached(probe: ProbeRun) -> None:
    assert probe.first["is_cached"] is False
    assert probe.frames["frames"] == 20 and probe.frames["cached"] == 0
    assert probe.resumed["is_cached"] == [False]


# --- HDMI -------------------------------------------------------------------------------------------------


def test_drawing_on_the_image_reaches_the_hdmi_pixels(probe: ProbeRun) -> None:
    assert probe.first["pixel_before"] != list(MARKER)  # the camera itself did not show the marker
    frame = probe.hdmi_frame
    assert frame.shape == (1080, 1920, 3) and frame.dtype == np.uint8
    row, column = MARKER_CENTRE
    box = frame[row - 30 : row + 30, column - 30 : column + 30]
    assert (box == np.array(MARKER, np.uint8)).all()
    assert probe.hdmi_streams == ("camera_node",)


def test_rects_and_labels_reach_the_hdmi_output(probe: ProbeRun) -> None:
    assert SDK_LABEL in probe.hdmi_labels
    assert "edge" in probe.hdmi_labels  # a label at (1, 1) is kept and shown
    assert "bad" in probe.hdmi_labels  # labels outside [0, 1] are shown too, clamped
    assert tuple(int(value) for value in probe.hdmi_frame[RECT_ROW, RECT_COLUMN]) == GREEN


# --- paused camera ----------------------------------------------------------------------------------------


def test_get_with_timeout_on_a_paused_camera_raises_timeout_error(probe: ProbeRun) -> None:
    timeout = probe.timeout
    assert probe.paused_metric is True
    assert timeout["type"] == "PortTimeoutError"
    assert timeout["is_timeout_error"] is True and timeout["is_port_timeout_error"] is True
    assert "camera_node" in timeout["message"]


def test_frames_flow_again_after_resume(probe: ProbeRun) -> None:
    assert probe.resumed["count"] == 1
    assert probe.outputs_after_resume >= probe.outputs_at_resume + 10
    node = probe.status.nodes[CODE_NODE]
    assert node.state == "running" and node.restarts == 0


def test_the_app_never_crashed(probe: ProbeRun) -> None:
    assert probe.status.state == "on"
    assert probe.status.nodes[CODE_NODE].exit_codes == ()
