"""Model nodes: inference backends chosen by descriptor framework and file type, served out of process.

:class:`ModelHost` is what the appliance uses, given one :class:`ModelEntry` per model node; :class:`Backend`
and :func:`select_backend` are the pluggable part (ONNX through onnxruntime or OpenCV DNN, TorchScript through
torch; TensorFlow frozen graphs and SavedModels, MXNet exports and SageMaker Neo artifacts through tensorflow,
mxnet and dlr, each in a backend environment of its own: see :mod:`runtime.models.environment`).
"""

from runtime.models.base import (
    FRAMEWORK_BACKENDS,
    Backend,
    ModelEntry,
    ModelSpec,
    backend_class,
    backends,
    select_backend,
)
from runtime.models.host import ModelHost, ModelLease

__all__ = [
    "FRAMEWORK_BACKENDS",
    "Backend",
    "ModelEntry",
    "ModelHost",
    "ModelLease",
    "ModelSpec",
    "backend_class",
    "backends",
    "select_backend",
]
