"""Fixtures for the model tests: small real models (session-scoped) and a shared ONNX host."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from _model_factory import (
    IMAGE,
    PAIR,
    entry,
    make_onnx_conv,
    make_onnx_pair,
    make_tf_frozen,
    make_torch_conv,
    make_torch_float_only,
    make_torch_raiser,
    make_torch_spinner,
    model_folder,
)

from runtime.models import ModelHost

# --- fixtures -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory of model directories, one per model, each laid out like an unpacked model tarball."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def onnx_conv(model_dir: Path) -> Path:
    return make_onnx_conv(model_folder(model_dir, "onnx_conv") / "model.onnx").parent


@pytest.fixture(scope="session")
def onnx_pair(model_dir: Path) -> Path:
    return make_onnx_pair(model_folder(model_dir, "onnx_pair") / "model.onnx").parent


@pytest.fixture(scope="session")
def torch_conv(model_dir: Path) -> Path:
    return make_torch_conv(model_folder(model_dir, "torch_conv") / "model.pt").parent


@pytest.fixture(scope="session")
def torch_raiser(model_dir: Path) -> Path:
    return make_torch_raiser(model_folder(model_dir, "torch_raiser") / "model.pth").parent


@pytest.fixture(scope="session")
def torch_spinner(model_dir: Path) -> Path:
    return make_torch_spinner(model_folder(model_dir, "torch_spinner") / "model.pt").parent


@pytest.fixture(scope="session")
def torch_float_only(model_dir: Path) -> Path:
    return make_torch_float_only(model_folder(model_dir, "torch_float_only") / "model.pt").parent


@pytest.fixture(scope="session")
def tf_frozen(model_dir: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    path, weight, bias = make_tf_frozen(model_folder(model_dir, "tf_frozen") / "frozen_graph.pb")
    return path.parent, weight, bias


@pytest.fixture(scope="session")
def onnx_host(onnx_conv: Path, onnx_pair: Path) -> Iterator[ModelHost]:
    """A running host with the two ONNX models (onnxruntime), shared by tests that do not break it."""
    pytest.importorskip("onnxruntime")
    host = ModelHost(
        [
            entry("conv_node", onnx_conv, "ONNX", ("data", IMAGE)),
            entry("pair_node", onnx_pair, "ONNX", ("a", PAIR), ("b", PAIR)),
        ]
    )
    with host:
        yield host
