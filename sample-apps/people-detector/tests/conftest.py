"""Fixtures of the people detector's smoke tests (panorama-emulator's pytest plugin does the rest).

The model asset is not kept in the repository: it is made from code. When the project under test lacks it,
``people_detector_model_asset`` makes it once per session, as the README says to do by hand::

    python model/make_model.py model/build --format onnx
    panorama-emulator add-raw-model --model-asset-name people_detector_model \\
        --model-local-path model/build/people_detector_onnx.tar.gz \\
        --descriptor-path model/build/people_detector_onnx.json \\
        --packages-path packages/123456789012-PEOPLE_DETECTOR_MODEL-1.0

(make_model.py needs the ``onnx`` package: ``pip install onnx``.)
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[1]
MODEL_ASSET = "people_detector_model"
MODEL_PACKAGE = "123456789012-PEOPLE_DETECTOR_MODEL-1.0"
PEOPLE = "synthetic:1280x720@30?scene=people"


def project_under_test(config: pytest.Config) -> Path:
    """The project the tests boot: ``--panorama-project``, ini ``panorama_project``, else this sample."""
    given = config.getoption("panorama_project", default=None)
    if given:
        return (config.invocation_params.dir / str(given)).resolve()
    value = config.getini("panorama_project")
    if value:
        base = config.inipath.parent if config.inipath is not None else config.rootpath
        return (base / str(value)).resolve()
    return SAMPLE


def model_asset_missing(project: Path) -> bool:
    """True when the model package names no asset, or a file it names is not in ``assets/``."""
    try:
        package = json.loads((project / "packages" / MODEL_PACKAGE / "package.json").read_text())
    except (OSError, ValueError):
        return True
    for asset in package.get("nodePackage", {}).get("assets", []):
        if asset.get("name") != MODEL_ASSET:
            continue
        uris = [
            implementation.get(key)
            for implementation in asset.get("implementations", [])
            for key in ("assetUri", "descriptorUri")
        ]
        return not uris or not all(uri and (project / "assets" / uri).is_file() for uri in uris)
    return True


def add_model_asset(project: Path) -> None:
    """Make the ONNX model with make_model.py and add it with add-raw-model (the Python API of the CLI)."""
    from emulator.builder import add_raw_model
    from emulator.project import Project

    script = project / "model" / "make_model.py"
    if not script.is_file():
        script = SAMPLE / "model" / "make_model.py"
    with tempfile.TemporaryDirectory(prefix="people-detector-model-") as out:
        made = subprocess.run(
            [sys.executable, str(script), out, "--format", "onnx"],
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            pytest.fail(f"cannot make the model with {script}: {made.stderr.strip()}", pytrace=False)
        add_raw_model(
            Project(project),
            MODEL_ASSET,
            Path(out) / "people_detector_onnx.tar.gz",
            Path(out) / "people_detector_onnx.json",
            [project / "packages" / MODEL_PACKAGE],
        )


@pytest.fixture(scope="session", autouse=True)
def people_detector_model_asset(request: pytest.FixtureRequest) -> Path:
    """The project under test, with its model asset made first when it is missing."""
    project = project_under_test(request.config)
    if model_asset_missing(project):
        add_model_asset(project)
    return project


@pytest.fixture
def panorama_cameras(panorama_cameras: dict[str, str]) -> dict[str, str]:
    """The synthetic people scene on the camera, unless ``--panorama-camera`` says otherwise."""
    return {"camera_node": PEOPLE, **panorama_cameras}
