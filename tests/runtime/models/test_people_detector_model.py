"""The people detector's model generator: reproducible tarballs that load in ModelHost and find people."""

from __future__ import annotations

import hashlib
import importlib.util
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

import cv2
import numpy as np
import pytest

from emulator.device.runtime_link import model_entry
from emulator.manifests import ModelDescriptor, load_descriptor
from runtime.models import ModelHost

# TorchScript is what SageMaker Neo took for PyTorch; torch now marks it deprecated.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch")

SCRIPT = Path(__file__).resolve().parents[3] / "sample-apps" / "people-detector" / "model" / "make_model.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("people_detector_make_model", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("people_detector")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, check=False, timeout=600
    )
    assert result.returncode == 0, result.stderr
    return out


def unpack(archive: Path, dest: Path) -> Path:
    with tarfile.open(archive) as tar:
        assert tar.getnames() in (["model.pt"], ["model.onnx"])
        tar.extractall(dest, filter="data")
    return dest


def scene() -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """A dark 1280x720 BGR frame with two bright upright people, and their boxes (l, t, r, b) in pixels."""
    frame = np.full((720, 1280, 3), 35, dtype=np.uint8)
    people = [(200, 150, 290, 420), (900, 300, 990, 600)]
    for left, top, right, bottom in people:
        frame[top:bottom, left:right] = 245
    return frame, people


def preprocess(frame: np.ndarray) -> np.ndarray:
    resized = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0


def test_tarballs_are_reproducible(made: Path, tmp_path: Path) -> None:
    again = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path), "--format", "onnx", "--format", "pytorch"],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr
    names = sorted(path.name for path in made.iterdir())
    assert names == [
        "people_detector_onnx.json",
        "people_detector_onnx.tar.gz",
        "people_detector_pytorch.json",
        "people_detector_pytorch.tar.gz",
    ]
    for name in names:
        assert (
            hashlib.sha256((made / name).read_bytes()).digest()
            == hashlib.sha256((tmp_path / name).read_bytes()).digest()
        ), name


@pytest.mark.parametrize("onnx_backend", ["onnxruntime", "opencv-onnx"])
def test_both_formats_load_and_find_the_people(
    made: Path, tmp_path: Path, generator: ModuleType, onnx_backend: str
) -> None:
    models = []
    for name in ("pytorch", "onnx"):
        described = load_descriptor(made / f"people_detector_{name}.json")
        assert isinstance(described, ModelDescriptor)
        folder = unpack(made / f"people_detector_{name}.tar.gz", tmp_path / name)
        models.append(model_entry(f"{name}_node", folder, described))
    frame, people = scene()
    x = preprocess(frame)
    heatmap_ref, boxes_ref = generator.reference(x)
    with ModelHost(models, prefer=[onnx_backend]) as host:
        assert host.backends == {"pytorch_node": "torchscript", "onnx_node": onnx_backend}
        results = {node: host.call(node, x) for node in host.names}
    for node, (heatmap, boxes) in results.items():
        assert heatmap.shape == (1, 1, 28, 28) and boxes.shape == (1, 4, 28, 28)
        # The descriptor asks for FP16, which torch honours: half precision is good to about 1e-3 here.
        atol = 5e-3 if node == "pytorch_node" else 1e-5
        np.testing.assert_allclose(heatmap, heatmap_ref, atol=atol, rtol=0)
        np.testing.assert_allclose(boxes, boxes_ref, atol=atol, rtol=0)
        hot = heatmap[0, 0] > 0.5
        count, labels = cv2.connectedComponents(hot.astype(np.uint8))
        assert count - 1 == len(people), node
        found = []
        for label in range(1, count):
            rows, cols = np.nonzero(labels == label)
            found.append(
                (
                    boxes[0, 0, rows, cols].min() * 1280,
                    boxes[0, 1, rows, cols].min() * 720,
                    boxes[0, 2, rows, cols].max() * 1280,
                    boxes[0, 3, rows, cols].max() * 720,
                )
            )
        for person in people:
            # Every person lies within one detection no more than two cells (8 px at 224) larger per side.
            scales = (1280 / 224, 720 / 224) * 2
            assert any(
                all(
                    abs(got - want) <= 2 * 8 * scale
                    for got, want, scale in zip(box, person, scales, strict=True)
                )
                for box in found
            ), (node, person, found)
