"""Model-node errors end to end: a real app in a real sandbox calls real models served by the appliance.

Each error must show up in the right place with a clear message, and the device must keep running: a bad call
fails in the app (which catches it and goes on), a model that cannot be served fails the boot, a corrupt asset
is refused at deploy. The caller app is ``apps/model-caller``; the models are made here, with fixed seeds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from _e2e_helpers import FAST, public_tmp_dir, reports, wait_for
from _model_projects import CallerNode, ModelNode, build_caller, make_model_project, model_tarball

import runtime.models.environment as environment_module
from emulator import Appliance
from emulator.errors import AssetError, ModelError

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.docker,
    pytest.mark.slow,
    # TorchScript is what SageMaker Neo took for PyTorch; torch now marks it deprecated.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch"),
]

DEVICE = "e2e-model-device"
IMAGE = (1, 3, 32, 32)
VECTOR = (1, 8)
PAIR = (1, 4)
FACTORY_MODULE = "e2e_model_factory"


def _factory() -> ModuleType:
    """The model factory of the model-backend tests (small real models with fixed seeds)."""
    path = Path(__file__).resolve().parent.parent / "runtime" / "models" / "_model_factory.py"
    spec = importlib.util.spec_from_file_location(FACTORY_MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


factory = _factory()


@pytest.fixture(scope="module")
def caller_project() -> Iterator[Path]:
    """``apps/model-caller`` with its container asset built once for the module (treat as read-only)."""
    base = public_tmp_dir("pe-e2e-model-caller-")
    try:
        root = build_caller(base / "model-caller")
    except Exception as error:  # no engine here: the tests that need the asset cannot run
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"cannot build the model-caller asset: {error}")
    yield root
    shutil.rmtree(base, ignore_errors=True)


ModelFile = Callable[[str], Path]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> ModelFile:
    """Model files by name, each made once when first asked for (a test skips if its framework is missing):
    ``conv`` an ONNX conv net, ``raiser`` a TorchScript model that raises on bright inputs, ``spinner`` one
    that spins as many steps as its input says."""
    folder = tmp_path_factory.mktemp("models")
    makers = {
        "conv": (factory.make_onnx_conv, "conv.onnx"),
        "raiser": (factory.make_torch_raiser, "raiser.pt"),
        "spinner": (factory.make_torch_spinner, "spinner.pt"),
    }
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            maker, file_name = makers[name]
            made[name] = maker(folder / file_name)
        return made[name]

    return get


@pytest.fixture
def conv(model_file: ModelFile) -> ModelNode:
    archive = model_tarball({"model.onnx": model_file("conv").read_bytes()})
    return ModelNode("conv", archive, "ONNX", (("data", IMAGE),))


MakeDevice = Callable[[str, list[ModelNode], list[CallerNode]], Appliance]


@pytest.fixture
def device(tmp_path: Path, caller_project: Path, e2e_state_dir: Path) -> Iterator[MakeDevice]:
    """Make a project (its own application on the shared test device) and an appliance for it."""
    made: list[Appliance] = []

    def make(app: str, models: list[ModelNode], callers: list[CallerNode]) -> Appliance:
        project = make_model_project(tmp_path / app, app, caller_project, models, callers)
        appliance = Appliance(project, state_dir=e2e_state_dir, device=DEVICE, quiet=True, backoff=FAST)
        made.append(appliance)
        return appliance

    yield make
    for appliance in made:
        appliance.close()


def report_of(appliance: Appliance, node: str, kind: str) -> dict[str, Any]:
    """Wait for the caller's report of ``kind`` (failing at once if the app died before its first frame)."""

    def found() -> list[dict[str, Any]]:
        appliance.check()
        return reports(appliance.logs(node), kind)

    got: list[dict[str, Any]] = wait_for(found, f"report {kind!r} of node {node}")
    return got[-1]


def conv_reference(model: Path, value: float) -> list[np.ndarray]:
    """What onnxruntime, in this process, computes for the caller's good input."""
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    outputs: list[np.ndarray] = session.run(None, {"data": np.full(IMAGE, value, np.float32)})
    return outputs


