"""The call buffer of one request connection: shared memory that a model call's arrays cross the bridge in.

The appliance makes it (a memfd that can grow but never shrink, so the app cannot make the appliance or the
model server fault on it) when the app first asks for one, sends the app its file descriptor, and closes it
when the connection ends. The app writes a call's inputs into it and reads the outputs, which are written
after the inputs. See :mod:`runtime.sdk.panoramasdk._protocol`.

With a model host that lends channels (:class:`runtime.models.ModelHost`), the memfd *is* the shared memory
of the connection's own channel to the model server: the server reads the app's inputs and writes the
outputs there. The app is also lent that channel's socket and sends its calls to the model server itself,
so a call does not pass through the appliance at all; calls it sends to the appliance instead are passed
on as two short messages. Any other model caller gets views of the inputs and its outputs are copied in.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from runtime.bridge.contracts import CallTally, LeasedChannel, LendingModelCaller, ModelCaller
from runtime.models.protocol import SharedBuffer
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["MAX_CALL_BUFFER", "CallBuffer", "LeasedCallBuffer", "call_buffer"]

MAX_CALL_BUFFER = 1 << 30
"""Largest call buffer an app may ask for (bigger calls travel in the message tail)."""

Specs = list[dict[str, Any]]


def call_buffer(models: ModelCaller) -> CallBuffer | LeasedCallBuffer:
    """The call buffer of one connection, made on the app's first ``buffer`` request.

    Args:
        models: the appliance's model caller.

    Returns:
        A buffer on a channel of its own when ``models`` lends them, else a plain one.
    """
    if isinstance(models, LendingModelCaller):
        return LeasedCallBuffer(models)
    return CallBuffer(models)


class _File(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def fd(self) -> int: ...

    def ensure(self, size: int) -> None: ...

    def close(self) -> None: ...


_F = TypeVar("_F", bound=_File)


class _Held(Generic[_F]):
    """The memfd of a call buffer, made on the first ``ensure`` and closed with the connection."""

    def __init__(self) -> None:
        self._file: _F | None = None

    def _open(self, size: int) -> _F:
        raise NotImplementedError

    @property
    def size(self) -> int:
        """The memfd's size (0 before the first ``buffer`` request)."""
        return self._file.size if self._file is not None else 0

    @property
    def fd(self) -> int:
        """The memfd, to send to the app (it stays this buffer's)."""
        assert self._file is not None
        return self._file.fd

    def ensure(self, size: int) -> None:
        """Make the memfd hold at least ``size`` bytes.

        Raises:
            ValueError: ``size`` is over :data:`MAX_CALL_BUFFER`.
            OSError: no memory for it.
        """
        if size > MAX_CALL_BUFFER:
            raise ValueError(f"{size} bytes is over the {MAX_CALL_BUFFER}-byte limit")
        if self._file is None:
            self._file = self._open(size)
        else:
            self._file.ensure(size)

    def _opened(self) -> _F:
        if self._file is None:
            raise P.ProtocolError("no call buffer: ask for one first")
        return self._file

    def close(self) -> None:
        """Close the memfd (and, for a lease, its channel)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class CallBuffer(_Held[SharedBuffer]):
    """A memfd mapped here and by the app; calls go to ``models.call`` with views of the inputs.

    Args:
        models: runs the model nodes.
    """

    def __init__(self, models: ModelCaller) -> None:
        super().__init__()
        self.models = models

    def _open(self, size: int) -> SharedBuffer:
        return SharedBuffer(size=max(size, 1))

    def call(self, model: str, specs: Specs) -> Specs:
        """Run a model node on the inputs ``specs`` place in the memfd; write its outputs after them.

        Args:
            model: the model node.
            specs: the app's input specs (with names and offsets).

        Returns:
            The output specs, with offsets.

        Raises:
            ProtocolError: the specs are malformed or lie outside the memfd.
            KeyError: the model caller does not serve ``model``.
            Exception: whatever the model caller raises, or OSError when the outputs do not fit.
        """
        buffer = self._opened()
        arrays = P.arrays_in_buffer(specs, buffer.array("|u1", (buffer.size,), 0))
        try:
            inputs = {str(spec["name"]): array for spec, array in zip(specs, arrays, strict=True)}
        except KeyError as error:
            raise P.ProtocolError(f"an input has no {error}") from None
        results = [np.asarray(result) for result in self.models.call(model, inputs)]
        # After the inputs: a model caller may hand back one of its inputs as an output.
        start = max(
            (int(spec["offset"]) + array.nbytes for spec, array in zip(specs, arrays, strict=True)), default=0
        )
        outputs = P.array_specs(results)
        try:
            self.ensure(P.place(outputs, start))
        except (OSError, ValueError) as error:
            raise OSError(f"no shared memory for the outputs: {error}") from None
        whole = buffer.array("|u1", (buffer.size,), 0)
        for view, array in zip(P.arrays_in_buffer(outputs, whole), results, strict=True):
            np.copyto(view, array, casting="no")
        return outputs


class LeasedCallBuffer(_Held[LeasedChannel]):
    """A call buffer that is the shared memory of the connection's own channel to the model server.

    Args:
        models: the model host.
    """

    def __init__(self, models: LendingModelCaller) -> None:
        super().__init__()
        self.models = models

    def _open(self, size: int) -> LeasedChannel:
        return self.models.lease(size)

    def call(self, model: str, specs: Specs) -> Specs:
        """Have the model server run a model node on the inputs in the memfd and write its outputs there.

        Args:
            model: the model node.
            specs: the app's input specs (with names and offsets).

        Returns:
            The output specs, with offsets (the memfd may have grown: see :attr:`size`).

        Raises:
            ProtocolError: the specs are malformed.
            KeyError: the model host has no such model node.
            ModelError: as for ``ModelHost.call``, or an input lies outside the memfd.
        """
        lease = self._opened()
        inputs = []
        for spec in specs:
            dtype, shape, _ = P.parse_spec(spec)
            try:
                inputs.append((str(spec["name"]), dtype, shape, int(spec["offset"])))
            except (KeyError, TypeError, ValueError) as error:
                raise P.ProtocolError(f"bad array spec: {error!r}") from None
        placed = lease.call(model, inputs)
        return [{"dtype": dtype, "shape": list(shape), "offset": offset} for dtype, shape, offset in placed]

    def lend(self, nodes: Sequence[str]) -> socket.socket:
        """A channel of the app's own to the model server, on this buffer's memfd.

        Args:
            nodes: the model nodes the app may call.

        Returns:
            The app's end (send it, then close it).

        Raises:
            ProtocolError: there is no memfd yet.
            ModelError: no model server can serve the channel.
        """
        return self._opened().lend(nodes)

    def lost(self, node: str) -> Exception:
        """The error for the app's call to ``node`` whose channel ended (see ``ModelLease.lost``)."""
        return self._opened().lost(node)

    @property
    def tally(self) -> CallTally:
        """The counts of the calls made on the channels lent to the app.

        Raises:
            ProtocolError: there is no memfd yet.
        """
        return self._opened().tally
