"""Models compiled by SageMaker Neo (``compiled_model.json``, ``compiled.so``...), run by DLR in the ``dlr``
backend environment.

Neo compiles for one target; an artifact compiled for the appliance (arm64, TensorRT) does not load on another
machine, so tarballs holding the framework's own model file are preferred when both are present.
"""

from __future__ import annotations

from pathlib import Path

from runtime.models.base import find_files, register
from runtime.models.remote import EnvironmentBackend

__all__ = ["DlrBackend"]


@register
class DlrBackend(EnvironmentBackend):
    """A Neo-compiled model directory loaded with ``dlr.DLRModel`` on the CPU.

    Args:
        spec: the model node; ``spec.path`` is the directory holding the compiled artifacts.

    Raises:
        ModelError: the environment is not ready, or DLR cannot load the directory (for example, compiled
            for another platform).
    """

    name = "dlr"
    package = "dlr"
    requirement = "dlr"
    environment = "dlr"
    kind = "dlr"

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
