"""The model server: a separate process that loads every model node once and serves calls to them.

Started by :class:`runtime.models.host.ModelHost` as ``python -m runtime.models.worker FD`` where FD is its
end of the control socket (see :mod:`runtime.models.protocol`). Calls run on the process's main thread when
it is free, else on a pool thread, so calls from several app nodes are served concurrently (see
:mod:`runtime.models.dispatch`). A backend that is not thread-safe is called under a lock. The process exits
when the control socket closes: when the appliance closes the host, or dies.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import pickle
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np

from runtime.models.base import Backend, ModelSpec, backend_class, one_line
from runtime.models.dispatch import Dispatcher
from runtime.models.protocol import SharedBuffer, layout, receive, send

__all__ = ["LoadedModel", "answer", "load_model", "main"]


class LoadedModel:
    """A backend plus what the server needs to call it safely.

    Args:
        backend: the loaded backend.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.dtypes = backend.input_dtypes
        self.lock: AbstractContextManager[object] = nullcontext() if backend.thread_safe else threading.Lock()


def load_model(spec: ModelSpec) -> LoadedModel:
    """Load one model node and run it once on zeros of its declared inputs.

    Args:
        spec: the model node.

    Returns:
        The loaded model.

    Raises:
        ModelError: the file cannot be loaded.
        Exception: whatever the framework raises when the model cannot run on its declared inputs.
    """
    backend = backend_class(spec.backend)(spec)
    dtypes = backend.input_dtypes
    zeros = {
        name: np.zeros(tuple(dim if dim > 0 else 1 for dim in shape), dtype=dtypes[name])
        for name, shape in spec.inputs
    }
    backend.warm_up(zeros)
    return LoadedModel(backend)


_Placed = list[tuple[str, tuple[int, ...], int]]


def _run(
    model: LoadedModel,
    buffer: SharedBuffer,
    size: int,
    inputs: Sequence[tuple[str, str, tuple[int, ...], int]],
) -> tuple[str, int, _Placed]:
    buffer.follow(size)
    end = 0
    arrays = {}
    for name, dtype, shape, offset in inputs:
        array = buffer.array(dtype, shape, offset)
        arrays[name] = array
        end = max(end, offset + array.nbytes)
    with model.lock:
        outputs = [np.asarray(output) for output in model.backend.run(arrays)]
        del arrays
        for output in outputs:
            if output.dtype.kind not in "biuf":
                raise TypeError(f"the model returned a {output.dtype} array, which is not numeric")
        f32 = np.dtype(np.float32)
        offsets, needed = layout([(f32, output.shape) for output in outputs], start=end)
        buffer.ensure(needed)
        placed: _Placed = []
        for output, offset in zip(outputs, offsets, strict=True):
            np.copyto(buffer.array(f32, output.shape, offset), output, casting="unsafe")
            placed.append((f32.str, output.shape, offset))
    return ("ok", buffer.size, placed)


def answer(models: dict[str, LoadedModel], request: bytes, buffer: SharedBuffer) -> bytes:
    """Answer one call on a channel (a model that raises is an ``error`` answer, never an exception).

    Args:
        models: the loaded models by node name.
        request: the pickled ``("call", node, size, inputs)`` message.
        buffer: the channel's shared memory.

    Returns:
        The pickled answer.
    """
    reply: tuple[object, ...]
    try:
        _, node, size, inputs = pickle.loads(request)
        reply = _run(models[node], buffer, size, inputs)
    except BaseException as error:
        reply = ("error", one_line(error))
    return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the server on the control socket whose fd is the first argument.

    Args:
        argv: command-line arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    control = socket.socket(fileno=int(args[0]))
    # A native crash (segfault) prints the Python stacks to stderr, which the appliance keeps in its log.
    faulthandler.enable()
    # Ctrl-C in a terminal reaches the whole process group: the appliance handles it and closes the host.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = receive(control)
    if received is None:
        return 0
    specs: list[ModelSpec] = received[0][1]
    models: dict[str, LoadedModel] = {}
    for spec in specs:
        send(control, ("loading", spec.node))
        try:
            models[spec.node] = load_model(spec)
        except BaseException as error:
            traceback.print_exc()
            send(control, ("failed", spec.node, one_line(error)))
            return 1
    ready = {
        node: ({name: dtype.str for name, dtype in model.dtypes.items()}, list(model.backend.notes))
        for node, model in models.items()
    }
    send(control, ("ready", ready))
    dispatcher = Dispatcher(functools.partial(answer, models))
    threading.Thread(target=_accept, args=(control, dispatcher), name="control", daemon=True).start()
    dispatcher.loop()
    return 0


def _accept(control: socket.socket, dispatcher: Dispatcher) -> None:
    while True:
        received = receive(control, maxfds=2)
        if received is None:
            break
        _, fds = received
        dispatcher.add(socket.socket(fileno=fds[0]), SharedBuffer(fds[1], int(received[0][1])))
    sys.stdout.flush()
    sys.stderr.flush()
    # The appliance is gone or closed the host. Frameworks' thread pools can make interpreter shutdown slow
    # or hang, and nothing is left to clean up.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
