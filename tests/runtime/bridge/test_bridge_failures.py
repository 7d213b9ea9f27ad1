"""Either side dying: the appliance survives a killed app; an app ends when the appliance goes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from runtime.bridge.testing import BridgeLab, new_shared_memory, shared_memory

RUNNING_APP = """
import sys
import panoramasdk
node = panoramasdk.node()
count = 0
while True:
    streams = node.inputs.video_in.get()
    node.outputs.video_out.put(streams)
    count += 1
    if count == 3:
        print("running", flush=True)
"""

# Swallows every error and, after a few frames, stops talking to the appliance: only the SDK's watch on the
# connection can end it when the appliance goes.
STUBBORN_APP = """
import time
import panoramasdk
node = panoramasdk.node()
for _ in range(3):
    node.outputs.video_out.put(node.inputs.video_in.get())
print("running", flush=True)
while True:
    try:
        time.sleep(0.05)
    except BaseException:
        pass
"""

HOST = """
import json, sys, time
from pathlib import Path
from runtime.bridge.testing import BridgeLab
lab = BridgeLab(Path(sys.argv[1]))
runtime = lab.runtime()
print(json.dumps(runtime.node_env("code_node", sandbox_paths=False)), flush=True)
time.sleep(600)
"""


def _wait_until(condition, timeout: float = 30.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def _node(runtime, key: str) -> object:  # type: ignore[no-untyped-def]
    return runtime.metrics()["nodes"]["code_node"][key]


def test_an_app_killed_mid_frame_leaves_the_appliance_serving_and_no_shared_memory(lab: BridgeLab) -> None:
    run_dir = lab.workdir / "run"
    before = shared_memory()  # what other tests' devices hold
    runtime = lab.runtime(run_dir=run_dir)
    killed = lab.app(
        runtime,
        """
        import os, signal
        import panoramasdk
        node = panoramasdk.node()
        streams = node.inputs.video_in.get(timeout=30)
        streams[0].image[:10] = 255          # mid-frame: drawing, before put
        os.kill(os.getpid(), signal.SIGKILL)
        """,
    )
    assert killed.wait(timeout=60) == -signal.SIGKILL
    assert _wait_until(lambda: _node(runtime, "connected") is False and _node(runtime, "sessions") == 1)
    # The next app gets a fresh session and the frames that follow.
    second = lab.app(
        runtime,
        """
        import panoramasdk, json
        node = panoramasdk.node()
        seen = []
        for _ in range(3):
            streams = node.inputs.video_in.get(timeout=30)
            seen.append([streams[0].is_cached, int(streams[0].image[20, 0, 0])])
            node.outputs.video_out.put(streams)
        print("RESULT " + json.dumps(seen))
        """,
    )
    done = lab.finish(second)
    assert done.returncode == 0, done.stderr
    assert done.result == [[False, 1], [False, 2], [False, 3]]
    assert _node(runtime, "sessions") == 2
    assert new_shared_memory(before)  # the frame slots
    runtime.stop()
    assert new_shared_memory(before) == []
    assert os.listdir(run_dir) == []
    # The same run directory serves the next boot.
    again = lab.runtime(run_dir=run_dir)
    third = lab.app(again, RUNNING_APP)
    assert again.wait_for_outputs(3, 60)
    third.kill()
    third.wait()
    again.stop()
    assert new_shared_memory(before) == []


def test_an_app_notices_a_dead_appliance_and_exits(lab: BridgeLab, tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(HOST)
    host_env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3]))
    host = lab.track(
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "host")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=host_env,
        )
    )
    assert host.stdout is not None
    env = json.loads(host.stdout.readline())
    app_script = tmp_path / "running_app.py"
    app_script.write_text(textwrap.dedent(STUBBORN_APP))
    app_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    app = lab.track(
        subprocess.Popen(
            [sys.executable, str(app_script)],
            env={**app_env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    )
    assert app.stdout is not None
    assert app.stdout.readline() == b"running\n"
    host.kill()
    host.wait(timeout=30)
    done = lab.finish(app)
    assert done.returncode != 0
    assert "panoramasdk: lost the connection to the appliance" in done.stderr


# An appliance with an HDMI output and a model node, in its own process: were an app able to shrink the
# shared memory the appliance maps, this process would die of SIGBUS, not the test run.
SHOWING_HOST = """
import json, sys
from pathlib import Path
from runtime.bridge.testing import BridgeLab, FakeModels, app_plan, code_node, model_plan
from runtime.media.hdmi import HdmiSink
lab = BridgeLab(Path(sys.argv[1]))
hdmi = HdmiSink()
models = FakeModels({"model_node": lambda inputs: (inputs["data"] * 2,)})
runtime = lab.runtime(app_plan(code_node(), models=[model_plan()]), hdmi=hdmi, models=models)
print(json.dumps(runtime.node_env("code_node", sandbox_paths=False)), flush=True)
sys.stdin.readline()
print(json.dumps([runtime.frames_out, hdmi.last_frame is not None]), flush=True)
lab.close()
"""

# Tries to shrink, grow and seal every piece of shared memory it was given, then goes on working.
SHRINKING_APP = """
import errno, fcntl, json, os
import numpy as np
import panoramasdk
node = panoramasdk.node()
node.call(np.ones(4, np.float32), "model_node")
streams = node.inputs.video_in.get(timeout=30)
refused, done = 0, 0
for fd in os.listdir("/proc/self/fd"):
    path = "/proc/self/fd/" + fd
    try:
        if not os.readlink(path).startswith("/memfd:panorama-"):
            continue
        for attempt in (lambda: os.truncate(path, 0), lambda: os.truncate(path, 1),
                        lambda: fcntl.fcntl(int(fd), fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW)):
            try:
                attempt()
                done += 1
            except PermissionError:
                refused += 1
    except OSError as error:
        if error.errno != errno.ENOENT:
            raise