def assert_outputs(result: dict[str, Any], expected: list[np.ndarray]) -> None:
    """The app's summary of a successful call matches the expected arrays (shape, float32, sum to 1e-3)."""
    assert "ok" in result, result
    got = result["ok"]
    assert got["is_tuple"] is True
    assert [output["shape"] for output in got["outputs"]] == [list(array.shape) for array in expected]
    assert {output["dtype"] for output in got["outputs"]} == {"float32"}
    for output, array in zip(got["outputs"], expected, strict=True):
        assert output["sum"] == pytest.approx(float(array.sum(dtype=np.float64)), abs=1e-3)


def assert_still_running(appliance: Appliance, node: str) -> None:
    """The device is on and the app node runs in the instance it started with."""
    appliance.check()
    status = appliance.status()
    assert status["state"] == "on"
    entry = status["nodes"][node]  # type: ignore[index]
    assert entry["state"] == "running" and entry["restarts"] == 0 and entry["exit_codes"] == []


def call_error(result: dict[str, Any]) -> dict[str, Any]:
    assert "error" in result, f"the call should have failed: {result}"
    error: dict[str, Any] = result["error"]
    return error


# --- errors at call time: the app's self.call raises, the app goes on ---------------------------------------


def test_wrong_input_name_shape_and_model_node_fail_in_the_app_which_goes_on(
    device: MakeDevice, conv: ModelNode, model_file: ModelFile
) -> None:
    caller = CallerNode("caller", "errors", "conv", IMAGE, value=0.5, media=True)
    appliance = device("model-errors", [conv], [caller])
    appliance.boot()
    expected = conv_reference(model_file("conv"), 0.5)
    assert_outputs(report_of(appliance, "caller", "first")["result"], expected)
    errors = report_of(appliance, "caller", "errors")

    wrong_name = call_error(errors["wrong_name"])
    assert wrong_name["type"] == "ModelCallError" and wrong_name["runtime_error"]
    assert "node conv" in wrong_name["message"]
    assert "'image'" in wrong_name["message"] and "['data']" in wrong_name["message"]

    for case in ("wrong_shape", "wrong_shape_array"):
        wrong_shape = call_error(errors[case])
        assert wrong_shape["type"] == "ModelCallError", case
        assert "node conv" in wrong_shape["message"], case
        assert "(1, 3, 32, 16)" in wrong_shape["message"], case
        assert "(1, 3, 32, 32)" in wrong_shape["message"], case

    unknown = call_error(errors["unknown_node"])
    assert unknown["key_error"] and unknown["type"] == "KeyError"
    assert "no_such_model_node" in unknown["message"] and "conv" in unknown["message"]

    assert_outputs(report_of(appliance, "caller", "after")["result"], expected)
    # The app goes on: frames reach HDMI, each with one more good call.
    assert appliance.wait_for_frames(5)
    assert any(label.startswith("model calls ok ") for label in appliance.hdmi.labels())
    assert_still_running(appliance, "caller")
    metrics = appliance.metrics()["models"]["conv"]  # type: ignore[index]
    assert metrics["errors"] == 3  # the unknown node never reaches the model
    assert metrics["calls"] >= 2 + 3 + 5


# --- errors at boot and deploy ------------------------------------------------------------------------------


_COMPILED = {
    "mxnet": ("MXNET", {"net-symbol.json": b'{"nodes": []}', "net-0000.params": b"\0" * 64}),
    "dlr": ("PYTORCH", {"compiled_model.json": b"{}", "compiled.so": b"\x7fELF"}),
}


def _boot_error(device: MakeDevice, app: str, env: str) -> ModelError:
    framework, files = _COMPILED[env]
    model = ModelNode("compiled", model_tarball(files), framework, (("data", IMAGE),))
    appliance = device(app, [model], [CallerNode("caller", "errors", "compiled", IMAGE)])
    with pytest.raises(ModelError) as caught:
        appliance.boot()
    assert caught.value.node == "compiled" and "node compiled" in str(caught.value)
    assert "\n" not in str(caught.value)
    # Nothing was started: the app never ran, so it never got to call the model.
    assert not appliance.running
    assert appliance.status()["nodes"]["caller"]["state"] == "not started"  # type: ignore[index]
    assert appliance.logs("caller") == ""
    return caught.value


