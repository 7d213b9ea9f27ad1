"""The call buffer of one request connection: shared memory that a model call's arrays cross the bridge in.

The appliance makes the file (in the shm directory, where the app can map it) when the app first asks for
one, reserves its pages - so a full /dev/shm is an error then, never a fault while the file is written -
and removes it when the connection ends. The app writes a call's inputs into it and reads the outputs,
which are written after the inputs. See :mod:`runtime.sdk.panoramasdk._protocol`.

With a model host that lends channels (:class:`runtime.models.ModelHost`), the file *is* the shared memory
of the connection's own channel to the model server: the server reads the app's inputs and writes the
outputs there, and the appliance only passes two short messages on. Any other model caller gets views of
the inputs and its outputs are copied in.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from pathlib import Path
from typing import Any

import numpy as np

from runtime.bridge.contracts import LendingModelCaller, ModelCaller, ModelLease
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["MAX_CALL_BUFFER", "CallBuffer", "LeasedCallBuffer", "call_buffer"]

MAX_CALL_BUFFER = 1 << 30
"""Largest call buffer an app may ask for (bigger calls travel in the message tail)."""

Specs = list[dict[str, Any]]


def call_buffer(directory: Path, name: str, models: ModelCaller) -> CallBuffer | LeasedCallBuffer:
    """The call buffer of one connection, made on the app's first ``buffer`` request.

    Args:
        directory: the shm directory.
        name: the file name (unique in the directory).
        models: the appliance's model caller.

    Returns:
        A buffer on a channel of its own when ``models`` lends them, else a plain one.
    """
    if isinstance(models, LendingModelCaller):
        return LeasedCallBuffer(directory, name, models)
    return CallBuffer(directory, name, models)


def _check_size(size: int) -> None:
    if size > MAX_CALL_BUFFER:
        raise ValueError(f"{size} bytes is over the {MAX_CALL_BUFFER}-byte limit")


class CallBuffer:
    """A file in the shm directory, mapped here and by the app; calls go to ``models.call`` with views.

    Args:
        directory: the shm directory.
        name: the file name.
        models: runs the model nodes.
    """

    def __init__(self, directory: Path, name: str, models: ModelCaller) -> None:
        self.path = directory / name
        self.name = name
        self.size = 0
        self.models = models
        self._map: mmap.mmap | None = None

    def ensure(self, size: int) -> None:
        """Make the file hold at least ``size`` bytes (growing it to twice its size at least).

        Raises:
            ValueError: ``size`` is over :data:`MAX_CALL_BUFFER`.
            OSError: the file cannot be made or grown (shm full).
        """
        if size <= self.size and self._map is not None:
            return
        _check_size(size)
        new_size = min(MAX_CALL_BUFFER, max(size, 2 * self.size, 1))
        new_size = (new_size + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        flags = os.O_RDWR | os.O_CLOEXEC | (os.O_CREAT | os.O_EXCL if self._map is None else 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            os.posix_fallocate(fd, 0, new_size)
            # Views handed out earlier keep the old mapping alive; it goes with the last of them.
            self._map = mmap.mmap(fd, new_size)
        except BaseException:
            if self._map is None:
                os.unlink(self.path)
            raise
        finally:
            os.close(fd)
        self.size = new_size

    def call(self, model: str, specs: Specs) -> Specs:
        """Run a model node on the inputs ``specs`` place in the file; write its outputs after them.

        Args:
            model: the model node.
            specs: the app's input specs (with names and offsets).

        Returns:
            The output specs, with offsets.

        Raises:
            ProtocolError: the specs are malformed or lie outside the file.
            KeyError: the model caller does not serve ``model``.
            Exception: whatever the model caller raises, or OSError when the outputs do not fit.
        """
        if self._map is None:
            raise P.ProtocolError("no call buffer: ask for one first")
        arrays = P.arrays_in_buffer(specs, self._map)
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
        assert self._map is not None
        for view, array in zip(P.arrays_in_buffer(outputs, self._map), results, strict=True):
            np.copyto(view, array, casting="no")
        return outputs

    def close(self) -> None:
        """Remove the file (this side's mapping goes with its last view)."""
        self._map = None
        if self.size:
            self.size = 0
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class LeasedCallBuffer:
    """A call buffer that is the shared memory of the connection's own channel to the model server.

    Args:
        directory: the shm directory.
        name: the file name.
        models: the model host.
    """

    def __init__(self, directory: Path, name: str, models: LendingModelCaller) -> None:
        self.path = directory / name
        self.name = name
        self.models = models
        self._lease: ModelLease | None = None

    @property
    def size(self) -> int:
        """The file's size (0 before the first ``buffer`` request)."""
        return self._lease.size if self._lease is not None else 0

    def ensure(self, size: int) -> None:
        """Make the file hold at least ``size`` bytes.

        Raises:
            ValueError: ``size`` is over :data:`MAX_CALL_BUFFER`.
            OSError: the file cannot be made or grown (shm full).
        """
        _check_size(size)
        if self._lease is None:
            self._lease = self.models.lease(self.path, size)
        else:
            self._lease.ensure(size)

    def call(self, model: str, specs: Specs) -> Specs:
        """Have the model server run a model node on the inputs in the file and write its outputs there.

        Args:
            model: the model node.
            specs: the app's input specs (with names and offsets).

        Returns:
            The output specs, with offsets (the file may have grown: see :attr:`size`).

        Raises:
            ProtocolError: the specs are malformed.
            KeyError: the model host has no such model node.
            ModelError: as for ``ModelHost.call``, or an input lies outside the file.
        """
        if self._lease is None:
            raise P.ProtocolError("no call buffer: ask for one first")
        inputs = []
        for spec in specs:
            dtype, shape, _ = P.parse_spec(spec)
            try:
                inputs.append((str(spec["name"]), dtype, shape, int(spec["offset"])))
            except (KeyError, TypeError, ValueError) as error:
                raise P.ProtocolError(f"bad array spec: {error!r}") from None
        placed = self._lease.call(model, inputs)
        return [{"dtype": dtype, "shape": list(shape), "offset": offset} for dtype, shape, offset in placed]

    def close(self) -> None:
        """Close the channel and remove the file."""
        if self._lease is not None:
            self._lease.close()
            self._lease = None
