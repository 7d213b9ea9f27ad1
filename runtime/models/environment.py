"""Backend environments: a venv of its own, made from pinned PyPI requirements, for a framework whose library
cannot live in the emulator's environment (mxnet 1.9.1 needs numpy < 2, the emulator's OpenCV numpy >= 2).

Each environment's requirements are a hash-checked file committed beside this module
(``runtime/models/envs/NAME.txt``, pinned from ``NAME.in`` by ``scripts/lock-backends``). The venv lives in
the cache directory under ``backends/NAME-KEY``, where KEY is a digest of that file and of the Python version:
new pins make a new environment, and an environment is never changed in place. A venv that is complete holds
the marker file ``.pe-ready`` (written last, after its framework imported); any other state is "broken".

This module only finds environments and says what state they are in; :mod:`emulator.backend_envs` makes them.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import ModelError

__all__ = ["ENVIRONMENTS", "Environment", "cache_dir", "environment"]

_ENVS = Path(__file__).resolve().parent / "envs"
_READY = ".pe-ready"


def cache_dir() -> Path:
    """The cache directory: ``$PANORAMA_EMULATOR_CACHE``, else ``$XDG_CACHE_HOME/panorama-emulator``, else
    ``~/.cache/panorama-emulator`` (as ``scripts/setup`` finds it).

    Returns:
        The directory (not created here).
    """
    env = os.environ.get("PANORAMA_EMULATOR_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "panorama-emulator"


@dataclass(frozen=True)
class Environment:
    """One backend environment.

    Args:
        name: the name ``backends install`` takes (``mxnet``).
        module: the framework module that must import in it (``mxnet``).
        distribution: the PyPI project whose pinned version is the framework's (``mxnet``).
        frameworks: the descriptor frameworks whose models it runs.
        requirements: the pinned, hash-checked requirements file.
        root: the cache directory (default: :func:`cache_dir` when asked).
    """

    name: str
    module: str
    distribution: str
    frameworks: tuple[str, ...]
    requirements: Path
    root: Path | None = None

    @property
    def key(self) -> str:
        """A digest of the pins and of the Python version the environment is made with."""
        digest = hashlib.sha256(self.requirements.read_bytes())
        digest.update(f"{sys.version_info.major}.{sys.version_info.minor}".encode())
        return digest.hexdigest()[:12]

    @property
    def path(self) -> Path:
        """Where the venv is (or will be)."""
        return (self.root or cache_dir()) / "backends" / f"{self.name}-{self.key}"

    @property
    def python(self) -> Path:
        """The venv's interpreter."""
        return self.path / "bin" / "python"

    @property
    def marker(self) -> Path:
        """The file that says the venv is complete."""
        return self.path / _READY

    def pins(self) -> dict[str, str]:
        """The pinned versions, by lower-case project name.

        Returns:
            ``{"mxnet": "1.9.1", "numpy": "1.23.5", ...}``.
        """
        found = {}
        for line in self.requirements.read_text().splitlines():
            text = line.split("#", 1)[0].strip().rstrip("\\").strip()
            if "==" in text and not text.startswith("-"):
                name, _, version = text.partition("==")
                found[name.strip().lower()] = version.split(";")[0].strip()
        return found

    @property
    def version(self) -> str:
        """The framework's pinned version."""
        return self.pins().get(self.distribution, "?")

    def state(self) -> str:
        """``ready``, ``not installed`` or ``broken (why)``, from the files alone (nothing is run).

        Returns:
            The state, as a phrase.
        """
        if not self.path.exists():
            return "not installed"
        if not self.marker.is_file() or self.marker.read_text().strip() != self.key:
            return "broken (it was not finished)"
        if not os.access(self.python, os.X_OK):
            return f"broken ({self.python} is missing)"
        return "ready"

    @property
    def ready(self) -> bool:
        """True when :meth:`state` is ``ready``."""
        return self.state() == "ready"

    @property
    def install_command(self) -> str:
        """The command that makes the environment."""
        return f"panorama-emulator backends install {self.name}"


def _environment(name: str, module: str, distribution: str, *frameworks: str) -> Environment:
    return Environment(name, module, distribution, frameworks, _ENVS / f"{name}.txt")


#: Every backend environment by name.
ENVIRONMENTS: Mapping[str, Environment] = {
    env.name: env
    for env in (
        _environment("mxnet", "mxnet", "mxnet", "MXNET"),
        _environment("tensorflow", "tensorflow", "tensorflow-cpu", "TENSORFLOW"),
        _environment("dlr", "dlr", "dlr", "ONNX", "PYTORCH", "TENSORFLOW", "MXNET"),
    )
}


def environment(name: str) -> Environment:
    """Look an environment up by name.

    Args:
        name: ``mxnet``, ``tensorflow`` or ``dlr``.

    Returns:
        The environment.

    Raises:
        ModelError: no environment has that name.
    """
    found = ENVIRONMENTS.get(name)
    if found is None:
        raise ModelError(f"no backend environment {name!r}; known: {', '.join(ENVIRONMENTS)}")
    return found