@pytest.mark.parametrize("env", ["mxnet", "dlr"])
def test_a_missing_backend_environment_fails_the_boot_with_the_command_that_makes_it(
    device: MakeDevice, env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(environment_module, "cache_dir", lambda: tmp_path / "no-environments")
    message = str(_boot_error(device, f"model-needs-{env}", env))
    assert message.endswith(
        f"model needs the {env} backend environment, which is not installed; "
        f"make it: panorama-emulator backends install {env}"
    )


@pytest.mark.parametrize("env", ["mxnet", "dlr"])
def test_a_corrupt_model_fails_the_boot_in_its_backend_environment(device: MakeDevice, env: str) -> None:
    message = str(_boot_error(device, f"model-corrupt-{env}", env))
    assert f"is not a model {env} can load: " in message


def test_a_changed_model_tarball_is_refused_at_deploy_with_both_hashes(
    device: MakeDevice, tmp_path: Path
) -> None:
    # Its own model (another seed): the shared device must never have installed this asset intact.
    changed = factory.make_onnx_conv(tmp_path / "changed.onnx", seed=7)
    model = ModelNode("conv", model_tarball({"model.onnx": changed.read_bytes()}), "ONNX", (("data", IMAGE),))
    appliance = device("model-changed", [model], [CallerNode("caller", "errors", "conv", IMAGE)])
    asset = appliance.project.asset_path(appliance.plan.models[0].asset_uri)
    data = bytearray(asset.read_bytes())
    data[len(data) // 2] ^= 0xFF
    asset.write_bytes(bytes(data))
    named = asset.name.removesuffix(".tar.gz")
    actual = hashlib.sha256(data).hexdigest()

    for action in (appliance.deploy, appliance.boot):
        with pytest.raises(AssetError) as caught:
            action()
        message = str(caught.value)
        assert named in message and actual in message
        assert caught.value.node == "conv" and "node conv" in message
        assert not appliance.running


def test_a_tarball_that_holds_no_valid_model_fails_the_boot_naming_the_node(device: MakeDevice) -> None:
    model = ModelNode(
        "broken", model_tarball({"model.onnx": b"not an onnx model"}), "ONNX", (("data", IMAGE),)
    )
    appliance = device("model-not-a-model", [model], [CallerNode("caller", "errors", "broken", IMAGE)])
    appliance.deploy()  # the asset itself is intact: its hash is its name
    with pytest.raises(ModelError) as caught:
        appliance.boot()
    message = str(caught.value)
    assert caught.value.node == "broken" and "node broken" in message
    assert "model.onnx is not a model" in message and "\n" not in message
    assert not appliance.running and appliance.logs("caller") == ""


def test_an_asset_that_is_not_an_archive_fails_the_boot_naming_the_node(device: MakeDevice) -> None:
    garbage = np.random.default_rng(5).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    model = ModelNode("broken", garbage, "ONNX", (("data", IMAGE),))
    appliance = device("model-not-an-archive", [model], [CallerNode("caller", "errors", "broken", IMAGE)])
    with pytest.raises(AssetError) as caught:
        appliance.boot()
    assert caught.value.node == "broken" and "node broken" in str(caught.value)
    assert "corrupt tar header" in caught.value.message
    assert not appliance.running


# --- a model that raises; two app nodes calling one model -----------------------------------------------


def test_a_model_that_raises_fails_that_call_only(device: MakeDevice, model_file: ModelFile) -> None:
    archive = model_tarball({"model.pt": model_file("raiser").read_bytes()})
    model = ModelNode("raiser", archive, "PYTORCH", (("data", VECTOR),))
    caller = CallerNode("caller", "raiser", "raiser", VECTOR, value=1.0, media=True)
    appliance = device("model-raises", [model], [caller])
    appliance.boot()
    doubled = [np.full(VECTOR, 2.0, np.float32)]  # the model returns x * 2 when it does not raise
    assert_outputs(report_of(appliance, "caller", "first")["result"], doubled)
    raised = call_error(report_of(appliance, "caller", "raised")["result"])
    assert raised["type"] == "ModelCallError"
    assert "node raiser" in raised["message"] and "ValueError: input too bright" in raised["message"]
    assert "\n" not in raised["message"]
    assert_outputs(report_of(appliance, "caller", "after")["result"], doubled)

    assert appliance.wait_for_frames(5)
    assert_still_running(appliance, "caller")
    metrics = appliance.metrics()["models"]["raiser"]  # type: ignore[index]
    assert metrics["errors"] == 1 and metrics["calls"] >= 3 + 5


def test_two_app_nodes_calling_one_model_both_get_their_results(
    device: MakeDevice, conv: ModelNode, model_file: ModelFile
) -> None:
    calls = 40
    workers = [
        CallerNode(name, "concurrent", "conv", IMAGE, value=0.25, count=calls) for name in ("one", "two")
    ]
    appliance = device("model-two-callers", [conv], workers)
    appliance.boot()
    expected = conv_reference(model_file("conv"), 0.25)
    sums = sorted(round(float(array.sum(dtype=np.float64)), 3) for array in expected)
    for worker in workers:
        got = report_of(appliance, worker.name, "calls")
        assert got["calls"] == calls and got["ok"] == calls, got["errors"]
        assert got["sums"] == pytest.approx(sums, abs=2e-3)
    figures = appliance.metrics()
    assert figures["models"]["conv"]["calls"] == 2 * calls  # type: ignore[index]
    assert figures["models"]["conv"]["errors"] == 0  # type: ignore[index]
    for worker in workers:
        assert figures["nodes"][worker.name]["model_calls"] == calls  # type: ignore[index]
        assert_still_running(appliance, worker.name)


def model_server_pid() -> int:
    """The model server this process started last: the appliance's (a session's shared host may run too)."""
    started: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            command = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if int(fields[1]) == os.getpid() and b"runtime.models.worker" in command:
            started[int(entry.name)] = int(fields[19])  # start time, in clock ticks since boot
    assert started, "no model server is running"
    return max(started, key=lambda pid: started[pid])


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_a_long_call_from_one_app_node_does_not_hold_up_another(
    device: MakeDevice, model_file: ModelFile
) -> None:
    archive = model_tarball({"model.pt": model_file("spinner").read_bytes()})
    model = ModelNode("spinner", archive, "PYTORCH", (("data", PAIR),))
    long_caller = CallerNode("long_caller", "long", "spinner", PAIR, value=1e9)  # a call of a billion steps
    waiter = CallerNode("waiter", "waiter", "spinner", PAIR, value=3.0, count=10)
    appliance = device("model-long-call", [model], [long_caller, waiter])
    appliance.boot()
    wait_for((appliance.storage_path / "calling-long_caller").exists, "the long call")
    server = model_server_pid()
    start = cpu_ticks(server)
    # The server is loaded and nothing else calls it yet: CPU time it burns now is the long call's.
    wait_for(lambda: cpu_ticks(server) >= start + 20, "the model server computing the long call")
    (appliance.storage_path / "go").write_text("go\n")

    got = report_of(appliance, "waiter", "calls")
    assert got["calls"] == 10 and got["ok"] == 10, got["errors"]
    expected = np.tanh(np.tanh(np.tanh(np.float32(3.0)))) + 1.0  # the spinner: tanh x[0,0] times, plus one
    assert got["sums"] == pytest.approx([round(4 * float(expected), 3)], abs=1e-3)
    assert reports(appliance.logs("long_caller"), "long") == []  # still under way
    figures = appliance.metrics()
    assert figures["models"]["spinner"]["calls"] == 11  # type: ignore[index]
    assert figures["nodes"]["long_caller"]["model_calls"] == 1  # type: ignore[index]
    assert figures["nodes"]["waiter"]["model_calls"] == 10  # type: ignore[index]
    assert_still_running(appliance, "long_caller")
    assert_still_running(appliance, "waiter")
