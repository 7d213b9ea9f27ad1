"""Model caller: calls a model node with ``self.call`` in the appliance's sandbox and reports what happened.

Every report is one line on stdout, ``e2e-report {json}``, which the tests read back from the node's
``console_output``. Parameters (graph value nodes): ``mode`` the scenario, ``model`` the model node called,
``shape`` its input shape (``"1,3,32,32"``), ``value`` what the good input is filled with, ``count`` how many
calls the ``concurrent`` scenario makes. The input is always named ``data``.

- ``errors``: a good call; a wrong input name, a wrong shape (as a dict and as one array), an unknown model
  node, each caught; then a good call again.
- ``raiser``: a good call; a call with an input filled with 1000 (the model raises on it), caught; a good
  call again.
- ``concurrent``: waits, through the application's storage, until ``PEERS`` nodes are ready, then calls the
  model ``count`` times;
- ``long``: leaves ``calling-<node>`` in the storage and makes one call (a long one, given the right model and
  ``value``);
- ``waiter``: waits until the file ``go`` appears in the storage, then calls the model ``count`` times.

Afterwards a node with a camera passes every frame to HDMI, calling the model once per frame and labelling
the frame with the number of calls that succeeded; a node without one idles.

Python 3.8, numpy and the SDK only.
"""

import json
import os
import sys
import time

import numpy as np
import panoramasdk

STORAGE = "/opt/aws/panorama/storage"
PEERS = 2
BAD_VALUE = 1000.0


def report(kind, **fields):
    fields["kind"] = kind
    sys.stdout.write("e2e-report " + json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def summary(outputs):
    return {
        "is_tuple": isinstance(outputs, tuple),
        "outputs": [
            {
                "shape": list(output.shape),
                "dtype": str(output.dtype),
                "sum": float(np.sum(output, dtype=np.float64)),
            }
            for output in outputs
        ],
    }


def attempt(action):
    """What calling ``action`` did: ``{"ok": summary}`` or ``{"error": type, message and kind}``."""
    try:
        outputs = action()
    except Exception as error:  # the caller reports whatever happened
        return {
            "error": {
                "type": type(error).__name__,
                "message": str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error),
                "key_error": isinstance(error, KeyError),
                "runtime_error": isinstance(error, RuntimeError),
            }
        }
    return {"ok": summary(outputs)}


class Caller(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.mode = self.inputs.mode.get()
        self.model = self.inputs.model.get()
        self.shape = tuple(int(part) for part in self.inputs.shape.get().split(","))
        self.value = float(self.inputs.value.get())
        self.count = int(self.inputs.count.get())
        self.name = os.environ.get("PANORAMA_EMULATOR_NODE", "node")
        self.ok = 0
        self.failed = 0

    def good(self):
        return np.full(self.shape, self.value, np.float32)

    def call_good(self):
        return self.call({"data": self.good()}, self.model)

    def run_errors(self):
        good = self.good()
        smaller = np.zeros((*self.shape[:-1], max(1, self.shape[-1] // 2)), np.float32)
        report("first", result=attempt(self.call_good))
        report(
            "errors",
            wrong_name=attempt(lambda: self.call({"image": good}, self.model)),
            wrong_shape=attempt(lambda: self.call({"data": smaller}, self.model)),
            wrong_shape_array=attempt(lambda: self.call(smaller, self.model)),
            unknown_node=attempt(lambda: self.call({"data": good}, "no_such_model_node")),
        )
        report("after", result=attempt(self.call_good))

    def run_raiser(self):
        report("first", result=attempt(self.call_good))
        bad = np.full(self.shape, BAD_VALUE, np.float32)
        report("raised", result=attempt(lambda: self.call({"data": bad}, self.model)))
        report("after", result=attempt(self.call_good))

    def run_concurrent(self):
        with open(os.path.join(STORAGE, "ready-" + self.name), "w") as handle:
            handle.write("ready\n")
        while len([name for name in os.listdir(STORAGE) if name.startswith("ready-")]) < PEERS:
            time.sleep(0.01)
        self.call_many()

    def run_long(self):
        with open(os.path.join(STORAGE, "calling-" + self.name), "w") as handle:
            handle.write("calling\n")
        report("long", result=attempt(self.call_good))

    def run_waiter(self):
        while not os.path.exists(os.path.join(STORAGE, "go")):
            time.sleep(0.01)
        self.call_many()

    def call_many(self):
        results = [attempt(self.call_good) for _ in range(self.count)]
        errors = [result["error"] for result in results if "error" in result]
        sums = {round(output["sum"], 3) for r in results if "ok" in r for output in r["ok"]["outputs"]}
        report(
            "calls",
            node=self.name,
            calls=len(results),
            ok=len(results) - len(errors),
            errors=errors[:3],
            sums=sorted(sums),
        )

    def pass_frames(self):
        while True:
            streams = self.inputs.video_in.get()
            result = attempt(self.call_good)
            if "ok" in result:
                self.ok += 1
            else:
                self.failed += 1
            for stream in streams:
                stream.add_label(f"model calls ok {self.ok} failed {self.failed}", 0.02, 0.05)
            self.outputs.video_out.put(streams)

    def run(self):
        runner = getattr(self, "run_" + self.mode, None)
        if runner is None:
            report("bad-mode", mode=self.mode)
            sys.exit(2)
        runner()
        report("done", node=self.name)
        if "video_in" in [port.name for port in self.inputs]:
            self.pass_frames()
        while True:
            time.sleep(1)


if __name__ == "__main__":
    Caller().run()
