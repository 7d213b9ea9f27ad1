"""ArraySlot and place: the one record of an array in a call buffer, laid out and checked."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from runtime.sdk.panoramasdk import _protocol as P


def test_arrays_placed_in_a_call_buffer_are_aligned_and_read_back_in_place() -> None:
    arrays = {
        "a": np.arange(3, dtype=np.uint8),
        "b": np.ones((2, 5), np.float32),
        "c": np.zeros((0, 4)),
        "d": np.array([7], "<i8"),
    }
    slots, end = P.place(((name, array.dtype, array.shape) for name, array in arrays.items()), start=10)
    assert [slot.offset for slot in slots] == [64, 128, 192, 192]  # each on a 64-byte boundary
    assert [slot.name for slot in slots] == ["a", "b", "c", "d"]
    assert end == 200 == slots[-1].end
    buffer = bytearray(end)
    for slot in slots:
        slot.view(buffer)[...] = arrays[slot.name]
    assert buffer[64:67] == bytes([0, 1, 2]) and buffer[192] == 7
    for slot in slots:
        back = P.ArraySlot.from_json(slot.to_json()).view(buffer)
        assert back.dtype == arrays[slot.name].dtype and np.array_equal(back, arrays[slot.name])


def test_a_slot_survives_json_and_pickle_unchanged() -> None:
    slot = P.ArraySlot("data", "<f4", (1, 3, 224, 224), 64)
    assert P.ArraySlot.from_json(slot.to_json()) == slot
    assert pickle.loads(pickle.dumps(slot)) == slot
    assert slot.nbytes == 3 * 224 * 224 * 4 and slot.end == 64 + slot.nbytes


def test_a_slot_spells_its_dtype_one_way() -> None:
    assert P.ArraySlot.from_json({"dtype": "float32", "shape": [2], "offset": 0}).dtype == "<f4"
    assert P.place([("x", np.float64, (2,))])[0][0].dtype == "<f8"


@pytest.mark.parametrize(
    "spec",
    [
        {"dtype": "|O", "shape": [1], "offset": 0},
        {"dtype": "<f4", "shape": [1]},
        {"dtype": "<f4", "shape": [1], "offset": True},
        {"dtype": "nonsense", "shape": [1], "offset": 0},
        {"dtype": "<f4", "shape": [-2, -1], "offset": 0},
        {"dtype": "<f4", "shape": "12", "offset": 0},
        {"dtype": "<f4", "shape": [1.5], "offset": 0},
        {"name": 5, "dtype": "<f4", "shape": [1], "offset": 0},
        ["<f4", [1], 0],
    ],
    ids=[
        "objects",
        "no offset",
        "boolean offset",
        "bad dtype",
        "negative dimensions",
        "shape not a list",
        "shape not integers",
        "name not a string",
        "not an object",
    ],
)
def test_malformed_slots_from_the_other_side_are_protocol_errors(spec: object) -> None:
    with pytest.raises(P.ProtocolError):
        P.ArraySlot.from_json(spec)


@pytest.mark.parametrize("offset", [8, -4], ids=["past the end", "before the start"])
def test_a_slot_outside_the_buffer_is_a_protocol_error(offset: int) -> None:
    slot = P.ArraySlot.from_json({"name": "x", "dtype": "<f4", "shape": [4], "offset": offset})
    with pytest.raises(P.ProtocolError, match="'x' lies outside the call buffer"):
        slot.view(bytearray(16))
