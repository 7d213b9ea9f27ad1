"""What a package's Dockerfile puts into the image from the package folder, and what its RUN steps read.

``image_sources`` reads the COPY and ADD lines of the stage that becomes the asset (the last FROM) with the
WORKDIR in force at each, and says where every file of the build context lands in the image. It reads them as
the build does: ARG and ENV variables substituted (``dockerfile.variables_in_force``), and only the files
the build context holds (``context``: not those ``.dockerignore`` leaves out). ``dev`` uses it to show an
edited file at its image path without a rebuild, and to know which edits need one: the Dockerfile itself,
``.dockerignore``, ``descriptor.json`` (it becomes the descriptor asset), a file a RUN step names
(``requirements.txt``), a file copied by an earlier stage or unpacked by ADD.
"""

from __future__ import annotations

import fnmatch
import json
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from emulator.builder.context import DOCKERIGNORE, BuildContext
from emulator.builder.dockerfile import Instruction, parse_dockerfile, substitute, variables_in_force

__all__ = ["BUILD_INPUTS", "CopiedPath", "ImageSources", "image_sources"]

BUILD_INPUTS = ("Dockerfile", DOCKERIGNORE, "descriptor.json")
"""Files of a package folder that only a build turns into its asset."""
_ARCHIVE = re.compile(r"\.(tar|tgz|tbz2?|txz|tar\.(gz|bz2|xz|zst))$")
_WORDS = re.compile(r"[^\s;&|<>()'\"`=,]+")


@dataclass(frozen=True)
class CopiedPath:
    """One source of a COPY or ADD of the final stage.

    Args:
        source: the file or folder, relative to the package folder (``.`` for all of it).
        target: its image path: a folder's contents land in ``target``, a file lands at ``target``.
        directory: the source is a folder.
        line: the Dockerfile line of the instruction.
    """

    source: PurePosixPath
    target: str
    directory: bool
    line: int


@dataclass(frozen=True)
class ImageSources:
    """Where the package's files land in the image.

    Args:
        copies: the final stage's COPY / ADD sources, in Dockerfile order (later ones land on top).
        build_only: sources that reach the image only through a build (earlier stages, ADD of an archive).
        run_words: the words of every RUN step (a changed file a RUN names needs a rebuild).
        context: what the build context holds (None: the whole folder).
    """

    copies: tuple[CopiedPath, ...]
    build_only: tuple[PurePosixPath, ...]
    run_words: frozenset[str]
    context: BuildContext | None = None

    def in_context(self, file: PurePosixPath) -> bool:
        """True when a build sends the file to the engine (``.dockerignore`` does not leave it out)."""
        return self.context is None or self.context.holds(file)

    def targets(self, file: PurePosixPath) -> list[str]:
        """The image paths a file of the package folder lands at (none when no COPY takes it)."""
        if not self.in_context(file):
            return []
        found = []
        for copy in self.copies:
            if copy.directory:
                if copy.source == PurePosixPath(".") or _within(file, copy.source):
                    relative = file if copy.source == PurePosixPath(".") else file.relative_to(copy.source)
                    found.append(posixpath.join(copy.target, str(relative)))
            elif file == copy.source:
                found.append(copy.target)
        return found

    def read_by_run(self, file: PurePosixPath) -> bool:
        """True when a RUN step names the file (by name or by an image path it lands at)."""
        if file.name in self.run_words or str(file) in self.run_words:
            return True
        if any(word.endswith("/" + file.name) for word in self.run_words):
            return True
        return any(target in self.run_words for target in self.targets(file))

    def needs_build(self, file: PurePosixPath) -> bool:
        """True when only a build can bring a change of ``file`` into the image."""
        if str(file) in BUILD_INPUTS:
            return True
        if not self.in_context(file):
            return False
        if self.read_by_run(file):
            return True
        return any(file == source or _within(file, source) for source in self.build_only)


def _within(file: PurePosixPath, folder: PurePosixPath) -> bool:
    return folder != file and folder in file.parents


