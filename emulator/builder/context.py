"""The build context the engine receives: a package folder less what its ``.dockerignore`` leaves out.

The build hands the package folder to docker-py (``APIClient.build(path=...)``), which reads
``.dockerignore`` (one pattern a line, blank lines and ``#`` comments skipped), always keeps the Dockerfile
and ``.dockerignore`` itself, and sends the engine only the rest. :class:`BuildContext` reads the file the
same way and asks docker-py's own matcher, so that what ``dev`` lays over an image and what a build copies
into it are the same files.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

__all__ = ["DOCKERIGNORE", "BuildContext", "dockerignore_patterns"]

DOCKERIGNORE = ".dockerignore"
"""The file of a package folder that leaves paths out of its build context."""


def dockerignore_patterns(package_dir: Path) -> list[str]:
    """The patterns of a package's ``.dockerignore``, as docker-py reads them for a build.

    Args:
        package_dir: the package folder (the build context).

    Returns:
        The patterns in order (none without the file).
    """
    try:
        text = (package_dir / DOCKERIGNORE).read_text(errors="replace")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class BuildContext:
    """Which paths of a package folder a build sends to the engine.

    Args:
        package_dir: the package folder.
    """

    def __init__(self, package_dir: Path) -> None:
        from docker.utils.build import PatternMatcher

        self.package_dir = package_dir
        self.patterns = tuple(dockerignore_patterns(package_dir))
        # As docker-py's exclude_paths: the Dockerfile is always sent.
        self._matcher: Any = PatternMatcher([*self.patterns, "!Dockerfile"]) if self.patterns else None

    def holds(self, path: PurePosixPath) -> bool:
        """True when the build context holds the file or folder (relative to the package folder)."""
        if self._matcher is None or str(path) in ("", "."):
            return True
        return not self._matcher.matches(str(path))
