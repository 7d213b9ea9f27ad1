"""Model calls from apps through leased channels: an app's call buffer is the model server's shared memory."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from _model_factory import IMAGE, PAIR, WAIT, entry, image, kill_and_wait, wait_until_computing

from runtime.bridge.testing import (
    APP_MEMFDS,
    BridgeLab,
    FakePlan,
    app_plan,
    code_node,
    model_plan,
    new_shared_memory,
    shared_memory,
)
from runtime.models import ModelHost

# TorchScript is what SageMaker Neo took for PyTorch; torch now marks it deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")

PRELUDE = """
import json
import sys

import numpy as np
import panoramasdk

def image(seed, shape=(1, 3, 32, 32)):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)

node = panoramasdk.node()
"""


def conv_plan() -> FakePlan:
    models = [model_plan("conv_node", ["data"]), model_plan("pair_node", ["a", "b"])]
    return app_plan(code_node(media_inputs={}), models=models)


def new_model_memfds(before: dict[int, str]) -> int:
    return new_shared_memory(before).count("panorama-model-io")


def test_an_app_calls_models_through_its_channel_and_gets_what_the_host_computes(
    onnx_host: ModelHost, tmp_path: Path
) -> None:
    onnx_host.call("conv_node", image(0))  # the host's own channel exists before the count
    before = onnx_host.metrics()["conv_node"]["calls"]
    host_memfds = shared_memory()
    with BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(conv_plan(), models=onnx_host)
        out = tmp_path / "out.npz"
        app = lab.app(
            runtime,
            PRELUDE
            + APP_MEMFDS
            + f"""
x = image(0)
as_float = node.call({{"data": x}}, "conv_node")
as_bytes = node.call((x * 255).astype(np.uint8), "conv_node")  # converted to float32 by the host
as_double = node.call({{"data": x.astype(np.float64)}}, "conv_node")
again = node.call({{"data": image(1)}}, "conv_node")
pair = node.call({{"a": np.ones((1, 4), np.float32), "b": np.full((1, 4), 2, np.float32)}}, "pair_node")
np.savez({str(out)!r}, *as_float, *as_bytes, *as_double, *again, *pair)
print("RESULT " + json.dumps({{
    "types": sorted({{type(o).__name__ + " " + str(o.dtype) for o in as_float + again + pair}}),
    "call buffers": len(memfds("model-io")),
}}), flush=True)
""",
        )
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        assert done.result == {"types": ["ndarray float32"], "call buffers": 1}
        with np.load(out) as saved:
            got = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        x = image(0)
        expected = [
            *onnx_host.call("conv_node", x),
            *onnx_host.call("conv_node", (x * 255).astype(np.uint8).astype(np.float32)),
            *onnx_host.call("conv_node", x),
            *onnx_host.call("conv_node", image(1)),
            *onnx_host.call("pair_node", {"a": np.ones(PAIR, np.float32), "b": np.full(PAIR, 2, np.float32)}),
        ]
        assert [array.shape for array in got] == [(1, 4, 16, 16), (1, 4)] * 4 + [PAIR]
        for have, want in zip(got, expected, strict=True):
            np.testing.assert_array_equal(have, want)
        assert onnx_host.metrics()["conv_node"]["calls"] == before + 4 + 4
        assert runtime.metrics()["nodes"]["code_node"]["model_calls"] == 5  # type: ignore[index]
        # The connection ended with the app: its call buffer and its calls' tally are gone.
        deadline = time.monotonic() + WAIT
        while new_shared_memory(host_memfds) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert new_shared_memory(host_memfds) == []


def test_wrong_inputs_through_the_channel_fail_that_call_with_the_host_message(
    onnx_host: ModelHost, tmp_path: Path
) -> None:
    with BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(conv_plan(), models=onnx_host)
        app = lab.app(
            runtime,
            PRELUDE
            + """
errors = []
for inputs in ({"data": np.zeros((1, 3, 16, 16), np.float32)}, {"image": image(0)}):
    try:
        node.call(inputs, "conv_node")
    except panoramasdk.ModelCallError as error:
        errors.append(str(error))
errors.append(node.call(image(0), "conv_node")[1].shape)
print("RESULT " + json.dumps(errors), flush=True)
""",
        )
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        assert done.result == [
            "node conv_node: input 'data' has shape (1, 3, 16, 16) "
            "but the descriptor declares (1, 3, 32, 32)",
            "node conv_node: unknown input 'image': the descriptor declares inputs ['data']",
            [1, 4],
        ]


def test_after_a_server_restart_the_app_keeps_calling_through_the_same_buffer(
    onnx_conv: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnxruntime")
    with ModelHost([entry("conv_node", onnx_conv, "ONNX", ("data", IMAGE))]) as host:
        plan = app_plan(code_node(media_inputs={}), models=[model_plan("conv_node", ["data"])])
        with BridgeLab(tmp_path) as lab:
            runtime = lab.runtime(plan, models=host)
            app = lab.app(
                runtime,
                PRELUDE
                + APP_MEMFDS
                + """
