"""A small schema checker that never raises: every mismatch becomes a ``Problem`` with a JSON pointer.

Checks return the value when it is acceptable and None otherwise, so a parser can keep going and report
every problem in one pass.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from emulator.errors import Problem

__all__ = ["Checker", "describe", "pointer", "printable"]

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38
_SHOWN_CHARS = 60


def printable(text: str) -> str:
    """``text`` with every non-printable character written as ``\\uXXXX``, so a problem stays on one line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else f"\\u{ord(ch):04x}" for ch in text)


def pointer(base: str, *parts: str | int) -> str:
    """Append ``parts`` to the JSON pointer ``base`` (RFC 6901 escaping of ``~`` and ``/``).

    Non-printable characters in keys are shown escaped (see ``printable``).

    Args:
        base: a JSON pointer (``""`` for the document).
        parts: keys and indexes to append.

    Returns:
        The longer pointer, e.g. ``pointer("/nodeGraph", "nodes", 0)`` is ``/nodeGraph/nodes/0``.
    """
    for part in parts:
        text = printable(str(part).replace("~", "~0").replace("/", "~1"))
        base = f"{base}/{text}"
    return base


def describe(value: object) -> str:
    """Say what ``value`` is, briefly, for the 'found ...' part of a problem.

    Args:
        value: a value read from JSON.

    Returns:
        e.g. ``the integer 3``, ``an empty array``, or a string shown quoted (cut at 60 characters).
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"the integer {value}" if value.bit_length() <= 128 else "an integer too large to show"
    if isinstance(value, float):
        return f"the number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "..."
        return printable(json.dumps(shown, ensure_ascii=False)) if shown else 'an empty string ""'
    if isinstance(value, dict):
        return "an empty object" if not value else f"an object with {len(value)} keys"
    if isinstance(value, list):
        return "an empty array" if not value else f"an array of {len(value)} items"
    return type(value).__name__


def _is_int(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    # JSON Schema draft-07 counts 20.0 as an integer.
    return isinstance(value, float) and value.is_integer()


class Checker:
    """Collects problems for one manifest file.

    Args:
        file: the file name shown in every problem.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.problems: list[Problem] = []

    def add(self, at: str, expected: str, found: str) -> None:
        """Record one problem at pointer ``at``."""
        self.problems.append(Problem(self.file, at, expected, found))

    def obj(
        self,
        value: object,
        at: str,
        *,
        required: Iterable[str] = (),
        optional: Iterable[str] = (),
        closed: bool = True,
        what: str = "an object",
    ) -> dict[str, Any] | None:
        """Check that ``value`` is an object with the ``required`` keys and (if ``closed``) no unknown key.

        Returns:
            the object, or None when it is not an object (missing keys and unknown keys are reported but the
            object is still returned so its members can be checked).
        """
        if not isinstance(value, dict):
            self.add(at, what, describe(value))
            return None
        required = tuple(required)
        for key in required:
            if key not in value:
                self.add(pointer(at, key), f"the required key {key!r}", "nothing")
        if closed:
            allowed = (*required, *optional)
            for key in value:
                if key not in allowed:
                    self.add(
                        pointer(at, key),
                        f"one of the known keys {', '.join(allowed)}",
                        f"the unknown key {describe(key)}",
                    )
        return value

    def array(self, value: object, at: str, *, min_items: int = 0, max_items: int | None = None) -> list[Any]:
        """Check that ``value`` is an array with the allowed number of items; returns [] when it is not."""
        if not isinstance(value, list):
            self.add(at, "an array", describe(value))
            return []
        if len(value) < min_items:
            self.add(
                at, f"an array of at least {min_items} item{'s' if min_items > 1 else ''}", describe(value)
            )
        if max_items is not None and len(value) > max_items:
            self.add(at, f"an array of at most {max_items} items", describe(value))
        return value

    def string(
        self,
        value: object,
        at: str,
        *,
        pattern: str | None = None,
        min_length: int = 0,
        max_length: int | None = None,
        what: str | None = None,
    ) -> str | None:
        """Check that ``value`` is a string matching ``pattern`` and the length limits."""
        expected = what or "a string"
        limits = []
        if pattern:
            limits.append(f"matching {pattern}")
        if min_length > 1:
            limits.append(f"at least {min_length} characters")
        elif min_length == 1 and not pattern:
            limits.append("not empty")
        if max_length is not None:
            limits.append(f"at most {max_length} characters")
        if limits:
            expected = f"{expected} ({', '.join(limits)})"
        if not isinstance(value, str):
            self.add(at, expected, describe(value))
            return None
        if (
            len(value) < min_length
            or (max_length is not None and len(value) > max_length)
            or (pattern is not None and re.fullmatch(pattern, value) is None)
        ):
            self.add(at, expected, describe(value))
            return None
        return value

    def enum(self, value: object, at: str, choices: Collection[str]) -> str | None:
        """Check that ``value`` is one of the strings ``choices``."""
        if not isinstance(value, str) or value not in choices:
            self.add(at, f"one of {', '.join(choices)}", describe(value))
            return None
        return value

    def boolean(self, value: object, at: str) -> bool | None:
        """Check that ``value`` is true or false."""
        if not isinstance(value, bool):
            self.add(at, "true or false", describe(value))
            return None
        return value

    def integer(
        self,
        value: object,
        at: str,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        what: str = "",
    ) -> int | None:
        """Check that ``value`` is an integer (not a boolean) within the bounds."""
        expected = what or "an integer"
        if minimum is not None and maximum is not None:
            expected = f"{expected} from {minimum} to {maximum}"
        elif minimum is not None:
            expected = f"{expected} of at least {minimum}"
        if isinstance(value, bool) or not isinstance(value, int | float) or not _is_int(value):
            self.add(at, expected, describe(value))
            return None
        number = int(value)
        if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
            self.add(at, expected, describe(value))
            return None
        return number

    def number(self, value: object, at: str, *, what: str = "a number") -> float | None:
        """Check that ``value`` is a finite number (integers allowed, booleans not)."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.add(at, what, describe(value))
            return None
        try:
            number = float(value)
        except OverflowError:
            self.add(at, f"{what} within float range", describe(value))
            return None
        if number != number or abs(number) == float("inf"):
            self.add(at, f"{what} (finite)", describe(value))
            return None
        return number

    def typed_value(self, value: object, at: str, value_type: str) -> bool | int | float | str | None:
        """Check ``value`` against a Panorama value type and return it typed (float32 values as float)."""
        if value_type == "boolean":
            return self.boolean(value, at)
        if value_type == "int32":
            return self.integer(value, at, minimum=INT32_MIN, maximum=INT32_MAX, what="an int32 integer")
        if value_type == "float32":
            number = self.number(value, at, what="a float32 number")
            if number is not None and abs(number) > FLOAT32_MAX:
                self.add(at, "a float32 number (within float32 range)", describe(value))
                return None
            return number
        if value_type == "string":
            return self.string(value, at)
        self.add(at, "no value for a media port", describe(value))
        return None

    def unique(self, names: Iterable[tuple[str | None, str]], what: str) -> None:
        """Report every repeated name; ``names`` gives (name, pointer of the name) pairs."""
        seen: dict[str, str] = {}
        article = "an" if what[:1] in "aeiou" else "a"
        for name, at in names:
            if name is None:
                continue
            if name in seen:
                self.add(at, f"{article} {what} not already used at {seen[name] or '/'}", describe(name))
            else:
                seen[name] = at
