"""Model node overhead for backends that run in a backend environment (mxnet, tensorflow).

    python bench/models.py --backend mxnet [--backend tensorflow] [--calls 10] [--rounds 10]

(``bench/models.py`` hands these backends to this module.) The models are made in the environment with
``tests/runtime/models/_env_models.py`` (fixed seeds, nothing downloaded): for mxnet a gluoncv SSD
(``ssd_512_mobilenet1.0_voc``, input 1 x 3 x 512 x 512 float32); for tensorflow a frozen graph shaped like a
TF Object Detection API export (uint8 ``image_tensor`` 1 x 300 x 300 x 3, six 64-channel convolutions at
150 x 150 standing in for an SSD's cost, its four outputs; the descriptor
names the input ``data``, as the bench app does, and it maps by position). Each is run three ways on the
same input:

- in-process: the framework called directly inside its environment (the worker's own loader, in a process
  of the environment's Python that times its calls);
- ModelHost.call: through the model server and the environment's worker;
- self.call: from an app through the bridge, as ``bench/models.py`` does it.

The ways alternate in rounds; medians (minimums) per call, and the ratios of the medians to in-process.
The target is below 1.10.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import numpy as np

from runtime.models import ModelEntry
from runtime.models.environment import environment

ROOT = Path(__file__).resolve().parents[1]
MAKER = ROOT / "tests" / "runtime" / "models" / "_env_models.py"
WORKER = ROOT / "runtime" / "models" / "env_worker.py"

#: backend -> (environment, framework, maker arguments, model file, worker kind, input name, shape)
MODELS = {
    "mxnet": (
        "mxnet", "MXNET", ["gluoncv", "ssd_512_mobilenet1.0_voc", "1,3,512,512"], "model-symbol.json",
        "mxnet-symbol", "data", (1, 3, 512, 512),
    ),
    "tensorflow": (
        "tensorflow", "TENSORFLOW", ["tf-od-graph", "300", "6"], "frozen_inference_graph.pb",
        "tensorflow-graph", "data", (1, 300, 300, 3),
    ),
}  # fmt: skip

# Run in the environment: load the model with the worker's loader, then time N calls per line read.
_TIMER = """
import json, runpy, sys, time
import numpy as np
worker = runpy.run_path(sys.argv[1])
model = worker["KINDS"][sys.argv[2]](sys.argv[3], [(sys.argv[4], tuple(json.loads(sys.argv[5])))], False)
x = {sys.argv[4]: np.load(sys.argv[6])}
for _ in range(3):
    model.run(x)
for line in sys.stdin:
    times = []
    for _ in range(int(line)):
        start = time.perf_counter()
        model.run(x)
        times.append(time.perf_counter() - start)
    print(json.dumps(times), flush=True)
"""


Served = Callable[[ModelEntry, np.ndarray, list[str]], AbstractContextManager[tuple[Any, Any]]]


def bench(served: Served, name: str, folder: Path, calls: int, rounds: int) -> dict[str, float]:
    """Time one environment backend three ways (see the module docstring).

    Args:
        served: ``bench/models.py``'s ``served`` (a model host and an app calling it through the bridge).
        name: ``mxnet`` or ``tensorflow``.
        folder: an empty directory for the model.
        calls: calls per round and way.
        rounds: alternating rounds.

    Returns:
        ``inproc_ms``, ``host_ms``, ``app_ms`` (medians), their ``*_min_ms``, and ``host_ratio``,
        ``app_ratio``.
    """
    env_name, framework, maker, file, kind, input_name, shape = MODELS[name]
    env = environment(env_name)
    subprocess.run([str(env.python), "-I", str(MAKER), maker[0], str(folder), *maker[1:]], check=True)
    x = np.load(folder / "input.npy")
    timer = subprocess.Popen(
        [str(env.python), "-I", "-c", _TIMER, str(WORKER), kind, str(folder / file), input_name,
         json.dumps(shape), str(folder / "input.npy")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert timer.stdin is not None and timer.stdout is not None
    times: dict[str, list[float]] = {"inproc": [], "host": [], "app": []}
    model = ModelEntry("bench_node", folder, framework, ((input_name, shape),))
    try:
        with served(model, x, []) as (host, app):
            for _ in range(3):
                host.call("bench_node", x)
            for _ in range(rounds):
                timer.stdin.write(f"{calls}\n")
                timer.stdin.flush()
                times["inproc"] += json.loads(timer.stdout.readline())
                for _ in range(calls):
                    start = time.perf_counter()
                    host.call("bench_node", {input_name: x})
                    times["host"].append(time.perf_counter() - start)
                times["app"] += app.run(calls)
    finally:
        timer.stdin.close()
        timer.wait()
    result: dict[str, float] = {}
    for way, found in times.items():
        result[f"{way}_ms"] = statistics.median(found) * 1000
        result[f"{way}_min_ms"] = min(found) * 1000
    result["host_ratio"] = result["host_ms"] / result["inproc_ms"]
    result["app_ratio"] = result["app_ms"] / result["inproc_ms"]
    return result


def delegated(argv: list[str] | None, served: Served) -> int | None:
    """Run this benchmark when ``bench/models.py`` is asked only for environment backends.

    Args:
        argv: ``bench/models.py``'s arguments (default ``sys.argv[1:]``).
        served: its ``served``.

    Returns:
        The exit status, or None when another backend was asked for (or none).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--backend", action="append")
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    known, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not known.backend or not set(known.backend) <= set(MODELS):
        return None
    return main(served, known.backend, known.calls, known.rounds)


def main(served: Served, names: list[str], calls: int, rounds: int) -> int:
    """Print the table for the given environment backends.

    Args:
        served: ``bench/models.py``'s ``served``.
        names: ``mxnet`` and/or ``tensorflow``.
        calls: calls per round and way.
        rounds: alternating rounds.

    Returns:
        The exit status.
    """
    print(f"{rounds} rounds x {calls} calls each way; ms per call: median (min)")
    print(f"{'backend':<12}{'in its env':>18}{'ModelHost.call':>18}{'ratio':>7}{'self.call':>18}{'ratio':>7}")
    for name in names:
        env = environment(MODELS[name][0])
        with tempfile.TemporaryDirectory() as folder:
            r = bench(served, name, Path(folder), calls, rounds)
        cells = [f"{r[f'{way}_ms']:.2f} ({r[f'{way}_min_ms']:.2f})" for way in ("inproc", "host", "app")]
        print(
            f"{name:<12}{cells[0]:>18}{cells[1]:>18}{r['host_ratio']:>7.3f}{cells[2]:>18}{r['app_ratio']:>7.3f}"
            f"   ({env.distribution} {env.version})",
            flush=True,
        )
    return 0