first = node.call(image(0), "conv_node")
before = sorted(memfds("model-io"))
print("called", flush=True)
sys.stdin.readline()
second = node.call(image(0), "conv_node")
print("RESULT " + json.dumps({
    "same outputs": [np.array_equal(a, b) for a, b in zip(first, second)],
    "same call buffer": len(before) == 1 and sorted(memfds("model-io")) == before,
}), flush=True)
""",
                stdin=True,
            )
            assert app.stdout is not None and app.stdin is not None
            assert app.stdout.readline() == b"called\n"
            pid = host.pid
            assert pid is not None
            kill_and_wait(pid)
            app.stdin.write(b"go\n")
            app.stdin.flush()
            done = lab.finish(app)
            assert done.returncode == 0, done.stderr
            # The new server works on the call buffer the app already had.
            assert done.result == {"same outputs": [True, True], "same call buffer": True}
            assert host.restarts == 1 and host.pid not in (None, pid)


def test_a_lease_grows_its_memfd_never_lets_it_shrink_and_frees_it(onnx_host: ModelHost) -> None:
    before = shared_memory()
    lease = onnx_host.lease(16)
    try:
        assert os.fstat(lease.fd).st_size == lease.size == 16
        lease.ensure(1 << 20)
        assert lease.size >= 1 << 20 and os.fstat(lease.fd).st_size == lease.size
        # Whoever it is lent to cannot shrink it under the model server.
        with pytest.raises(PermissionError):
            os.ftruncate(lease.fd, 0)
        lease.lend(["conv_node"]).close()
    finally:
        lease.close()
    del lease
    assert new_model_memfds(before) == 0


def test_inputs_too_big_for_a_call_buffer_fail_that_call_only(
    onnx_host: ModelHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runtime.bridge.calls.MAX_CALL_BUFFER", 1024)
    onnx_host.call("conv_node", image(0))
    host_memfds = shared_memory()
    with BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(conv_plan(), models=onnx_host)
        app = lab.app(
            runtime,
            PRELUDE
            + """
try:
    node.call(image(0), "conv_node")
except ValueError as error:
    refused = str(error)
pair = {"a": np.ones((1, 4), np.float32), "b": np.full((1, 4), 2, np.float32)}
print("RESULT " + json.dumps([refused, node.call(pair, "pair_node")[0].tolist()]), flush=True)
""",
        )
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        pair = {"a": np.ones(PAIR, np.float32), "b": np.full(PAIR, 2, np.float32)}
        assert done.result == [
            "model node conv_node: no call buffer of 12288 bytes: 12288 bytes is over the 1024-byte limit",
            onnx_host.call("pair_node", pair)[0].tolist(),
        ]
        assert new_model_memfds(host_memfds) == 0


def spinner_plan() -> FakePlan:
    return app_plan(code_node(media_inputs={}), models=[model_plan("spinner", ["data"])])


def spinner_host(torch_spinner: Path) -> ModelHost:
    return ModelHost([entry("spinner", torch_spinner, "PYTORCH", ("data", PAIR))])


SPUN_TWICE = [[np.tanh(np.tanh(2.0)) + 1.0] * 4]
"""What ``spin(2)`` returns."""

SPIN = """
def spin(turns, **timeout):
    return node.call({"data": np.full((1, 4), float(turns), np.float32)}, "spinner", **timeout)[0].tolist()
"""


def test_a_server_killed_during_an_apps_call_fails_that_call_with_the_cause_and_the_next_succeeds(
    torch_spinner: Path, tmp_path: Path
) -> None:
    with spinner_host(torch_spinner) as host, BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(spinner_plan(), models=host)
        app = lab.app(
            runtime,
            PRELUDE
            + SPIN
            + """
spin(1)
print("ready", flush=True)
try:
    spin(1e9)
    failed = None
except panoramasdk.ModelCallError as error:
    failed = str(error)
print("RESULT " + json.dumps({"failed": failed, "next": spin(2)}), flush=True)
""",
        )
        assert app.stdout is not None
        assert app.stdout.readline() == b"ready\n"
        pid = wait_until_computing(host)
        os.kill(pid, signal.SIGKILL)
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        assert isinstance(done.result, dict)
        assert done.result["failed"].startswith(
            "node spinner: the model server stopped during the call (killed by SIGKILL)"
        )
        np.testing.assert_allclose(done.result["next"], SPUN_TWICE, atol=1e-6)
        figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
        assert (figures["model_calls"], figures["model_errors"]) == (3, 1)
        assert figures["last_error"] == done.result["failed"]
        assert host.metrics()["spinner"]["calls"] == 3 and host.metrics()["spinner"]["errors"] == 1
        assert host.restarts == 1


def test_a_call_that_times_out_in_the_app_leaves_the_next_call_working(
    torch_spinner: Path, tmp_path: Path
) -> None:
    with spinner_host(torch_spinner) as host, BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(spinner_plan(), models=host)
        app = lab.app(
            runtime,
            PRELUDE
            + SPIN
            + """
