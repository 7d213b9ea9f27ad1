"""How the model server answers calls, on the appliance's channels and on the channels lent to apps.

A channel from the appliance carries pickled requests (:mod:`runtime.models.protocol`) that the appliance
checked already. A channel lent to an app (:class:`AppChannel`) carries the app's own JSON requests
(:func:`runtime.sdk.panoramasdk._protocol.encode_call`), which are untrusted: every field is checked, the
inputs against the model node's descriptor with the same messages :class:`~runtime.models.ModelHost` gives,
and an app may call only the model nodes of its application graph. The shared memory's size is the file's
own (the app may grow the file, never shrink it), so nothing the app sends can make the server touch memory
outside the file. Each call is counted in the appliance's tallies (:mod:`runtime.models.tally`) before the
answer leaves. Why the app's requests are parsed here, and not in the appliance, is said in
:mod:`runtime.bridge.calls`. Every array in a channel's shared memory is an
:class:`~runtime.sdk.panoramasdk._protocol.ArraySlot`.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, backend_class
from runtime.models.checks import check_placed
from runtime.models.protocol import SharedBuffer
from runtime.models.tally import Tally
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["AppChannel", "Declared", "LoadedModel", "answer", "load_model", "run_call"]

_F32 = np.dtype(np.float32)


class Declared(Protocol):
    """What a model node declares (:class:`~runtime.models.base.ModelSpec`): ``(input, shape)`` pairs."""

    @property
    def inputs(self) -> Sequence[tuple[str, tuple[int, ...] | None]]: ...


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


def run_call(model: LoadedModel, buffer: SharedBuffer, inputs: Sequence[P.ArraySlot]) -> list[P.ArraySlot]:
    """Run a model on inputs in a channel's shared memory and write its outputs (float32) after them.

    Args:
        model: the loaded model.
        buffer: the channel's shared memory, mapped at its current size (it grows when the outputs need it).
        inputs: where the inputs lie, in the model's types.

    Returns:
        Where the outputs lie.

    Raises:
        TypeError: the model returned an array that is not numeric.
        OSError: no memory for the outputs.
        Exception: whatever the model raised.
    """
    arrays = {slot.name: buffer.view(slot) for slot in inputs}
    end = max((slot.end for slot in inputs), default=0)
    with model.lock:
        outputs = [np.asarray(output) for output in model.backend.run(arrays)]
        del arrays
        return _place_outputs(outputs, buffer, end)


def _place_outputs(outputs: list[np.ndarray], buffer: SharedBuffer, start: int) -> list[P.ArraySlot]:
    """Write the outputs as float32 after ``start`` (growing the memory when needed); where they lie."""
    for output in outputs:
        if output.dtype.kind not in "biuf":
            raise TypeError(f"the model returned a {output.dtype} array, which is not numeric")
    slots, needed = P.place((("", _F32, output.shape) for output in outputs), start)
    buffer.ensure(needed)
    for output, slot in zip(outputs, slots, strict=True):
        np.copyto(buffer.view(slot), output, casting="unsafe")
    return slots


def answer(models: Mapping[str, LoadedModel], request: bytes, buffer: SharedBuffer) -> bytes:
    """Answer one call on an appliance's channel (a model that raises makes an ``error`` answer).

    Args:
        models: the loaded models by node name.
        request: the pickled ``("call", node, size, [ArraySlot, ...])`` message.
        buffer: the channel's shared memory.

    Returns:
        The pickled answer.
    """
    reply: tuple[object, ...]
    try:
        _, node, size, inputs = pickle.loads(request)
        buffer.follow(size)
        outputs = run_call(models[node], buffer, inputs)
        reply = ("ok", buffer.size, outputs)  # the size after the outputs grew the memory
    except BaseException as error:
        reply = ("error", one_line(error, named=True))
    return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)


class _Refused(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


class AppChannel:
    """Answers the calls an app sends on its own channel (see the module docstring).

    Args:
        models: the loaded models by node name.
        specs: the model nodes' declarations (their inputs), by node name.
        nodes: the tally of every model node, one row each in ``specs``' order.
        tally: the tally of the app connection (one row).
        allowed: the model nodes of the app's graph.
    """

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        specs: Mapping[str, Declared],
        nodes: Tally,
        tally: Tally,
        allowed: Collection[str],
    ) -> None:
        self._models = models
        self._declared = {node: dict(spec.inputs) for node, spec in specs.items()}
        self._rows = {node: row for row, node in enumerate(specs)}
        self._nodes = nodes
        self._tally = tally
        self._allowed = frozenset(allowed)

    def __call__(self, request: bytes, buffer: SharedBuffer) -> bytes:
        """Answer one request.

        Args:
            request: the app's datagram.
            buffer: the channel's shared memory.

        Returns:
            The answer datagram (``result`` or ``error``).
        """
        started = time.perf_counter()
        self._tally.start(0)
        try:
            answer = self._answer(request, buffer)
        except _Refused as refused:
            kind, error = refused.kind, refused.message
        except Exception as fault:  # e.g. JSON nested too deep to parse: the app's, not the server's
            kind, error = P.ERR_PROTOCOL, f"bad model call message: {one_line(fault, named=True)}"
        else:
            self._tally.finish(0, time.perf_counter() - started)
            return answer
        self._tally.finish(0, time.perf_counter() - started, error)
        return P.encode_call({"op": P.OP_ERROR, "kind": kind, "message": error})

    def _answer(self, request: bytes, buffer: SharedBuffer) -> bytes:
        node, model, inputs = self._check(request, buffer)
        row = self._rows[node]
        started = time.perf_counter()
        self._nodes.start(row)
        try:
            outputs = run_call(model, buffer, inputs)
        except Exception as error:
            message = one_line(ModelError(f"the model failed: {one_line(error, named=True)}", node=node))
            self._nodes.finish(row, time.perf_counter() - started, message)
            raise _Refused(P.ERR_MODEL, message) from None
        self._nodes.finish(row, time.perf_counter() - started)
        specs = [slot.to_json() for slot in outputs]
        return P.encode_call({"op": P.OP_RESULT, "outputs": specs, "size": buffer.size})

    def _check(self, request: bytes, buffer: SharedBuffer) -> tuple[str, LoadedModel, list[P.ArraySlot]]:
        """The model node, its model and its inputs (in the model's types) of a checked request."""
        try:
            header = P.decode_call(request)
        except P.ProtocolError as error:
            raise _Refused(P.ERR_PROTOCOL, one_line(error)) from None
        node = header.get("model")
        if not isinstance(node, str) or node not in self._allowed:
            raise _Refused(P.ERR_KEY, f"model node {node!r} is not in the application graph")
        model = self._models.get(node)
        if model is None:
            raise _Refused(P.ERR_KEY, f"model node {node} is not served by the model server")
        specs = header.get("inputs")
        try:
            if not isinstance(specs, list):
                raise P.ProtocolError("no list of inputs")
            inputs = [P.ArraySlot.from_json(spec) for spec in specs]
        except P.ProtocolError as error:
            raise _Refused(P.ERR_VALUE, f"bad inputs for model node {node}: {one_line(error)}") from None
        # The file's own size: the app may have grown it, and a size it claims could lie.
        buffer.follow(os.fstat(buffer.fd).st_size)
        try:
            checked = check_placed(node, self._declared[node], model.dtypes, buffer, inputs)
        except ModelError as failure:
            message = one_line(failure)
            row = self._rows[node]
            self._nodes.start(row)
            self._nodes.finish(row, 0.0, message)
            raise _Refused(P.ERR_MODEL, message) from None
        return node, model, checked
