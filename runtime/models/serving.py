"""How the model server answers calls, on the appliance's channels and on the channels lent to apps.

A channel from the appliance carries pickled requests (:mod:`runtime.models.protocol`) that the appliance
checked already. A channel lent to an app (:class:`AppChannel`) carries the app's own JSON requests
(:func:`runtime.sdk.panoramasdk._protocol.encode_call`), which are untrusted: every field is checked, the
inputs against the model node's descriptor with the same messages :class:`~runtime.models.ModelHost` gives,
and an app may call only the model nodes of its application graph. The shared memory's size is the file's
own (the app may grow the file, never shrink it), so nothing the app sends can make the server touch memory
outside the file. Each call is counted in the appliance's tallies (:mod:`runtime.models.tally`) before the
answer leaves. An app calls a model with the same shapes every frame, so a request that repeats the channel's
last one byte for byte is not parsed or checked again (unless an input had to be converted): its input views
are kept, and so are the output views and the encoded answer while the outputs keep their shapes.
"""

from __future__ import annotations

import os
import pickle
import threading
import time
from collections.abc import Collection, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, backend_class
from runtime.models.checks import PlacedInput, check_placed
from runtime.models.protocol import SharedBuffer, layout
from runtime.models.server import Meta, Placed
from runtime.models.tally import Tally
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["AppChannel", "LoadedModel", "answer", "load_model", "run_call"]

_F32 = np.dtype(np.float32)


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


def run_call(model: LoadedModel, buffer: SharedBuffer, inputs: Meta) -> Placed:
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
    arrays, end = _input_views(buffer, inputs)
    with model.lock:
        outputs = [np.asarray(output) for output in model.backend.run(arrays)]
        del arrays
        placed, _ = _place_outputs(outputs, buffer, end)
    return placed


def _input_views(buffer: SharedBuffer, inputs: Meta) -> tuple[dict[str, np.ndarray], int]:
    """Views of the inputs in the shared memory, and where the last one ends."""
    end = 0
    arrays = {}
    for name, dtype, shape, offset in inputs:
        array = buffer.array(dtype, shape, offset)
        arrays[name] = array
        end = max(end, offset + array.nbytes)
    return arrays, end


def _place_outputs(
    outputs: list[np.ndarray], buffer: SharedBuffer, start: int
) -> tuple[Placed, list[np.ndarray]]:
    """Write the outputs as float32 after ``start`` (growing the memory when needed); where, and the views."""
    for output in outputs:
        if output.dtype.kind not in "biuf":
            raise TypeError(f"the model returned a {output.dtype} array, which is not numeric")
    offsets, needed = layout([(_F32, output.shape) for output in outputs], start=start)
    buffer.ensure(needed)
    placed: Placed = []
    views = []
    for output, offset in zip(outputs, offsets, strict=True):
        view = buffer.array(_F32, output.shape, offset)
        np.copyto(view, output, casting="unsafe")
        placed.append((_F32.str, output.shape, offset))
        views.append(view)
    return placed, views


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
        buffer.follow(size)
        placed = run_call(models[node], buffer, inputs)
        reply = ("ok", buffer.size, placed)
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
        specs: the model nodes' specs (their declared inputs).
        nodes: the tally of every model node, one row each in ``specs``' order.
        tally: the tally of the app connection (one row).
        allowed: the model nodes of the app's graph.
    """

    def __init__(
        self,
        models: Mapping[str, LoadedModel],
        specs: Mapping[str, ModelSpec],
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
        self._plan: _Plan | None = None

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
        plan = self._plan
        if plan is None or request != plan.request or buffer.size != plan.size:
            plan = self._check(request, buffer)
        started = time.perf_counter()
        self._nodes.start(plan.row)
        try:
            answer = self._run(plan, buffer)
        except ModelError as failure:
            message = one_line(failure)  # names the node, as the appliance's messages do
            self._nodes.finish(plan.row, time.perf_counter() - started, message)
            raise _Refused(P.ERR_MODEL, message) from None
        self._nodes.finish(plan.row, time.perf_counter() - started)
        return answer

    def _check(self, request: bytes, buffer: SharedBuffer) -> _Plan:
        """Check a request; keep what was found for requests that repeat it (when no input was converted)."""
        self._plan = None
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
        try:
            inputs = _placed(header.get("inputs"))
        except P.ProtocolError as error:
            raise _Refused(P.ERR_VALUE, f"bad inputs for model node {node}: {one_line(error)}") from None
        row = self._rows[node]
        # The file's own size: the app may have grown it, and a size it claims could lie.
        buffer.follow(os.fstat(buffer.fd).st_size)
        try:
            meta = check_placed(node, self._declared[node], model.dtypes, buffer, inputs)
        except ModelError as failure:
            message = one_line(failure)
            self._nodes.start(row)
            self._nodes.finish(row, 0.0, message)
            raise _Refused(P.ERR_MODEL, message) from None
        arrays, end = _input_views(buffer, meta)
        plan = _Plan(request, buffer.size, node, model, row, arrays, end)
        as_sent = [(name, dtype.str, tuple(shape), offset) for name, dtype, shape, offset in inputs]
        if sorted(meta) == sorted(as_sent):
            self._plan = plan  # the inputs are used where the app wrote them: a repeat needs no checks
        return plan

    def _run(self, plan: _Plan, buffer: SharedBuffer) -> bytes:
        try:
            with plan.model.lock:
                outputs = [np.asarray(output) for output in plan.model.backend.run(plan.inputs)]
                if (
                    plan.answer is not None
                    and buffer.size == plan.size
                    and _same_layout(outputs, plan.outputs)
                ):
                    for view, output in zip(plan.outputs, outputs, strict=True):
                        np.copyto(view, output, casting="unsafe")
                    return plan.answer
                placed, views = _place_outputs(outputs, buffer, plan.end)
        except Exception as error:
            raise ModelError(f"the model failed: {one_line(error, named=True)}", node=plan.node) from None
        specs = [{"dtype": dtype, "shape": list(shape), "offset": offset} for dtype, shape, offset in placed]
        answer = P.encode_call({"op": P.OP_RESULT, "outputs": specs, "size": buffer.size})
        if plan is self._plan and buffer.size == plan.size:
            plan.outputs, plan.answer = views, answer
        return answer


@dataclass
class _Plan:
    """A checked request, and what a request that repeats it byte for byte can reuse."""

    request: bytes
    size: int
    """The shared memory's size when it was checked (it only grows; a new size means a new mapping)."""
    node: str
    model: LoadedModel
    row: int
    inputs: dict[str, np.ndarray]
    end: int
    outputs: list[np.ndarray] = field(default_factory=list)
    """Views of the last answer's outputs."""
    answer: bytes | None = None


def _same_layout(outputs: list[np.ndarray], views: list[np.ndarray]) -> bool:
    return len(outputs) == len(views) and all(
        output.shape == view.shape and output.dtype.kind in "biuf"
        for output, view in zip(outputs, views, strict=True)
    )


def _placed(specs: object) -> list[PlacedInput]:
    if not isinstance(specs, list):
        raise P.ProtocolError("no list of inputs")
    placed: list[PlacedInput] = []
    for spec in specs:
        dtype, shape, _ = P.parse_spec(spec)
        name, offset = spec.get("name"), spec.get("offset")
        if not isinstance(name, str):
            raise P.ProtocolError(f"an input has no name: {spec!r:.80}")
        if isinstance(offset, bool) or not isinstance(offset, int):
            raise P.ProtocolError(f"input {name!r} has no offset in the call buffer")
        placed.append((name, dtype, shape, offset))
    return placed
