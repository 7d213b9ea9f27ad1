"""The checks of a model call's inputs against the model node's descriptor, one definition for every caller.

:meth:`runtime.models.ModelHost.call` checks arrays in the appliance; an app's call on its own channel is
checked in the model server (:class:`runtime.models.serving.AppChannel`), where the inputs already lie in
the channel's shared memory. Both say the same thing about the same mistake, naming the model node.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from emulator.errors import ModelError
from runtime.models.protocol import SharedBuffer
from runtime.sdk.panoramasdk._protocol import ArraySlot, align

__all__ = ["Checked", "check_inputs", "check_placed", "shape_matches"]

Checked = list[tuple[str, np.dtype[Any]]]
"""``(name, dtype the model takes)`` of each input, in the descriptor's order."""


def shape_matches(actual: tuple[int, ...], declared: tuple[int, ...] | None) -> bool:
    """Whether a shape is the declared one (a non-positive declared dimension accepts any size; None, which
    only a test double declares, any shape)."""
    if declared is None:
        return True
    return len(actual) == len(declared) and all(
        d <= 0 or a == d for a, d in zip(actual, declared, strict=True)
    )


def check_inputs(
    node: str,
    declared: Mapping[str, tuple[int, ...] | None],
    dtypes: Mapping[str, np.dtype[Any]],
    given: Mapping[str, tuple[np.dtype[Any], tuple[int, ...]]],
) -> Checked:
    """Check input names, kinds and shapes against the descriptor.

    Args:
        node: the model node (for the messages).
        declared: the descriptor's input shapes by name, in its order (None: any shape).
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
    declared: Mapping[str, tuple[int, ...] | None],
    dtypes: Mapping[str, np.dtype[Any]],
    buffer: SharedBuffer,
    inputs: Sequence[ArraySlot],
) -> list[ArraySlot]:
    """Check inputs written in a channel's shared memory; convert those not in the model's type (after them).

    Args:
        node: the model node.
        declared: as for :func:`check_inputs`.
        dtypes: as for :func:`check_inputs`.
        buffer: the shared memory (it grows when a conversion needs room).
        inputs: where the caller wrote each input.

    Returns:
        Where each input, in the model's type, now lies, in the descriptor's order.

    Raises:
        ModelError: as for :func:`check_inputs`, an input lies outside the shared memory, or no memory is
            left for a conversion.
    """
    placed = {slot.name: slot for slot in inputs}
    checked = check_inputs(
        node, declared, dtypes, {name: (np.dtype(slot.dtype), slot.shape) for name, slot in placed.items()}
    )
    end = 0
    for name, slot in placed.items():
        if slot.offset < 0 or slot.end > buffer.size:
            raise ModelError(f"input {name!r} lies outside the call buffer", node=node)
        end = max(end, slot.end)
    slots: list[ArraySlot] = []
    for name, wanted in checked:
        slot = placed[name]
        if slot.dtype != wanted.str or slot.offset % wanted.alignment:
            source = buffer.view(slot)
            slot = ArraySlot(name, wanted.str, slot.shape, align(end))
            end = slot.end
            try:
                buffer.ensure(end)
            except OSError as error:
                raise ModelError(f"no shared memory for the inputs: {error}", node=node) from None
            np.copyto(buffer.view(slot), source, casting="unsafe")
        slots.append(slot)
    return slots