def _arguments(instruction: Instruction) -> tuple[list[str], list[str]]:
    """(flags, paths) of a COPY / ADD, in its shell or JSON form."""
    text = instruction.arguments.strip()
    words = text.split()
    flags = []
    while words and words[0].startswith("--"):
        flags.append(words.pop(0))
    rest = " ".join(words)
    if rest.startswith("["):
        try:
            paths = [str(item) for item in json.loads(rest)]
        except ValueError:
            paths = rest.split()
    else:
        paths = rest.split()
    return flags, paths


def _matches(package_dir: Path, pattern: str, context: BuildContext) -> list[PurePosixPath]:
    """Paths of the build context a COPY source names (wildcards expanded), relative to the package folder."""
    cleaned = posixpath.normpath(pattern.lstrip("/")) if pattern not in ("", ".", "./") else "."
    if cleaned.startswith("..") or "$" in cleaned:
        return []
    if not any(char in cleaned for char in "*?["):
        named = PurePosixPath(cleaned)
        return [named] if (package_dir / cleaned).exists() and context.holds(named) else []
    found = []
    for path in sorted(package_dir.rglob("*")):
        relative = PurePosixPath(path.relative_to(package_dir).as_posix())
        if fnmatch.fnmatchcase(str(relative), cleaned) and context.holds(relative):
            found.append(relative)
    return found


def image_sources(package_dir: Path, rootfs: Path | None = None) -> ImageSources:
    """Read a package's Dockerfile: where each of its files lands in the image.

    Args:
        package_dir: the package folder (the build context, with its ``Dockerfile``).
        rootfs: the unpacked image, to tell ``COPY file /existing-folder`` from ``COPY file /new-name``.

    Returns:
        The copies of the final stage, the sources only a build brings in, the RUN steps' words, the
        build context.
    """
    dockerfile = package_dir / "Dockerfile"
    instructions = parse_dockerfile(dockerfile.read_text(errors="replace")) if dockerfile.is_file() else []
    variables = variables_in_force(instructions)
    context = BuildContext(package_dir)
    stages = [index for index, instruction in enumerate(instructions) if instruction.keyword == "FROM"]
    last = stages[-1] if stages else 0
    copies: list[CopiedPath] = []
    build_only: list[PurePosixPath] = []
    words: set[str] = set()
    workdir = "/"
    for index, instruction in enumerate(instructions):
        keyword = instruction.keyword
        if keyword == "FROM":
            workdir = "/"
        elif keyword == "WORKDIR":
            named = substitute(instruction.arguments.strip().strip("\"'"), variables[index])
            workdir = posixpath.normpath(posixpath.join(workdir, named))
        elif keyword == "RUN":
            words.update(_WORDS.findall(instruction.arguments))
        elif keyword in ("COPY", "ADD"):
            flags, written = _arguments(instruction)
            paths = [substitute(path, variables[index]) for path in written]
            if len(paths) < 2 or any(flag.startswith("--from") for flag in flags):
                continue
            *sources, dest = paths
            if "$" in dest:  # a variable the Dockerfile does not set (a build argument, the base's ENV)
                continue
            dest_path = posixpath.join(workdir, dest)
            into_folder = dest.endswith("/") or len(sources) > 1 or any(c in "".join(sources) for c in "*?[")
            for pattern in sources:
                if keyword == "ADD" and (re.match(r"^[a-z]+://", pattern) or _ARCHIVE.search(pattern)):
                    build_only.extend(_matches(package_dir, pattern, context))
                    continue
                for match in _matches(package_dir, pattern, context):
                    if index < last:
                        build_only.append(match)
                        continue
                    folder = (package_dir / match).is_dir()
                    target = posixpath.normpath(dest_path)
                    if not folder:
                        existing_folder = rootfs is not None and (rootfs / target.lstrip("/")).is_dir()
                        if into_folder or existing_folder:
                            target = posixpath.join(target, match.name)
                    copies.append(CopiedPath(match, target, folder, instruction.line))
    return ImageSources(tuple(copies), tuple(build_only), frozenset(words), context)
