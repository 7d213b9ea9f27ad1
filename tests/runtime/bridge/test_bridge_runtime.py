"""Runtime: construction checks, the environment apps get, several nodes, outputs and metrics."""

from __future__ import annotations

import json
import os
import time

import pytest

from emulator.errors import DeviceError
from runtime.bridge import Runtime
from runtime.bridge.testing import (
    BridgeLab,
    app_plan,
    code_node,
    new_shared_memory,
    numbered_frames,
    shared_memory,
)
from runtime.media.camera import ArraySource

RECORD = """
import json, panoramasdk
node = panoramasdk.node()
values = []
for _ in range({count}):
    streams = node.inputs.video_in.get(timeout=30)
    values.append(int(streams[0].image[0, 0, 0]))
    node.outputs.video_out.put(streams)
print("RESULT " + json.dumps(values))
"""


def test_an_unknown_mode_is_refused(lab: BridgeLab) -> None:
    with pytest.raises(DeviceError, match="unknown camera mode 'fast': expected lockstep or realtime"):
        lab.runtime(mode="fast")


def test_a_camera_without_a_source_is_named(lab: BridgeLab) -> None:
    plan = app_plan(code_node(cameras=("front_door", "back_door")))
    source = ArraySource(numbered_frames(1), name="front_door")
    with pytest.raises(DeviceError) as caught:
        lab.runtime(plan, cameras={"front_door": source})
    assert str(caught.value) == (
        "node back_door: camera node back_door feeds code_node.video_in but has no camera source"
    )


def test_node_env_gives_sandbox_paths_or_host_paths(lab: BridgeLab) -> None:
    runtime = lab.runtime(start=False)
    assert runtime.node_env("code_node") == {
        "PANORAMA_EMULATOR_BRIDGE": "/opt/panorama-emulator/run/code_node.sock",
        "PANORAMA_EMULATOR_NODE": "code_node",
        "PYTHONPATH": "/opt/panorama-emulator/sdk",
    }
    host = runtime.node_env("code_node", sandbox_paths=False)
    assert host["PANORAMA_EMULATOR_BRIDGE"] == str(runtime.run_dir / "code_node.sock")
    assert os.path.isfile(os.path.join(host["PYTHONPATH"], "panoramasdk", "__init__.py"))
    with pytest.raises(DeviceError, match="node camera_node: not a code node of the application"):
        runtime.node_env("camera_node")


def test_start_twice_is_refused_and_stop_twice_is_harmless(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    assert (runtime.run_dir / "code_node.sock").exists()
    with pytest.raises(DeviceError, match="already started"):
        runtime.start()
    runtime.stop()
    runtime.stop()
    assert not (runtime.run_dir / "code_node.sock").exists()


def test_each_code_node_has_its_own_bridge_and_sees_every_frame(lab: BridgeLab) -> None:
    shown = code_node("counter_node")
    hidden = code_node("logger_node", outputs={})
    runtime = lab.runtime(app_plan(shown, hidden))
    assert sorted(path.name for path in runtime.run_dir.iterdir()) == [
        "counter_node.sock",
        "logger_node.sock",
    ]
    logger_app = RECORD.format(count=10).replace("node.outputs.video_out.put(streams)", "pass")
    apps = [
        lab.app(runtime, RECORD.format(count=10), node="counter_node"),
        lab.app(runtime, logger_app, node="logger_node"),
    ]
    results = [lab.finish(app) for app in apps]
    assert [result.result for result in results] == [[i % 8 for i in range(10)]] * 2
    assert runtime.frames_out == 10
    nodes = runtime.metrics()["nodes"]
    assert nodes["counter_node"]["frames_out"] == 10  # type: ignore[index]
    assert nodes["logger_node"]["frames_in"] == 10  # type: ignore[index]


def test_a_node_that_does_not_start_at_boot_does_not_hold_back_a_shared_camera(lab: BridgeLab) -> None:
    runtime = lab.runtime(app_plan(code_node("boot_node"), code_node("later_node", launch="onDemand")))
    done = lab.finish(lab.app(runtime, RECORD.format(count=12), node="boot_node"))
    assert done.returncode == 0, done.stderr
    assert done.result == [i % 8 for i in range(12)]


def test_without_hdmi_outputs_are_counted_and_dropped(lab: BridgeLab) -> None:
    runtime = lab.runtime(hdmi=None)
    assert not runtime.wait_for_outputs(1, 0.2)
    done = lab.finish(lab.app(runtime, RECORD.format(count=5)))
    assert done.returncode == 0, done.stderr
    assert runtime.wait_for_outputs(5, 30)
    assert runtime.frames_out == 5


def test_metrics_are_json_and_cover_nodes_and_cameras(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    done = lab.finish(lab.app(runtime, RECORD.format(count=30)))
    assert done.returncode == 0, done.stderr
    metrics = runtime.metrics()
    assert json.loads(json.dumps(metrics)) == metrics
    assert metrics["mode"] == "lockstep"
    assert metrics["frames_out"] == 30
    node = metrics["nodes"]["code_node"]  # type: ignore[index]
    assert node["frames_in"] == 30 and node["frames_out"] == 30 and node["dropped"] == 0
    assert node["sessions"] == 1 and node["restarts"] == 0 and node["errors"] == 0
    assert node["fps"] > 0
    assert 0 <= node["latency_ms"]["p50"] <= node["latency_ms"]["p99"]
    camera = metrics["cameras"]["camera_node"]  # type: ignore[index]
    assert camera["uri"] == "array://camera_node" and camera["paused"] is False
    assert camera["fps_nominal"] == 30.0
    assert 30 <= camera["frames_produced"] <= 31  # one frame read ahead at most
    assert camera["frames_dropped"] == 0


def test_a_camera_that_fails_is_counted_and_the_runtime_stays_up(lab: BridgeLab) -> None:
    source = ArraySource(numbered_frames(2), name="camera_node", loop=False)
    runtime = lab.runtime(cameras={"camera_node": source})
    app = lab.app(
        runtime,
        """
        import json, panoramasdk
        node = panoramasdk.node()
        got = [len(node.inputs.video_in.get(timeout=30)) for _ in range(2)]
        try:
            node.inputs.video_in.get(timeout=0.5)
        except TimeoutError:
            got.append("timeout")
        print("RESULT " + json.dumps(got))
        """,
    )
    assert lab.finish(app).result == [1, 1, "timeout"]
    camera = runtime.metrics()["cameras"]["camera_node"]  # type: ignore[index]
    assert camera["errors"] >= 1
    assert "no frame after the last one" in camera["last_error"]


def test_the_runtime_is_a_context_manager(lab: BridgeLab) -> None:
    plan = app_plan()
    before = shared_memory()
    with Runtime(
        plan,
        lab.workdir / "ctx",
        cameras={"camera_node": ArraySource(numbered_frames(1), name="camera_node")},
        hdmi=None,
        models=None,
    ) as runtime:
        assert runtime.metrics()["nodes"]["code_node"]["connected"] is False  # type: ignore[index]
        deadline = time.monotonic() + 30
        while not runtime.slot_ids and time.monotonic() < deadline:  # the camera fills its first slot
            time.sleep(0.01)
        assert new_shared_memory(before)
    assert new_shared_memory(before) == []
