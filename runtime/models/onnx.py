"""ONNX models: onnxruntime when it is installed, else OpenCV DNN (always installed with the emulator)."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ModelError
from runtime.models.base import Backend, ModelSpec, find_files, map_input_names, register

__all__ = ["OnnxRuntimeBackend", "OpenCvOnnxBackend", "opencv_message"]

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}

_FP16_NOTE = (
    "precisionMode FP16 is not applied by {engine}; the model runs at the precision stored in the file"
)


@register
class OnnxRuntimeBackend(Backend):
    """An ONNX model run by onnxruntime on the CPU.

    Args:
        spec: the model node; ``spec.path`` is the ``.onnx`` file.

    Raises:
        ModelError: the file is not a valid ONNX model, or its inputs do not match the descriptor.
    """

    name = "onnxruntime"
    package = "onnxruntime"
    requirement = "'panorama-emulator[onnx]'"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(
                str(spec.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:
            raise ModelError(
                f"{spec.path.name} is not a model onnxruntime can load: {_ort_message(error)}"
            ) from None
        model_inputs = self._session.get_inputs()
        self._names = map_input_names(spec, [item.name for item in model_inputs])
        types = {item.name: item.type for item in model_inputs}
        self._dtypes = {
            declared: np.dtype(_ORT_TYPES.get(types[model_name], np.float32))
            for declared, model_name in self._names.items()
        }
        if spec.fp16:
            self.notes.append(_FP16_NOTE.format(engine="onnxruntime on the CPU"))

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*.onnx`` files.

        Args:
            model_path: a model directory or file.

        Returns:
            The ONNX files found, sorted.
        """
        return find_files(model_path, (".onnx",))

    @property
    def input_dtypes(self) -> dict[str, np.dtype[np.generic]]:
        """The element type of each input as the ONNX graph declares it."""
        return dict(self._dtypes)

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the session once.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The session's outputs in the graph's output order.

        Raises:
            ModelError: onnxruntime rejected the inputs or failed in an operator.
        """
        feed = {self._names[name]: array for name, array in inputs.items()}
        try:
            outputs: list[np.ndarray] = self._session.run(None, feed)
        except Exception as error:
            raise ModelError(f"onnxruntime: {_ort_message(error)}") from None
        return outputs


@register
class OpenCvOnnxBackend(Backend):
    """An ONNX model run by OpenCV DNN on the CPU.

    OpenCV needs the shapes of the graph's values; for a file that lacks them, the shapes are inferred with
    the ``onnx`` package when it is installed.

    Args:
        spec: the model node; ``spec.path`` is the ``.onnx`` file.

    Raises:
        ModelError: the file is not a model OpenCV DNN can load.
    """

    name = "opencv-onnx"
    package = "cv2"
    requirement = "opencv-python-headless"
    entry_points = ("cv2.dnn.readNetFromONNX",)
    thread_safe = False

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        self._lock = threading.Lock()
        self._net = _read_onnx(spec.path)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        if spec.fp16:
            self.notes.append(_FP16_NOTE.format(engine="OpenCV DNN on the CPU"))

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*.onnx`` files.

        Args:
            model_path: a model directory or file.

        Returns:
            The ONNX files found, sorted.
        """
        return find_files(model_path, (".onnx",))

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the network once.

        Args:
            inputs: one array per descriptor input name (a single input is fed whatever its name in the file).

        Returns:
            The network's outputs in the graph's output order.

        Raises:
            ModelError: OpenCV rejected the inputs or failed in a layer.
        """
        import cv2

        with self._lock:
            try:
                if len(inputs) == 1:
                    self._net.setInput(next(iter(inputs.values())))
                else:
                    for name, array in inputs.items():
                        self._net.setInput(array, name)
                return list(self._net.forward(self._outputs))
            except cv2.error as error:
                raise ModelError(opencv_message(error)) from None


def _read_onnx(path: Path) -> Any:
    import cv2

    try:
        return cv2.dnn.readNetFromONNX(str(path))
    except cv2.error as error:
        first = error
    if "has_shape" in str(first):
        try:
            import onnx
            import onnx.shape_inference
        except ImportError:
            raise ModelError(
                f"OpenCV DNN cannot load {path.name} because the graph does not declare its value shapes; "
                "install onnx (pip install onnx) to infer them, "
                "or onnxruntime: pip install 'panorama-emulator[onnx]'"
            ) from None
        try:
            model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
            return cv2.dnn.readNetFromONNX(np.frombuffer(model.SerializeToString(), dtype=np.uint8))
        except Exception as error:
            raise ModelError(
                f"{path.name} is not a model OpenCV DNN can load: {opencv_message(error)}"
            ) from None
    raise ModelError(f"{path.name} is not a model OpenCV DNN can load: {opencv_message(first)}")


_CV_ERROR = re.compile(r"error: \((-?\d+):([^)]*)\)\s*(.*?)(?: in function '([^']*)')?\s*$", re.S)


def opencv_message(error: BaseException) -> str:
    """Turn a ``cv2.error`` (which carries the C++ source path and a blank line) into one readable line.

    Args:
        error: the exception raised by OpenCV.

    Returns:
        e.g. ``OpenCV: Assertion failed: tensor.has_shape() (in parseValueInfo)``.
    """
    text = " ".join(str(error).split())
    match = _CV_ERROR.search(text)
    if not match:
        return f"{type(error).__name__}: {text}"
    _, kind, detail, function = match.groups()
    where = f" (in {function})" if function else ""
    return f"OpenCV {kind.strip()}: {detail.strip()}{where}"


def _ort_message(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # "[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Load model from x failed:Protobuf parsing failed."
    return re.sub(r"^\[ONNXRuntimeError\] : \d+ : ", "", text)
