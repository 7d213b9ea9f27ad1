"""What a package build says about the offline stand-in base image it builds FROM.

Published Dockerfiles name real AWS images (``public.ecr.aws/panorama/panorama-application:1.2.0-py3.8``, the
SDK 1 image, ...) and the interpreters those images carried (``python3.8``, ``python3.7``). Here those names
are served by the stand-in (:mod:`emulator.builder.base_image`). The build says so once, notes once when the
app names a Python version the stand-in serves with its own, and, when a base image is missing, names the
command that would serve it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from emulator.builder.base_image import (
    ARM64_STAND_IN,
    BASE_IMAGE_REPOSITORY,
    LABEL_PYTHON,
    LABEL_PYTHON_NAMES,
    STAND_IN_REFERENCES,
    BaseImageError,
    is_stand_in,
    normalise_reference,
)
from emulator.builder.docker_build import ImageBuilder, ImageInfo
from emulator.builder.dockerfile import Instruction
from emulator.device.arch import host_machine

__all__ = [
    "StandInBases",
    "entry_path_of",
    "failure_hint",
    "missing_hint",
    "python_name_note",
    "python_names_used",
]

# A versioned interpreter name as a command word: python3.8, /usr/bin/python3.7, pip3.8 (not python3.8-dev).
_VERSIONED = re.compile(r"(?<![\w.-])(?:/usr(?:/local)?/bin/)?((?:python|pip)(\d+\.\d+))(?![\w.-])")
_DOCS = "docs/base-image.md"


@dataclass(frozen=True)
class StandInBases:
    """The base images of a build that are the stand-in, or were built FROM it.

    Args:
        infos: base reference -> its local image, for the bases that carry the stand-in's label.
        stand_in_id: the id of the stand-in itself (``...:latest``), if the engine has it.
        arm64_id: the id of the arm64 stand-in (``base-image --arch arm64``), if the engine has it.
    """

    infos: Mapping[str, ImageInfo]
    stand_in_id: str | None
    arm64_id: str | None = None

    @classmethod
    def find(cls, builder: ImageBuilder, bases: Sequence[str]) -> StandInBases:
        """Inspect ``bases`` in the engine.

        Args:
            builder: the engine.
            bases: the Dockerfile's FROM references.

        Returns:
            The bases that are (built on) the stand-in.
        """
        infos = {}
        for ref in bases:
            info = builder.image(ref)
            if info is not None and is_stand_in(info.labels):
                infos[ref] = info
        stand_in = builder.image(f"{BASE_IMAGE_REPOSITORY}:latest") if infos else None
        arm64 = builder.image(ARM64_STAND_IN) if infos else None
        return cls(
            infos, stand_in.id if stand_in is not None else None, arm64.id if arm64 is not None else None
        )

    @property
    def python(self) -> str | None:
        """The stand-in's Python version (``3.11.2``), when a base is the stand-in."""
        for info in self.infos.values():
            version = info.labels.get(LABEL_PYTHON)
            if version and version != "?":
                return version
        return None

    def sentence(self) -> str | None:
        """One clause naming the bases served by the stand-in, or None when none is."""
        if not self.infos:
            return None
        named = []
        for ref, info in self.infos.items():
            itself = info.id in (self.stand_in_id, self.arm64_id)
            named.append(ref if itself else f"{ref} (built on it)")
        info = next(iter(self.infos.values()))
        python = info.labels.get(LABEL_PYTHON, "?")
        arch = info.architecture or "the host's architecture"
        if info.architecture in ("arm64", "aarch64") and host_machine() != "aarch64":
            arch += " through qemu-user"
        return (
            f"the offline stand-in serves {', '.join(named)} (Debian, Python {python}, {arch}, no Jetson "
            f"libraries; see {_DOCS})"
        )


