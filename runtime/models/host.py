"""ModelHost: the appliance's model nodes, served by a separate model server process.

Every model is loaded once, at :meth:`ModelHost.start`, in a server process (:mod:`runtime.models.worker`), so
a framework that crashes - even with a segmentation fault - takes down only that process: the calls in flight
fail with a :class:`~emulator.errors.ModelError` naming the model node and the cause, the server is started
again in the background, and the appliance keeps running. Inputs are checked here, against the descriptor,
before anything is sent; arrays travel through shared memory (see :mod:`runtime.models.protocol`). A
:class:`ModelLease` is the shared memory (a memfd) of one app connection's model calls: it lends the app
channels of its own to the model server, which checks the app's calls itself (:mod:`runtime.models.serving`),
so that an app's ``self.call`` does not pass through the appliance (the bridge's call service,
:mod:`runtime.bridge.calls`, holds one lease per connection).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import numpy as np

from emulator.errors import ModelError
from runtime.models.base import ModelEntry, ModelSpec, select_backend
from runtime.models.checks import check_inputs
from runtime.models.protocol import SharedBuffer
from runtime.models.server import SERVER_ENV, CallFailed, Server, ServerLost
from runtime.models.tally import Tally

__all__ = ["SERVER_ENV", "ModelHost", "ModelLease"]

logger = logging.getLogger("runtime.models")

_T = TypeVar("_T")
_EXIT_WAIT = 2.0
"""Seconds to wait for a model server whose channel ended to exit."""


@dataclass
class _Stats:
    calls: int = 0
    errors: int = 0
    latencies_ms: deque[float] = field(default_factory=lambda: deque(maxlen=4096))


class ModelHost:
    """The model nodes of one application, loaded once and callable from any thread.

    Args:
        models: one entry per model node (its name, files and declared inputs).
        prefer: backend names to try first when several can load a model (e.g. ``("opencv-onnx",)``).

    Raises:
        ModelError: a node name is listed twice.
    """

    def __init__(self, models: Sequence[ModelEntry], *, prefer: Sequence[str] = ()) -> None:
        self._models: dict[str, ModelEntry] = {}
        for entry in models:
            if entry.node in self._models:
                raise ModelError("model node is listed twice", node=entry.node)
            self._models[entry.node] = entry
        self._shapes = {
            node: {name: tuple(int(dim) for dim in shape) for name, shape in entry.inputs}
            for node, entry in self._models.items()
        }
        self._dtypes: dict[str, dict[str, np.dtype[Any]]] = {}
        self._prefer = tuple(prefer)
        self._specs: dict[str, ModelSpec] = {}
        self._stats = {node: _Stats() for node in self._models}
        # The calls apps make on their own channels, counted by the model server: one row per model node.
        self._tally = Tally(len(self._models))
        self._stats_lock = threading.Lock()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._server: Server | None = None
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
        return self._in_flight + sum(self._tally.running(row) for row in range(len(self._models)))

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
            for node, entry in self._models.items():
                backend, file = select_backend(node, Path(entry.path), entry.framework, self._prefer)
                specs[node] = ModelSpec(
                    node=node,
                    path=file.resolve(),
                    backend=backend.name,
                    framework=entry.framework.upper(),
                    precision_mode=entry.precision_mode,
                    inputs=tuple(self._shapes[node].items()),
                )
            self._specs = specs
            if specs:
                self._server = self._spawn()
            self._started = True

    def _spawn(self) -> Server:
        started = time.perf_counter()
        server = Server(list(self._specs.values()), self._tally)
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
            self._tally.close()

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
        return self._counted(node, lambda: self._call(node, inputs))

    def lease(self, size: int) -> ModelLease:
        """The shared memory (a new memfd) of one app connection's model calls, lending it channels.

        Args:
            size: the memfd's first size in bytes.

        Returns:
            The lease; hand :attr:`ModelLease.fd` to the caller, which cannot shrink it.

        Raises:
            OSError: no memory for it.
        """
        return ModelLease(self, SharedBuffer(size=max(size, 1)))

    def _counted(self, node: str, run: Callable[[], _T]) -> _T:
        stats = self._stats.get(node)
        if stats is None:
            known = ", ".join(self._models) or "none"
            raise KeyError(f"unknown model node {node!r}; model nodes: {known}")
        started = time.perf_counter()
        with self._stats_lock:
            stats.calls += 1
            self._in_flight += 1
        try:
            outputs = run()
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
        except ServerLost:
            raise self._lost(server, node) from None
        try:
            outputs = channel.call(node, arrays)
        except CallFailed as failure:
            server.release(channel)
            raise ModelError(f"the model failed: {failure}", node=node) from None
        except ServerLost:
            channel.close()
            raise self._lost(server, node) from None
        except BaseException:
            channel.close()
            raise
        server.release(channel)
        return outputs

    def lend(self, buffer: SharedBuffer, tally: Tally, nodes: Sequence[str]) -> tuple[socket.socket, Server]:
        """Open a channel to the model server for an app that maps ``buffer`` (see :meth:`ModelLease.lend`).

        Args:
            buffer: the channel's shared memory; it stays the caller's.
            tally: where the server counts the channel's calls; it stays the caller's.
            nodes: the model nodes the app may call.

        Returns:
            The app's end of the channel, and the server that serves it (for :meth:`channel_lost`).

        Raises:
            ModelError: the host is closed, or no model server can be started.
        """
        server = self._running_server()
        try:
            return server.lend(buffer, tally, nodes), server
        except ServerLost:
            raise self._lost(server, None) from None

    def channel_lost(self, server: Server | None, node: str) -> ModelError:
        """Why a channel lent to an app ended during its call to ``node``; the call counts as failed.

        Args:
            server: the server that served the channel (None: unknown).
            node: the model node the app was calling.

        Returns:
            The error for the app: the model server stopped (it is being restarted), or closed the channel.
        """
        stats = self._stats.get(node)
        if stats is not None:
            with self._stats_lock:
                stats.errors += 1  # the server counted the call when it began
        if server is not None:
            # The channel ended: the server is exiting, or it closed the channel (it stays up then, and the
            # app's word alone must not stop it).
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.proc.wait(timeout=_EXIT_WAIT)
            if not server.alive():
                return self._lost(server, node)
        return ModelError("the model server closed the channel of the call", node=node)

    def _lost(self, server: Server, node: str | None) -> ModelError:
        if self._closed:
            return ModelError("the model host was closed during the call", node=node)
        cause = server.cause()
        self._restart_soon()
        return ModelError(
            f"the model server stopped during the call ({cause}); it is being restarted", node=node
        )

    def _prepare(
        self, node: str, inputs: Mapping[str, np.ndarray] | np.ndarray
    ) -> list[tuple[str, np.ndarray, np.dtype[Any]]]:
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
        arrays = {name: np.asarray(array) for name, array in inputs.items()}
        checked = check_inputs(
            node,
            self._shapes[node],
            self._dtypes.get(node, {}),
            {name: (array.dtype, array.shape) for name, array in arrays.items()},
        )
        return [(name, arrays[name], dtype) for name, dtype in checked]

    def _running_server(self) -> Server:
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
                self._tally.forget_running()
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

        The calls apps make on their own channels are timed by the model server, from the request to the
        answer; the others by the host, around the whole call.

        Returns:
            ``{node: {"calls": int, "errors": int, "p50_ms": float, "p99_ms": float}}``.
        """
        with self._stats_lock:
            snapshot = {node: (s.calls, s.errors, list(s.latencies_ms)) for node, s in self._stats.items()}
        result: dict[str, dict[str, float | int]] = {}
        tally = self._tally
        for row, (node, (calls, errors, latencies)) in enumerate(snapshot.items()):
            calls += tally.calls(row)
            errors += tally.errors(row)
            latencies += tally.latencies_ms(row)
            p50, p99 = np.percentile(latencies, [50, 99]).tolist() if latencies else [0.0, 0.0]
            result[node] = {
                "calls": calls,
                "errors": errors,
                "p50_ms": round(p50, 3),
                "p99_ms": round(p99, 3),
            }
        return result


