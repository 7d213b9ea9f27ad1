"""Each real backend through ModelHost gives what the framework itself gives, as a tuple of float32 arrays."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from _model_factory import IMAGE, NHWC, PAIR, entry, image, kill_and_wait, tf_reference

from emulator.errors import ModelError
from runtime.models import ModelHost, backend_class, select_backend

# TorchScript is what SageMaker Neo took for PyTorch; torch now marks it deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")

# Same library, same machine, same input: results agree to float32 rounding of a different thread schedule.
ATOL = 1e-5


def assert_float32_tuple(outputs: object, count: int) -> tuple[np.ndarray, ...]:
    assert isinstance(outputs, tuple)
    assert len(outputs) == count
    for output in outputs:
        assert isinstance(output, np.ndarray)
        assert output.dtype == np.float32
    return outputs


def test_onnxruntime_matches_an_in_process_session(onnx_host: ModelHost, onnx_conv: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    assert onnx_host.backends["conv_node"] == "onnxruntime"
    session = onnxruntime.InferenceSession(str(onnx_conv / "model.onnx"), providers=["CPUExecutionProvider"])
    x = image(7)
    expected = session.run(None, {"data": x})
    outputs = assert_float32_tuple(onnx_host.call("conv_node", {"data": x}), 2)
    assert [o.shape for o in outputs] == [(1, 4, 16, 16), (1, 4)]
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_two_input_model_takes_inputs_by_name(onnx_host: ModelHost, onnx_pair: Path) -> None:
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(onnx_pair / "model.onnx"), providers=["CPUExecutionProvider"])
    a, b = image(1, PAIR), image(2, PAIR)
    (expected,) = session.run(None, {"a": a, "b": b})
    (got,) = assert_float32_tuple(onnx_host.call("pair_node", {"b": b, "a": a}), 1)
    np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)


def test_opencv_dnn_runs_onnx_like_opencv_in_process(onnx_conv: Path) -> None:
    import cv2

    net = cv2.dnn.readNetFromONNX(str(onnx_conv / "model.onnx"))
    x = image(11)
    net.setInput(x)
    expected = net.forward(list(net.getUnconnectedOutLayersNames()))
    with ModelHost([entry("conv_node", onnx_conv, "ONNX", ("data", IMAGE))], prefer=["opencv-onnx"]) as host:
        assert host.backends == {"conv_node": "opencv-onnx"}
        outputs = assert_float32_tuple(host.call("conv_node", x), 2)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_opencv_and_onnxruntime_agree(onnx_host: ModelHost, onnx_conv: Path) -> None:
    x = image(12)
    reference = onnx_host.call("conv_node", x)
    with ModelHost([entry("conv_node", onnx_conv, "ONNX", ("data", IMAGE))], prefer=["opencv-onnx"]) as host:
        outputs = host.call("conv_node", x)
    for got, want in zip(outputs, reference, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_torchscript_matches_torch_in_process(torch_conv: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.jit.load(str(torch_conv / "model.pt")).eval()
    x = image(3)
    with torch.no_grad():
        expected = [t.numpy() for t in module(torch.from_numpy(x))]
    with ModelHost([entry("torch_node", torch_conv, "PYTORCH", ("data", IMAGE))]) as host:
        assert host.backends == {"torch_node": "torchscript"}
        outputs = assert_float32_tuple(host.call("torch_node", {"data": x}), 2)
    for got, want in zip(outputs, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=0)


def test_torchscript_fp16_runs_in_half_precision(torch_conv: Path) -> None:
    torch = pytest.importorskip("torch")
    module = torch.jit.load(str(torch_conv / "model.pt")).eval()
    x = image(4)
    with torch.no_grad():
        full = [t.numpy() for t in module(torch.from_numpy(x))]
    model = entry("torch_node", torch_conv, "PYTORCH", ("data", IMAGE), precision="FP16")
    with ModelHost([model]) as host:
        outputs = assert_float32_tuple(host.call("torch_node", x), 2)
    # Half precision keeps about three decimal digits: close to FP32, but not bit-identical.
    for got, want in zip(outputs, full, strict=True):
        np.testing.assert_allclose(got, want, atol=2e-2, rtol=0)
    assert not all(np.array_equal(got, want) for got, want in zip(outputs, full, strict=True))


def test_fp16_falls_back_to_fp32_and_says_so_once(
    torch_float_only: Path, caplog: pytest.LogCaptureFixture
) -> None:
    torch = pytest.importorskip("torch")
    module = torch.jit.load(str(torch_float_only / "model.pt")).eval()
    x = image(5, PAIR)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    caplog.set_level(logging.INFO, logger="runtime.models")
    model = entry("float_node", torch_float_only, "PYTORCH", ("data", PAIR), precision="FP16")
    with ModelHost([model]) as host:
        (got,) = assert_float32_tuple(host.call("float_node", x), 1)
        np.testing.assert_allclose(got, expected, atol=ATOL, rtol=0)
        # A restarted server falls back again, silently.
        pid = host.pid
        assert pid is not None
        kill_and_wait(pid)
        host.call("float_node", x)
        assert host.restarts == 1
    notes = [r.getMessage() for r in caplog.records if "FP16" in r.getMessage()]
    assert len(notes) == 1, notes
    assert "float_node" in notes[0] and "FP32" in notes[0]


def test_tensorflow_frozen_graph_runs_in_the_tensorflow_environment(
    tf_frozen: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    folder, weight, bias = tf_frozen
    x = image(8, NHWC)
    with ModelHost([entry("tf_node", folder, "TENSORFLOW", ("data", NHWC))]) as host:
        assert host.backends == {"tf_node": "tensorflow-graph"}
        (got,) = assert_float32_tuple(host.call("tf_node", {"data": x}), 1)
    assert got.shape == (1, 16, 16, 4)
    # What the graph computes, in numpy (tensorflow's own run is compared in test_environment_backends).
    np.testing.assert_allclose(got, tf_reference(x, weight, bias), atol=1e-4, rtol=0)


def test_float64_and_uint8_inputs_are_converted_to_the_model_type(onnx_host: ModelHost) -> None:
    x = image(9)
    reference = onnx_host.call("conv_node", x)
    for converted in (
        onnx_host.call("conv_node", x.astype(np.float64)),
        onnx_host.call("conv_node", {"data": x}),
    ):
        for got, want in zip(converted, reference, strict=True):
            np.testing.assert_array_equal(got, want)
    pixels = (x * 255).astype(np.uint8)
    outputs = onnx_host.call("conv_node", pixels)
    expected = onnx_host.call("conv_node", pixels.astype(np.float32))
    np.testing.assert_array_equal(outputs[0], expected[0])


def test_outputs_are_owned_copies(onnx_host: ModelHost) -> None:
    first = onnx_host.call("conv_node", image(20))
    kept = first[0].copy()
    onnx_host.call("conv_node", image(21))
    np.testing.assert_array_equal(first[0], kept)
    assert first[0].flags.owndata and first[0].flags.writeable


# --- choosing a backend -------------------------------------------------------------------------------------


def test_each_framework_finds_its_file(
    onnx_conv: Path, torch_conv: Path, tf_frozen: tuple[Path, np.ndarray, np.ndarray]
) -> None:
    assert select_backend("n", torch_conv, "pytorch")[0].name == "torchscript"
    assert select_backend("n", tf_frozen[0], "TENSORFLOW")[0].name == "tensorflow-graph"
    chosen, file = select_backend("n", onnx_conv, "PYTORCH")  # an ONNX export of a PyTorch model
    assert chosen.name in ("onnxruntime", "opencv-onnx") and file.name == "model.onnx"
    assert (
        select_backend("n", onnx_conv / "model.onnx", "ONNX", prefer=["opencv-onnx"])[0].name == "opencv-onnx"
    )


def test_missing_runtime_names_the_package(torch_conv: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *rest: None if name == "torch" else find_spec(name, *rest)
    )
    with pytest.raises(ModelError) as caught:
        select_backend("detector", torch_conv, "PYTORCH")
    assert str(caught.value) == (
        f"{torch_conv / 'model.pt'}: node detector: PYTORCH model needs torch, which is not installed; "
        "install torch: pip install 'panorama-emulator[torch]'"
    )


@pytest.mark.parametrize(
    ("framework", "files", "env"),
    [
        ("MXNET", ("model-symbol.json", "model-0000.params"), "mxnet"),
        ("TENSORFLOW", ("saved_model/saved_model.pb", "saved_model/variables/variables.index"), "tensorflow"),
        ("TENSORFLOW", ("frozen_inference_graph.pb",), "tensorflow"),
        ("PYTORCH", ("compiled_model.json", "compiled.so", "compiled.params"), "dlr"),
    ],
)
def test_absent_backend_environments_are_named_with_the_command_that_makes_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, framework: str, files: tuple[str, ...], env: str
) -> None:
    monkeypatch.setenv("PANORAMA_EMULATOR_CACHE", str(tmp_path / "empty-cache"))
    for name in files:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"\0")
    with pytest.raises(ModelError) as caught:
        select_backend("model_node", tmp_path, framework)
    assert str(caught.value).endswith(
        f"node model_node: {framework} model needs the {env} backend environment, which is not installed; "
        f"make it: panorama-emulator backends install {env}"
    )


def test_no_loadable_file_and_ambiguous_files(tmp_path: Path, onnx_conv: Path) -> None:
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(ModelError, match=r"no PYTORCH model file in .*: expected \*\.pt / \*\.pth"):
        select_backend("n", tmp_path, "PYTORCH")
    for name in ("a.onnx", "b.onnx"):
        (tmp_path / name).write_bytes((onnx_conv / "model.onnx").read_bytes())
    with pytest.raises(ModelError, match=r"several .* model files .*\(a\.onnx, b\.onnx\); keep exactly one"):
        select_backend("n", tmp_path, "ONNX")
    with pytest.raises(ModelError, match="framework 'CAFFE' is not supported"):
        select_backend("n", tmp_path, "CAFFE")
    (tmp_path / "model.tar.gz").write_bytes(b"")
    with pytest.raises(ModelError, match=r"model\.tar\.gz: node n: this is a model archive; unpack it"):
        select_backend("n", tmp_path / "model.tar.gz", "ONNX")
    with pytest.raises(ModelError, match=r"node n: model path .*missing does not exist"):
        select_backend("n", tmp_path / "missing", "ONNX")


def test_hidden_files_from_macos_tar_are_ignored(tmp_path: Path, onnx_conv: Path) -> None:
    (tmp_path / "model.onnx").write_bytes((onnx_conv / "model.onnx").read_bytes())
    (tmp_path / "._model.onnx").write_bytes(b"resource fork")
    (tmp_path / "__MACOSX").mkdir()
    (tmp_path / "__MACOSX" / "model.onnx").write_bytes(b"resource fork")
    assert select_backend("n", tmp_path, "ONNX")[1] == tmp_path / "model.onnx"


def _opencv_without_the_onnx_importer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand an OpenCV in for the real one whose DNN module has no ONNX importer."""
    import importlib.machinery
    import types

    stub = types.ModuleType("cv2")
    stub.__spec__ = importlib.machinery.ModuleSpec("cv2", None)
    stub.__version__ = "9.0.0"  # type: ignore[attr-defined]
    stub.dnn = types.SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(__import__("sys").modules, "cv2", stub)


