"""The inference backend interface and the registry that picks a backend for a model node.

A backend is chosen from the descriptor's ``framework`` and the files found in the unpacked model directory:
each framework lists the backends that may serve it, in order of preference, and the first backend that finds
a file it can load *and* whose runtime is installed wins. When files are found but no runtime for them is
installed, the error names the package to install (or the ``panorama-emulator backends install`` command that
makes the backend environment it runs in).

Backends are instantiated only inside the model server process (see :mod:`runtime.models.worker`); the
appliance's process only selects them, so a framework runtime is imported, and can crash, in the server alone.
"""

from __future__ import annotations

import importlib
import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import numpy as np

from emulator.errors import ModelError

__all__ = [
    "FRAMEWORK_BACKENDS",
    "Backend",
    "ModelEntry",
    "ModelSpec",
    "backend_class",
    "backends",
    "file_form",
    "find_files",
    "map_input_names",
    "register",
    "select_backend",
]

# Modules that define backends; imported lazily so that importing the package never imports a framework.
_BACKEND_MODULES = (
    "runtime.models.onnx",
    "runtime.models.torch",
    "runtime.models.tensorflow",
    "runtime.models.mxnet",
    "runtime.models.dlr",
)

#: Backends that may serve each descriptor framework, most preferred first. ONNX files are accepted for every
#: framework because converting a model to ONNX is the usual way to run it off the device.
FRAMEWORK_BACKENDS: Mapping[str, tuple[str, ...]] = {
    "ONNX": ("onnxruntime", "opencv-onnx", "dlr"),
    "PYTORCH": ("torchscript", "onnxruntime", "opencv-onnx", "dlr"),
    "TENSORFLOW": ("tensorflow-savedmodel", "tensorflow-graph", "onnxruntime", "opencv-onnx", "dlr"),
    "MXNET": ("mxnet", "onnxruntime", "opencv-onnx", "dlr"),
}

_REGISTRY: dict[str, type[Backend]] = {}


@dataclass(frozen=True)
class ModelEntry:
    """A model node as the appliance hands it to the model host: its files and what its descriptor declares.

    Args:
        node: the model node's name in the graph.
        path: the unpacked model directory, or the model file.
        framework: the descriptor's framework (any case).
        inputs: the descriptor's inputs as ``(name, shape)`` pairs, in declaration order.
        precision_mode: the descriptor's ``precisionMode`` (``FP16``, ``FP32``...), or None.
    """

    node: str
    path: Path
    framework: str
    inputs: tuple[tuple[str, tuple[int, ...]], ...]
    precision_mode: str | None = None


@dataclass(frozen=True)
class ModelSpec:
    """What the model server needs to load one model node (plain data, sent to the server process).

    Args:
        node: the model node's name in the graph.
        path: the file (or directory, for directory formats) the backend loads.
        backend: the registered backend name.
        framework: the descriptor's framework, upper case.
        precision_mode: the descriptor's ``precisionMode`` (``FP16``, ``FP32``...), or None.
        inputs: the descriptor's inputs as ``(name, shape)`` pairs, in declaration order.
    """

    node: str
    path: Path
    backend: str
    framework: str
    precision_mode: str | None
    inputs: tuple[tuple[str, tuple[int, ...]], ...]

    @property
    def input_names(self) -> tuple[str, ...]:
        """The descriptor's input names, in declaration order."""
        return tuple(name for name, _ in self.inputs)

    @property
    def fp16(self) -> bool:
        """True when the descriptor asks for half precision."""
        return (self.precision_mode or "").upper() == "FP16"


