"""Published-style apps with their model nodes, unmodified, on the CPU: the acceptance of the model frameworks
and of published apps.

Three packages of ``apps/published-models``, each written in the shape of a published sample (not copied):

- a people counter FROM the SDK 1 base image with entry ``python3.8``, an MXNet SSD model node (gluoncv
  ``ssd_512_mobilenet1.0_voc``, built with ``pretrained=False`` and a fixed seed in the mxnet backend
  environment) added with ``add_raw_model``; it preprocesses frames (resize, normalise, NCHW), reads (class
  ids, scores, boxes), draws, counts and keeps the count in its storage;
- a car tracker with a TF Object Detection API shaped frozen graph (uint8 ``image_tensor`` [1,300,300,3], its
  four named outputs), called with uint8 frames, drawing boxes whose coordinates leave [0, 1];
- a pose estimator with entry ``python3.7`` and two MXNet model nodes: a yolo3 detector, then a simple_pose
  network on a batch of four person crops (descriptor shape ``[4, 3, 256, 192]``).

Each image and model is built once for the module; each app runs a few frames in lockstep.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from _e2e_helpers import APPS_DIR, FAST, public_tmp_dir, wait_for
from rich.console import Console

from emulator import Appliance
from emulator.device.figures import BootFigures
from runtime.models.environment import environment

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

MAKER = Path(__file__).resolve().parent.parent / "runtime" / "models" / "_env_models.py"
ACCOUNT = "123456789012"
FRAMES = 4
CODE = "code_node"
MODEL = "model_node"
# (code package, its container asset, its model packages and their assets)
APPS = (
    ("PEOPLE_COUNTER_CODE", "pe_e2e_people_counter", (("SSD_MODEL", "ssd_model"),)),
    ("CAR_TRACKER_CODE", "pe_e2e_car_tracker", (("OD_MODEL", "od_model"),)),
    (
        "POSE_ESTIMATION_CODE",
        "pe_e2e_pose_estimation",
        (("YOLO_MODEL", "yolo_model"), ("POSE_MODEL", "pose_model")),
    ),
)


def make_model(folder: Path, env: str, *args: str) -> Path:
    found = environment(env)
    assert found.ready, f"run {found.install_command}"
    folder.mkdir(parents=True)
    subprocess.run([str(found.python), "-I", str(MAKER), args[0], str(folder), *args[1:]], check=True)
    return folder


def tarball(folder: Path, names: list[str], out: Path) -> Path:
    import tarfile

    with tarfile.open(out, mode="w:gz") as archive:
        for name in names:
            archive.add(folder / name, arcname=name)
    return out


@pytest.fixture(scope="module")
def project() -> Iterator[Path]:
    """``apps/published-models`` copied, both containers built, both models made and added."""
    from emulator.builder import add_raw_model, build_container, ensure_base_image
    from emulator.project import Project

    quiet = Console(file=io.StringIO())
    ensure_base_image(console=quiet)
    base = public_tmp_dir("pe-e2e-published-models-")
    root = base / "published-models"
    shutil.copytree(APPS_DIR / "published-models", root, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "assets").mkdir()
    ssd = make_model(base / "ssd", "mxnet", "gluoncv", "ssd_512_mobilenet1.0_voc", "1,3,512,512")
    yolo = make_model(base / "yolo", "mxnet", "gluoncv", "yolo3_mobilenet1.0_voc", "1,3,480,600")
    pose = make_model(base / "pose", "mxnet", "gluoncv", "simple_pose_resnet18_v1b", "4,3,256,192")
    od = make_model(base / "od", "tensorflow", "tf-od-graph", "300")
    mxnet_files = ["model-symbol.json", "model-0000.params"]
    archives = {
        "ssd_model": tarball(ssd, mxnet_files, base / "ssd.tar.gz"),
        "yolo_model": tarball(yolo, mxnet_files, base / "yolo.tar.gz"),
        "pose_model": tarball(pose, mxnet_files, base / "pose.tar.gz"),
        "od_model": tarball(od, ["frozen_inference_graph.pb"], base / "od.tar.gz"),
    }
    try:
        for code, asset, models in APPS:
            code_package = root / "packages" / f"{ACCOUNT}-{code}-1.0"
            build_container(Project(root), asset, code_package, console=quiet)
            for model, model_asset in models:
                model_package = root / "packages" / f"{ACCOUNT}-{model}-1.0"
                add_raw_model(
                    Project(root), model_asset, archives[model_asset], model_package / "descriptor.json",
                    [model_package],
                )  # fmt: skip
        yield root
    finally:
        import docker
        import docker.errors

        client = docker.from_env()
        for _, asset, _ in APPS:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(f"{asset}:latest", force=True)
        client.close()
        shutil.rmtree(base, ignore_errors=True)


@dataclass
class Run:
    figures: BootFigures
    console: str
    app_log: str
    storage: dict[str, int]
    labels: set[str]


def run_frames(project: Path, state_dir: Path, app: str, storage_file: str | None = None) -> Run:
    appliance = Appliance(
        project,
        graph=project / "graphs" / app / "graph.json",
        device=f"e2e-published-{app}",
        state_dir=state_dir,
        quiet=True,
        backoff=FAST,
    )
    with appliance:

        def shown() -> bool:
            restarts = appliance.metrics().nodes[CODE].restarts
            assert restarts == 0, f"{app} restarted:\n{appliance.logs(CODE)}"
            return appliance.wait_for_frames(FRAMES, timeout=1.0)

        wait_for(shown, f"{FRAMES} frames of {app}", timeout=900)
        figures = appliance.metrics()
        console = appliance.logs(CODE)
        app_log = (appliance.logs_path(CODE) / "app.log").read_text()
        storage = json.loads((appliance.storage_path / storage_file).read_text()) if storage_file else {}
        labels = set(appliance.hdmi.labels())
    return Run(figures, console, app_log, storage, labels)


def test_a_people_counter_with_an_mxnet_ssd_model_node_runs_unmodified(
    project: Path, e2e_state_dir: Path
) -> None:
    run = run_frames(project, e2e_state_dir, "people-counter", "people_count.json")
    assert "Exception during processing loop" not in run.app_log, run.app_log
    assert "threshold 1.0" in run.app_log
    node = run.figures.nodes[CODE]
    assert node.restarts == 0 and node.frames_out == FRAMES
    model = run.figures.models[MODEL]
    assert model.backend == "mxnet"
    assert model.calls == FRAMES and model.errors == 0  # one call a frame, lockstep holds the next
    assert run.figures.hdmi is not None and run.figures.hdmi.outputs == FRAMES
    assert run.storage["frames"] == FRAMES
    assert f"# people {run.storage['people']}" in run.labels  # the last frame's count, as drawn
    counted = [int(n) for n in re.findall(r"# people (\d+)", run.app_log)]
    assert len(counted) == FRAMES and sum(counted) == run.storage["total"]


def test_a_car_tracker_with_a_tensorflow_od_model_node_runs_unmodified(
    project: Path, e2e_state_dir: Path
) -> None:
    run = run_frames(project, e2e_state_dir, "car-tracker")
    assert "Exception during processing loop" not in run.app_log, run.app_log
    node = run.figures.nodes[CODE]
    assert node.restarts == 0 and node.frames_out == FRAMES
    model = run.figures.models[MODEL]
    assert model.backend == "tensorflow-graph"
    assert model.calls == FRAMES and model.errors == 0
    (line,) = re.findall(r"^car-tracker (\{.*\})$", run.console, re.M)
    report = json.loads(line)
    assert report["sent"] == {"shape": [1, 300, 300, 3], "dtype": "uint8"}
    # boxes, scores, classes, num_detections: the TF Object Detection API's outputs in its order.
    assert report["got"] == [
        {"shape": [1, 100, 4], "dtype": "float32"},
        {"shape": [1, 100], "dtype": "float32"},
        {"shape": [1, 100], "dtype": "float32"},
        {"shape": [1], "dtype": "float32"},
    ]
    assert "boxes" in report["found"]
    # Its boxes run past the frame: drawn clamped, with one note, never an exception.
    notes = [line for line in run.console.splitlines() if "panoramasdk: add_rect(" in line]
    assert any("clamped" in note for note in notes), notes
    assert len(notes) <= 2, notes  # once per kind of problem (outside the frame, inverted), not per frame
    assert run.figures.hdmi is not None and run.figures.hdmi.outputs == FRAMES


def test_a_pose_estimator_with_two_mxnet_model_nodes_and_a_batch_of_4_runs_on_python3_7(
    project: Path, e2e_state_dir: Path
) -> None:
    run = run_frames(project, e2e_state_dir, "pose-estimation")
    assert "Exception during processing loop" not in run.app_log, run.app_log
    node = run.figures.nodes[CODE]
    assert node.restarts == 0 and node.frames_out == FRAMES
    for name in ("detector_node", "pose_node"):
        model = run.figures.models[name]
        assert model.backend == "mxnet" and model.calls == FRAMES and model.errors == 0, name
    (line,) = re.findall(r"^pose-estimation (\{.*\})$", run.console, re.M)
    report = json.loads(line)
    assert report["sent"] == [[1, 3, 480, 600], [4, 3, 256, 192]]
    assert report["got"] == [
        [[1, 100, 1], "float32"],
        [[1, 100, 1], "float32"],
        [[1, 100, 4], "float32"],
        [[4, 17, 64, 48], "float32"],  # one heatmap per joint for each of the four people
    ]
    assert run.figures.hdmi is not None and run.figures.hdmi.outputs == FRAMES
