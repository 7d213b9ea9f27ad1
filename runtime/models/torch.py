"""PyTorch models saved as TorchScript (``torch.jit.save`` of a traced or scripted module), run on the CPU."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, find_files, register

__all__ = ["TorchScriptBackend"]


@register
class TorchScriptBackend(Backend):
    """A TorchScript module. Inputs are passed positionally in the descriptor's order.

    ``precisionMode: FP16`` converts the module and its floating inputs to half precision. Many operators
    have no half-precision CPU kernel; when the warm-up run fails in half precision the module is reloaded in
    FP32 and a note says so.

    Args:
        spec: the model node; ``spec.path`` is the ``.pt`` / ``.pth`` file.

    Raises:
        ModelError: the file is not a TorchScript module.
    """

    name = "torchscript"
    package = "torch"
    requirement = "'panorama-emulator[torch]'"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._half = spec.fp16
        self._module = self._load()
        if self._half:
            self._module.half()

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*.pt``, ``*.pth`` and ``*.torchscript`` files.

        Args:
            model_path: a model directory or file.

        Returns:
            The files found, sorted.
        """
        return find_files(model_path, (".pt", ".pth", ".torchscript"))

    def _load(self) -> Any:
        import torch

        load: Any = torch.jit.load
        try:
            module = load(str(self.spec.path), map_location="cpu")
        except Exception as error:
            raise ModelError(
                f"{self.spec.path.name} is not a TorchScript model (save one with torch.jit.save of a traced "
                f"or scripted module): {one_line(error, named=True)}"
            ) from None
        return module.eval()

    def warm_up(self, inputs: Mapping[str, np.ndarray]) -> None:
        """Run twice on zeros (TorchScript optimises on its first runs); fall back to FP32 if FP16 fails.

        Args:
            inputs: zeros of the descriptor's shapes.
        """
        if self._half:
            try:
                super().warm_up(inputs)
                return
            except Exception as error:
                self._half = False
                self._module = self._load()
                self.notes.append(
                    "precisionMode FP16 is not supported by this model on the CPU "
                    f"({one_line(error, named=True)}); it runs in FP32"
                )
        super().warm_up(inputs)

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Call the module once.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The module's tensors, flattened from nested tuples, lists and dicts in order.
        """
        import torch

        args = [torch.from_numpy(inputs[name]) for name in self.spec.input_names]
        if self._half:
            args = [arg.half() if arg.is_floating_point() else arg for arg in args]
        with torch.inference_mode():
            result = self._module(*args)
        flat: list[np.ndarray] = []
        _flatten(result, flat)
        return flat


def _flatten(value: Any, into: list[np.ndarray]) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        tensor = value.detach()
        if tensor.dtype in (torch.float16, torch.bfloat16):
            tensor = tensor.float()
        into.append(tensor.numpy())
    elif isinstance(value, (tuple, list)):
        for item in value:
            _flatten(item, into)
    elif isinstance(value, dict):
        for item in value.values():
            _flatten(item, into)
    elif isinstance(value, (bool, int, float)):
        into.append(np.asarray(value, dtype=np.float32))
    else:
        raise ModelError(f"the model returned a {type(value).__name__}, which is not a tensor")
