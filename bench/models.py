"""Model node overhead: ModelHost.call against the same backend called in this process.

    python bench/models.py [--calls 20] [--rounds 40] [--backend onnxruntime --backend torchscript ...]

For each backend, a small convolutional model (about 5 ms per call on a laptop core, generated here with a
fixed seed: no download) is run on the same input (1 x 3 x 224 x 224 float32) two ways: through ModelHost,
whose model server is another process reached through a socket and shared memory, and by the same backend
class loaded in this process. Calls alternate in rounds so that other load on the machine hits both alike.
The model server runs with malloc settings that keep a framework's per-call buffers (SERVER_ENV); unless
--plain-allocator is given, this process re-executes itself with the same settings, so that the comparison
measures what serving a model costs, not the allocator. Medians and minimums are reported (on a machine
shared with other work the minimums show the intrinsic cost best). The overhead is
median(ModelHost.call) / median(in-process run) - 1; the target is below 10 %. Last, the round trip of a
model that does nothing (Identity, same input and output size) gives the fixed cost of a call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from emulator.manifests import ModelDescriptor, ModelInput
from runtime.models import ModelHost, ModelSpec, backend_class
from runtime.models.host import SERVER_ENV

SHAPE = (1, 3, 224, 224)
# (in channels, out channels, stride) of each 3x3 convolution
LAYERS = ((3, 32, 2), (32, 64, 1), (64, 96, 2), (96, 128, 1), (128, 128, 2), (128, 128, 1))
SEED = 5


def _weights() -> list[tuple[np.ndarray, np.ndarray, int]]:
    rng = np.random.default_rng(SEED)
    layers = []
    for cin, cout, stride in LAYERS:
        weight = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
        bias = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        layers.append((weight, bias, stride))
    return layers


def make_onnx(folder: Path) -> Path:
    """Write the bench model as model.onnx (conv 3x3 + relu stack, then global average pooling)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, initializers, current = [], [], "data"
    for index, (weight, bias, stride) in enumerate(_weights()):
        initializers += [
            numpy_helper.from_array(weight, f"w{index}"),
            numpy_helper.from_array(bias, f"b{index}"),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [current, f"w{index}", f"b{index}"], [f"c{index}"], pads=[1] * 4, strides=[stride] * 2
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        current = f"r{index}"
    nodes.append(helper.make_node("GlobalAveragePool", [current], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["features"]))
    graph = helper.make_graph(
        nodes,
        "bench",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(SHAPE))],
        [
            helper.make_tensor_value_info(current, TensorProto.FLOAT, None),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, None),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(onnx.shape_inference.infer_shapes(model), str(path))
    return path


def make_torchscript(folder: Path) -> Path:
    """Write the same model as a traced TorchScript model.pt."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = torch.nn.ModuleList()
            for weight, bias, stride in _weights():
                conv = torch.nn.Conv2d(weight.shape[1], weight.shape[0], 3, stride=stride, padding=1)
                with torch.no_grad():
                    conv.weight.copy_(torch.from_numpy(weight))
                    conv.bias.copy_(torch.from_numpy(bias))
                self.convs.append(conv)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            for conv in self.convs:
                x = torch.relu(conv(x))
            return x, x.mean(dim=(2, 3))

    path = folder / "model.pt"
    with torch.no_grad():
        torch.jit.trace(Net().eval(), torch.zeros(SHAPE)).save(str(path))
    return path


def make_identity(folder: Path) -> Path:
    """Write a model that returns its input (the cost of a call without the model)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["data"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, list(SHAPE))],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(SHAPE))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path


def round_trip(folder: Path, calls: int) -> tuple[float, float]:
    """Median and minimum milliseconds of ModelHost.call on the Identity model (onnxruntime)."""
    make_identity(folder)
    descriptor = ModelDescriptor("ONNX", None, None, (ModelInput("data", SHAPE),))
    x = np.random.default_rng(SEED).random(SHAPE, dtype=np.float32)
    times = []
    with ModelHost([("identity", folder, descriptor)]) as host:
        for _ in range(20):
            host.call("identity", x)
        for _ in range(calls):
            start = time.perf_counter()
            host.call("identity", x)
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, min(times) * 1000


