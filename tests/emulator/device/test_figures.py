"""The appliance's status and figure records: one to_json each, read back by from_json, rendered."""

from __future__ import annotations

import dataclasses
import json

import pytest

from emulator.api.prometheus import prometheus_text
from emulator.device.figures import (
    BootFigures,
    CameraFigures,
    DeviceStatus,
    HdmiFigures,
    Latency,
    ModelFigures,
    NodeFigures,
    NodeStatus,
)
from emulator.device.network import Route

# What runtime.bridge.Runtime.metrics() gives for one node and one camera, key for key.
BRIDGE_NODE = {
    "connected": True, "pid": 4242, "sessions": 2, "restarts": 1, "fps": 29.5,
    "latency_ms": {"p50": 3.25, "p99": 7.5}, "frames_in": 120, "cached_in": 3, "frames_out": 118,
    "values_out": 0, "dropped": 2, "model_calls": 118, "model_errors": 1, "errors": 0, "last_error": "bad",
}  # fmt: skip
BRIDGE_CAMERA = {
    "uri": "synthetic", "paused": False, "fps_nominal": 30.0, "fps": 29.9, "frames_produced": 121,
    "frames_dropped": 1, "errors": 0, "last_error": None,
}  # fmt: skip
HDMI = {
    "outputs": 118, "streams": 1, "labels": 4, "render_ms_p50": 1.5, "render_ms_p99": 2.5, "recorded": 0,
    "snapshots": 1,
}  # fmt: skip


def boot_figures() -> BootFigures:
    supervised = {"state": "running", "restarts": 1, "exit_codes": [137]}
    return BootFigures(
        boots=3,
        uptime_s=12.5,
        mode="realtime",
        frames_out=118,
        nodes={
            "code_node": NodeFigures.from_parts(supervised, BRIDGE_NODE),
            "later": NodeFigures.from_parts({"state": "not started", "restarts": 0, "exit_codes": []}, None),
        },
        cameras={"camera_node": CameraFigures.from_json(BRIDGE_CAMERA)},
        models={"detector": ModelFigures(calls=118, errors=1, p50_ms=4.5, p99_ms=9.25)},
        hdmi=HdmiFigures.from_json(HDMI),
    )


def device_status() -> DeviceStatus:
    return DeviceStatus(
        device="dev",
        app="people-counter",
        state="on",
        boots=3,
        uptime_s=12.5,
        mode="realtime",
        network="host",
        routes=(Route("web", 8080, 18080, "forwarding"),),
        nodes={
            "code_node": NodeStatus(state="running", pid=4242, restarts=1, exit_codes=(137,), uptime_s=2.0,
                                    instance=2, arch="aarch64", emulated=True),
            "later": NodeStatus(launch="onDemand"),
        },
    )  # fmt: skip


def test_a_node_reads_its_supervisor_and_bridge_parts() -> None:
    node = boot_figures().nodes["code_node"]
    assert (node.state, node.restarts, node.exit_codes) == ("running", 1, (137,))
    assert node.latency_ms == Latency(p50=3.25, p99=7.5)
    assert (node.frames_in, node.dropped, node.model_calls, node.last_error) == (120, 2, 118, "bad")
    later = boot_figures().nodes["later"]
    assert later == NodeFigures() and later.fps is None and later.latency_ms is None


@pytest.mark.parametrize("record", [boot_figures(), device_status()], ids=["BootFigures", "DeviceStatus"])
def test_to_json_is_plain_json_and_from_json_reads_it_back(record: BootFigures | DeviceStatus) -> None:
    data = record.to_json()
    assert json.loads(json.dumps(data)) == data
    assert type(record).from_json(json.loads(json.dumps(data))) == record


def test_the_json_keeps_the_shape_the_faces_show() -> None:
    data = boot_figures().to_json()
    assert sorted(data) == [
        "aws", "boots", "cameras", "frames_out", "hdmi", "mode", "models", "nodes", "uptime_s",
    ]  # fmt: skip
    node = data["nodes"]["code_node"]
    assert node["latency_ms"] == {"p50": 3.25, "p99": 7.5} and node["exit_codes"] == [137]
    # Every key the bridge gives for a node and a camera is there, under the same name.
    assert set(BRIDGE_NODE) - {"restarts"} <= set(node)
    assert data["cameras"]["camera_node"] == BRIDGE_CAMERA
    assert data["hdmi"] == HDMI
    status = device_status().to_json()
    assert status["routes"] == [
        {"node": "web", "container_port": 8080, "host_port": 18080, "state": "forwarding"}
    ]
    assert status["nodes"]["later"]["launch"] == "onDemand"
    assert "uptime" not in status and "uptime_seconds" not in status


def test_sums_and_frozen() -> None:
    figures = boot_figures()
    assert (figures.dropped_frames, figures.restarts) == (2, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        figures.boots = 4  # type: ignore[misc]


def test_prometheus_text_from_the_records() -> None:
    text = prometheus_text({"boots": 3, "uptime_s": 12.5, "runtime": boot_figures().to_json()})
    samples = set(text.splitlines())
    assert "# TYPE panorama_emulator_uptime_s gauge" in samples
    assert "panorama_emulator_uptime_s 12.5" in samples
    assert 'panorama_emulator_runtime_nodes_fps{node="code_node"} 29.5' in samples
    assert 'panorama_emulator_runtime_nodes_latency_ms_p50{node="code_node"} 3.25' in samples
    assert 'panorama_emulator_runtime_nodes_connected{node="code_node"} 1' in samples
    assert 'panorama_emulator_runtime_nodes_connected{node="later"} 0' in samples
    assert 'panorama_emulator_runtime_cameras_frames_produced{camera="camera_node"} 121' in samples
    assert 'panorama_emulator_runtime_models_p99_ms{model="detector"} 9.25' in samples
    assert "panorama_emulator_runtime_hdmi_outputs 118" in samples
    # Strings, lists and None are left out: no sample for a state, exit codes or a node without latency.
    assert not any("state" in line or "exit_codes" in line for line in samples)
    assert not any('latency_ms_p50{node="later"}' in line for line in samples)
