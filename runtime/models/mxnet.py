"""MXNet models exported as ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``, run by mxnet if installed.

This is the format the Panorama samples shipped (GluonCV models exported with ``HybridBlock.export``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, find_files, register

__all__ = ["MxnetBackend"]

_SYMBOL = "-symbol.json"


@register
class MxnetBackend(Backend):
    """An exported MXNet symbol and its parameters, imported as a Gluon ``SymbolBlock`` on the CPU.

    The symbol's data inputs take the descriptor's input names, in declaration order.

    Args:
        spec: the model node; ``spec.path`` is the ``*-symbol.json`` file.

    Raises:
        ModelError: no parameters file sits beside the symbol, or mxnet cannot import the pair.
    """

    name = "mxnet"
    package = "mxnet"
    requirement = "mxnet"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        mxnet: Any = importlib.import_module("mxnet")

        params = _params_for(spec.path)
        if params is None:
            raise ModelError(
                f"no {spec.path.name.removesuffix(_SYMBOL)}-NNNN.params file beside {spec.path.name}"
            )
        try:
            self._block: Any = mxnet.gluon.nn.SymbolBlock.imports(
                str(spec.path), list(spec.input_names), str(params), ctx=mxnet.cpu()
            )
        except Exception as error:
            raise ModelError(
                f"{spec.path.name} is not a model mxnet can import: {one_line(error, named=True)}"
            ) from None
        if spec.fp16:
            self._block.cast("float16")

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*-symbol.json`` files.

        Args:
            model_path: a model directory or file.

        Returns:
            The symbol files found, sorted.
        """
        return find_files(model_path, (_SYMBOL,))

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the block once.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The block's outputs in order.
        """
        mxnet: Any = importlib.import_module("mxnet")

        dtype = "float16" if self.spec.fp16 else "float32"
        args = [mxnet.nd.array(inputs[name], dtype=dtype) for name in self.spec.input_names]
        result = self._block(*args)
        outputs = result if isinstance(result, (list, tuple)) else [result]
        return [output.asnumpy().astype(np.float32) for output in outputs]


def _params_for(symbol: Path) -> Path | None:
    prefix = symbol.name.removesuffix(_SYMBOL)
    candidates = sorted(symbol.parent.glob(f"{prefix}-*.params")) or sorted(symbol.parent.glob("*.params"))
    return candidates[-1] if candidates else None