node.outputs.video_out.put(streams)
for _ in range(3):
    node.outputs.video_out.put(node.inputs.video_in.get(timeout=30))
outputs = node.call(np.ones(4, np.float32), "model_node")
print("RESULT " + json.dumps([refused, done, outputs[0].tolist()]), flush=True)
"""


def test_an_app_cannot_shrink_the_shared_memory_the_appliance_maps(lab: BridgeLab, tmp_path: Path) -> None:
    script = tmp_path / "host.py"
    script.write_text(SHOWING_HOST)
    host = lab.track(
        subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "host")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[3])),
        )
    )
    assert host.stdout is not None and host.stdin is not None
    env = json.loads(host.stdout.readline())
    app_script = tmp_path / "shrinking_app.py"
    app_script.write_text(SHRINKING_APP)
    app_env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    app = subprocess.Popen(
        [sys.executable, str(app_script)],
        env={**app_env, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    done = lab.finish(lab.track(app))
    assert done.returncode == 0, done.stderr
    refused, allowed, outputs = done.result  # type: ignore[misc]
    # A frame slot and the call buffer at least, three attempts each; none succeeded.
    assert refused >= 6 and allowed == 0
    assert outputs == [2.0, 2.0, 2.0, 2.0]
    out, err = host.communicate(b"stop\n", timeout=60)
    assert host.returncode == 0, err.decode(errors="replace")[-2000:]
    assert json.loads(out) == [4, True]  # every frame the app put reached the HDMI output


def test_stopping_the_runtime_ends_its_apps(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(runtime, RUNNING_APP)
    assert runtime.wait_for_outputs(3, 60)
    runtime.pause_camera("camera_node")  # the app now waits in get()
    runtime.stop()
    done = lab.finish(app)
    assert done.returncode != 0
    assert "panoramasdk: lost the connection to the appliance" in done.stderr


def test_a_restarted_app_gets_a_fresh_session_with_nothing_cached(lab: BridgeLab) -> None:
    runtime = lab.runtime(mode="realtime")
    first = lab.app(
        runtime,
        """
        import panoramasdk
        node = panoramasdk.node()
        for _ in range(3):
            node.outputs.video_out.put(node.inputs.video_in.get(timeout=30))
        """,
    )
    assert lab.finish(first).returncode == 0
    assert _wait_until(lambda: _node(runtime, "connected") is False)
    runtime.pause_camera("camera_node")
    second = lab.app(
        runtime,
        """
        import json, panoramasdk
        node = panoramasdk.node()
        try:
            node.inputs.video_in.get(timeout=0.3)
            outcome = "got a frame of the previous session"
        except TimeoutError:
            outcome = "timeout"
        print(outcome, flush=True)
        streams = node.inputs.video_in.get(timeout=30)
        print("RESULT " + json.dumps([outcome, streams[0].is_cached]))
        """,
    )
    assert second.stdout is not None
    assert second.stdout.readline() == b"timeout\n"
    runtime.resume_camera("camera_node")
    done = lab.finish(second)
    assert done.result == ["timeout", False]
    assert _node(runtime, "sessions") == 2
    assert _node(runtime, "restarts") == 1
