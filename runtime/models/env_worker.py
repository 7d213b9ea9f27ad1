"""The worker that serves one model node inside a backend environment.

Run by :class:`runtime.models.remote.EnvironmentBackend` with the environment's interpreter, as
``python -I env_worker.py SOCKET_FD MEMORY_FD``: it keeps to the standard library, numpy (1.23 and later)
and the framework, and to Python 3.7 syntax, because the environment holds nothing else.

Messages on the socket are an 8-byte big-endian length and a pickle (protocol 4) of plain tuples. The first
is ``("load", kind, path, inputs, fp16)``; the answer is ``("loaded", dtypes, outputs, notes, versions)`` or
``("error", text)``. Then each ``("run", size, [(name, dtype, shape, offset), ...])`` - the inputs lie in the
shared memory (a memfd both processes map) - is answered by ``("done", size, [(dtype, shape, offset), ...])``
with the outputs written after the inputs (the memory grown when they need it), or ``("error", text)``. The
worker exits when the socket closes.
"""

import mmap
import os
import pickle
import socket
import struct
import sys
import traceback

# Run as a script, Python puts this file's folder first on sys.path; it holds modules named after the
# frameworks (mxnet.py, tensorflow.py...), which must not shadow them.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != _HERE]

import numpy as np  # noqa: E402

_HEADER = struct.Struct(">Q")
_ALIGN = 64
#: The outputs of a TensorFlow Object Detection API model, in the order they are returned.
OD_API_OUTPUTS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")


