"""Errors raised by panorama-emulator.

Every error the emulator raises on purpose derives from one root, so callers can catch ``EmulatorError`` and
print ``str(error)``: a one-line cause that names the file, JSON pointer, node or asset concerned.

    EmulatorError
    ├── ManifestError          graph / package / descriptor / override JSON is invalid (every problem listed)
    ├── ProjectError           the project on disk is not usable: missing file, package outside the project,
    │                          unknown asset or package
    ├── EngineError            the Docker engine cannot be reached or refused a request
    │   └── BuildError         an image build failed (the step and the engine's last lines)
    ├── AssetError             an asset is missing, corrupted (hash differs from its name) or unreadable
    │   └── UnsafeArchiveError an archive member would escape the root or is not allowed in a rootfs
    ├── SandboxError           an app sandbox cannot start (no bubblewrap or namespaces, foreign arch)
    ├── DeviceError            the appliance cannot do what was asked in its state, or an app failed at boot
    ├── SourceError            a camera source cannot be opened or read
    └── ModelError             a model node cannot be loaded, or a call to it failed

``one_line(error)`` is how any exception (the emulator's own, or a framework's) becomes one line of a
message; ``runtime/`` uses it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "AssetError",
    "BuildError",
    "DeviceError",
    "EmulatorError",
    "EngineError",
    "ManifestError",
    "ModelError",
    "Problem",
    "ProjectError",
    "SandboxError",
    "SourceError",
    "UnsafeArchiveError",
    "one_line",
]


class EmulatorError(Exception):
    """Root of every error the emulator raises on purpose.

    Args:
        message: what went wrong, as a sentence a person can act on.
        file: the file concerned, if any.
        pointer: the JSON pointer inside ``file``, if any.
        node: the graph node concerned, if any.
        asset: the asset (name or file name) concerned, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        pointer: str | None = None,
        node: str | None = None,
        asset: str | None = None,
    ) -> None:
        self.message = message
        self.file = file
        self.pointer = pointer
        self.node = node
        self.asset = asset
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.file:
            where.append(self.file)
        if self.pointer is not None:
            where.append(self.pointer or "/")
        if self.node:
            where.append(f"node {self.node}")
        if self.asset:
            where.append(f"asset {self.asset}")
        return ": ".join([*where, self.message])


@dataclass(frozen=True)
class Problem:
    """One problem found in a manifest: where it is, what was expected and what was found."""

    file: str
    pointer: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.file}: {self.pointer or '/'}: expected {self.expected}, found {self.found}"


class ManifestError(EmulatorError):
    """A manifest is invalid. ``problems`` holds every problem found in one pass.

    ``str()`` gives one line per problem.
    """

    def __init__(self, problems: list[Problem]) -> None:
        if not problems:
            raise ValueError("ManifestError needs at least one problem")
        self.problems = list(problems)
        first = problems[0]
        super().__init__(
            f"expected {first.expected}, found {first.found}", file=first.file, pointer=first.pointer
        )

    def __str__(self) -> str:
        return "\n".join(str(problem) for problem in self.problems)


class ProjectError(EmulatorError):
    """The project directory is not a usable panorama-cli project, or a path or name in it is wrong."""


class EngineError(EmulatorError):
    """The Docker engine cannot be reached or refused a request."""


class BuildError(EngineError):
    """An image build failed.

    ``step`` is the failing Dockerfile step, ``log_tail`` the engine's last lines.
    """

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        log_tail: list[str] | None = None,
        file: str | None = None,
    ) -> None:
        self.step = step
        self.log_tail = list(log_tail or [])
        super().__init__(message, file=file)


class AssetError(EmulatorError):
    """An asset is missing, corrupted or unreadable."""


class UnsafeArchiveError(AssetError):
    """An archive member would land outside the root it is unpacked into, or is not allowed in a rootfs."""


class SandboxError(EmulatorError):
    """An application sandbox cannot be started."""


class DeviceError(EmulatorError):
    """The appliance cannot do what was asked in its current state, or an application failed at boot."""


class SourceError(EmulatorError):
    """A camera source cannot be opened or read."""


class ModelError(EmulatorError):
    """A model node cannot be loaded, or a call to it failed."""


_NAMED = re.compile(r"^[\w.]*(Error|Exception): ")
_LIMIT = 400


def one_line(error: BaseException | str, *, named: bool = False) -> str:
    """An exception (or a message) as one line of a message a person reads.

    Plain: ``str(error)`` with every run of white space (new lines too) made one space, a ``KeyError``'s
    quotes left out, and the type's name for an exception that says nothing. ``named=True`` is for
    exceptions from frameworks, whose text is often many lines with the cause on the last one (TorchScript,
    OpenCV): that line, led by the type's name unless it names its own type (``builtins.ValueError: ...``),
    cut to 400 characters; an ``EmulatorError`` gives its message without the file or node it names.

    Args:
        error: the exception, or the text of one.
        named: say which type of exception it was (see above).

    Returns:
        The line; empty only for an empty text.
    """
    if isinstance(error, str):
        return " ".join(error.split())
    if named:
        if isinstance(error, EmulatorError):
            return error.message
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        text = lines[-1] if lines else ""
        if _NAMED.match(text):
            message = text.removeprefix("builtins.")
        else:
            kind = type(error).__name__
            message = f"{kind}: {text}" if text else kind
        return message if len(message) <= _LIMIT else message[: _LIMIT - 3] + "..."
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__
