"""Reading a package's Dockerfile: its instructions with line numbers, the base images it names, the ARG and
ENV variables in force at each instruction, and the instructions that have no effect on the appliance.

The appliance never runs a container from the image: it exports the image's filesystem and starts
``descriptor.json``'s entry in it. Instructions that only configure a container (ENV, CMD, ENTRYPOINT, EXPOSE,
VOLUME, USER, HEALTHCHECK) therefore do nothing at run time, and the build says so, naming
``Dockerfile:line``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = [
    "IGNORED_ON_DEVICE",
    "Instruction",
    "base_images",
    "ignored_instruction_warnings",
    "parse_dockerfile",
    "platform_of",
    "substitute",
    "variables_in_force",
]

#: Instruction keyword -> why it does nothing on the appliance.
IGNORED_ON_DEVICE: dict[str, str] = {
    "CMD": "the device runs descriptor.json's entry instead",
    "ENTRYPOINT": "the device runs descriptor.json's entry instead",
    "ENV": (
        "it applies to later build steps only; set run-time variables in descriptor.json "
        "runtimeDescriptor.entry.environment"
    ),
    "EXPOSE": (
        "declare ports in package.json interface network.inboundPorts and graph.json networkRoutingRules"
    ),
    "HEALTHCHECK": "the device does not run container health checks",
    "USER": "the device runs the entry as its own application user",
    "VOLUME": "the root filesystem is read-only; write to /opt/aws/panorama/storage instead",
}

_DIRECTIVE = re.compile(r"^#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
# \$ (a literal dollar), ${NAME}, ${NAME:-word}, ${NAME:+word}, $NAME.
_VARIABLE = re.compile(
    r"\\(\$)|\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::([-+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))"
)


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction.

    Args:
        keyword: the instruction, upper case (``RUN``, ``COPY``...).
        arguments: the rest of the instruction with continuation lines joined.
        line: the 1-based line on which the instruction starts.
    """

    keyword: str
    arguments: str
    line: int

    def __str__(self) -> str:
        return f"{self.keyword} {self.arguments}".strip()


def _escape_character(lines: Sequence[str]) -> str:
    """The escape character set by a leading ``# escape=`` parser directive (a backslash by default)."""
    for line in lines:
        match = _DIRECTIVE.match(line.strip())
        if not match:
            break
        if match.group(1).lower() == "escape" and match.group(2) in ("\\", "`"):
            return match.group(2)
    return "\\"


def parse_dockerfile(text: str) -> list[Instruction]:
    """Split a Dockerfile into instructions, the way the classic builder counts its steps.

    Args:
        text: the Dockerfile's content.

    Returns:
        The instructions in order; the N-th build step is ``instructions[N - 1]``.
    """
    lines = text.splitlines()
    escape = _escape_character(lines)
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(lines, start=1):
        stripped = raw.strip()
        if not parts:
            if not stripped or stripped.startswith("#"):
                continue
            start = number
        elif not stripped or stripped.startswith("#"):
            # Comments and empty lines inside a continued instruction are dropped by the builder.
            continue
        if stripped.endswith(escape) and not stripped.endswith(escape * 2):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        joined = " ".join(part for part in parts if part)
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        parts = []
    if parts:
        joined = " ".join(part for part in parts if part)
        keyword, _, arguments = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    return instructions


def ignored_instruction_warnings(instructions: Sequence[Instruction], file_label: str) -> list[str]:
    """One warning line per instruction that has no effect on the appliance.

    Args:
        instructions: the parsed Dockerfile.
        file_label: how to name the Dockerfile in the warnings (e.g. ``packages/.../Dockerfile``).

    Returns:
        Lines such as ``Dockerfile:4: ENV is ignored on the device: ...``.
    """
    return [
        f"{file_label}:{instruction.line}: {instruction.keyword} is ignored on the device: "
        f"{IGNORED_ON_DEVICE[instruction.keyword]}"
        for instruction in instructions
        if instruction.keyword in IGNORED_ON_DEVICE
    ]


def _from_tokens(instruction: Instruction) -> tuple[str | None, str, str | None]:
    """(platform flag, image reference, stage alias) of a FROM instruction."""
    platform: str | None = None
    words = instruction.arguments.split()
    rest: list[str] = []
    for word in words:
        if word.startswith("--"):
            if word.startswith("--platform="):
                platform = word.split("=", 1)[1]
            continue
        rest.append(word)
    image = rest[0] if rest else ""
    alias = rest[2] if len(rest) >= 3 and rest[1].lower() == "as" else None
    return platform, image, alias


