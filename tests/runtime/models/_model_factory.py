"""Small real models, generated with fixed seeds, for the model backend and ModelHost tests (no downloads)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from runtime.models import ModelEntry, ModelHost

WAIT = 120.0  # generous bound for something to happen on a loaded machine
IMAGE = (1, 3, 32, 32)
PAIR = (1, 4)
NHWC = (1, 16, 16, 3)


def entry(
    node: str, path: Path, framework: str, *inputs: tuple[str, tuple[int, ...]], precision: str | None = None
) -> ModelEntry:
    """A model node for the host: its files, framework, declared inputs and precision mode."""
    return ModelEntry(node, path, framework, tuple(inputs), precision)


# --- ONNX (built with onnx.helper, no exporter involved) ----------------------------------------------------


def make_onnx_conv(path: Path, seed: int = 0) -> Path:
    """data[1,3,32,32] -> conv3x3, relu -> conv3x3/2 -> (sigmoid "heat" [1,4,16,16], mean "vec" [1,4])."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32)
    b1 = (rng.standard_normal(8) * 0.1).astype(np.float32)
    w2 = (rng.standard_normal((4, 8, 3, 3)) * 0.3).astype(np.float32)
    b2 = (rng.standard_normal(4) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["data", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Sigmoid", ["c2"], ["heat"]),
        helper.make_node("GlobalAveragePool", ["c2"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["vec"]),
    ]
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(IMAGE))],
        [
            helper.make_tensor_value_info("heat", TensorProto.FLOAT, [1, 4, 16, 16]),
            helper.make_tensor_value_info("vec", TensorProto.FLOAT, [1, 4]),
        ],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def make_onnx_pair(path: Path, seed: int = 1) -> Path:
    """Two inputs a[1,4], b[1,4] -> out = (a @ W) * b + c, one output [1,4]."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((4, 4)).astype(np.float32)
    bias = rng.standard_normal((1, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["aw"]),
        helper.make_node("Mul", ["aw", "b"], ["awb"]),
        helper.make_node("Add", ["awb", "c"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "pair",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, list(PAIR)),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, list(PAIR)),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(PAIR))],
        [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "c")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


# --- TorchScript --------------------------------------------------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch")


def make_torch_conv(path: Path, seed: int = 0) -> Path:
    """A traced conv net: data[1,3,32,32] -> (sigmoid map [1,4,16,16], pooled vector [1,4])."""
    torch = _torch()

    class Net(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.c2 = torch.nn.Conv2d(8, 4, 3, stride=2, padding=1)

        def forward(self, x: Any) -> Any:
            y = self.c2(torch.relu(self.c1(x)))
            return torch.sigmoid(y), y.mean(dim=(2, 3))

    torch.manual_seed(seed)
    net = Net().eval()
    torch.jit.trace(net, torch.zeros(IMAGE)).save(str(path))
    return path


def make_torch_raiser(path: Path) -> Path:
    """A scripted model that raises ValueError("input too bright") when the input sums above 100."""
    torch = _torch()

    class Raiser(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x):  # TorchScript: an unannotated argument is a Tensor
            if bool(x.sum() > 100.0):
                raise ValueError("input too bright")
            return x * 2.0

    torch.jit.script(Raiser()).save(str(path))
    return path


def make_torch_spinner(path: Path) -> Path:
    """A scripted model that applies tanh x[0,0] times: a call as long as the caller wants."""
    torch = _torch()

    class Spinner(torch.nn.Module):  # type: ignore[misc]
        def forward(self, x):
            y = x
            for _ in range(int(x[0, 0].item())):
                y = torch.tanh(y)
            return y + 1.0

    torch.jit.script(Spinner()).save(str(path))
    return path


def make_torch_float_only(path: Path, seed: int = 3) -> Path:
    """A scripted model that forces its input to float32 against a weight: it cannot run in half precision."""
    torch = _torch()

    class FloatOnly(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            generator = torch.Generator().manual_seed(seed)
            self.weight = torch.nn.Parameter(torch.randn(4, 4, generator=generator))

        def forward(self, x):
            return x.float() @ self.weight

    torch.jit.script(FloatOnly()).save(str(path))
    return path


# --- TensorFlow frozen graph, encoded by hand (GraphDef protobuf wire format) -------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _int_field(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _shape(dims: tuple[int, ...]) -> bytes:
    return b"".join(_field(2, _int_field(1, dim)) for dim in dims)


def _tensor(array: np.ndarray) -> bytes:
    # TensorProto: dtype=1 (DT_FLOAT=1), tensor_shape=2, tensor_content=4
    return (
        _int_field(1, 1) + _field(2, _shape(array.shape)) + _field(4, np.ascontiguousarray(array).tobytes())
    )


def _node(name: str, op: str, inputs: tuple[str, ...] = (), **attrs: bytes) -> bytes:
    # NodeDef: name=1, op=2, input=3, attr=5 (map entry: key=1, AttrValue=2)
    body = _field(1, name.encode()) + _field(2, op.encode()) + b"".join(_field(3, i.encode()) for i in inputs)
    body += b"".join(_field(5, _field(1, key.encode()) + _field(2, value)) for key, value in attrs.items())
    return _field(1, body)  # GraphDef.node=1


def make_tf_frozen(path: Path, seed: int = 2) -> tuple[Path, np.ndarray, np.ndarray]:
    """Frozen graph data[1,16,16,3] NHWC -> Conv2D 3x3 SAME -> BiasAdd -> Relu "out". Returns (path, W, B)."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((3, 3, 3, 4)) * 0.3).astype(np.float32)  # HWIO
    bias = (rng.standard_normal(4) * 0.1).astype(np.float32)
    float_type = _int_field(6, 1)  # AttrValue.type = DT_FLOAT
    graph = b"".join(
        [
            _node("data", "Placeholder", dtype=float_type, shape=_field(7, _shape(NHWC))),
            _node("w", "Const", dtype=float_type, value=_field(8, _tensor(weight))),
            _node("b", "Const", dtype=float_type, value=_field(8, _tensor(bias))),
            _node(
                "conv",
                "Conv2D",
                ("data", "w"),
                T=float_type,
                strides=_field(1, _field(3, b"".join(_varint(1) for _ in range(4)))),
                padding=_field(2, b"SAME"),
                data_format=_field(2, b"NHWC"),
            ),
            _node("bias", "BiasAdd", ("conv", "b"), T=float_type, data_format=_field(2, b"NHWC")),
            _node("out", "Relu", ("bias",), T=float_type),
        ]
    )
    path.write_bytes(graph)
    return path, weight, bias


