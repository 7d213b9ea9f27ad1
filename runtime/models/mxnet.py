"""MXNet models exported as ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``, run by mxnet 1.9.1 in the
``mxnet`` backend environment (mxnet needs numpy < 2, so it cannot live in the emulator's own).

This is the format the Panorama samples shipped (GluonCV models exported with ``HybridBlock.export``). The
symbol's data inputs (its inputs that the params file does not hold) take the descriptor's inputs, by name
when they match, else in declaration order; the outputs come back in the symbol's output order.
"""

from __future__ import annotations

from pathlib import Path

from runtime.models.base import find_files, register
from runtime.models.remote import EnvironmentBackend

__all__ = ["MxnetBackend"]

_SYMBOL = "-symbol.json"


@register
class MxnetBackend(EnvironmentBackend):
    """An exported MXNet symbol and its parameters, imported as a Gluon ``SymbolBlock`` on the CPU, in FP16
    when the descriptor's ``precisionMode`` says so.

    Args:
        spec: the model node; ``spec.path`` is the ``*-symbol.json`` file.

    Raises:
        ModelError: the environment is not ready, no parameters file sits beside the symbol, or mxnet cannot
            import the pair.
    """

    name = "mxnet"
    package = "mxnet"
    requirement = "mxnet"
    environment = "mxnet"
    kind = "mxnet-symbol"

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*-symbol.json`` files.

        Args:
            model_path: a model directory or file.

        Returns:
            The symbol files found, sorted.
        """
        return find_files(model_path, (_SYMBOL,))
