"""The people-detector sample end to end: a code node calling a model node, in real sandboxes.

The model is made by the sample's ``model/make_model.py`` (ONNX and TorchScript tarballs) and added with
``add-raw-model``; the code asset is built once per session by the build stage (``people_detector_project``).

Detections are checked against make_model's numpy ``reference`` on the same frame: a frame of the synthetic
people scene, shown by a still camera so that every frame the app sees is that one. The frame is chosen so
that no heatmap cell is within 0.02 of the 0.5 threshold: numerical differences (FP16 in TorchScript, about
1e-3; OpenCV's resize in the base image against the host's) cannot change which cells count. The tolerance
is then: the same number of people, and each box edge within 1e-3 of the reference (boxes are cell edges,
multiples of 1/28; FP16 rounds them by at most 2.5e-4; the app logs them to 5 decimals).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import cv2
import numpy as np
import pytest
from _e2e_helpers import public_tmp_dir

from emulator import Appliance
from emulator.builder import add_raw_model
from emulator.errors import ProjectError
from emulator.project import Project
from runtime.media.synthetic import SyntheticSource, SyntheticSpec

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.docker,
    pytest.mark.slow,
    # TorchScript is what SageMaker Neo took for PyTorch; torch now marks it deprecated.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:torch"),
]

CLI = str(Path(sys.executable).parent / "panorama-emulator")
SAMPLE = Path(__file__).resolve().parents[2] / "sample-apps" / "people-detector"
MODEL_ASSET = "people_detector_model"
MODEL_PACKAGE = "123456789012-PEOPLE_DETECTOR_MODEL-1.0"
PEOPLE = "synthetic:1280x720@30?scene=people"
THRESHOLD = 0.5  # the graph's threshold_param
MARGIN = 0.02  # least distance of every heatmap cell from the threshold in the chosen frame
BOX_TOLERANCE = 1e-3
FRAMES = 31  # the app logs its detections on frame 0 and every 30 frames
_DETECTIONS = re.compile(r" detections (\{.*\})$", re.MULTILINE)

Box = tuple[float, float, float, float]


# --- the model, the frame and what the model should find in it ---------------------------------------------


@pytest.fixture(scope="module")
def make_model() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "people_detector_make_model", SAMPLE / "model" / "make_model.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def models_dir() -> Iterator[Path]:
    """Both model tarballs and descriptors, made by the sample's script."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    out = public_tmp_dir("pe-e2e-models-")
    made = subprocess.run(
        [sys.executable, str(SAMPLE / "model" / "make_model.py"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    yield out
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def state_dir() -> Iterator[Path]:
    path = public_tmp_dir("pe-e2e-models-state-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def preprocess(frame: np.ndarray) -> np.ndarray:
    """What the app sends the model (as in its src/app.py)."""
    resized = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[None], dtype=np.float32) / np.float32(255.0)


def detections(heatmap: np.ndarray, boxes: np.ndarray) -> list[Box]:
    """Connected groups of cells above the threshold, each boxed by the union of its cells' boxes."""
    count, labels = cv2.connectedComponents((heatmap[0, 0] > THRESHOLD).astype(np.uint8), connectivity=8)
    found = []
    for group in range(1, count):
        rows, cols = np.nonzero(labels == group)
        found.append(
            (
                float(boxes[0, 0, rows, cols].min()),
                float(boxes[0, 1, rows, cols].min()),
                float(boxes[0, 2, rows, cols].max()),
                float(boxes[0, 3, rows, cols].max()),
            )
        )
    return sorted(found)


def person_at(point: tuple[float, float], people: list[Box]) -> int:
    """The index of the first person whose box holds ``point``, or -1."""
    x, y = point
    return next((n for n, (left, top, right, bottom) in enumerate(people)
                 if left <= x <= right and top <= y <= bottom), -1)  # fmt: skip


class Scene:
    """One frame of the synthetic people scene, saved as a still camera, and the reference detections."""

    def __init__(self, image: Path, index: int, people: list[Box], expected: list[Box]) -> None:
        self.image = image
        self.index = index
        self.people = people
        self.expected = expected


@pytest.fixture(scope="module")
def scene(make_model: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> Scene:
    source = SyntheticSource(SyntheticSpec.parse(PEOPLE), name="camera_node")
    width, height = source.size
    for index in range(60):
        frame = source.render(index)
        heatmap, boxes = make_model.reference(preprocess(frame))
        found = detections(heatmap, boxes)
        people = [
            (left / width, top / height, right / width, bottom / height)
            for left, top, right, bottom in (item.box for item in source.objects(index))
        ]
        # Each detection's centre on a different person, every person found, no cell near the threshold.
        hits = {person_at(((b[0] + b[2]) / 2, (b[1] + b[3]) / 2), people) for b in found}
        if (
            len(people) >= 2
            and len(found) == len(people) == len(hits)
            and -1 not in hits
            and float(np.abs(heatmap - THRESHOLD).min()) >= MARGIN
        ):
            path = tmp_path_factory.mktemp("still") / f"people-{index}.png"
            assert cv2.imwrite(str(path), frame)
            return Scene(path, index, people, found)
    raise AssertionError("no frame of the people scene in which the reference finds every person clearly")


# --- helpers -----------------------------------------------------------------------------------------------


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of a built project, files hard-linked (manifests are rewritten atomically, not in place)."""

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, dest, copy_function=link_or_copy)
    return dest


def with_model(project: Path, models_dir: Path, name: str) -> Path:
    """Add ``people_detector_<name>.tar.gz`` as the model asset through the Python API."""
    add_raw_model(
        Project(project),
        MODEL_ASSET,
        models_dir / f"people_detector_{name}.tar.gz",
        models_dir / f"people_detector_{name}.json",
        [project / "packages" / MODEL_PACKAGE],
    )
    return project


def logged_detections(appliance: Appliance) -> list[dict[str, Any]]:
    text = (appliance.logs_path("code_node") / "app.log").read_text()
    return [json.loads(found) for found in _DETECTIONS.findall(text)]


def assert_same_boxes(got: list[list[float]], expected: list[Box]) -> None:
    assert len(got) == len(expected), (got, expected)
    for box, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(box, want, atol=BOX_TOLERANCE, rtol=0)


def run_on_still(
    project: Path, state_dir: Path, device: str, scene: Scene
) -> tuple[Appliance, dict[str, Any]]:
    """Boot the app on the still camera for FRAMES frames; the appliance (off) and its metrics."""
    appliance = Appliance(
        project, device=device, state_dir=state_dir, cameras={"camera_node": str(scene.image)}, quiet=True
    )
    with appliance:
        assert appliance.wait_for_frames(FRAMES, timeout=600)
        metrics = appliance.metrics()
    return appliance, metrics


# --- the tests ---------------------------------------------------------------------------------------------


def test_detector_finds_the_people_of_the_synthetic_scene(
    people_detector_project: Path, models_dir: Path, state_dir: Path, scene: Scene, tmp_path: Path
) -> None:
    project = with_model(
        copy_project(people_detector_project, tmp_path / "people-detector"), models_dir, "onnx"
    )
    appliance, metrics = run_on_still(project, state_dir, "detector-onnx", scene)
    (model,) = appliance.plan.models
    assert model.name == MODEL_ASSET and model.descriptor.framework == "ONNX"

    logged = logged_detections(appliance)
    assert [entry["frame"] for entry in logged][:2] == [0, 30], logged
    for entry in logged:
        assert entry["stream"] == "camera_node"
        assert_same_boxes(entry["people"], scene.expected)
    assert len(scene.expected) >= 2

    labels = appliance.hdmi.labels()
    assert "person" in labels and f"people: {len(scene.expected)}" in labels
    figures = metrics.models[MODEL_ASSET]
    assert figures.calls >= FRAMES and figures.errors == 0
    assert metrics.nodes["code_node"].model_calls >= FRAMES
    saved = json.loads((appliance.storage_path / "people_count.json").read_text())
    assert saved["frames"] >= 30 and saved["detections"] >= 30 * len(scene.expected)


def test_torchscript_model_gives_the_same_detections(
    people_detector_project: Path, models_dir: Path, state_dir: Path, scene: Scene, tmp_path: Path
) -> None:
    project = with_model(
        copy_project(people_detector_project, tmp_path / "people-detector"), models_dir, "pytorch"
    )
    appliance, metrics = run_on_still(project, state_dir, "detector-torch", scene)
    (model,) = appliance.plan.models
    assert model.descriptor.framework == "PYTORCH"
    logged = logged_detections(appliance)
    assert logged and logged[0]["frame"] == 0
    for entry in logged:
        assert_same_boxes(entry["people"], scene.expected)
    assert metrics.models[MODEL_ASSET].calls >= FRAMES
    assert metrics.models[MODEL_ASSET].errors == 0


def strip_model(project: Path) -> None:
    """Undo add-raw-model: the model package as create-package leaves it, the graph without the model node."""
    package_file = project / "packages" / MODEL_PACKAGE / "package.json"
    package = json.loads(package_file.read_text())
    package["nodePackage"]["assets"] = []
    package["nodePackage"]["interfaces"] = []
    package_file.unlink()  # it may be a hard link to the shared project's file
    package_file.write_text(json.dumps(package, indent=4))
    graph_file = project / "graphs" / "people-detector" / "graph.json"
    graph = json.loads(graph_file.read_text())
    graph["nodeGraph"]["nodes"] = [n for n in graph["nodeGraph"]["nodes"] if n["name"] != MODEL_ASSET]
    graph_file.unlink()
    graph_file.write_text(json.dumps(graph, indent=4))


def test_add_raw_model_through_the_cli_then_run(
    people_detector_project: Path, models_dir: Path, state_dir: Path, tmp_path: Path
) -> None:
    project = copy_project(people_detector_project, tmp_path / "people-detector")

    # The project as checked in names a model asset that is not there: run says how to add it.
    with pytest.raises(
        ProjectError, match="add-raw-model --model-asset-name people_detector_model"
    ) as caught:
        Appliance(project, state_dir=state_dir)
    assert caught.value.node == MODEL_ASSET
    run_args = ["run", "--frames", "20", "--state-dir", str(state_dir), "--device", "detector-cli",
                "--camera", f"camera_node={PEOPLE}"]  # fmt: skip
    missing = subprocess.run([CLI, *run_args], cwd=project, capture_output=True, text=True, timeout=600)
    assert missing.returncode != 0
    assert "the model asset people_detector_model is missing" in missing.stderr
    assert f"--packages-path packages/{MODEL_PACKAGE}" in missing.stderr

    # From a model package fresh from create-package, add-raw-model brings the asset, interface and node.
    strip_model(project)
    added = subprocess.run(
        [CLI, "add-raw-model", "--model-asset-name", MODEL_ASSET,
         "--model-local-path", str(models_dir / "people_detector_onnx.tar.gz"),
         "--descriptor-path", str(models_dir / "people_detector_onnx.json"),
         "--packages-path", f"packages/{MODEL_PACKAGE}"],
        cwd=project, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    archive = models_dir / "people_detector_onnx.tar.gz"
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    assert f"Successfully downloaded the model to {project / 'assets' / sha}.tar.gz" in added.stdout
    # What the sample checks in is exactly what add-raw-model writes (the tarball is reproducible).
    for manifest in (f"packages/{MODEL_PACKAGE}/package.json", "graphs/people-detector/graph.json"):
        assert (project / manifest).read_text() == (SAMPLE / manifest).read_text(), manifest

    summary_file = tmp_path / "summary.json"
    ran = subprocess.run(
        [CLI, *run_args, "--summary-json", str(summary_file)], cwd=project, capture_output=True, text=True,
        timeout=900, check=False,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(summary_file.read_text())
    assert summary["frames"] >= 20 and summary["restarts"] == 0
    figures = summary["models"][MODEL_ASSET]
    assert figures["calls"] >= 20 and figures["errors"] == 0
    assert isinstance(figures["p50_ms"], float) and isinstance(figures["p99_ms"], float)
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
    assert summary["nodes"]["code_node"]["model_calls"] >= 20
    image = cv2.imread(summary["paths"]["last_hdmi_frame"], cv2.IMREAD_COLOR)
    assert image is not None and int((image == (0, 255, 0)).all(axis=2).sum()) > 100  # the people's boxes


def test_a_model_asset_gone_before_the_first_boot_is_named_with_how_to_add_it(
    people_detector_project: Path, models_dir: Path, tmp_path: Path
) -> None:
    project = with_model(
        copy_project(people_detector_project, tmp_path / "people-detector"), models_dir, "onnx"
    )
    state = tmp_path / "state"
    appliance = Appliance(project, device="gone", state_dir=state, quiet=True)
    (model,) = appliance.plan.models
    (project / "assets" / model.asset_uri).unlink()
    with pytest.raises(ProjectError) as caught:
        appliance.boot()
    assert caught.value.node == MODEL_ASSET and caught.value.asset == model.asset_uri
    message = str(caught.value)
    assert f"the model asset {MODEL_ASSET} is missing: {model.asset_uri} is not in" in message
    assert f"add-raw-model --model-asset-name {MODEL_ASSET} " in message
    assert f"--packages-path packages/{MODEL_PACKAGE}" in message
    assert "\n" not in message
    assert not appliance.running
