"""TensorFlow models: TF1 frozen graphs (``*.pb``) and SavedModels, run by tensorflow (CPU) in the
``tensorflow`` backend environment.

Inputs are fed in the dtype the model declares (a TF Object Detection API ``image_tensor`` stays uint8).
Outputs, in this order:

- a frozen graph with the TF Object Detection API's outputs: ``detection_boxes``, ``detection_scores``,
  ``detection_classes``, ``num_detections``; any other frozen graph: every op output that no other op
  consumes, in the graph's node order;
- a SavedModel (its ``serving_default`` signature): those four first, the ones it has, then its other outputs
  by name.
"""

from __future__ import annotations

from pathlib import Path

from runtime.models.base import find_files, register
from runtime.models.remote import EnvironmentBackend

__all__ = ["FrozenGraphBackend", "SavedModelBackend"]

_SAVED_MODEL = "saved_model.pb"


@register
class FrozenGraphBackend(EnvironmentBackend):
    """A frozen TensorFlow graph (GraphDef with constant weights) run in a ``tf.compat.v1.Session``.

    Args:
        spec: the model node; ``spec.path`` is the ``.pb`` file.

    Raises:
        ModelError: the environment is not ready, or the file is not a GraphDef tensorflow can import.
    """

    name = "tensorflow-graph"
    package = "tensorflow"
    requirement = "tensorflow-cpu"
    environment = "tensorflow"
    kind = "tensorflow-graph"

    @classmethod
    def find(cls, model_path: Path) -> list[Path]:
        """List ``*.pb`` files other than a SavedModel's ``saved_model.pb``.

        Args:
            model_path: a model directory or file.

        Returns:
            The frozen graphs found, sorted.
        """
        return find_files(model_path, (".pb",), exclude=(_SAVED_MODEL,))


@register
class SavedModelBackend(EnvironmentBackend):
    """A TensorFlow SavedModel directory, run through its ``serving_default`` signature.

    Args:
        spec: the model node; ``spec.path`` is the directory holding ``saved_model.pb``.

    Raises:
        ModelError: the environment is not ready, or the directory is not a SavedModel with a
            ``serving_default`` signature.
    """

    name = "tensorflow-savedmodel"
    package = "tensorflow"
    requirement = "tensorflow-cpu"
    environment = "tensorflow"
    kind = "tensorflow-savedmodel"

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