class Backend(ABC):
    """One loaded model in one framework runtime.

    Subclasses set the class attributes, implement :meth:`find` (which files they load) and :meth:`run`, and
    load the model in ``__init__``. ``notes`` collects one-line remarks (such as a precision mode that cannot
    be honoured) that the host logs once.

    Args:
        spec: the model node to load.

    Raises:
        ModelError: the file is not a model this backend can load.
    """

    #: registry name, e.g. ``"onnxruntime"``
    name: ClassVar[str]
    #: the importable module the backend needs, e.g. ``"torch"``
    package: ClassVar[str]
    #: what to ``pip install`` to get ``package``
    requirement: ClassVar[str]
    #: dotted names (``"cv2.dnn.readNetFromONNX"``) the backend calls that not every release of
    #: ``package`` has; when set, :meth:`available` imports ``package`` to look for them
    entry_points: ClassVar[tuple[str, ...]] = ()
    #: False when one loaded model must not run on two threads at once (the server then serialises calls)
    thread_safe: ClassVar[bool] = True

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.notes: list[str] = []

    @classmethod
    def available(cls) -> bool:
        """Whether the backend can run here: its package is installed and has every entry point it calls.

        Returns:
            True when :meth:`missing` finds nothing missing.
        """
        return cls.missing() is None

    @classmethod
    def missing(cls) -> str | None:
        """What keeps the backend from running here, as a phrase, or None when nothing does.

        Returns:
            ``"torch, which is not installed"`` or ``"cv2.dnn.readNetFromONNX, which
            opencv-python-headless 9.0.0 lacks"``; None when the backend is available.
        """
        try:
            if importlib.util.find_spec(cls.package) is None:
                return f"{cls.package}, which is not installed"
        except (ImportError, ValueError):
            return f"{cls.package}, which is not installed"
        for dotted in cls.entry_points:
            if not _has_entry_point(dotted):
                return f"{dotted}, which {cls.requirement} {_version(cls.package)} lacks"
        return None

    @classmethod
    def install_hint(cls) -> str:
        """The sentence that tells a person how to get the runtime.

        Returns:
            e.g. ``install torch: pip install 'panorama-emulator[torch]'``.
        """
        return f"install {cls.package}: pip install {cls.requirement}"

    @classmethod
    @abstractmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List what this backend could load under ``model_path``.

        Args:
            model_path: an unpacked model directory, or a single model file.

        Returns:
            The loadable files (or directories), sorted; empty when there is none.
        """

    @property
    def input_dtypes(self) -> dict[str, np.dtype[np.generic]]:
        """The dtype each descriptor input is converted to before a call (float32 unless the model says)."""
        return {name: np.dtype(np.float32) for name in self.spec.input_names}

    @abstractmethod
    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the model once.

        Args:
            inputs: one array per descriptor input name, already checked against the descriptor's shapes and
                converted to :attr:`input_dtypes`. The arrays may live in shared memory: do not keep them.

        Returns:
            The model's outputs in the framework's output order.
        """

    def warm_up(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Run the model on zeros of the declared shapes at load time, so that a model that cannot run on its
        declared inputs fails at boot and the first real call is not slower than the others.

        Args:
            inputs: zeros of the descriptor's shapes in :attr:`input_dtypes`.
        """
        for _ in range(2):
            self.run(inputs)


_B = TypeVar("_B", bound=type[Backend])


def _has_entry_point(dotted: str) -> bool:
    module, _, rest = dotted.partition(".")
    try:
        found: object = importlib.import_module(module)
    except ImportError:
        return False
    for part in rest.split(".") if rest else ():
        found = getattr(found, part, None)
        if found is None:
            return False
    return callable(found)


def _version(package: str) -> str:
    try:
        return str(getattr(importlib.import_module(package), "__version__", "")) or "(version unknown)"
    except ImportError:
        return "(not importable)"


def register(cls: _B) -> _B:
    """Class decorator adding a backend to the registry under its ``name``.

    Args:
        cls: the backend class.

    Returns:
        The class, unchanged.
    """
    _REGISTRY[cls.name] = cls
    return cls


def backends() -> dict[str, type[Backend]]:
    """All registered backends by name (importing the backend modules, not the frameworks).

    Returns:
        A new dict from backend name to class.
    """
    for module in _BACKEND_MODULES:
        importlib.import_module(module)
    return dict(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """Look a backend up by name.

    Args:
        name: a registered backend name.

    Returns:
        The backend class.

    Raises:
        ModelError: no backend has that name.
    """
    found = backends().get(name)
    if found is None:
        raise ModelError(f"unknown inference backend {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return found


def find_files(model_path: Path, suffixes: Iterable[str], exclude: Iterable[str] = ()) -> list[Path]:
    """List model files under a directory (or check one file) by suffix, skipping hidden files.

    Args:
        model_path: a directory, searched recursively, or a single file.
        suffixes: lower-case suffixes to accept, e.g. ``(".pt", ".pth")``.
        exclude: file names never to accept, e.g. ``("saved_model.pb",)``.

    Returns:
        Matching files, sorted.
    """
    wanted = tuple(suffixes)
    skipped = set(exclude)

    def accept(path: Path) -> bool:
        return (
            path.name.lower().endswith(wanted) and path.name not in skipped and not path.name.startswith(".")
        )

    if model_path.is_file():
        return [model_path] if accept(model_path) else []
    if not model_path.is_dir():
        return []
    found = []
    for path in sorted(model_path.rglob("*")):
        relative = path.relative_to(model_path).parts
        # macOS tar leaves ._* resource forks and __MACOSX folders next to the real files.
        if any(part.startswith(".") or part == "__MACOSX" for part in relative):
            continue
        if path.is_file() and accept(path):
            found.append(path)
    return found


def select_backend(
    node: str, model_path: Path, framework: str, prefer: Sequence[str] = ()
) -> tuple[type[Backend], Path]:
    """Choose the backend and the file for one model node.

    Args:
        node: the model node (for error messages).
        model_path: the unpacked model directory, or a model file.
        framework: the descriptor's framework (any case).
        prefer: backend names to try before the framework's usual order.

    Returns:
        The backend class and the file (or directory) it will load.

    Raises:
        ModelError: the framework is unknown, the directory holds no file a backend of that framework can
            load, holds several candidates for the chosen backend, or the runtime for what it holds is not
            installed.
    """
    key = framework.upper()
    order = FRAMEWORK_BACKENDS.get(key)
    if order is None:
        raise ModelError(
            f"framework {framework!r} is not supported; expected one of {', '.join(FRAMEWORK_BACKENDS)}",
            node=node,
        )
    if not model_path.exists():
        raise ModelError(f"model path {model_path} does not exist", node=node)
    if model_path.is_file() and model_path.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        raise ModelError(
            "this is a model archive; unpack it and pass the directory", node=node, file=str(model_path)
        )
    registry = backends()
    names = [name for name in prefer if name in order] + [name for name in order if name not in prefer]
    candidates = [(registry[name], registry[name].find(model_path)) for name in names]
    loadable = [(cls, files) for cls, files in candidates if files]
    if not loadable:
        patterns = ", ".join(_PATTERNS[name] for name in order)
        raise ModelError(
            f"no {key} model file in {model_path}: expected {patterns}", node=node, file=str(model_path)
        )
    for cls, files in loadable:
        if cls.available():
            if len(files) > 1:
                listed = ", ".join(str(path.relative_to(model_path)) for path in files)
                raise ModelError(
                    f"several {cls.name} model files in {model_path} ({listed}); keep exactly one",
                    node=node,
                    file=str(model_path),
                )
            return cls, files[0]
    cls, files = loadable[0]
    raise ModelError(
        f"{key} model needs {cls.missing()}; {cls.install_hint()}",
        node=node,
        file=str(files[0]),
    )


# What each backend looks for, for the "no model file" message.
_PATTERNS = {
    "onnxruntime": "*.onnx",
    "opencv-onnx": "*.onnx",
    "torchscript": "*.pt / *.pth (TorchScript)",
    "tensorflow-graph": "*.pb (frozen graph)",
    "tensorflow-savedmodel": "saved_model.pb (SavedModel)",
    "mxnet": "*-symbol.json with *.params",
    "dlr": "compiled_model.json / *.so (SageMaker Neo)",
}


def file_form(backend: str) -> str:
    """What a backend looks for in a model directory, as a person reads it.

    Args:
        backend: a registered backend name.

    Returns:
        e.g. ``*-symbol.json with *.params``; empty for a backend this module does not describe.
    """
    return _PATTERNS.get(backend, "")


def map_input_names(spec: ModelSpec, model_names: Sequence[str]) -> dict[str, str]:
    """Match the descriptor's input names to the model's own input names.

    By name when every descriptor name is a model input, else by position (the device feeds a Neo-compiled
    model's inputs in declaration order).

    Args:
        spec: the model node.
        model_names: the model file's input names, in order.

    Returns:
        Descriptor input name -> model input name.

    Raises:
        ModelError: the model takes a different number of inputs than the descriptor declares.
    """
    declared = spec.input_names
    if set(declared) <= set(model_names) and len(declared) == len(model_names):
        return {name: name for name in declared}
    if len(declared) != len(model_names):
        raise ModelError(
            f"the model takes inputs {list(model_names)} but the descriptor declares {list(declared)}",
            node=spec.node,
            file=str(spec.path),
        )
    return dict(zip(declared, model_names, strict=True))