def substitute(value: str, variables: Mapping[str, str]) -> str:
    """Replace ``$NAME``, ``${NAME}``, ``${NAME:-word}`` and ``${NAME:+word}`` as the builder does.

    A variable that is not known here (one a ``--build-arg`` or the base image's ENV would give) is left as
    written, so that a path holding it matches nothing rather than a wrong file.

    Args:
        value: a word of an instruction.
        variables: the variables in force (``variables_in_force``).

    Returns:
        The word with the known variables replaced; ``\\$`` becomes ``$``.
    """

    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return "$"
        name = match.group(2) or match.group(5)
        operator, word = match.group(3), match.group(4)
        current = variables.get(name)
        if operator == "-":
            return current if current else word
        if operator == "+":
            return word if current else ""
        return current if current is not None else match.group(0)

    return _VARIABLE.sub(replace, value)


def _assignments(arguments: str, legacy: bool) -> list[tuple[str, str | None]]:
    """``NAME=value`` pairs of an ARG or ENV (``ENV NAME value`` in the legacy form); None: no value."""
    try:
        words = shlex.split(arguments, posix=True)
    except ValueError:
        words = arguments.split()
    if legacy and words and "=" not in words[0]:
        return [(words[0], " ".join(words[1:]))]
    pairs: list[tuple[str, str | None]] = []
    for word in words:
        name, sep, value = word.partition("=")
        pairs.append((name, value if sep else None))
    return pairs


def variables_in_force(instructions: Sequence[Instruction]) -> list[dict[str, str]]:
    """The ARG and ENV variables the builder substitutes in each instruction, known from the Dockerfile.

    As the builder scopes them: an ARG before the first FROM is seen by FROM lines, and inside a stage only
    when the stage declares it again (``ARG NAME``); an ARG or ENV holds from its line to the end of its
    stage, and ENV wins over an ARG of the same name. Build arguments are not given (neither ``dev`` nor
    ``build-container`` passes any), so an ARG is its default.

    Args:
        instructions: the parsed Dockerfile.

    Returns:
        One mapping per instruction, in order.
    """
    global_args: dict[str, str] = {}
    args: dict[str, str] = {}
    env: dict[str, str] = {}
    seen_from = False
    found: list[dict[str, str]] = []
    for instruction in instructions:
        keyword = instruction.keyword
        if keyword == "FROM":
            seen_from = True
            args, env = {}, {}
            found.append(dict(global_args))
            continue
        current = {**args, **env} if seen_from else dict(global_args)
        found.append(current)
        if keyword == "ARG":
            for name, default in _assignments(instruction.arguments, legacy=False):
                value = substitute(default, current) if default is not None else None
                if not seen_from:
                    if value is not None:
                        global_args[name] = value
                elif value is not None:
                    args[name] = value
                elif name in global_args:
                    args[name] = global_args[name]
        elif keyword == "ENV" and seen_from:
            for name, given in _assignments(instruction.arguments, legacy=True):
                if given is not None:
                    env[name] = substitute(given, current)
    return found


def base_images(instructions: Sequence[Instruction]) -> list[str]:
    """The images the Dockerfile builds FROM, in order, without stage names, ``scratch`` or duplicates.

    ``ARG`` defaults declared before the first FROM are substituted; a reference that still holds a variable
    is left out (the engine resolves it).

    Args:
        instructions: the parsed Dockerfile.

    Returns:
        Image references as written (e.g. ``public.ecr.aws/panorama/panorama-application``).
    """
    stages: set[str] = set()
    images: list[str] = []
    for instruction, variables in zip(instructions, variables_in_force(instructions), strict=True):
        if instruction.keyword != "FROM":
            continue
        _, image, alias = _from_tokens(instruction)
        image = substitute(image, variables)
        is_stage = image.lower() in stages
        if alias:
            stages.add(alias.lower())
        if not image or "$" in image or image.lower() == "scratch" or is_stage:
            continue
        if image not in images:
            images.append(image)
    return images


def platform_of(instructions: Sequence[Instruction]) -> str | None:
    """The ``--platform`` of the last FROM instruction (the stage that becomes the asset), if any."""
    froms = [instruction for instruction in instructions if instruction.keyword == "FROM"]
    if not froms:
        return None
    return _from_tokens(froms[-1])[0]
