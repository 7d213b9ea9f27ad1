"""panoramasdk.node and its ports, driven by small apps in their own processes through the real bridge."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from runtime.bridge import SDK_DIR
from runtime.bridge.testing import BridgeLab, app_plan, code_node

PRELUDE = """
import json, sys
import panoramasdk

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""


def src(body: str) -> str:
    """An app: the prelude, then ``body`` (dedented)."""
    return PRELUDE + textwrap.dedent(body)


def test_import_works_without_a_bridge_but_node_raises_a_clear_error() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PANORAMA_EMULATOR")}
    env["PYTHONPATH"] = str(SDK_DIR)
    code = (
        "import panoramasdk\n"
        "try:\n"
        "    panoramasdk.node()\n"
        "except RuntimeError as error:\n"
        "    print('RuntimeError:', error)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("RuntimeError: panoramasdk: PANORAMA_EMULATOR_BRIDGE is not set")
    assert "\n" not in done.stdout.strip()


def test_node_reports_an_unreachable_appliance(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    runtime.stop()
    app = lab.app(
        runtime,
        src(
            """
        try:
            panoramasdk.node()
        except RuntimeError as error:
            result(str(error))
        """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert isinstance(done.result, str)
    assert done.result.startswith("panoramasdk: cannot reach the appliance at ")


def test_parameters_are_plain_values_typed_by_the_plan(lab: BridgeLab) -> None:
    node = code_node(
        params={"threshold": 0.5, "count": 20, "enabled": True, "region": "north", "scale": 2},
        param_types={"scale": "float32"},
    )
    runtime = lab.runtime(app_plan(node))
    app = lab.app(
        runtime,
        src(
            """
        class App(panoramasdk.node):
            def __init__(self):
                self.values = {name: getattr(self.inputs, name).get()
                               for name in ("threshold", "count", "enabled", "region", "scale")}

        values = App().values
        result({name: [type(value).__name__, value] for name, value in values.items()})
        """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {
        "threshold": ["float", 0.5],
        "count": ["int", 20],
        "enabled": ["bool", True],
        "region": ["str", "north"],
        "scale": ["float", 2.0],
    }


def test_subclass_without_super_init_has_inputs_and_outputs(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
        class App(panoramasdk.node):
            def __init__(self, frames):
                self.frames = frames  # no super().__init__(), as in many real apps

            def run(self):
                for _ in range(self.frames):
                    streams = self.inputs.video_in.get()
                    self.outputs.video_out.put(streams)
                return streams

        streams = App(3).run()
        result({"streams": len(streams), "ports": [port.name for port in App(0).inputs]})
        """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {"streams": 1, "ports": ["video_in"]}
    assert runtime.frames_out == 3


def test_plain_node_instance_works(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
        node = panoramasdk.node()
        for _ in range(2):
            streams = node.inputs.video_in.get(timeout=10)
            node.outputs.video_out.put(streams)
        result(repr(node.outputs.video_out))
        """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == "<panoramasdk.port output video_out (media)>"
    assert runtime.wait_for_outputs(2, 30)


def test_unknown_port_names_the_ports_the_node_has(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
        node = panoramasdk.node()
        try:
            node.inputs.video_inn
        except AttributeError as error:
            result(str(error))
        """
        ),
    )
    done = lab.finish(app)
    assert done.result == "the node has no inputs port 'video_inn' (its inputs ports: video_in)"


def test_put_of_an_empty_list_raises_value_error(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
        node = panoramasdk.node()
        caught = []
        for bad in ([], (), [object()], "frame"):
            try:
                node.outputs.video_out.put(bad)
            except ValueError as error:
                caught.append(str(error))
        result(caught)
        """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [
        "video_out.put() needs at least one media, found an empty list",
        "video_out.put() needs at least one media, found an empty tuple",
        "video_out.put() expects media objects, found object",
        "video_out.put() expects a list of media, found str",
    ]
    assert runtime.frames_out == 0


def test_get_timeout_raises_a_timeout_error_then_frames_flow_again(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    runtime.pause_camera("camera_node")
    app = lab.app(
        runtime,
        src(
            """
        node = panoramasdk.node()
        try:
            node.inputs.video_in.get(timeout=0.3)
            outcome = "no timeout"
        except TimeoutError as error:
            outcome = [type(error).__name__, isinstance(error, panoramasdk.PortTimeoutError), str(error)]
        print("timed out", flush=True)
        streams = node.inputs.video_in.get(timeout=30)
        result({"timeout": outcome, "after_resume": len(streams)})
        """
        ),
    )
    assert app.stdout is not None
    line = app.stdout.readline().decode()
    assert line == "timed out\n"
    runtime.resume_camera("camera_node")
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {
        "timeout": ["PortTimeoutError", True, "no frame on video_in within 0.3 s (paused: camera_node)"],
        "after_resume": 1,
    }


def test_a_forked_child_cannot_use_the_node_and_does_not_hide_the_app_s_death(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    app = lab.app(
        runtime,
        src(
            """
            import os, signal, time
            node = panoramasdk.node()
            node.inputs.video_in.get(timeout=30)
            child = os.fork()
            if child == 0:
                try:
                    node.inputs.video_in.get(timeout=1)
                    print("child got frames", flush=True)
                except RuntimeError as error:
                    print("child: " + str(error).split(";")[0], flush=True)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(null, 1)
                os.dup2(null, 2)
                time.sleep(30)     # outlives the app
                os._exit(0)
            time.sleep(0.5)
            print("child pid %d" % child, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
            """
        ),
    )
    done = lab.finish(app)
    lines = done.stdout.splitlines()
    child = int(next(line for line in lines if line.startswith("child pid ")).split()[-1])
    try:
        assert any(
            line.startswith("child: panoramasdk: this process was forked from the app") for line in lines
        )
        deadline = time.monotonic() + 30
        while runtime.metrics()["nodes"]["code_node"]["connected"] and time.monotonic() < deadline:  # type: ignore[index]
            time.sleep(0.02)
        assert runtime.metrics()["nodes"]["code_node"]["connected"] is False  # type: ignore[index]
    finally:
        os.kill(child, signal.SIGKILL)
