"""Backends whose framework runs in a backend environment (:mod:`runtime.models.environment`).

The model server stays the one process the host talks to: such a backend starts, for its model node, a
worker (:mod:`runtime.models.env_worker`) with the environment's interpreter, and passes it the arrays
through a memfd both map (one copy in, the outputs read in place) and small pickled messages on a socket.
When the worker dies, the model server dies the same way, so the host's crash handling (the calls in flight
fail, the server restarts) is the one all backends share.
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from emulator.errors import ModelError
from runtime.models.base import Backend, ModelSpec
from runtime.models.environment import Environment, environment

__all__ = ["EnvironmentBackend"]

_WORKER = Path(__file__).resolve().parent / "env_worker.py"
_HEADER = struct.Struct(">Q")
_ALIGN = 64


class EnvironmentBackend(Backend):
    """A model node served by a worker in a backend environment.

    Subclasses set ``name``, ``environment`` (the environment's name) and ``kind`` (what the worker loads)
    and implement :meth:`find`.

    Args:
        spec: the model node.

    Raises:
        ModelError: the environment is not ready, or the worker cannot load the model.
    """

    #: the backend environment's name
    environment: ClassVar[str]
    #: the worker's loader for this backend (a key of ``env_worker.KINDS``)
    kind: ClassVar[str]
    thread_safe = False

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        env = environment(self.environment)
        if not env.ready:
            raise ModelError(
                f"the {env.name} backend environment is {env.state()}; make it: {env.install_command}"
            )
        self.env = env
        self._memory = _Memory(sum(_nbytes(shape) for _, shape in spec.inputs) * 2 + (1 << 20))
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = ours
        variables = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
        variables.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        self._process = subprocess.Popen(
            [str(env.python), "-I", str(_WORKER), str(theirs.fileno()), str(self._memory.fd)],
            pass_fds=(theirs.fileno(), self._memory.fd),
            stdin=subprocess.DEVNULL,
            env=variables,
        )
        theirs.close()
        self._send(("load", self.kind, str(spec.path), [list(item) for item in spec.inputs], spec.fp16))
        answer = self._receive()
        if answer[0] == "error":
            self.close()
            raise ModelError(f"{spec.path.name} is not a model {self.environment} can load: {answer[1]}")
        _, dtypes, outputs, notes, versions = answer
        self._dtypes = {name: np.dtype(dtypes[name]) for name in spec.input_names}
        self.outputs: list[str] = list(outputs)
        self.versions: dict[str, str] = dict(versions)
        self.notes.extend(notes)

    def describe(self) -> str:
        """Where the model runs, for the boot log: environment, framework version, pid and load time.

        Returns:
            e.g. ``environment mxnet-1a2b3c4d5e6f (mxnet 1.9.1, numpy 1.23.5), worker pid 42``.
        """
        versions = ", ".join(f"{name} {version}" for name, version in self.versions.items())
        return f"environment {self.env.path.name} ({versions}), worker pid {self._process.pid}"

    @classmethod
    def missing(cls) -> str | None:
        """What keeps the backend from running: its environment, unless it is ready.

        Returns:
            ``"the mxnet backend environment, which is not installed"``, or None.
        """
        env = environment(cls.environment)
        state = env.state()
        return None if state == "ready" else f"the {env.name} backend environment, which is {state}"

    @classmethod
    def install_hint(cls) -> str:
        """The command that makes the environment.

        Returns:
            ``make it: panorama-emulator backends install mxnet``.
        """
        return f"make it: {environment(cls.environment).install_command}"

    @classmethod
    def environment_of(cls) -> Environment:
        """The backend's environment.

        Returns:
            The environment (ready or not).
        """
        return environment(cls.environment)

    @property
    def input_dtypes(self) -> dict[str, np.dtype[np.generic]]:
        """The dtypes the model declares for its inputs (uint8 for a TF OD API ``image_tensor``)."""
        return dict(self._dtypes)

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the model once in the worker.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The model's outputs, as views of the shared memory valid until the next call (the model server
            copies them out under the model's lock, since the backend is not thread-safe).

        Raises:
            ModelError: the model raised (its message).
        """
        memory = self._memory
        placed = []
        offset = 0
        for name, array in inputs.items():
            placed.append((name, array.dtype.str, array.shape, offset))
            offset = _aligned(offset + array.nbytes)
        memory.ensure(offset)
        for (_, dtype, shape, start), array in zip(placed, inputs.values(), strict=True):
            np.copyto(memory.array(np.dtype(dtype), shape, start), array)
        self._send(("run", memory.size, placed))
        answer = self._receive()
        if answer[0] == "error":
            raise ModelError(str(answer[1]))
        _, size, outputs = answer
        memory.follow(size)
        return [memory.array(np.dtype(dtype), tuple(shape), start) for dtype, shape, start in outputs]

    def close(self) -> None:
        """Stop the worker."""
        self._sock.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _send(self, message: object) -> None:
        body = pickle.dumps(message, protocol=4)
        try:
            self._sock.sendall(_HEADER.pack(len(body)) + body)
        except OSError:
            self._died()

    def _receive(self) -> tuple[Any, ...]:
        header = self._read(_HEADER.size)
        answer: tuple[Any, ...] = pickle.loads(self._read(_HEADER.unpack(header)[0]))
        return answer

    def _read(self, count: int) -> bytes:
        chunks = []
        while count:
            chunk = self._sock.recv(min(count, 1 << 20))
            if not chunk:
                self._died()
            chunks.append(chunk)
            count -= len(chunk)
        return b"".join(chunks)

    def _died(self) -> Any:
        """The worker is gone: the model server goes the same way (see the module docstring)."""
        status = self._process.wait()
        print(
            f"model node {self.spec.node}: the {self.environment} worker (pid {self._process.pid}) "
            + (
                f"was killed by {signal.Signals(-status).name}"
                if status < 0
                else f"exited with status {status}"
            ),
            file=sys.stderr,
            flush=True,
        )
        sys.stdout.flush()
        if status < 0:
            if -status != signal.SIGKILL:
                signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
        os._exit(status or 1)


class _Memory:
    """The memfd shared with the worker, mapped at its current size."""

    def __init__(self, size: int) -> None:
        self.fd = os.memfd_create("panorama-model-env", 0)
        os.ftruncate(self.fd, size)
        self.size = 0
        self._map: Any = None
        self.follow(size)

    def follow(self, size: int) -> None:
        if size > self.size:
            import mmap

            # The old mapping goes when the last view of it does.
            self._map = mmap.mmap(self.fd, size)
            self.size = size

    def ensure(self, size: int) -> None:
        if size > self.size:
            size = max(size, self.size * 2)
            os.ftruncate(self.fd, size)
            self.follow(size)

    def array(self, dtype: np.dtype[Any], shape: tuple[int, ...], offset: int) -> np.ndarray:
        count = int(np.prod(shape)) if shape else 1
        return np.frombuffer(self._map, dtype=dtype, count=count, offset=offset).reshape(shape)


def _nbytes(shape: tuple[int, ...]) -> int:
    return int(np.prod([max(dim, 1) for dim in shape])) * 4 if shape else 4


def _aligned(offset: int) -> int:
    return (offset + _ALIGN - 1) // _ALIGN * _ALIGN
