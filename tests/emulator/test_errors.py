"""The error root's helpers: ``one_line`` for every exception that goes into a message."""

from __future__ import annotations

import pytest

from emulator.errors import EmulatorError, ModelError, one_line


def test_a_message_on_several_lines_becomes_one() -> None:
    assert one_line(ValueError("shape\n  (1, 3)\tis wrong ")) == "shape (1, 3) is wrong"
    assert one_line("  the engine said:\n  no space left  ") == "the engine said: no space left"


def test_a_key_error_loses_its_quotes_and_an_empty_error_gives_its_type() -> None:
    assert one_line(KeyError("model_node")) == "model_node"
    assert one_line(RuntimeError()) == "RuntimeError"
    assert one_line("") == ""


def test_an_emulator_error_keeps_what_it_names() -> None:
    error = ModelError("the model failed", node="detector")
    assert one_line(error) == "node detector: the model failed"
    assert one_line(error, named=True) == "the model failed"


def test_named_takes_a_framework_s_last_line_and_its_type() -> None:
    torch_like = RuntimeError(
        "The following operation failed:\n  File 'x.py'\n\nbuiltins.ValueError: bad input\n"
    )
    assert one_line(torch_like, named=True) == "ValueError: bad input"
    assert one_line(OSError("no such file\n"), named=True) == "OSError: no such file"
    assert one_line(TypeError(), named=True) == "TypeError"


def test_named_is_cut_to_400_characters() -> None:
    line = one_line(ValueError("x" * 1000), named=True)
    assert len(line) == 400 and line.startswith("ValueError: x") and line.endswith("...")


@pytest.mark.parametrize("error", [EmulatorError("plain"), ValueError("plain")])
def test_a_one_line_text_is_left_as_it_is(error: Exception) -> None:
    assert one_line(error) == "plain"
