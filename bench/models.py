"""Model node overhead: self.call from an app, and ModelHost.call, against the backend called in this process.

    python bench/models.py [--calls 20] [--rounds 40] [--backend onnxruntime --backend torchscript ...]
    python bench/models.py --backend mxnet --backend tensorflow [--calls 10] [--rounds 10]  (env_models.py)

For each backend, a small convolutional model (about 5 ms per call on a laptop core, generated here with a
fixed seed: no download) is run on the same input (1 x 3 x 224 x 224 float32) three ways:

- in-process: the same backend class loaded in this process, called directly;
- ModelHost.call: the appliance's model host, whose model server is another process reached through a
  socket and shared memory;
- self.call: an app process using ``panoramasdk`` calls the model node as on the appliance: the bridge
  (``runtime.bridge.Runtime`` serving the app, with ``models=`` that ModelHost) lends it a call buffer and a
  channel to the model server, and the call goes on that channel; timed by the app itself around
  ``self.call``. The app runs as a plain subprocess with the SDK on its PYTHONPATH (as in the bridge
  tests), not in a sandbox, and with the environment an app gets (not the model server's malloc settings).

The three alternate in rounds so that other load on the machine hits them alike. The model server runs with
malloc settings that keep a framework's per-call buffers (SERVER_ENV); unless --plain-allocator is given,
this process re-executes itself with the same settings, so that the comparison measures what serving a
model costs, not the allocator. Medians and minimums are reported (on a machine shared with other work the
minimums show the intrinsic cost best). The ratios are median(way) / median(in-process); the target is below
1.10. The paired ratios (ModelHost.call, then self.call) are the median over rounds of each round's ratio of
medians: each round's three ways run within a second of one another, so a machine whose speed drifts
(a virtual machine's neighbours) moves them alike. Last, the round trip of a model that does nothing
(Identity, same input and output size) gives the fixed cost of a call both ways.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from runtime.bridge import Runtime
from runtime.bridge.testing import app_plan, code_node, model_plan
from runtime.models import ModelEntry, ModelHost, ModelSpec, backend_class
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


# The app: loads the input, warms up, then runs the rounds the benchmark asks for on its stdin.
APP = """
import json
import sys
import time

import numpy as np
import panoramasdk

MODEL = sys.argv[1]
x = np.load(sys.argv[2])
node = panoramasdk.node()
for _ in range(10):
    node.call({"data": x}, MODEL)
print("READY", flush=True)
for line in sys.stdin:
    command = line.split()
    if command[0] == "run":
        times = []
        for _ in range(int(command[1])):
            start = time.perf_counter()
            node.call({"data": x}, MODEL)
            times.append(time.perf_counter() - start)
        print("TIMES " + json.dumps(times), flush=True)
    elif command[0] == "save":
        np.savez(command[1], *node.call({"data": x}, MODEL))
        print("SAVED", flush=True)
"""


class BridgeApp:
    """An app process calling one model node of ``host`` through a bridge runtime.

    Args:
        host: a started model host.
        node: the model node the app calls.
        inputs: the node's declared input names.
        x: the input the app sends.
        workdir: a scratch directory (run directory, app script, input file).
    """

    def __init__(
        self, host: ModelHost, node: str, inputs: Sequence[str], x: np.ndarray, workdir: Path
    ) -> None:
        plan = app_plan(code_node(media_inputs={}), models=[model_plan(node, inputs)])
        self.runtime = Runtime(plan, workdir / "run", cameras={}, hdmi=None, models=host)
        script, data = workdir / "app.py", workdir / "x.npy"
        script.write_text(APP)
        np.save(data, x)
        self.runtime.start()
        env = {
            key: value for key, value in os.environ.items() if key not in SERVER_ENV and key != "PYTHONPATH"
        }
        env.update(self.runtime.node_env("code_node", sandbox_paths=False))
        self.process = subprocess.Popen(
            [sys.executable, str(script), node, str(data)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd="/",
            text=True,
        )
        self._expect("READY")

    def _expect(self, word: str) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith(word):
            self.close()
            assert self.process.stderr is not None
            raise SystemExit(f"the bench app failed: {line}{self.process.stderr.read()[-3000:]}")
        return line[len(word) :].strip()

    def _send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def run(self, calls: int) -> list[float]:
        """Have the app make ``calls`` calls; return their durations in seconds as the app measured them."""
        self._send(f"run {calls}")
        times: list[float] = json.loads(self._expect("TIMES"))
        return times

    def outputs(self, path: Path) -> list[np.ndarray]:
        """The outputs of one more call, as the app received them."""
        self._send(f"save {path}")
        self._expect("SAVED")
        with np.load(path) as saved:
            return [saved[f"arr_{index}"] for index in range(len(saved.files))]

    def close(self) -> None:
        """Stop the app and the runtime."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()
        self.runtime.stop()


@contextlib.contextmanager
def served(model: ModelEntry, x: np.ndarray, prefer: list[str]) -> Iterator[tuple[ModelHost, BridgeApp]]:
    """A model host serving ``model`` and an app calling it through the bridge."""
    with (
        ModelHost([model], prefer=prefer) as host,
        tempfile.TemporaryDirectory() as workdir,
    ):
        app = BridgeApp(host, model.node, [name for name, _ in model.inputs], x, Path(workdir))
        try:
            yield host, app
        finally:
            app.close()


def _ms(times: list[float]) -> tuple[float, float]:
    return statistics.median(times) * 1000, min(times) * 1000