BACKENDS = {
    "onnxruntime": ("ONNX", make_onnx),
    "opencv-onnx": ("ONNX", make_onnx),
    "torchscript": ("PYTORCH", make_torchscript),
}


def bench(name: str, folder: Path, calls: int, rounds: int) -> dict[str, float]:
    """Time one backend both ways.

    Args:
        name: a key of BACKENDS.
        folder: an empty directory for the model file.
        calls: calls per round and way.
        rounds: alternating rounds.

    Returns:
        Median milliseconds per call in process and through ModelHost, and the overhead ratio.
    """
    framework, make = BACKENDS[name]
    path = make(folder)
    descriptor = ModelDescriptor(framework, None, None, (ModelInput("data", SHAPE),))
    spec = ModelSpec("bench_node", path, name, framework, None, (("data", SHAPE),))
    local = backend_class(name)(spec)
    x = np.random.default_rng(SEED).random(SHAPE, dtype=np.float32)
    local.warm_up({"data": x})
    inproc: list[float] = []
    hosted: list[float] = []
    with ModelHost([("bench_node", folder, descriptor)], prefer=[name]) as host:
        assert host.backends["bench_node"] == name
        for _ in range(10):
            host.call("bench_node", x)
        for _ in range(rounds):
            for _ in range(calls):
                start = time.perf_counter()
                local.run({"data": x})
                inproc.append(time.perf_counter() - start)
            for _ in range(calls):
                start = time.perf_counter()
                host.call("bench_node", {"data": x})
                hosted.append(time.perf_counter() - start)
        expected = local.run({"data": x})
        got = host.call("bench_node", x)
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_allclose(have, want, atol=1e-4, rtol=0)
    inproc_ms = statistics.median(inproc) * 1000
    hosted_ms = statistics.median(hosted) * 1000
    return {
        "inproc_ms": inproc_ms,
        "host_ms": hosted_ms,
        "overhead_ms": hosted_ms - inproc_ms,
        "overhead": hosted_ms / inproc_ms - 1,
        "inproc_min_ms": min(inproc) * 1000,
        "host_min_ms": min(hosted) * 1000,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="calls per round and way (default 20)")
    parser.add_argument("--rounds", type=int, default=40, help="alternating rounds (default 40)")
    parser.add_argument("--backend", action="append", choices=sorted(BACKENDS), help="default: all available")
    parser.add_argument(
        "--plain-allocator",
        action="store_true",
        help="run the in-process side without the server's malloc settings",
    )
    args = parser.parse_args(argv)
    if (
        argv is None
        and not args.plain_allocator
        and any(os.environ.get(k) != v for k, v in SERVER_ENV.items())
    ):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **SERVER_ENV})
    same = all(os.environ.get(k) == v for k, v in SERVER_ENV.items())
    settings = "the model server's" if same else "default"
    print(f"in-process side: {settings} malloc settings")
    names = args.backend or [name for name in BACKENDS if backend_class(name).available()]
    print(f"input {SHAPE} float32; {args.rounds} rounds x {args.calls} calls each way; medians")
    print(
        f"{'backend':<14}{'in-process ms':>15}{'ModelHost ms':>15}{'overhead ms':>14}{'overhead':>10}"
        f"{'min in-proc':>13}{'min host':>10}"
    )
    worst = -1.0
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            result = bench(name, Path(folder), args.calls, args.rounds)
        worst = max(worst, result["overhead"])
        print(
            f"{name:<14}{result['inproc_ms']:>15.3f}{result['host_ms']:>15.3f}"
            f"{result['overhead_ms']:>14.3f}{result['overhead']:>10.1%}"
            f"{result['inproc_min_ms']:>13.3f}{result['host_min_ms']:>10.3f}"
        )
    print(f"worst overhead ratio: {1 + worst:.3f} (target < 1.10)")
    if backend_class("onnxruntime").available():
        with tempfile.TemporaryDirectory() as folder:
            median, best = round_trip(Path(folder), args.calls * args.rounds)
        print(
            f"fixed cost of a call (Identity, 588 KiB in and out): median {median:.3f} ms, min {best:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