def test_a_backend_whose_entry_point_is_gone_falls_through_to_the_next(
    monkeypatch: pytest.MonkeyPatch, onnx_conv: Path
) -> None:
    pytest.importorskip("onnxruntime")
    _opencv_without_the_onnx_importer(monkeypatch)
    assert not backend_class("opencv-onnx").available()
    assert backend_class("opencv-onnx").missing() == (
        "cv2.dnn.readNetFromONNX, which opencv-python-headless 9.0.0 lacks"
    )
    chosen, path = select_backend("model_node", onnx_conv, "ONNX", prefer=("opencv-onnx",))
    assert (chosen.name, path.name) == ("onnxruntime", "model.onnx")


def test_a_missing_environment_falls_through_to_an_onnx_file_beside_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    onnx_conv: Path,
    tf_frozen: tuple[Path, np.ndarray, np.ndarray],
) -> None:
    (tmp_path / "model.pb").write_bytes((tf_frozen[0] / "frozen_graph.pb").read_bytes())
    (tmp_path / "model.onnx").write_bytes((onnx_conv / "model.onnx").read_bytes())
    monkeypatch.setenv("PANORAMA_EMULATOR_CACHE", str(tmp_path / "empty-cache"))
    chosen, path = select_backend("model_node", tmp_path, "TENSORFLOW")
    assert chosen.name in ("onnxruntime", "opencv-onnx") and path.name == "model.onnx"
