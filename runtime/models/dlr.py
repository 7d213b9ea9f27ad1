"""Models compiled by SageMaker Neo (``compiled_model.json``, ``compiled.so``...), run by DLR when installed.

Neo compiles for one target; an artifact compiled for the appliance (arm64, TensorRT) does not load on another
machine, so tarballs holding the framework's own model file are preferred when both are present.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, find_files, map_input_names, register

__all__ = ["DlrBackend"]


@register
class DlrBackend(Backend):
    """A Neo-compiled model directory loaded with ``dlr.DLRModel`` on the CPU.

    Args:
        spec: the model node; ``spec.path`` is the directory holding the compiled artifacts.

    Raises:
        ModelError: DLR cannot load the directory (for example, compiled for another platform).
    """

    name = "dlr"
    package = "dlr"
    requirement = "dlr"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        dlr: Any = importlib.import_module("dlr")

        try:
            self._model: Any = dlr.DLRModel(str(spec.path), "cpu", 0)
        except Exception as error:
            raise ModelError(
                f"{spec.path} is not a Neo-compiled model DLR can load here: {one_line(error, named=True)}"
            ) from None
        self._names = map_input_names(spec, list(self._model.get_input_names()))

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List directories holding Neo artifacts (``compiled_model.json`` or a shared library).

        Args:
            model_path: a model directory.

        Returns:
            The artifact directories found, sorted.
        """
        files = find_files(model_path, ("compiled_model.json", ".so"))
        return sorted({path.parent for path in files})

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the compiled model once.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The model's outputs in order.
        """
        outputs = self._model.run({self._names[name]: array for name, array in inputs.items()})
        return [np.asarray(output) for output in outputs]
