"""MXNet and TensorFlow models served from their backend environments: real gluoncv networks and TF graphs,
made in the test run inside those environments, compared with what the frameworks themselves return."""

from __future__ import annotations

import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from _model_factory import entry, kill_and_wait

from emulator.errors import ModelError
from runtime.models import ModelHost, select_backend
from runtime.models.environment import Environment, environment

pytestmark = pytest.mark.slow

MAKER = Path(__file__).resolve().parent / "_env_models.py"


def ready(name: str) -> Environment:
    """The environment, which scripts/setup makes: a test fails (never skips) when it is missing."""
    env = environment(name)
    if not env.ready:
        pytest.fail(f"the {name} backend environment is {env.state()}: run {env.install_command}")
    return env


def make(folder: Path, env: str, *args: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ready(env).python), "-I", str(MAKER), args[0], str(folder), *args[1:]], check=True)
    return folder


def expected(folder: Path) -> list[np.ndarray]:
    with np.load(folder / "expected.npz") as saved:
        return [saved[f"out{index}"] for index in range(len(saved.files))]


def assert_same(got: tuple[np.ndarray, ...], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for output, reference in zip(got, want, strict=True):
        assert output.dtype == np.float32
        assert output.shape == reference.shape
        np.testing.assert_allclose(output, reference.astype(np.float32), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def gluoncv_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """gluoncv's SSD, yolo3 and simple_pose, built with pretrained=False and a fixed seed, exported."""
    root = tmp_path_factory.mktemp("gluoncv")
    shapes = {
        "ssd_512_mobilenet1.0_voc": (1, 3, 512, 512),
        "yolo3_mobilenet1.0_voc": (1, 3, 480, 600),
        "simple_pose_resnet18_v1b": (4, 3, 256, 192),
    }
    return {
        name: (make(root / name, "mxnet", "gluoncv", name, ",".join(map(str, shape))), shape)
        for name, shape in shapes.items()
    }


def test_two_gluoncv_detectors_in_one_server_give_what_mxnet_gives(
    gluoncv_models: dict[str, tuple[Path, tuple[int, ...]]], caplog: pytest.LogCaptureFixture
) -> None:
    ssd, ssd_shape = gluoncv_models["ssd_512_mobilenet1.0_voc"]
    yolo, yolo_shape = gluoncv_models["yolo3_mobilenet1.0_voc"]
    caplog.set_level(logging.INFO, logger="runtime.models")
    models = [
        entry("ssd", ssd, "MXNET", ("data", ssd_shape)),
        entry("yolo", yolo, "MXNET", ("data", yolo_shape)),
    ]
    with ModelHost(models) as host:
        assert host.backends == {"ssd": "mxnet", "yolo": "mxnet"}
        for node, folder in (("ssd", ssd), ("yolo", yolo)):
            outputs = host.call(node, np.load(folder / "input.npy"))
            # gluoncv's detectors: class ids [1,100,1], scores [1,100,1], boxes [1,100,4], in that order.
            assert [output.shape for output in outputs] == [(1, 100, 1), (1, 100, 1), (1, 100, 4)]
            assert_same(outputs, expected(folder))
    lines = [record.getMessage() for record in caplog.records]
    env = environment("mxnet")
    for node in ("ssd", "yolo"):
        line = next(line for line in lines if line.startswith(f"model node {node}: MXNET on mxnet"))
        assert f"environment {env.path.name} (mxnet 1.9.1, numpy 1.23.5), worker pid " in line
        assert " loaded in " in line


def test_simple_pose_with_batch_4(gluoncv_models: dict[str, tuple[Path, tuple[int, ...]]]) -> None:
    folder, shape = gluoncv_models["simple_pose_resnet18_v1b"]
    with ModelHost([entry("pose", folder, "MXNET", ("data", shape))]) as host:
        outputs = host.call("pose", np.load(folder / "input.npy"))
        assert outputs[0].shape == (4, 17, 64, 48)
        assert_same(outputs, expected(folder))
        with pytest.raises(ModelError, match=r"has shape \(1, 3, 256, 192\) but the descriptor declares"):
            host.call("pose", np.zeros((1, 3, 256, 192), np.float32))


def test_a_killed_environment_worker_takes_the_server_down_and_it_restarts(
    gluoncv_models: dict[str, tuple[Path, tuple[int, ...]]],
) -> None:
    folder, shape = gluoncv_models["simple_pose_resnet18_v1b"]
    with ModelHost([entry("pose", folder, "MXNET", ("data", shape))]) as host:
        server = host.pid
        assert server is not None
        workers = Path(f"/proc/{server}/task/{server}/children").read_text().split()
        assert len(workers) == 1
        kill_and_wait(int(workers[0]))
        with pytest.raises(ModelError) as caught:
            host.call("pose", np.load(folder / "input.npy"))
        assert f"the mxnet worker (pid {workers[0]}) was killed by SIGKILL" in str(caught.value)
        # The server went down with its worker; the host starts a new one, and calls work again.
        for _ in range(600):
            try:
                outputs = host.call("pose", np.load(folder / "input.npy"))
                break
            except ModelError:
                time.sleep(0.1)
        assert_same(outputs, expected(folder))
        assert host.pid != server


def test_a_corrupt_export_fails_at_start_naming_the_file(tmp_path: Path) -> None:
    ready("mxnet")
    (tmp_path / "net-symbol.json").write_text('{"nodes": []}')
    (tmp_path / "net-0000.params").write_bytes(b"\0" * 64)
    host = ModelHost([entry("mx_node", tmp_path, "MXNET", ("data", (1, 3, 8, 8)))])
    with pytest.raises(ModelError) as caught:
        host.start()
    assert str(caught.value).startswith(
        f"{tmp_path / 'net-symbol.json'}: node mx_node: net-symbol.json is not a model mxnet can load: "
    )


def test_a_missing_environment_names_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "model-symbol.json").write_text("{}")
    (tmp_path / "model-0000.params").write_bytes(b"\0")
    monkeypatch.setenv("PANORAMA_EMULATOR_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelError) as caught:
        select_backend("mx_node", tmp_path, "MXNET")
    assert str(caught.value) == (
        f"{tmp_path / 'model-symbol.json'}: node mx_node: MXNET model needs the mxnet backend environment, "
        "which is not installed; make it: panorama-emulator backends install mxnet"
    )


# --- TensorFlow ---------------------------------------------------------------------------------------------


def test_a_tf_od_api_frozen_graph_takes_uint8_and_gives_its_four_outputs(tmp_path: Path) -> None:
    folder = make(tmp_path / "od", "tensorflow", "tf-od-graph", "300")
    x = np.load(folder / "input.npy")
    assert x.dtype == np.uint8
    with ModelHost([entry("detector", folder, "TENSORFLOW", ("image_tensor", (1, 300, 300, 3)))]) as host:
        assert host.backends == {"detector": "tensorflow-graph"}
        outputs = host.call("detector", x)
        assert [output.shape for output in outputs] == [(1, 100, 4), (1, 100), (1, 100), (1,)]
        assert_same(outputs, expected(folder))


def test_a_savedmodel_gives_its_outputs_by_name(tmp_path: Path) -> None:
    folder = make(tmp_path / "sm", "tensorflow", "tf-savedmodel")
    with ModelHost([entry("classifier", folder, "TENSORFLOW", ("features", (2, 16)))]) as host:
        assert host.backends == {"classifier": "tensorflow-savedmodel"}
        # "best" then "logits": by name, as the module's docstring says.
        assert_same(host.call("classifier", np.load(folder / "input.npy")), expected(folder))


def test_a_graph_that_raises_fails_that_call_and_the_next_call_works(tmp_path: Path) -> None:
    folder = make(tmp_path / "raiser", "tensorflow", "tf-raiser")
    x = np.load(folder / "input.npy")
    with ModelHost([entry("raiser", folder, "TENSORFLOW", ("data", (1, 4)))]) as host:
        assert_same(host.call("raiser", x), expected(folder))
        server = host.pid
        with pytest.raises(ModelError) as caught:
            host.call("raiser", np.full((1, 4), 1000.0, np.float32))
        message = str(caught.value)
        assert message.startswith("node raiser: ") and "InvalidArgumentError" in message, message
        assert "the input is too bright" in message and "\n" not in message
        assert_same(host.call("raiser", x), expected(folder))
        assert host.pid == server


def test_fp16_on_a_model_mxnet_cannot_run_in_half_precision_says_so_and_runs_in_fp32(
    gluoncv_models: dict[str, tuple[Path, tuple[int, ...]]], caplog: pytest.LogCaptureFixture
) -> None:
    folder, shape = gluoncv_models["simple_pose_resnet18_v1b"]
    caplog.set_level(logging.INFO, logger="runtime.models")
    with ModelHost([entry("pose16", folder, "MXNET", ("data", shape), precision="FP16")]) as host:
        outputs = host.call("pose16", np.load(folder / "input.npy"))
    assert_same(outputs, expected(folder))
    notes = [record.getMessage() for record in caplog.records if "FP16" in record.getMessage()]
    assert notes == [
        "model node pose16: precisionMode FP16: mxnet cannot run this model in half precision on the CPU "
        "(MXNetError: FP16 gemm on cpu not implemented!); it runs in FP32"
    ]
