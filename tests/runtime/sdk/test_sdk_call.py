"""node.call: model nodes run by the appliance's model caller, answered as a tuple of arrays."""

from __future__ import annotations

import textwrap
import time
from collections.abc import Mapping

import numpy as np
import pytest

from runtime.bridge.testing import (
    APP_MEMFDS,
    BridgeLab,
    FakeModels,
    app_plan,
    code_node,
    model_plan,
    new_shared_memory,
    shared_memory,
)

PRELUDE = """
import json
import numpy as np
import panoramasdk

def result(value):
    print("RESULT " + json.dumps(value), flush=True)
"""


def src(body: str) -> str:
    """An app: the prelude, then ``body`` (dedented)."""
    return PRELUDE + textwrap.dedent(body)


def _double(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    data = inputs["data"]
    return data * 2, np.array([data.sum()], dtype=np.float32)


def _broken(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    raise RuntimeError("model node broken_model: input data has shape (1, 2)\nexpected (1, 3, 224, 224)")


def test_call_returns_a_tuple_of_arrays(lab: BridgeLab) -> None:
    models = FakeModels({"model_node": _double})
    plan = app_plan(code_node(), models=[model_plan("model_node")])
    runtime = lab.runtime(plan, models=models)
    app = lab.app(
        runtime,
        src(
            """
            class App(panoramasdk.node):
                def run(self):
                    data = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
                    by_dict = self.call({"data": data}, "model_node")
                    by_array = self.call(data, "model_node")
                    streams = self.inputs.video_in.get(timeout=30)
                    by_media = self.call(streams[0], "model_node")
                    reference_order = self.call("model_node", {"data": data})
                    return by_dict, by_array, by_media, reference_order

            by_dict, by_array, by_media, reference_order = App().run()
            result({
                "type": type(by_dict).__name__,
                "items": [type(item).__name__ for item in by_dict],
                "doubled": by_dict[0].tolist(),
                "sum": by_dict[1].tolist(),
                "dtype": str(by_dict[0].dtype),
                "same": all(np.array_equal(a, b) for a, b in zip(by_dict, by_array)),
                "media_shape": list(by_media[0].shape),
                "reference_order": np.array_equal(reference_order[0], by_dict[0]),
            })
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {
        "type": "tuple",
        "items": ["ndarray", "ndarray"],
        "doubled": [[[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]],
        "sum": [15.0],
        "dtype": "float32",
        "same": True,
        "media_shape": [240, 320, 3],
        "reference_order": True,
    }
    assert [name for name, _ in models.calls] == ["model_node"] * 4
    assert models.calls[2][1]["data"].shape == (240, 320, 3)  # the frame, in the model's type
    assert models.calls[2][1]["data"].dtype == np.float32


def test_call_of_a_model_node_the_graph_lacks_raises_key_error(lab: BridgeLab) -> None:
    plan = app_plan(code_node(), models=[model_plan("model_node")])
    runtime = lab.runtime(plan, models=FakeModels({"model_node": _double}))
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            try:
                node.call({"data": np.zeros(3)}, "no_such_model")
            except KeyError as error:
                result(error.args[0])
            """
        ),
    )
    done = lab.finish(app)
    assert (
        done.result == "model node 'no_such_model' is not in the application graph (model nodes: model_node)"
    )


def test_a_failing_model_raises_with_the_appliance_message_on_one_line(lab: BridgeLab) -> None:
    plan = app_plan(code_node(), models=[model_plan("broken_model")])
    runtime = lab.runtime(plan, models=FakeModels({"broken_model": _broken}))
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            try:
                node.call({"data": np.zeros((1, 2), np.float32)}, "broken_model")
            except RuntimeError as error:
                result([type(error).__name__, isinstance(error, panoramasdk.ModelCallError), str(error)])
            # the bridge is still usable after a failed call
            result(len(node.inputs.video_in.get(timeout=30)))
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert "ModelCallError" in done.stdout
    # As a model server says it: the node, and the last line of a framework's many-line message.
    message = "node broken_model: the model failed: RuntimeError: expected (1, 3, 224, 224)"
    assert f'["ModelCallError", true, "{message}"]' in done.stdout
    assert done.result == 1
    assert runtime.metrics()["nodes"]["code_node"]["model_errors"] == 1  # type: ignore[index]


def test_without_a_model_runtime_a_declared_model_fails_clearly(lab: BridgeLab) -> None:
    plan = app_plan(code_node(), models=[model_plan("model_node")])
    runtime = lab.runtime(plan, models=None)
    app = lab.app(
        runtime,
        src(
            """
            try:
                panoramasdk.node().call({"data": np.zeros(3)}, "model_node")
            except panoramasdk.ModelCallError as error:
                result(str(error))
            """
        ),
    )
    assert lab.finish(app).result == "model node model_node: no model runtime attached to the appliance"


def test_a_thread_can_call_a_model_while_another_waits_for_frames(lab: BridgeLab) -> None:
    plan = app_plan(code_node(), models=[model_plan("model_node")])
    runtime = lab.runtime(plan, models=FakeModels({"model_node": _double}))
    runtime.pause_camera("camera_node")
    app = lab.app(
        runtime,
        src(
            """
            import threading
            node = panoramasdk.node()
            answers = []

            def infer():
                answers.append(node.call({"data": np.ones(2, np.float32)}, "model_node")[0].tolist())

            def wait_for_frames():
                answers.append(len(node.inputs.video_in.get(timeout=30)))

            waiting = threading.Thread(target=wait_for_frames)
            waiting.start()          # blocked: the camera is paused
            worker = threading.Thread(target=infer)
            worker.start()
            worker.join()
            print("called", flush=True)
            waiting.join()
            result(answers)
            """
        ),
    )
    assert app.stdout is not None
    assert app.stdout.readline() == b"called\n"
    runtime.resume_camera("camera_node")
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [[2.0, 2.0], 1]


def test_outputs_larger_than_the_call_buffer_grow_it_and_stay_the_apps(lab: BridgeLab) -> None:
    def widen(inputs: Mapping[str, np.ndarray]) -> tuple[np.ndarray, ...]:
        data = inputs["data"]
        return np.full((int(data[0]), 1000), data[1], np.float32), data.astype(np.float64)

    runtime = lab.runtime(
        app_plan(code_node(), models=[model_plan()]), models=FakeModels({"model_node": widen})
    )
    app = lab.app(
        runtime,
        APP_MEMFDS
        + src(
            """
            node = panoramasdk.node()
            small = node.call(np.array([2, 7], np.float32), "model_node")
            big = node.call(np.array([3000, 9], np.float32), "model_node")  # 12 MB: the buffer grows
            last = node.call(np.array([1, 5], np.float32), "model_node")
            result({
                "small": [small[0].shape, float(small[0].min()), float(small[0].max()), small[1].tolist()],
                "big": [big[0].shape, float(big[0].min()), float(big[0].max()), str(big[1].dtype)],
                "last": [last[0].shape, float(last[0].max())],
                "writable": bool(small[0].flags.writeable and small[0].flags.owndata),
                "buffer": [size >= 12000000 for size in memfds("model-io").values()],
            })
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == {
        "small": [[2, 1000], 7.0, 7.0, [2.0, 7.0]],  # not overwritten by the later, larger calls
        "big": [[3000, 1000], 9.0, 9.0, "float32"],  # outputs are float32, as from a model server
        "last": [[1, 1000], 5.0],
        "writable": True,
        "buffer": [True],
    }


def test_the_call_buffer_goes_with_the_connection(lab: BridgeLab) -> None:
    before = shared_memory()
    runtime = lab.runtime(
        app_plan(code_node(), models=[model_plan()]), models=FakeModels({"model_node": _double})
    )
    app = lab.app(
        runtime,
        src(
            """
            import sys
            node = panoramasdk.node()
            node.call(np.ones(4, np.float32), "model_node")
            print("called", flush=True)
            sys.stdin.readline()
            """
        ),
        stdin=True,
    )
    assert app.stdout is not None and app.stdin is not None
    assert app.stdout.readline() == b"called\n"
    assert new_shared_memory(before).count("panorama-model-io") == 1
    app.kill()
    lab.finish(app)
    deadline = time.monotonic() + 120  # generous: the connection's thread closes it once the app is gone
    while "panorama-model-io" in new_shared_memory(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "panorama-model-io" not in new_shared_memory(before)


def test_a_thread_that_ends_takes_its_connection_and_call_buffer_with_it(lab: BridgeLab) -> None:
    before = shared_memory()
    runtime = lab.runtime(
        app_plan(code_node(), models=[model_plan()]), models=FakeModels({"model_node": _double})
    )
    app = lab.app(
        runtime,
        APP_MEMFDS
        + src(
            """
            import gc, sys, threading
            node = panoramasdk.node()
            seen = []
            def work():
                node.call(np.ones(4, np.float32), "model_node")
                seen.append(len(memfds("model-io")))
            for _ in range(3):
                thread = threading.Thread(target=work)
                thread.start()
                thread.join()
            gc.collect()
            print("threads done", flush=True)
            sys.stdin.readline()
            result([seen, len(memfds("model-io"))])
            """
        ),
        stdin=True,
    )
    assert app.stdout is not None and app.stdin is not None
    assert app.stdout.readline() == b"threads done\n"
    # The appliance saw each thread's connection end and closed its call buffer, the app still running.
    deadline = time.monotonic() + 120
    while "panorama-model-io" in new_shared_memory(before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "panorama-model-io" not in new_shared_memory(before)
    app.stdin.write(b"go\n")
    app.stdin.flush()
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [[1, 1, 1], 0]


def test_inputs_too_big_for_a_call_buffer_fail_naming_the_model_node(
    lab: BridgeLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.bridge.calls.MAX_CALL_BUFFER", 1000)
    models = FakeModels({"model_node": _double})
    runtime = lab.runtime(app_plan(code_node(), models=[model_plan()]), models=models)
    app = lab.app(
        runtime,
        src(
            """
            node = panoramasdk.node()
            try:
                node.call(np.arange(1000, dtype=np.float32), "model_node")
            except ValueError as error:
                refused = str(error)
            small = node.call(np.arange(3, dtype=np.float32), "model_node")
            result([refused, small[0].tolist()])
            """
        ),
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert done.result == [
        "model node model_node: no call buffer of 4000 bytes: 4000 bytes is over the 1000-byte limit",
        [0.0, 2.0, 4.0],
    ]
    assert len(models.calls) == 1
    assert runtime.metrics()["nodes"]["code_node"]["model_errors"] == 1  # type: ignore[index]