def tf_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What TensorFlow computes for make_tf_frozen's graph, in numpy (NHWC)."""
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3), axis=(1, 2))  # n,h,w,c,3,3
    out = np.einsum("nhwcij,ijco->nhwo", windows, weight) + bias
    return np.maximum(out, 0).astype(np.float32)


def kill_and_wait(pid: int, sig: int = signal.SIGKILL, timeout: float = 120.0) -> None:
    """Send a signal to a child process and wait until it is dead: every thread gone, a zombie to reap."""
    os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    status = Path(f"/proc/{pid}/status")
    while True:
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except FileNotFoundError:
            return
        # The group leader shows as a zombie while its other threads still exit; only then can it be reaped.
        if fields.get("State", "").strip().startswith("Z") and int(fields.get("Threads", "1")) <= 1:
            return
        assert time.monotonic() < deadline, f"process {pid} did not die"
        time.sleep(0.01)


def model_folder(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(exist_ok=True)
    return folder


def image(seed: int, shape: tuple[int, ...] = IMAGE) -> np.ndarray:
    """A reproducible float32 input in [0, 1)."""
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wait_until_computing(host: ModelHost) -> int:
    """Wait until a call is in flight and the server burns CPU on it; return the server's pid."""
    deadline = time.monotonic() + WAIT
    while host.in_flight == 0:
        assert time.monotonic() < deadline, "the call never started"
        time.sleep(0.01)
    pid = host.pid
    assert pid is not None
    start = cpu_ticks(pid)
    while cpu_ticks(pid) < start + 20:
        assert time.monotonic() < deadline, "the server never started computing"
        time.sleep(0.02)
    return pid
