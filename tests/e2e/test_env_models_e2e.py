"""MXNet and TensorFlow model nodes end to end: an app in a real sandbox calls gluoncv networks and a TF
Object Detection API shaped graph through ``self.call``; the appliance serves them from their backend
environments.

The models are built in the test run (pretrained=False, fixed seeds) inside those environments, which also
record what the frameworks themselves return for the caller app's input (see
``tests/runtime/models/_env_models.py``).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _e2e_helpers import FAST, public_tmp_dir, reports, wait_for
from _model_projects import ACCOUNT, CallerNode, ModelNode, build_caller, make_model_project

from emulator import Appliance
from emulator.builder import add_raw_model
from emulator.project import Project
from runtime.models.environment import environment

pytestmark = [
    pytest.mark.sandbox,
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

MAKER = Path(__file__).resolve().parent.parent / "runtime" / "models" / "_env_models.py"
FILL = 100.0  # the caller's input value, as _env_models.FILL
SSD = (1, 3, 512, 512)
YOLO = (1, 3, 480, 600)
OD = (1, 300, 300, 3)


def make(folder: Path, env: str, *args: str) -> Path:
    found = environment(env)
    assert found.ready, f"run {found.install_command}"
    folder.mkdir(parents=True)
    subprocess.run([str(found.python), "-I", str(MAKER), args[0], str(folder), *args[1:]], check=True)
    return folder


def tarball(folder: Path, names: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in names:
            archive.add(folder / name, arcname=name)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def caller_project() -> Iterator[Path]:
    base = public_tmp_dir("pe-e2e-env-caller-")
    yield build_caller(base / "model-caller")
    shutil.rmtree(base, ignore_errors=True)


def first_call(appliance: Appliance, node: str) -> dict[str, Any]:
    def found() -> list[dict[str, Any]]:
        appliance.check()
        return reports(appliance.logs(node), "after")

    done: list[dict[str, Any]] = wait_for(found, f"the calls of node {node}", timeout=900)
    first = reports(appliance.logs(node), "first")[-1]["result"]
    assert "ok" in first, first
    assert done[-1]["result"] == first  # the same again after the wrong calls
    return dict(first["ok"])


def assert_summary(summary: dict[str, Any], reference: Path) -> None:
    with np.load(reference) as saved:
        expected = [saved[f"out{index}"] for index in range(len(saved.files))]
    assert summary["is_tuple"]
    assert [output["shape"] for output in summary["outputs"]] == [list(array.shape) for array in expected]
    assert {output["dtype"] for output in summary["outputs"]} == {"float32"}
    for output, array in zip(summary["outputs"], expected, strict=True):
        want = float(np.sum(array.astype(np.float32), dtype=np.float64))
        if np.isfinite(want):
            assert output["sum"] == pytest.approx(want, rel=1e-4, abs=1e-3)
        else:
            # An untrained SSD decodes some boxes to inf and nan (the runtime tests compare those element
            # by element): the app gets them too.
            assert not np.isfinite(output["sum"])


def test_mxnet_and_tensorflow_model_nodes_serve_an_app(
    caller_project: Path, e2e_state_dir: Path, tmp_path: Path
) -> None:
    ssd = make(tmp_path / "ssd", "mxnet", "gluoncv", "ssd_512_mobilenet1.0_voc", "1,3,512,512")
    yolo = make(tmp_path / "yolo", "mxnet", "gluoncv", "yolo3_mobilenet1.0_voc", "1,3,480,600")
    od = make(tmp_path / "od", "tensorflow", "tf-od-graph", "300")
    mx_files = ["model-symbol.json", "model-0000.params"]
    models = [
        ModelNode("ssd", tarball(ssd, mx_files), "MXNET", (("data", SSD),)),
        ModelNode("yolo", tarball(yolo, mx_files), "MXNET", (("data", YOLO),)),
        ModelNode("od", tarball(od, ["frozen_inference_graph.pb"]), "TENSORFLOW", (("data", OD),)),
    ]
    callers = [
        CallerNode("ssd_caller", "errors", "ssd", SSD, value=FILL),
        CallerNode("yolo_caller", "errors", "yolo", YOLO, value=FILL),
        CallerNode("od_caller", "errors", "od", OD, value=FILL),
    ]
    project = make_model_project(tmp_path / "project", "env-models", caller_project, models, callers)
    # The SSD's asset again, as add-raw-model adds a model tarball and its descriptor to a package.
    (tmp_path / "ssd.tar.gz").write_bytes(tarball(ssd, mx_files))
    descriptor = {"mlModelDescriptor": {"envelopeVersion": "2021-01-01", "framework": "MXNET",
                                        "inputs": [{"name": "data", "shape": list(SSD)}]}}  # fmt: skip
    (tmp_path / "ssd.json").write_text(json.dumps(descriptor))
    add_raw_model(
        Project(project), "ssd_asset", tmp_path / "ssd.tar.gz", tmp_path / "ssd.json",
        [project / "packages" / f"{ACCOUNT}-E2E_MODELS-1.0"],
    )  # fmt: skip

    appliance = Appliance(project, state_dir=e2e_state_dir, device="e2e-env-models", quiet=True, backoff=FAST)
    try:
        appliance.boot()
        assert_summary(first_call(appliance, "ssd_caller"), ssd / "filled.npz")
        assert_summary(first_call(appliance, "yolo_caller"), yolo / "filled.npz")
        assert_summary(first_call(appliance, "od_caller"), od / "filled.npz")
        errors = reports(appliance.logs("ssd_caller"), "errors")[-1]
        assert "has shape" in errors["wrong_shape"]["error"]["message"]
        models_figures = appliance.metrics().models
        assert models_figures["ssd"].errors == 3 and models_figures["ssd"].calls >= 5
        backends = {node: figures.backend for node, figures in models_figures.items()}
        assert backends == {"ssd": "mxnet", "yolo": "mxnet", "od": "tensorflow-graph"}
    finally:
        appliance.close()