def round_trip(folder: Path, calls: int) -> dict[str, tuple[float, float]]:
    """Median and minimum milliseconds of a call of the Identity model (onnxruntime), both ways.

    Args:
        folder: an empty directory for the model file.
        calls: calls timed each way.

    Returns:
        ``{"host": (median, min), "app": (median, min)}``.
    """
    make_identity(folder)
    model = ModelEntry("identity", folder, "ONNX", (("data", SHAPE),))
    x = np.random.default_rng(SEED).random(SHAPE, dtype=np.float32)
    hosted: list[float] = []
    through_app: list[float] = []
    with served(model, x, ["onnxruntime"]) as (host, app):
        for _ in range(20):
            host.call("identity", x)
        step = 50
        for _ in range(0, calls, step):
            for _ in range(step):
                start = time.perf_counter()
                host.call("identity", x)
                hosted.append(time.perf_counter() - start)
            through_app += app.run(step)
    return {"host": _ms(hosted), "app": _ms(through_app)}


BACKENDS = {
    "onnxruntime": ("ONNX", make_onnx),
    "opencv-onnx": ("ONNX", make_onnx),
    "torchscript": ("PYTORCH", make_torchscript),
}


def bench(name: str, folder: Path, calls: int, rounds: int) -> dict[str, float]:
    """Time one backend three ways.

    Args:
        name: a key of BACKENDS.
        folder: an empty directory for the model file.
        calls: calls per round and way.
        rounds: alternating rounds.

    Returns:
        Median and minimum milliseconds per call in process (``inproc``), through ModelHost (``host``) and
        through the bridge from an app (``app``), and the ratios of the medians to the in-process one.
    """
    framework, make = BACKENDS[name]
    path = make(folder)
    model = ModelEntry("bench_node", folder, framework, (("data", SHAPE),))
    spec = ModelSpec("bench_node", path, name, framework, None, (("data", SHAPE),))
    local = backend_class(name)(spec)
    x = np.random.default_rng(SEED).random(SHAPE, dtype=np.float32)
    local.warm_up({"data": x})
    inproc: list[float] = []
    hosted: list[float] = []
    through_app: list[float] = []
    paired: dict[str, list[float]] = {"host": [], "app": []}
    with served(model, x, [name]) as (host, app):
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
            through_app += app.run(calls)
            base = statistics.median(inproc[-calls:])
            paired["host"].append(statistics.median(hosted[-calls:]) / base)
            paired["app"].append(statistics.median(through_app[-calls:]) / base)
        expected = local.run({"data": x})
        for got in (host.call("bench_node", x), app.outputs(folder / "outputs.npz")):
            assert len(got) == len(expected)
            for want, have in zip(expected, got, strict=True):
                assert have.dtype == np.float32
                np.testing.assert_allclose(have, want, atol=1e-4, rtol=0)
    result: dict[str, float] = {}
    for way, times in (("inproc", inproc), ("host", hosted), ("app", through_app)):
        result[f"{way}_ms"], result[f"{way}_min_ms"] = _ms(times)
    result["host_ratio"] = result["host_ms"] / result["inproc_ms"]
    result["app_ratio"] = result["app_ms"] / result["inproc_ms"]
    result["host_paired"] = statistics.median(paired["host"])
    result["app_paired"] = statistics.median(paired["app"])
    return result


def _versions() -> str:
    import cv2

    found = [f"Python {platform.python_version()}", f"numpy {np.__version__}", f"OpenCV {cv2.__version__}"]
    for module in ("onnxruntime", "torch"):
        with contextlib.suppress(ImportError):
            found.append(f"{module} {__import__(module).__version__}")
    return ", ".join(found)


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from env_models import delegated  # mxnet and tensorflow run in backend environments: bench/env_models.py

    if (status := delegated(argv, served)) is not None:
        return status
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
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, {_versions()}")
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"in-process side: {settings} malloc settings")
    print(
        "self.call: app as a plain subprocess (no sandbox) with panoramasdk, served by runtime.bridge.Runtime"
    )
    names = args.backend or [name for name in BACKENDS if backend_class(name).available()]
    print(f"input {SHAPE} float32; {args.rounds} rounds x {args.calls} calls each way; ms: median (min)")
    print(
        f"{'backend':<13}{'in-process':>17}{'ModelHost.call':>18}{'ratio':>7}{'self.call':>18}{'ratio':>7}"
        f"{'paired ratios':>15}"
    )
    worst = 0.0
    for name in names:
        with tempfile.TemporaryDirectory() as folder:
            r = bench(name, Path(folder), args.calls, args.rounds)
        worst = max(worst, r["app_ratio"])
        cells = [f"{r[f'{way}_ms']:.3f} ({r[f'{way}_min_ms']:.3f})" for way in ("inproc", "host", "app")]
        print(
            f"{name:<13}{cells[0]:>17}{cells[1]:>18}{r['host_ratio']:>7.3f}{cells[2]:>18}{r['app_ratio']:>7.3f}"
            f"{r['host_paired']:>8.3f}{r['app_paired']:>7.3f}",
            flush=True,
        )
    print(f"worst self.call ratio: {worst:.3f} (target < 1.10)")
    if backend_class("onnxruntime").available():
        with tempfile.TemporaryDirectory() as folder:
            fixed = round_trip(Path(folder), args.calls * args.rounds)
        print(
            "fixed cost of a call (Identity, 588 KiB in and out), median (min): "
            f"ModelHost.call {fixed['host'][0]:.3f} ({fixed['host'][1]:.3f}) ms, "
            f"self.call {fixed['app'][0]:.3f} ({fixed['app'][1]:.3f}) ms"
        )
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
