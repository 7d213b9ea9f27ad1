"""``FakeModels``: a model caller for tests of the bridge, serving plain functions in this process.

It lends apps model channels exactly as :class:`runtime.models.ModelHost` does, and answers them with the
model server's own code (:class:`runtime.models.serving.AppChannel` on a
:class:`runtime.models.dispatch.Dispatcher`), so an app's ``self.call`` takes the one way it takes on the
appliance: only the models are plain functions, run on a thread of this process instead of in a model
server. Inputs reach a function converted to float32 and its outputs reach the app as float32, as a model
server's do; a function's declared inputs are named (``data`` unless told) but take any shape.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from emulator.errors import ModelError
from runtime.models.base import Backend, ModelSpec
from runtime.models.dispatch import Dispatcher
from runtime.models.protocol import SharedBuffer
from runtime.models.serving import AppChannel, LoadedModel
from runtime.models.tally import Tally

__all__ = ["FakeLease", "FakeModels", "ModelFunction"]

ModelFunction = Callable[[Mapping[str, np.ndarray]], Sequence[np.ndarray]]
"""A model: the input dict (float32 arrays) -> a tuple of arrays."""


class _Declared:
    def __init__(self, names: Sequence[str]) -> None:
        self.inputs: tuple[tuple[str, tuple[int, ...] | None], ...] = tuple((name, None) for name in names)


class _Function(Backend):
    """A function as the model server calls a backend; records each call."""

    name = "fake"
    package = "numpy"
    requirement = "numpy"

    def __init__(
        self,
        node: str,
        names: Sequence[str],
        function: ModelFunction,
        calls: list[tuple[str, dict[str, np.ndarray]]],
    ) -> None:
        super().__init__(ModelSpec(node, Path(node), self.name, "FAKE", None, tuple((n, ()) for n in names)))
        self.function = function
        self.calls = calls

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        return []

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        self.calls.append((self.spec.node, {name: np.array(value) for name, value in inputs.items()}))
        return tuple(self.function(inputs))


class FakeModels:
    """A model caller that runs plain functions: ``FakeModels({"model_node": lambda inputs: (...)})``.

    A function that raises makes the call fail with its message, as a model error does.

    Args:
        functions: model node -> function of the input dict returning a tuple of arrays.
        inputs: model node -> its declared input names (default ``("data",)``).
    """

    def __init__(
        self,
        functions: Mapping[str, ModelFunction],
        inputs: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self.calls: list[tuple[str, dict[str, np.ndarray]]] = []
        names = {node: tuple((inputs or {}).get(node, ("data",))) for node in functions}
        self._models = {
            node: LoadedModel(_Function(node, names[node], fn, self.calls)) for node, fn in functions.items()
        }
        self._specs = {node: _Declared(names[node]) for node in functions}
        self._nodes = Tally(max(len(functions), 1))
        self._dispatcher: Dispatcher | None = None
        self._lock = threading.Lock()

    @property
    def names(self) -> tuple[str, ...]:
        """The model nodes served."""
        return tuple(self._models)

    def lease(self, size: int) -> FakeLease:
        """The shared memory of one app connection's calls (see :meth:`runtime.models.ModelHost.lease`)."""
        return FakeLease(self, SharedBuffer(size=max(size, 1)))

    def serve(self, buffer: SharedBuffer, tally: Tally, nodes: Sequence[str]) -> socket.socket:
        """Serve a new channel on ``buffer`` for an app that may call ``nodes``; the app's end of it."""
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = Dispatcher(_never)
                threading.Thread(target=self._dispatcher.loop, name="fake-model-server", daemon=True).start()
            dispatcher = self._dispatcher
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        mine = SharedBuffer(os.dup(buffer.fd), buffer.size)
        counts = Tally(1, 0, fd=os.dup(tally.fd))
        handler = AppChannel(self._models, self._specs, self._nodes, counts, nodes)
        dispatcher.add(far, mine, handler, closed=counts.close)
        return near


class FakeLease:
    """A :class:`~runtime.bridge.contracts.LeasedChannel` of :class:`FakeModels`.

    Args:
        models: the fake.
        buffer: the memfd, owned from now on.
    """

    def __init__(self, models: FakeModels, buffer: SharedBuffer) -> None:
        self._models = models
        self.buffer = buffer
        self.tally = Tally(1, 0)

    @property
    def size(self) -> int:
        """The memfd's size."""
        return self.buffer.size

    @property
    def fd(self) -> int:
        """The memfd."""
        return self.buffer.fd

    def ensure(self, size: int) -> None:
        """Grow the memfd to ``size`` bytes at least."""
        self.buffer.ensure(size)

    def lend(self, nodes: Sequence[str]) -> socket.socket:
        """A channel for the app (see :meth:`runtime.models.ModelLease.lend`)."""
        return self._models.serve(self.buffer, self.tally, nodes)

    def lost(self, node: str) -> ModelError:
        """Why the channel ended during a call (a fake's channel ends only with its app)."""
        return ModelError("the model server closed the channel of the call", node=node)

    def close(self) -> None:
        """Close the memfd and the tally."""
        self.buffer.close()
        self.tally.close()


def _never(request: bytes, buffer: SharedBuffer) -> bytes:
    raise AssertionError("every channel of FakeModels has its own handler")