import time
# Long enough to outlast the timeout, short enough for the next call to wait for it.
turns, started = 10000, time.monotonic()
spin(turns)
while time.monotonic() - started < 0.5:
    turns *= 2
    started = time.monotonic()
    spin(turns)
try:
    spin(turns, time_out=0.05)
    timed_out = False
except panoramasdk.PortTimeoutError:
    timed_out = True
print("RESULT " + json.dumps({"timed out": timed_out, "next": spin(2)}), flush=True)
""",
        )
        done = lab.finish(app, timeout=WAIT)
        assert done.returncode == 0, done.stderr
        assert isinstance(done.result, dict) and done.result["timed out"] is True
        np.testing.assert_allclose(done.result["next"], SPUN_TWICE, atol=1e-6)
        assert host.restarts == 0


def test_the_calls_of_a_thread_that_ended_stay_counted(onnx_host: ModelHost, tmp_path: Path) -> None:
    with BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(conv_plan(), models=onnx_host)
        app = lab.app(
            runtime,
            PRELUDE
            + """
import threading

def calls():
    node.call(image(0), "conv_node")
    node.call(image(1), "conv_node")
    try:
        node.call(np.zeros((1, 3, 8, 8), np.float32), "conv_node")
    except panoramasdk.ModelCallError:
        pass

thread = threading.Thread(target=calls)
thread.start()
thread.join()
del thread
import gc
gc.collect()
print("ended", flush=True)
import sys
sys.stdin.readline()
node.call(image(2), "conv_node")
print("RESULT {}", flush=True)
""",
            stdin=True,
        )
        assert app.stdout is not None and app.stdin is not None
        assert app.stdout.readline() == b"ended\n"
        deadline = time.monotonic() + WAIT
        figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
        while figures["model_calls"] != 3 and time.monotonic() < deadline:
            time.sleep(0.01)
            figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
        assert (figures["model_calls"], figures["model_errors"]) == (3, 1)
        assert "has shape (1, 3, 8, 8)" in figures["last_error"]
        app.stdin.write(b"go\n")
        app.stdin.flush()
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
        assert (figures["model_calls"], figures["model_errors"]) == (4, 1)


def test_repeated_calls_of_one_layout_get_each_calls_own_outputs(
    onnx_host: ModelHost, tmp_path: Path
) -> None:
    # Calls of one layout send the same request bytes and get their answers at the same place in the call
    # buffer: the outputs must still be this call's, and must not change when the next call comes.
    with BridgeLab(tmp_path) as lab:
        runtime = lab.runtime(conv_plan(), models=onnx_host)
        out = tmp_path / "out.npz"
        app = lab.app(
            runtime,
            PRELUDE
            + f"""
pair = {{"a": np.ones((1, 4), np.float32), "b": np.full((1, 4), 2, np.float32)}}
kept = []
for seed in (0, 1, 2):
    kept += node.call(image(seed), "conv_node")
kept += node.call(pair, "pair_node")
kept += node.call(image(3), "conv_node")
try:
    node.call(np.zeros((1, 3, 8, 8), np.float32), "conv_node")
except panoramasdk.ModelCallError:
    pass
for seed in (4, 5):
    kept += node.call(image(seed), "conv_node")
kept += node.call((image(6) * 255).astype(np.uint8), "conv_node")
kept += node.call((image(7) * 255).astype(np.uint8), "conv_node")
np.savez({str(out)!r}, *kept)
print("RESULT {{}}", flush=True)
""",
        )
        done = lab.finish(app)
        assert done.returncode == 0, done.stderr
        with np.load(out) as saved:
            got = [saved[f"arr_{index}"] for index in range(len(saved.files))]
        pair = {"a": np.ones(PAIR, np.float32), "b": np.full(PAIR, 2, np.float32)}
        expected = [
            *onnx_host.call("conv_node", image(0)),
            *onnx_host.call("conv_node", image(1)),
            *onnx_host.call("conv_node", image(2)),
            *onnx_host.call("pair_node", pair),
            *onnx_host.call("conv_node", image(3)),
            *onnx_host.call("conv_node", image(4)),
            *onnx_host.call("conv_node", image(5)),
            *onnx_host.call("conv_node", (image(6) * 255).astype(np.uint8)),
            *onnx_host.call("conv_node", (image(7) * 255).astype(np.uint8)),
        ]
        assert len(got) == len(expected)
        for have, want in zip(got, expected, strict=True):
            np.testing.assert_array_equal(have, want)
        figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
        assert (figures["model_calls"], figures["model_errors"]) == (10, 1)
