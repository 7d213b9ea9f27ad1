"""The model server: a separate process that loads every model node once and serves calls to them.

Started by :class:`runtime.models.host.ModelHost` as ``python -m runtime.models.worker FD`` where FD is its
end of the control socket (see :mod:`runtime.models.protocol`). Each channel has a thread that receives its
calls. A call runs on the process's main thread when that thread is free, else right away on the channel's
thread, so calls from several app nodes are served concurrently. Frameworks run measurably slower on a
thread other than the one they were loaded and warmed up on (OpenMP thread teams and malloc arenas are per
thread), so the common case, one call at a time, takes the main thread. A backend that is not thread-safe
is called under a lock. The process exits when the control socket closes: when the appliance closes the
host, or dies.
"""

from __future__ import annotations

import faulthandler
import functools
import os
import queue
import signal
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

import numpy as np

from runtime.models.base import Backend, ModelSpec, backend_class, one_line
from runtime.models.protocol import SharedBuffer, layout, receive, send

__all__ = ["Executor", "LoadedModel", "load_model", "main", "serve_channel"]


class LoadedModel:
    """A backend plus what the server needs to call it safely.

    Args:
        backend: the loaded backend.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.dtypes = backend.input_dtypes
        self.lock: AbstractContextManager[object] = nullcontext() if backend.thread_safe else threading.Lock()


_T = TypeVar("_T")


class _Job:
    def __init__(self, function: Callable[[], object]) -> None:
        self.function = function
        self.result: object = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class Executor:
    """Runs jobs on the thread that calls :meth:`loop` (the main thread) when it is free, else on the caller's
    thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy = False
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()

    def submit(self, function: Callable[[], _T]) -> _T:
        """Run a function and return its result (or raise its exception).

        Args:
            function: what to run.

        Returns:
            What the function returned.
        """
        with self._lock:
            overflow = self._busy
            self._busy = True
        if overflow:
            return function()
        job = _Job(function)
        self._jobs.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        return job.result  # type: ignore[return-value]

    def loop(self) -> None:
        """Run submitted jobs forever."""
        while True:
            job = self._jobs.get()
            try:
                job.result = job.function()
            except BaseException as error:
                job.error = error
            with self._lock:
                self._busy = False
            job.done.set()


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


def serve_channel(
    sock: socket.socket, buffer: SharedBuffer, models: dict[str, LoadedModel], executor: Executor
) -> None:
    """Answer calls on one channel until the appliance closes it.

    Args:
        sock: the channel socket.
        buffer: the channel's shared memory.
        models: the loaded models by node name.
        executor: where the calls run.
    """
    with sock:
        while True:
            received = receive(sock)
            if received is None:
                buffer.close()
                return
            _, node, size, inputs = received[0]
            reply: tuple[object, ...]
            try:
                model = models[node]
                reply = executor.submit(functools.partial(_run, model, buffer, size, inputs))
            except BaseException as error:
                reply = ("error", one_line(error))
            try:
                send(sock, reply)
            except OSError:
                buffer.close()
                return


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
    executor = Executor()
    threading.Thread(target=_accept, args=(control, models, executor), name="control", daemon=True).start()
    executor.loop()
    return 0


def _accept(control: socket.socket, models: dict[str, LoadedModel], executor: Executor) -> None:
    while True:
        received = receive(control, maxfds=2)
        if received is None:
            break
        _, fds = received
        channel = socket.socket(fileno=fds[0])
        buffer = SharedBuffer(fds[1], int(received[0][1]))
        threading.Thread(target=serve_channel, args=(channel, buffer, models, executor), daemon=True).start()
    sys.stdout.flush()
    sys.stderr.flush()
    # The appliance is gone or closed the host. Frameworks' thread pools can make interpreter shutdown slow
    # or hang, and nothing is left to clean up.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
