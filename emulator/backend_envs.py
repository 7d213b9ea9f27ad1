"""The inference backends a model node can run on, and the backend environments some of them run in.

:func:`backend_rows` is what ``panorama-emulator backends`` lists: per backend, the frameworks it serves,
whether it runs in the model server (the emulator's venv) or in a backend environment, and its versions.
:func:`install_environment` makes a backend environment (``backends install NAME``): a venv from the pinned,
hash-checked requirements in ``runtime/models/envs/NAME.txt``, with uv when it is at hand, else with pip.
A ready environment is checked (its pinned packages are installed at their versions) and left alone; a
broken one is reported and made again. uv hard-links files from its cache: nothing may write into an
environment's files in place.
See :mod:`runtime.models.environment` for where environments live and how they are keyed.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from emulator.errors import ModelError
from runtime.models.base import FRAMEWORK_BACKENDS, backends, file_form
from runtime.models.environment import Environment, cache_dir, environment
from runtime.models.remote import EnvironmentBackend

__all__ = ["BackendRow", "backend_rows", "install_environment"]

_ORDER = (
    "mxnet",
    "tensorflow-savedmodel",
    "tensorflow-graph",
    "torchscript",
    "onnxruntime",
    "opencv-onnx",
    "dlr",
)
# The PyPI project that provides each in-process backend's package, for its version.
_DISTRIBUTIONS = {"onnxruntime": "onnxruntime", "cv2": "opencv-python-headless", "torch": "torch"}


@dataclass(frozen=True)
class BackendRow:
    """One inference backend, as ``backends`` lists it.

    Args:
        backend: the backend's name (``mxnet``).
        frameworks: the descriptor frameworks it serves.
        files: the model files it loads (``*-symbol.json with *.params``).
        where: ``model server`` (in the emulator's venv) or ``environment NAME``.
        version: the framework's version (pinned, for an environment).
        state: ``ready``, or what is missing and how to get it.
    """

    backend: str
    frameworks: tuple[str, ...]
    files: str
    where: str
    version: str
    state: str


def backend_rows() -> list[BackendRow]:
    """Every registered backend with where it runs, its version and whether it can run here.

    Returns:
        One row per backend: the frameworks' own first (MXNet, TensorFlow, PyTorch), then ONNX and DLR.
    """
    registry = backends()
    names = list(dict.fromkeys([*_ORDER, *(name for order in FRAMEWORK_BACKENDS.values() for name in order)]))
    rows = []
    for name in names:
        cls = registry[name]
        frameworks = tuple(key for key, order in FRAMEWORK_BACKENDS.items() if name in order)
        missing = cls.missing()
        if issubclass(cls, EnvironmentBackend):
            env = cls.environment_of()
            where, version = f"environment {env.name}", f"{env.distribution} {env.version}"
            state = "ready" if missing is None else f"{env.state()}: {env.install_command}"
        else:
            distribution = _DISTRIBUTIONS.get(cls.package, cls.package)
            where = "model server"
            try:
                version = f"{distribution} {importlib.metadata.version(distribution)}"
            except importlib.metadata.PackageNotFoundError:
                version = f"{distribution} (not installed)"
            state = "ready" if missing is None else f"needs {missing}; {cls.install_hint()}"
        rows.append(BackendRow(name, frameworks, file_form(name), where, version, state))
    return rows


def install_environment(name: str | Environment, progress: Callable[[str], None] = lambda line: None) -> str:
    """Make a backend environment, unless it is there and works.

    Args:
        name: ``mxnet``, ``tensorflow`` or ``dlr`` (or an environment of one's own).
        progress: called with each line worth showing (the installer's output among them).

    Returns:
        What was done: ``ready`` (nothing to do), ``made`` or ``rebuilt``.

    Raises:
        ModelError: the name is unknown, or the environment cannot be made (the installer's last line).
    """
    env = environment(name) if isinstance(name, str) else name
    env.path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(env.path.parent / f"{env.name}.lock"):
        state = env.state()
        if state == "ready":
            problem = _import_problem(env)
            if problem is None:
                progress(f"{env.name}: ready at {env.path} ({env.distribution} {env.version})")
                return "ready"
            state = f"broken ({problem})"
        rebuilt = state != "not installed"
        if rebuilt:
            progress(f"{env.name}: the environment at {env.path} is {state}; making it again")
            shutil.rmtree(env.path)
        try:
            _make(env, progress)
        except BaseException:
            shutil.rmtree(env.path.with_name(env.path.name + ".partial"), ignore_errors=True)
            raise
        return "rebuilt" if rebuilt else "made"


def _make(env: Environment, progress: Callable[[str], None]) -> None:
    partial = env.path.with_name(env.path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    base = getattr(sys, "_base_executable", sys.executable)
    uv = _uv()
    progress(
        f"{env.name}: making {env.path} from {env.requirements.name} ({env.distribution} {env.version}) "
        f"with {'uv' if uv else 'pip'}"
    )
    python = partial / "bin" / "python"
    if uv is not None:
        variables = {"UV_CACHE_DIR": str(cache_dir() / "uv-cache"), **os.environ}
        variables["UV_PYTHON_DOWNLOADS"] = "never"
        _run([uv, "venv", "--quiet", "--python", base, str(partial)], progress, variables)
        install = [
            uv,
            "pip",
            "install",
            "--python",
            str(python),
            "--require-hashes",
            "-r",
            str(env.requirements),
        ]
        _run(install, progress, variables)
    else:
        _run([base, "-m", "venv", str(partial)], progress, dict(os.environ))
        install = [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
        ]
        _run([*install, "--require-hashes", "-r", str(env.requirements)], progress, dict(os.environ))
    partial.rename(env.path)
    problem = _import_problem(env, full=True)
    if problem is not None:
        raise ModelError(f"the {env.name} environment at {env.path} was made, but {problem}")
    env.marker.write_text(env.key + "\n")
    progress(f"{env.name}: ready at {env.path}")


def _run(command: list[str], progress: Callable[[str], None], variables: dict[str, str]) -> None:
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=variables, bufsize=1
    )
    assert process.stdout is not None
    last = ""
    for line in process.stdout:
        if line.strip():
            last = line.strip()
            progress(f"  {last}")
    if process.wait() != 0:
        raise ModelError(f"{Path(command[0]).name} failed (status {process.returncode}): {last}")


# Run in the environment: each pinned distribution at its pinned version, the framework's module found.
_CHECK = """
import importlib.metadata, importlib.util, json, os, sys
pins, module = json.loads(sys.argv[1]), sys.argv[2]
for name, version in sorted(pins.items()):
    try:
        found = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        sys.exit(name + " is not installed")
    if found != version:
        sys.exit(name + " is " + found + ", not " + version)
spec = importlib.util.find_spec(module)
if spec is None or not spec.origin or not os.path.exists(spec.origin):
    sys.exit(module + " is not found")
"""


def _import_problem(env: Environment, *, full: bool = False) -> str | None:
    """What is wrong with the environment's packages, or None.

    Args:
        env: the environment.
        full: import the framework (seconds, for tensorflow) rather than check what is installed.
    """
    if full:
        command = [str(env.python), "-I", "-c", f"import {env.module}"]
    else:
        command = [str(env.python), "-I", "-c", _CHECK, json.dumps(env.pins()), env.module]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        )
    except OSError as error:
        return f"its python does not start: {error.strerror}"
    if done.returncode == 0:
        return None
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else f"status {done.returncode}"
    return f"{env.module} does not import: {last}" if full else last


def _uv() -> str | None:
    for candidate in (
        os.environ.get("PE_UV"),
        shutil.which("uv"),
        str(cache_dir() / "uv-tool" / "bin" / "uv"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