class ModelLease:
    """The shared memory (a memfd) of one app connection's model calls, and the channels lent to the app.

    The bridge holds one for each app connection that calls model nodes: the app maps the file, writes the
    inputs into it and reads the outputs from it, and sends its calls on a channel to the model server that
    the lease lends it, so no array is copied in the appliance and no call passes through it.

    Args:
        host: the model host.
        buffer: the file, owned from now on.
    """

    def __init__(self, host: ModelHost, buffer: SharedBuffer) -> None:
        self._host = host
        self.buffer = buffer
        self._tally: Tally | None = None
        self._server: Server | None = None  # the server of the channel last lent to the app

    @property
    def size(self) -> int:
        """The memfd's size now (the server grows it when the outputs do not fit)."""
        return self.buffer.size

    @property
    def fd(self) -> int:
        """The memfd, for the caller to map (it stays the lease's)."""
        return self.buffer.fd

    def ensure(self, size: int) -> None:
        """Grow the file to ``size`` bytes at least.

        Raises:
            OSError: no memory for it (tmpfs full).
        """
        self.buffer.ensure(size)

    @property
    def tally(self) -> Tally:
        """The counts of the calls made on the channels lent to the app (made on first use)."""
        if self._tally is None:
            self._tally = Tally(1, 0)
        return self._tally

    def lend(self, nodes: Sequence[str]) -> socket.socket:
        """A channel straight to the model server for the app that maps the file.

        The app sends its calls there itself (see :class:`runtime.models.serving.AppChannel`); the server
        checks them as :meth:`ModelHost.call` does and counts them in :attr:`tally` and in the host's
        metrics. A new channel replaces none: ask for one after a call finds the last one gone (:meth:`lost`).

        Args:
            nodes: the model nodes the app may call.

        Returns:
            The app's end of the channel (send it to the app, then close it).

        Raises:
            ModelError: the host is closed, or no model server can be started.
            OSError: no memory for the tally.
        """
        sock, self._server = self._host.lend(self.buffer, self.tally, nodes)
        return sock

    def lost(self, node: str) -> ModelError:
        """Why the channel lent to the app ended during its call to ``node`` (counted as a failed call).

        Args:
            node: the model node the app was calling.

        Returns:
            The error to give the app: the model server stopped (being restarted), or closed the channel.
        """
        server, self._server = self._server, None
        return self._host.channel_lost(server, node)

    def close(self) -> None:
        """Close the memfd and the tally's file (its counts stay readable)."""
        self.buffer.close()
        if self._tally is not None:
            self._tally.close()
