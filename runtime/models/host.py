"""ModelHost: the appliance's model nodes, served by a separate model server process.

Every model is loaded once, at :meth:`ModelHost.start`, in a server process (:mod:`runtime.models.worker`), so
a framework that crashes - even with a segmentation fault - takes down only that process: the calls in flight
fail with a :class:`~emulator.errors.ModelError` naming the model node and the cause, the server is started
again in the background, and the appliance keeps running. Inputs are checked here, against the descriptor,
before anything is sent; arrays travel through shared memory (see :mod:`runtime.models.protocol`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

import runtime
from emulator.errors import ModelError
from runtime.models.base import ModelSpec, select_backend
from runtime.models.protocol import SharedBuffer, layout, receive, send

if TYPE_CHECKING:
    from emulator.manifests import ModelDescriptor

__all__ = ["SERVER_ENV", "ModelHost"]

logger = logging.getLogger("runtime.models")
_server_log = logging.getLogger("runtime.models.server")

_Prepared = list[tuple[str, np.ndarray, np.dtype[Any]]]

#: Environment the model server gets unless the appliance's environment sets these already. glibc's malloc
#: returns a framework's large per-call buffers (activations) to the kernel after every call and takes them
#: back as fresh zeroed pages on the next one, thousands of page faults per call; a model server's working
#: set is stable, so it keeps them.
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


class _ServerLost(Exception):
    """The server process went away (or its socket broke) during a call."""


class _CallFailed(Exception):
    """The model raised; the server is fine."""


class _Channel:
    """One socket + shared memory pair to the server, used by one call at a time."""

    def __init__(self, sock: socket.socket, buffer: SharedBuffer) -> None:
        self.sock = sock
        self.buffer = buffer

    def call(self, node: str, arrays: _Prepared) -> tuple[np.ndarray, ...]:
        offsets, end = layout([(dtype, array.shape) for _, array, dtype in arrays])
        self.buffer.ensure(end)
        meta = []
        for (name, array, dtype), offset in zip(arrays, offsets, strict=True):
            np.copyto(self.buffer.array(dtype, array.shape, offset), array, casting="unsafe")
            meta.append((name, dtype.str, tuple(array.shape), offset))
        try:
            send(self.sock, ("call", node, self.buffer.size, meta))
            received = receive(self.sock)
        except OSError as error:
            raise _ServerLost(str(error)) from None
        if received is None:
            raise _ServerLost("end of file")
        reply = received[0]
        if reply[0] == "error":
            raise _CallFailed(reply[1])
        _, size, placed = reply
        self.buffer.follow(size)
        return tuple(self.buffer.array(dtype, shape, offset).copy() for dtype, shape, offset in placed)

    def close(self) -> None:
        self.sock.close()
        self.buffer.close()


class _Server:
    """One model server process: started, loaded, serving; never reused after it is lost."""

    def __init__(self, specs: list[ModelSpec]) -> None:
        control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = Path(runtime.__file__).resolve().parent.parent
        env = dict(os.environ)
        for name, value in SERVER_ENV.items():
            env.setdefault(name, value)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.models.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Run from the package root so that nothing in the user's working directory shadows a module.
                # The server stays in the appliance's session: with the kernel's session autogroups, a new
                # session would compete with the appliance for CPU as a separate group.
                cwd=package_root,
                env=env,
            )
        except OSError as error:
            control.close()
            raise ModelError(f"cannot start the model server: {error}") from None
        finally:
            child.close()
        self._control = control
        self._control_lock = threading.Lock()
        self._idle: list[_Channel] = []
        self._idle_lock = threading.Lock()
        self._tail: deque[str] = deque(maxlen=50)
        self._reader = threading.Thread(target=self._read_output, name="model-server-output", daemon=True)
        self._reader.start()
        self._cause: str | None = None
        self._cause_lock = threading.Lock()
        self.closing = False
        try:
            self.ready = self._load(specs)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                _server_log.debug("%s", line)
        self.proc.stdout.close()

    def _load(self, specs: list[ModelSpec]) -> dict[str, tuple[dict[str, str], list[str]]]:
        by_node = {spec.node: spec for spec in specs}
        loading: str | None = None
        try:
            send(self._control, ("load", specs))
            while (received := receive(self._control)) is not None:
                message = received[0]
                if message[0] == "loading":
                    loading = message[1]
                elif message[0] == "failed":
                    raise ModelError(message[2], node=message[1], file=str(by_node[message[1]].path))
                else:
                    ready: dict[str, tuple[dict[str, str], list[str]]] = message[1]
                    return ready
        except OSError:
            pass  # the server is gone: say why below
        when = "while loading the model" if loading else "before loading any model"
        raise ModelError(f"the model server stopped {when} ({self.cause()})", node=loading)

    def alive(self) -> bool:
        return self._cause is None and self.proc.poll() is None

    def cause(self) -> str:
        """Why the process is gone (waiting for it, and killing it if it is somehow still there)."""
        with self._cause_lock:
            if self._cause is not None:
                return self._cause
            try:
                status = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait()
            self._reader.join(timeout=2)
            if status < 0:
                try:
                    cause = f"killed by {signal.Signals(-status).name}"
                except ValueError:
                    cause = f"killed by signal {-status}"
            else:
                cause = f"exited with status {status}"
            last = _last_words(list(self._tail))
            if last:
                cause += f"; last output: {last}"
            self._cause = cause
            if not self.closing:
                logger.warning("model server (pid %d) stopped: %s", self.proc.pid, cause)
            return cause

    def acquire(self) -> _Channel:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        buffer = SharedBuffer()
        try:
            with self._control_lock:
                send(self._control, ("channel", buffer.size), fds=(far.fileno(), buffer.fd))
        except OSError as error:
            near.close()
            buffer.close()
            raise _ServerLost(str(error)) from None
        finally:
            far.close()
        return _Channel(near, buffer)

    def release(self, channel: _Channel) -> None:
        with self._idle_lock:
            self._idle.append(channel)

    def close(self) -> None:
        self.closing = True
        self._control.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self._idle_lock:
            for channel in self._idle:
                channel.close()
            self._idle.clear()
        self._reader.join(timeout=2)


def _last_words(lines: list[str]) -> str:
    """The line of the server's output that best says why it died (a fatal error, else the last line)."""
    for line in reversed(lines):
        if line.startswith("Fatal Python error"):
            return line
    for line in reversed(lines):
        if not line[:1].isspace() and not line.startswith(
            ("Thread 0x", "Current thread", "Extension modules")
        ):
            return line[:300]
    return ""


