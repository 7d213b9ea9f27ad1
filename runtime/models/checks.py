"""The checks of a model call's inputs against the model node's descriptor, one definition for every caller.

:meth:`runtime.models.ModelHost.call` checks arrays in the appliance; an app's call on its own channel is
checked in the model server (:class:`runtime.models.serving.AppChannel`), where the inputs already lie in
the channel's shared memory. Both say the same thing about the same mistake, naming the model node.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emulator.errors import ModelError
from runtime.models.protocol import SharedBuffer, align
from runtime.models.server import Meta

__all__ = ["Checked", "PlacedInput", "check_inputs", "check_placed", "shape_matches"]

Checked = list[tuple[str, np.dtype[Any]]]
"""``(name, dtype the model takes)`` of each input, in the descriptor's order."""
PlacedInput = tuple[str, np.dtype[Any], Sequence[int], int]
"""An input a caller wrote in a channel's shared memory: ``(name, dtype, shape, offset)``."""


def shape_matches(actual: tuple[int, ...], declared: tuple[int, ...]) -> bool:
    """Whether a shape is the declared one (a non-positive declared dimension accepts any size)."""
    return len(actual) == len(declared) and all(
        d <= 0 or a == d for a, d in zip(actual, declared, strict=True)
    )


def check_inputs(
    node: str,
    declared: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype[Any]],
    given: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
) -> Checked:
    """Check input names, kinds and shapes against the descriptor.

    Args:
        node: the model node (for the messages).
        declared: the descriptor's input shapes by name, in its order.
        dtypes: the element type the model takes for each input (float32 when not listed).
        given: ``(dtype, shape)`` of each input the caller passed.

    Returns:
        ``(name, dtype the model takes)`` in the descriptor's order.

    Raises:
        ModelError: an input is unknown or missing, not numeric, or of another shape (both shapes named).
    """
    names = list(declared)
    for name in given:
        if name not in declared:
            raise ModelError(f"unknown input {name!r}: the descriptor declares inputs {names}", node=node)
    checked: Checked = []
    for name, shape in declared.items():
        if name not in given:
            raise ModelError(f"missing input {name!r}: the descriptor declares inputs {names}", node=node)
        dtype, actual = given[name]
        if dtype.kind not in "biuf":
            raise ModelError(f"input {name!r} is a {dtype} array; the model needs numbers", node=node)
        if not shape_matches(tuple(actual), shape):
            raise ModelError(
                f"input {name!r} has shape {tuple(actual)} but the descriptor declares {shape}", node=node
            )
        checked.append((name, dtypes.get(name, np.dtype(np.float32))))
    return checked


def check_placed(
    node: str,
    declared: Mapping[str, tuple[int, ...]],
    dtypes: Mapping[str, np.dtype[Any]],
    buffer: SharedBuffer,
    inputs: Sequence[PlacedInput],
) -> Meta:
    """Check inputs written in a channel's shared memory; convert those not in the model's type (after them).

    Args:
        node: the model node.
        declared: as for :func:`check_inputs`.
        dtypes: as for :func:`check_inputs`.
        buffer: the shared memory (it grows when a conversion needs room).
        inputs: where the caller wrote each input.

    Returns:
        Where each input, in the model's type, now lies.

    Raises:
        ModelError: as for :func:`check_inputs`, an input lies outside the shared memory, or no memory is
            left for a conversion.
    """
    placed = {name: (dtype, tuple(shape), offset) for name, dtype, shape, offset in inputs}
    checked = check_inputs(node, declared, dtypes, {name: (d, s) for name, (d, s, _) in placed.items()})
    end = 0
    for name, (dtype, shape, offset) in placed.items():
        nbytes = math.prod(shape) * dtype.itemsize
        if offset < 0 or offset + nbytes > buffer.size:
            raise ModelError(f"input {name!r} lies outside the call buffer", node=node)
        end = max(end, offset + nbytes)
    meta: Meta = []
    for name, wanted in checked:
        dtype, shape, offset = placed[name]
        if dtype != wanted or offset % wanted.alignment:
            source = buffer.array(dtype, shape, offset)
            offset = align(end)
            end = offset + source.size * wanted.itemsize
            try:
                buffer.ensure(end)
            except OSError as error:
                raise ModelError(f"no shared memory for the inputs: {error}", node=node) from None
            np.copyto(buffer.array(wanted, shape, offset), source, casting="unsafe")
        meta.append((name, wanted.str, shape, offset))
    return meta