def _read(sock, count):
    chunks = []
    while count:
        chunk = sock.recv(min(count, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        count -= len(chunk)
    return b"".join(chunks)


def receive(sock):
    header = _read(sock, _HEADER.size)
    if header is None:
        return None
    body = _read(sock, _HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def send(sock, message):
    body = pickle.dumps(message, protocol=4)
    sock.sendall(_HEADER.pack(len(body)) + body)


def error_text(error):
    """The framework's message as one line (its last non-empty line, or the first of a tensorflow error's
    message), led by the exception's type."""
    own = getattr(error, "message", None)
    if isinstance(own, str) and own.strip():
        # tensorflow's: "Graph execution error:", the cause, then the node ("[[{{node Assert}}]]").
        lines = [line.strip() for line in own.splitlines() if line.strip()]
        causes = [line for line in lines if not line.startswith("[[") and not line.endswith("error:")]
        text = (causes or lines)[0]
    else:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    kind = type(error).__name__
    if text.startswith(kind + ":") or text.split(":", 1)[0].endswith(("Error", "Exception")):
        message = text
    else:
        message = f"{kind}: {text}" if text else kind
    return message if len(message) <= 400 else message[:397] + "..."


def match_inputs(declared, model_names):
    """Descriptor input name -> model input name: by name when they all match, else by position."""
    if set(declared) <= set(model_names) and len(declared) == len(model_names):
        return {name: name for name in declared}
    if len(declared) != len(model_names):
        raise ValueError(
            f"the model takes inputs {list(model_names)} but the descriptor declares {list(declared)}"
        )
    return dict(zip(declared, model_names))


class MxnetSymbol:
    """``<prefix>-symbol.json`` + ``<prefix>-NNNN.params`` imported as a Gluon SymbolBlock on the CPU."""

    def __init__(self, path, inputs, fp16):
        import mxnet

        self.mx = mxnet
        self.notes = []
        self.versions = {"mxnet": mxnet.__version__, "numpy": np.__version__}
        prefix = os.path.basename(path)[: -len("-symbol.json")]
        folder = os.path.dirname(path)
        params = sorted(name for name in os.listdir(folder) if name.startswith(prefix + "-"))
        params = [name for name in params if name.endswith(".params")]
        if not params:
            raise ValueError(f"no {prefix}-NNNN.params file beside {os.path.basename(path)}")
        symbol = mxnet.sym.load(path)
        saved = mxnet.nd.load(os.path.join(folder, params[-1]))
        stored = set(key.split(":", 1)[-1] for key in saved)
        data = [name for name in symbol.list_inputs() if name not in stored]
        self.names = match_inputs([name for name, _ in inputs], data)
        self.order = [self.names[name] for name, _ in inputs]
        self.block = mxnet.gluon.nn.SymbolBlock.imports(
            path, data, os.path.join(folder, params[-1]), ctx=mxnet.cpu()
        )
        self.block.hybridize(static_alloc=True, static_shape=True)
        self.input_dtypes = {name: "<f4" for name, _ in inputs}
        self.positions = {model: index for index, model in enumerate(data)}
        self.dtype = "float32"
        if fp16:
            self.block.cast("float16")
            self.dtype = "float16"
            try:
                self.run(
                    {name: np.zeros([max(dim, 1) for dim in shape], np.float32) for name, shape in inputs}
                )
            except mxnet.base.MXNetError as error:
                # mxnet has no half-precision CPU kernel for some operators (gemm, so convolutions).
                self.block.cast("float32")
                self.dtype = "float32"
                self.notes.append(
                    "precisionMode FP16: mxnet cannot run this model in half precision on the CPU "
                    f"({error_text(error)}); it runs in FP32"
                )
        self.outputs = list(symbol.list_outputs())

    def run(self, arrays):
        mx = self.mx
        args = [None] * len(self.positions)
        for name, array in arrays.items():
            args[self.positions[self.names[name]]] = mx.nd.array(array, dtype=self.dtype)
        result = self.block(*args)
        outputs = result if isinstance(result, (list, tuple)) else [result]
        return [output.asnumpy() for output in outputs]


class TensorflowGraph:
    """A TF1 frozen GraphDef, run in a ``tf.compat.v1.Session``.

    Inputs are its placeholders, in their own dtypes. Outputs: the TF Object Detection API's four
    (OD_API_OUTPUTS) when the graph has them, else every op output nothing consumes, in graph order.
    """

    def __init__(self, path, inputs, fp16):
        import tensorflow as tf

        self.notes = []
        self.versions = {"tensorflow": tf.__version__, "numpy": np.__version__}
        graph_def = tf.compat.v1.GraphDef()
        with open(path, "rb") as handle:
            graph_def.ParseFromString(handle.read())
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        operations = self.graph.get_operations()
        placeholders = [op for op in operations if op.type == "Placeholder"]
        names = match_inputs([name for name, _ in inputs], [op.name for op in placeholders])
        by_name = {op.name: op for op in placeholders}
        self.feeds = {name: by_name[model].outputs[0] for name, model in names.items()}
        self.input_dtypes = {
            name: np.dtype(tensor.dtype.as_numpy_dtype).str for name, tensor in self.feeds.items()
        }
        present = set(op.name for op in operations)
        if all(name in present for name in OD_API_OUTPUTS):
            self.fetches = [self.graph.get_tensor_by_name(name + ":0") for name in OD_API_OUTPUTS]
        else:
            consumed = set(tensor.name for op in operations for tensor in op.inputs)
            # An op another one waits on (a control input, such as an assertion's guard) is no output.
            awaited = set(control.name for op in operations for control in op.control_inputs)
            skipped = ("Const", "Placeholder", "NoOp", "Assert")
            self.fetches = [
                tensor
                for op in operations
                if op.type not in skipped and op.name not in awaited
                for tensor in op.outputs
                if tensor.name not in consumed
            ]
        if not self.fetches:
            raise ValueError("the graph has no output: every op's result is consumed by another")
        self.outputs = [tensor.name.split(":")[0] for tensor in self.fetches]
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        self.session = tf.compat.v1.Session(graph=self.graph, config=config)
        if fp16:
            self.notes.append(
                "precisionMode FP16 is not applied by tensorflow on the CPU; the model runs in FP32"
            )

    def run(self, arrays):
        feed = {self.feeds[name]: array for name, array in arrays.items()}
        return [np.asarray(value) for value in self.session.run(self.fetches, feed_dict=feed)]


class TensorflowSavedModel:
    """A SavedModel's ``serving_default`` signature. Outputs: the OD API's four first (those present), then
    the rest by name."""

    def __init__(self, path, inputs, fp16):
        import tensorflow as tf

        self.tf = tf
        self.notes = []
        self.versions = {"tensorflow": tf.__version__, "numpy": np.__version__}
        self.loaded = tf.saved_model.load(path)
        if "serving_default" not in self.loaded.signatures:
            raise ValueError("the SavedModel has no serving_default signature")
        self.function = self.loaded.signatures["serving_default"]
        _, keywords = self.function.structured_input_signature
        self.names = match_inputs([name for name, _ in inputs], sorted(keywords))
        self.input_dtypes = {
            name: np.dtype(keywords[model].dtype.as_numpy_dtype).str for name, model in self.names.items()
        }
        keys = sorted(self.function.structured_outputs)
        self.outputs = [name for name in OD_API_OUTPUTS if name in keys]
        self.outputs += [name for name in keys if name not in OD_API_OUTPUTS]
        if fp16:
            self.notes.append(
                "precisionMode FP16 is not applied by tensorflow on the CPU; the model runs in FP32"
            )

    def run(self, arrays):
        tf = self.tf
        result = self.function(**{self.names[name]: tf.constant(array) for name, array in arrays.items()})
        return [np.asarray(result[name]) for name in self.outputs]


class NeoCompiled:
    """A SageMaker Neo artifact folder loaded with ``dlr.DLRModel`` on the CPU."""

    def __init__(self, path, inputs, fp16):
        import dlr

        self.notes = []
        self.versions = {"dlr": getattr(dlr, "__version__", "?"), "numpy": np.__version__}
        self.model = dlr.DLRModel(path, "cpu", 0)
        self.names = match_inputs([name for name, _ in inputs], list(self.model.get_input_names()))
        self.input_dtypes = {name: "<f4" for name, _ in inputs}
        self.outputs = [f"output{index}" for index in range(self.model.get_output_size())]

    def run(self, arrays):
        outputs = self.model.run({self.names[name]: array for name, array in arrays.items()})
        return [np.asarray(output) for output in outputs]


KINDS = {
    "mxnet-symbol": MxnetSymbol,
    "tensorflow-graph": TensorflowGraph,
    "tensorflow-savedmodel": TensorflowSavedModel,
    "dlr": NeoCompiled,
}


class Memory:
    """The shared memory, mapped at its current size and remapped when either side grows it."""

    def __init__(self, fd):
        self.fd = fd
        self.size = 0
        self.map = None

    def follow(self, size):
        if size > self.size:
            self.map = mmap.mmap(self.fd, size)
            self.size = size

    def ensure(self, size):
        if size > self.size:
            size = max(size, self.size * 2)
            os.ftruncate(self.fd, size)
            self.follow(size)

    def array(self, dtype, shape, offset):
        dtype = np.dtype(dtype)
        count = int(np.prod(shape)) if len(shape) else 1
        return np.frombuffer(self.map, dtype=dtype, count=count, offset=offset).reshape(shape)


def _aligned(offset):
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN


def serve(model, sock, memory):
    while True:
        message = receive(sock)
        if message is None:
            return
        _, size, placed = message
        try:
            memory.follow(size)
            arrays = {}
            end = 0
            for name, dtype, shape, offset in placed:
                arrays[name] = memory.array(dtype, shape, offset)
                end = max(end, offset + arrays[name].nbytes)
            outputs = [np.asarray(output) for output in model.run(arrays)]
            del arrays
            offsets = []
            offset = _aligned(end)
            for output in outputs:
                if output.dtype.kind not in "biuf":
                    raise TypeError(f"the model returned a {output.dtype} array, which is not numeric")
                offsets.append(offset)
                offset = _aligned(offset + output.nbytes)
            memory.ensure(offset)
            answer = []
            for output, start in zip(outputs, offsets):
                view = memory.array(output.dtype, output.shape, start)
                view[...] = output
                answer.append((output.dtype.str, output.shape, start))
            send(sock, ("done", memory.size, answer))
        except Exception as error:
            send(sock, ("error", error_text(error)))


def main(argv):
    sock = socket.socket(fileno=int(argv[0]))
    memory = Memory(int(argv[1]))
    message = receive(sock)
    if message is None:
        return 0
    _, kind, path, inputs, fp16 = message
    try:
        model = KINDS[kind](path, [(name, tuple(shape)) for name, shape in inputs], fp16)
    except Exception as error:
        traceback.print_exc()
        send(sock, ("error", error_text(error)))
        return 1
    send(sock, ("loaded", model.input_dtypes, model.outputs, model.notes, model.versions))
    serve(model, sock, memory)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