@dataclass
class _Stats:
    calls: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


class ModelHost:
    """The model nodes of one application, loaded once and callable from any thread.

    Args:
        models: ``(node name, unpacked model directory or model file, descriptor)`` for each model node.
        prefer: backend names to try first when several can load a model (e.g. ``("opencv-onnx",)``).

    Raises:
        ModelError: a node name is listed twice.
    """

    def __init__(
        self, models: Sequence[tuple[str, Path, ModelDescriptor]], *, prefer: Sequence[str] = ()
    ) -> None:
        self._models: dict[str, tuple[Path, ModelDescriptor]] = {}
        for node, path, descriptor in models:
            if node in self._models:
                raise ModelError("model node is listed twice", node=node)
            self._models[node] = (Path(path), descriptor)
        self._shapes = {
            node: {item.name: tuple(int(dim) for dim in item.shape) for item in descriptor.inputs}
            for node, (_, descriptor) in self._models.items()
        }
        self._dtypes: dict[str, dict[str, np.dtype[Any]]] = {}
        self._prefer = tuple(prefer)
        self._specs: dict[str, ModelSpec] = {}
        self._stats = {node: _Stats() for node in self._models}
        self._stats_lock = threading.Lock()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._started = False
        self._closed = False
        self._restarts = 0
        self._noted: set[tuple[str, str]] = set()

    @property
    def names(self) -> tuple[str, ...]:
        """The model node names, in the order given."""
        return tuple(self._models)

    @property
    def backends(self) -> dict[str, str]:
        """The backend serving each model node (known once started)."""
        return {node: spec.backend for node, spec in self._specs.items()}

    @property
    def restarts(self) -> int:
        """How many times the model server was started again after it was lost."""
        return self._restarts

    @property
    def pid(self) -> int | None:
        """The model server's process id, or None when none is running."""
        server = self._server
        return server.pid if server is not None and server.alive() else None

    @property
    def in_flight(self) -> int:
        """How many calls are under way right now."""
        return self._in_flight

    def __enter__(self) -> ModelHost:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Choose a backend for every model node and load them all in a new model server.

        Raises:
            ModelError: a framework is unknown, a model directory holds no loadable file, the framework's
                runtime is not installed (the message names the package to install), or a model fails to load
                or to run on zeros of its declared input shapes.
        """
        with self._lock:
            if self._closed:
                raise ModelError("the model host is closed; make a new one")
            if self._started:
                return
            specs = {}
            for node, (path, descriptor) in self._models.items():
                backend, file = select_backend(node, path, descriptor.framework, self._prefer)
                specs[node] = ModelSpec(
                    node=node,
                    path=file.resolve(),
                    backend=backend.name,
                    framework=descriptor.framework.upper(),
                    precision_mode=descriptor.precision_mode,
                    inputs=tuple(
                        (item.name, tuple(int(d) for d in item.shape)) for item in descriptor.inputs
                    ),
                )
            self._specs = specs
            if specs:
                self._server = self._spawn()
            self._started = True

    def _spawn(self) -> _Server:
        started = time.perf_counter()
        server = _Server(list(self._specs.values()))
        for node, (dtypes, notes) in server.ready.items():
            self._dtypes[node] = {name: np.dtype(dtype) for name, dtype in dtypes.items()}
            for note in notes:
                if (node, note) not in self._noted:
                    self._noted.add((node, note))
                    logger.info("model node %s: %s", node, note)
        logger.info(
            "model server (pid %d) loaded %d model(s) in %.2f s",
            server.pid,
            len(self._specs),
            time.perf_counter() - started,
        )
        return server

    def close(self) -> None:
        """Stop the model server. Calls under way fail with ModelError; later calls raise ModelError."""
        with self._lock:
            self._closed = True
            if self._server is not None:
                self._server.close()
                self._server = None

    def call(self, node: str, inputs: Mapping[str, np.ndarray] | np.ndarray) -> tuple[np.ndarray, ...]:
        """Run one model node, as ``self.call`` does on the device.

        Args:
            node: the model node's name.
            inputs: ``{input name: array}``, or one array for a model with a single input. Shapes must equal
                the descriptor's; numeric arrays are converted to the model's input type (float32 mostly).

        Returns:
            The model's outputs as a tuple of float32 arrays, in the model's output order.

        Raises:
            KeyError: there is no model node of that name.
            ModelError: the inputs do not match the descriptor (the message names both shapes), the model
                raised, the model server stopped during the call, or the host is not running.
        """
        stats = self._stats.get(node)
        if stats is None:
            known = ", ".join(self._models) or "none"
            raise KeyError(f"unknown model node {node!r}; model nodes: {known}")
        started = time.perf_counter()
        with self._stats_lock:
            stats.calls += 1
            self._in_flight += 1
        try:
            outputs = self._call(node, inputs)
        except ModelError:
            with self._stats_lock:
                stats.errors += 1
            raise
        finally:
            with self._stats_lock:
                self._in_flight -= 1
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        with self._stats_lock:
            stats.latencies_ms.append(elapsed_ms)
        return outputs

    def _call(self, node: str, inputs: Mapping[str, np.ndarray] | np.ndarray) -> tuple[np.ndarray, ...]:
        arrays = self._prepare(node, inputs)
        server = self._running_server()
        try:
            channel = server.acquire()
        except _ServerLost:
            raise self._lost(server, node) from None
        try:
            outputs = channel.call(node, arrays)
        except _CallFailed as failure:
            server.release(channel)
            raise ModelError(f"the model failed: {failure}", node=node) from None
        except _ServerLost:
            channel.close()
            raise self._lost(server, node) from None
        except BaseException:
            channel.close()
            raise
        server.release(channel)
        return outputs

    def _lost(self, server: _Server, node: str) -> ModelError:
        if self._closed:
            return ModelError("the model host was closed during the call", node=node)
        cause = server.cause()
        self._restart_soon()
        return ModelError(
            f"the model server stopped during the call ({cause}); it is being restarted", node=node
        )

    def _prepare(self, node: str, inputs: Mapping[str, np.ndarray] | np.ndarray) -> _Prepared:
        declared = self._shapes[node]
        names = list(declared)
        if isinstance(inputs, np.ndarray):
            if len(declared) != 1:
                raise ModelError(
                    f"one array was passed but the model takes inputs {names}: pass a dict {{name: array}}",
                    node=node,
                )
            inputs = {names[0]: inputs}
        elif not isinstance(inputs, Mapping):
            raise ModelError(
                "inputs must be a dict {name: numpy array} or one numpy array, "
                f"not {type(inputs).__name__}",
                node=node,
            )
        for name in inputs:
            if name not in declared:
                raise ModelError(f"unknown input {name!r}: the descriptor declares inputs {names}", node=node)
        dtypes = self._dtypes.get(node, {})
        prepared: _Prepared = []
        for name, shape in declared.items():
            if name not in inputs:
                raise ModelError(f"missing input {name!r}: the descriptor declares inputs {names}", node=node)
            array = np.asarray(inputs[name])
            if array.dtype.kind not in "biuf":
                raise ModelError(
                    f"input {name!r} is a {array.dtype} array; the model needs numbers", node=node
                )
            if not _matches(array.shape, shape):
                raise ModelError(
                    f"input {name!r} has shape {tuple(array.shape)} but the descriptor declares {shape}",
                    node=node,
                )
            prepared.append((name, array, dtypes.get(name, np.dtype(np.float32))))
        return prepared

    def _running_server(self) -> _Server:
        server = self._server
        if server is not None and server.alive():
            return server
        with self._lock:
            if self._closed:
                raise ModelError("the model host is closed")
            if not self._started:
                raise ModelError("the model host is not started; call start() first")
            server = self._server
            if server is not None and server.alive():
                return server
            if server is not None:
                server.cause()
                server.close()
                self._server = None
                self._restarts += 1
            self._server = self._spawn()
            return self._server

    def _restart_soon(self) -> None:
        def restart() -> None:
            try:
                self._running_server()
            except ModelError as error:
                if not self._closed:
                    logger.warning("model server restart failed: %s", error)

        threading.Thread(target=restart, name="model-server-restart", daemon=True).start()

    def metrics(self) -> dict[str, dict[str, float | int]]:
        """Per model node: calls, errors and latency percentiles (of the last 4096 successful calls).

        Returns:
            ``{node: {"calls": int, "errors": int, "p50_ms": float, "p99_ms": float}}``.
        """
        with self._stats_lock:
            snapshot = {node: (s.calls, s.errors, list(s.latencies_ms)) for node, s in self._stats.items()}
        result: dict[str, dict[str, float | int]] = {}
        for node, (calls, errors, latencies) in snapshot.items():
            p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else [0.0, 0.0]
            result[node] = {
                "calls": calls,
                "errors": errors,
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
            }
        return result


def _matches(actual: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    # A non-positive declared dimension accepts any size.
    return len(actual) == len(declared) and all(
        d <= 0 or a == d for a, d in zip(actual, declared, strict=True)
    )
