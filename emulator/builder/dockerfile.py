"""Reading a package's Dockerfile: its instructions with line numbers, the base images it names, and the
instructions that have no effect on the appliance.

The appliance never runs a container from the image: it exports the image's filesystem and starts
``descriptor.json``'s entry in it. Instructions that only configure a container (ENV, CMD, ENTRYPOINT, EXPOSE,
VOLUME, USER, HEALTHCHECK) therefore do nothing at run time, and the build says so, naming
``Dockerfile:line``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "IGNORED_ON_DEVICE",
    "Instruction",
    "base_images",
    "ignored_instruction_warnings",
    "parse_dockerfile",
    "platform_of",
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
_ARG_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


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


def _expand_args(value: str, args: dict[str, str]) -> str:
    return _ARG_VARIABLE.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def base_images(instructions: Sequence[Instruction]) -> list[str]:
    """The images the Dockerfile builds FROM, in order, without stage names, ``scratch`` or duplicates.

    ``ARG`` defaults declared before the first FROM are substituted; a reference that still holds a variable
    is left out (the engine resolves it).

    Args:
        instructions: the parsed Dockerfile.

    Returns:
        Image references as written (e.g. ``public.ecr.aws/panorama/panorama-application``).
    """
    args: dict[str, str] = {}
    stages: set[str] = set()
    images: list[str] = []
    seen_from = False
    for instruction in instructions:
        if instruction.keyword == "ARG" and not seen_from:
            name, _, default = instruction.arguments.partition("=")
            if default:
                args[name.strip()] = default.strip().strip("\"'")
            continue
        if instruction.keyword != "FROM":
            continue
        seen_from = True
        _, image, alias = _from_tokens(instruction)
        image = _expand_args(image, args)
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