def python_names_used(instructions: Sequence[Instruction], entry_path: str | None) -> list[tuple[str, str]]:
    """Where a package names a versioned Python: RUN steps and the descriptor's ``entry.path``.

    Args:
        instructions: the parsed Dockerfile.
        entry_path: ``runtimeDescriptor.entry.path``.

    Returns:
        ``(where, name)`` pairs, e.g. ``("Dockerfile:4", "python3.8")``, in order, without repeats.
    """
    found: list[tuple[str, str]] = []
    for instruction in instructions:
        if instruction.keyword != "RUN":
            continue
        for match in _VERSIONED.finditer(instruction.arguments):
            pair = (f"Dockerfile:{instruction.line}", match.group(1))
            if pair not in found:
                found.append(pair)
    if entry_path:
        entry = _VERSIONED.fullmatch(entry_path.strip())
        if entry:
            found.append(("descriptor.json entry.path", entry.group(1)))
    return found


def entry_path_of(descriptor: bytes) -> str | None:
    """``runtimeDescriptor.entry.path`` of a (validated) descriptor's bytes, if it has one."""
    try:
        document = json.loads(descriptor)
        path = document["runtimeDescriptor"]["entry"]["path"]
    except (ValueError, KeyError, TypeError):
        return None
    return path if isinstance(path, str) else None


def python_name_note(used: Sequence[tuple[str, str]], python: str | None) -> str | None:
    """One note when the package names a Python version the stand-in serves with another.

    Args:
        used: from :func:`python_names_used`.
        python: the stand-in's Python version (``3.11.2``).

    Returns:
        The note, or None when nothing differs.
    """
    if not python:
        return None
    own = ".".join(python.split(".")[:2])
    differing = [(where, name) for where, name in used if _version(name) not in (None, own)]
    if not differing:
        return None
    names = sorted({name for _, name in differing})
    if len(names) == 1:
        places = [where for where, _ in differing]
    else:
        places = [f"{where} ({name})" for where, name in differing]
    listed = places[0] if len(places) == 1 else ", ".join(places[:-1]) + " and " + places[-1]
    verb = "relies" if len(places) == 1 else "rely"
    return (
        f"note: {listed} {verb} on {' / '.join(names)}, which the offline stand-in serves with its own "
        f"Python {python}; the real image has Python 3.8 (see {_DOCS})"
    )


def _version(name: str) -> str | None:
    match = _VERSIONED.fullmatch(name)
    return match.group(2) if match else None


def missing_hint(missing: Sequence[str]) -> str:
    """What would serve base images that are neither local nor pullable, as one clause.

    Args:
        missing: FROM references the engine lacks.

    Returns:
        ``build the offline stand-in with: panorama-emulator base-image`` for the references the stand-in
        carries, ``panorama-emulator base-image --tag REF`` for others, and why a digest cannot be served.
    """
    clauses: list[str] = []
    own: list[str] = []
    others: list[str] = []
    for ref in missing:
        try:
            full = normalise_reference(ref)
        except BaseImageError as error:
            clauses.append(error.message)
            continue
        (own if full in STAND_IN_REFERENCES else others).append(ref)
    if own:
        clauses.insert(0, "build the offline stand-in with: panorama-emulator base-image")
    if others:
        tags = " ".join(f"--tag {ref}" for ref in others)
        clauses.append(f"to build FROM the offline stand-in instead: panorama-emulator base-image {tags}")
    return "; ".join(clauses)


def failure_hint(text: str, bases: StandInBases) -> str:
    """A clause for a failed step that ran a Python name an older stand-in lacks, else ``""``.

    Args:
        text: the engine's message and last lines.
        bases: the build's stand-in bases.

    Returns:
        ``"; ..."`` naming ``panorama-emulator base-image``, or an empty string.
    """
    match = re.search(r"\b((?:python|pip)\d+\.\d+): (?:\S+ )?not found", text)
    if match is None or not bases.infos:
        return ""
    if all(info.labels.get(LABEL_PYTHON_NAMES) for info in bases.infos.values()):
        return ""
    return (
        f"; this stand-in predates its {match.group(1)} name: update it with panorama-emulator base-image, "
        "then build again"
    )
