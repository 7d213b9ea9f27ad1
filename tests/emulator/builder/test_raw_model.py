"""add-raw-model: a local model archive into assets/ and the packages given, with panorama-cli's rules."""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from _build_helpers import SAMPLE_PACKAGE, read, snapshot
from rich.console import Console

from emulator.builder import add_raw_model
from emulator.errors import AssetError, ManifestError, ProjectError
from emulator.project import Project

MODEL_DESCRIPTOR = {
    "mlModelDescriptor": {
        "envelopeVersion": "2021-01-01",
        "framework": "PYTORCH",
        "frameworkVersion": "1.8",
        "precisionMode": "FP16",
        "inputs": [{"name": "data", "shape": [1, 3, 224, 224]}],
    }
}


def model_archive(path: Path, content: bytes = b"weights" * 1000) -> Path:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("model.pth")
        info.size = len(content)
        archive.addfile(info, io.BytesIO(content))
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture
def model_files(project: Path, tmp_path: Path) -> tuple[Path, Path]:
    descriptor = tmp_path / "model-descriptor.json"
    descriptor.write_text(json.dumps(MODEL_DESCRIPTOR, indent=4))
    return model_archive(tmp_path / "model.tar.gz"), descriptor


def test_model_asset_goes_first_with_its_interface_and_graph_node(
    project: Path, model_files: tuple[Path, Path]
) -> None:
    model, descriptor = model_files
    package_file = project / SAMPLE_PACKAGE / "package.json"
    graph_file = project / "graphs/people-counter/graph.json"
    package_before, graph_before = read(package_file), read(graph_file)
    built = add_raw_model(Project(project), "people_model", model, descriptor, [Path(SAMPLE_PACKAGE)])

    assert built.asset_path.read_bytes() == model.read_bytes()
    assert built.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    assert built.descriptor_path.read_bytes() == descriptor.read_bytes()
    expected = copy.deepcopy(package_before)
    expected["nodePackage"]["assets"].insert(
        0,
        {
            "name": "people_model",
            "implementations": [
                {
                    "type": "model",
                    "assetUri": built.asset_path.name,
                    "descriptorUri": built.descriptor_path.name,
                }
            ],
        },
    )
    expected["nodePackage"]["interfaces"].append(
        {
            "name": "people_model_interface",
            "category": "ml_model",
            "asset": "people_model",
            "inputs": [{"name": "video_in", "type": "media"}],
            "outputs": [{"name": "video_out", "type": "media"}],
        }
    )
    assert read(package_file) == expected
    graph_before["nodeGraph"]["nodes"].append(
        {
            "name": "people_model",
            "interface": "123456789012::PEOPLE_COUNTER_CODE.people_model_interface",
            "overridable": False,
            "launch": "onAppStart",
        }
    )
    assert read(graph_file) == graph_before


def test_replacing_a_model_deletes_the_old_archive(
    project: Path, model_files: tuple[Path, Path], tmp_path: Path
) -> None:
    model, descriptor = model_files
    first = add_raw_model(Project(project), "people_model", model, descriptor, [Path(SAMPLE_PACKAGE)])
    newer = model_archive(tmp_path / "newer.tar.gz", b"better weights" * 1000)
    out = io.StringIO()
    second = add_raw_model(
        Project(project),
        "people_model",
        newer,
        descriptor,
        [Path(SAMPLE_PACKAGE)],
        console=Console(file=out, width=200),
    )
    assert not first.asset_path.exists() and second.asset_path.exists()
    assert f"Deleting old asset {first.asset_path.name}" in out.getvalue()
    nodes = read(project / "graphs/people-counter/graph.json")["nodeGraph"]["nodes"]
    assert [node["name"] for node in nodes].count("people_model") == 1


def test_without_packages_only_the_blobs_are_written(project: Path, model_files: tuple[Path, Path]) -> None:
    model, descriptor = model_files
    before = snapshot(project)
    out = io.StringIO()
    built = add_raw_model(Project(project), "m", model, descriptor, console=Console(file=out))
    after = snapshot(project)
    assert set(after) - set(before) == {
        f"assets/{built.asset_path.name}",
        f"assets/{built.descriptor_path.name}",
    }
    assert all(after[name] == content for name, content in before.items())
    assert "Copy the following in the assets section of package.json" in out.getvalue()
    assert built.asset["implementations"][0]["type"] == "model"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"PK\x03\x04 a zip file", "not gzip-compressed"),
        (gzip.compress(b"plain text, not a tar archive" * 100), "a model must be a .tar.gz archive"),
        (gzip.compress(bytes(10240)), "empty"),
    ],
)
def test_a_file_that_is_not_a_gzip_tar_is_refused(
    project: Path, model_files: tuple[Path, Path], content: bytes, message: str
) -> None:
    model, descriptor = model_files
    model.write_bytes(content)
    before = snapshot(project)
    with pytest.raises(AssetError, match=message):
        add_raw_model(Project(project), "m", model, descriptor, [Path(SAMPLE_PACKAGE)])
    assert snapshot(project) == before


def test_a_truncated_archive_is_refused(project: Path, model_files: tuple[Path, Path]) -> None:
    model, descriptor = model_files
    model_archive(model, bytes(range(256)) * 4000)
    model.write_bytes(model.read_bytes()[:-100])
    before = snapshot(project)
    with pytest.raises(AssetError, match=r"model\.tar\.gz: a model must be a \.tar\.gz archive"):
        add_raw_model(Project(project), "m", model, descriptor, [Path(SAMPLE_PACKAGE)])
    assert snapshot(project) == before


def test_a_code_descriptor_or_a_missing_file_is_refused(
    project: Path, model_files: tuple[Path, Path]
) -> None:
    model, _ = model_files
    code_descriptor = project / SAMPLE_PACKAGE / "descriptor.json"
    with pytest.raises(ManifestError, match="expected a mlModelDescriptor, found a runtimeDescriptor"):
        add_raw_model(Project(project), "m", model, code_descriptor, [Path(SAMPLE_PACKAGE)])
    with pytest.raises(ProjectError, match="file not found"):
        add_raw_model(Project(project), "m", project / "nope.tar.gz", code_descriptor)
