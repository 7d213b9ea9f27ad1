"""TensorFlow models: frozen graphs (``*.pb``) through OpenCV DNN, SavedModels through tensorflow (optional).

TensorFlow lays images out NHWC; OpenCV DNN works NCHW. The frozen-graph backend transposes 4-D inputs from
NHWC to NCHW and 4-D outputs back, so the app sees the layout TensorFlow itself would give.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emulator.errors import ModelError, one_line
from runtime.models.base import Backend, ModelSpec, find_files, map_input_names, register
from runtime.models.onnx import opencv_message

__all__ = ["OpenCvTensorflowBackend", "SavedModelBackend"]

_SAVED_MODEL = "saved_model.pb"


@register
class OpenCvTensorflowBackend(Backend):
    """A frozen TensorFlow graph (GraphDef with constant weights) run by OpenCV DNN.

    Inputs are fed to the graph's placeholders by the descriptor's names when there are several.

    Args:
        spec: the model node; ``spec.path`` is the ``.pb`` file.

    Raises:
        ModelError: the file is not a frozen graph OpenCV DNN can load.
    """

    name = "opencv-tensorflow"
    package = "cv2"
    requirement = "opencv-python-headless"
    # OpenCV 5.1 removed the TensorFlow importer.
    entry_points = ("cv2.dnn.readNetFromTensorflow",)
    thread_safe = False

    @classmethod
    def install_hint(cls) -> str:
        """How to get an OpenCV that still reads frozen TensorFlow graphs.

        Returns:
            The ``pip install`` line, bounded below the release that removed the importer.
        """
        return "install an OpenCV that still has it: pip install 'opencv-python-headless<5.1'"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        import cv2

        self._lock = threading.Lock()
        try:
            # Checked by entry_points; absent from the stubs of OpenCV 5.1 and later.
            read = cv2.dnn.readNetFromTensorflow  # type: ignore[attr-defined,unused-ignore]
            self._net = read(str(spec.path))
        except cv2.error as error:
            raise ModelError(
                f"{spec.path.name} is not a frozen TensorFlow graph OpenCV DNN can load: "
                f"{opencv_message(error)}"
            ) from None
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        if spec.fp16:
            self.notes.append(
                "precisionMode FP16 is not applied by OpenCV DNN on the CPU; the model runs at the precision "
                "stored in the file"
            )

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*.pb`` files other than a SavedModel's ``saved_model.pb``.

        Args:
            model_path: a model directory or file.

        Returns:
            The frozen graphs found, sorted.
        """
        return find_files(model_path, (".pb",), exclude=(_SAVED_MODEL,))

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Run the graph once.

        Args:
            inputs: one array per descriptor input name (NHWC for images).

        Returns:
            The graph's outputs, 4-D ones in NHWC.

        Raises:
            ModelError: OpenCV rejected the inputs or failed in a layer.
        """
        import cv2

        with self._lock:
            try:
                for name, array in inputs.items():
                    blob = np.ascontiguousarray(array.transpose(0, 3, 1, 2)) if array.ndim == 4 else array
                    if len(inputs) == 1:
                        self._net.setInput(blob)
                    else:
                        self._net.setInput(blob, name)
                outputs = self._net.forward(self._outputs)
            except cv2.error as error:
                raise ModelError(opencv_message(error)) from None
        return [output.transpose(0, 2, 3, 1) if output.ndim == 4 else output for output in outputs]


@register
class SavedModelBackend(Backend):
    """A TensorFlow SavedModel directory, run through its ``serving_default`` signature by tensorflow.

    Outputs are returned in the order of the signature's output names, sorted.

    Args:
        spec: the model node; ``spec.path`` is the directory holding ``saved_model.pb``.

    Raises:
        ModelError: the directory is not a SavedModel with a ``serving_default`` signature.
    """

    name = "tensorflow-savedmodel"
    package = "tensorflow"
    requirement = "tensorflow"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__(spec)
        tf: Any = importlib.import_module("tensorflow")

        try:
            self._loaded = tf.saved_model.load(str(spec.path))
            self._function: Any = self._loaded.signatures["serving_default"]
        except Exception as error:
            raise ModelError(
                f"{spec.path} is not a SavedModel tensorflow can serve: {one_line(error, named=True)}"
            ) from None
        _, keywords = self._function.structured_input_signature
        self._names = map_input_names(spec, sorted(keywords))
        if spec.fp16:
            self.notes.append(
                "precisionMode FP16 is not applied by tensorflow on the CPU; the model runs in FP32"
            )

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List directories holding a ``saved_model.pb``.

        Args:
            model_path: a model directory.

        Returns:
            The SavedModel directories found, sorted.
        """
        return sorted(
            path.parent for path in find_files(model_path, (_SAVED_MODEL,)) if path.name == _SAVED_MODEL
        )

    def run(self, inputs: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        """Call the serving signature once.

        Args:
            inputs: one array per descriptor input name.

        Returns:
            The signature's outputs, by output name sorted.
        """
        tf: Any = importlib.import_module("tensorflow")

        result = self._function(**{self._names[name]: tf.constant(array) for name, array in inputs.items()})
        return [np.asarray(result[key]) for key in sorted(result)]
