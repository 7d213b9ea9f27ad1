"""Reading and writing manifest files: missing files, files that are not JSON, panorama-cli style output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from emulator.errors import ManifestError, ProjectError
from emulator.manifests import (
    MAX_MANIFEST_BYTES,
    Graph,
    ModelDescriptor,
    Override,
    Package,
    RuntimeDescriptor,
    load_descriptor,
    load_graph,
    load_override,
    load_package,
    package_folder_parts,
    read_json,
    write_json,
)

Doc = dict[str, Any]


def write(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))
    return path


def test_loaders_return_models(
    tmp_path: Path,
    graph_data: Doc,
    package_data: Doc,
    runtime_descriptor_data: Doc,
    model_descriptor_data: Doc,
    override_data: Doc,
) -> None:
    assert isinstance(load_graph(write(tmp_path / "graph.json", graph_data)), Graph)
    package_file = write(tmp_path / "packages/123456789012-SAMPLE_CODE-1.0/package.json", package_data)
    assert isinstance(load_package(package_file), Package)
    assert isinstance(
        load_descriptor(write(tmp_path / "code.json", runtime_descriptor_data)), RuntimeDescriptor
    )
    assert isinstance(load_descriptor(write(tmp_path / "model.json", model_descriptor_data)), ModelDescriptor)
    assert isinstance(load_override(write(tmp_path / "override.json", override_data)), Override)


def test_load_package_takes_name_and_version_from_folder(tmp_path: Path, package_data: Doc) -> None:
    body = package_data["nodePackage"]
    del body["name"], body["version"]
    package = load_package(
        write(tmp_path / "packages/278046373397-RTSP-STREAM-2.1/package.json", package_data)
    )
    assert (package.name, package.version) == ("RTSP-STREAM", "2.1")


def test_invalid_manifest_lists_problems_with_the_file(tmp_path: Path, graph_data: Doc) -> None:
    graph_data["nodeGraph"]["nodes"][0]["launch"] = "never"
    graph_data["nodeGraph"]["envelopeVersion"] = "2022-01-01"
    path = write(tmp_path / "graph.json", graph_data)
    with pytest.raises(ManifestError) as caught:
        load_graph(path)
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{path}: /nodeGraph/") for line in lines)
    assert caught.value.file == str(path)


def test_missing_file_is_project_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="file not found") as caught:
        load_graph(tmp_path / "graphs/app/graph.json")
    assert caught.value.file == str(tmp_path / "graphs/app/graph.json")


def test_directory_is_project_error(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="is a directory"):
        read_json(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_project_error(tmp_path: Path) -> None:
    path = write(tmp_path / "graph.json", {})
    path.chmod(0)
    with pytest.raises(ProjectError, match="cannot read"):
        read_json(path)


@pytest.mark.parametrize(
    ("content", "found"),
    [
        (b'{"nodeGraph": }', "Expecting value at line 1 column 15"),
        (b"", "an empty file"),
        (b"  \n ", "an empty file"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": -Infinity}', "-Infinity is not JSON"),
        (b'{"a": 1} {"b": 2}', "Extra data"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"[" * 200_000 + b"]" * 200_000, "nesting too deep"),
        (b"1" * 5000, "digits"),
    ],
)
def test_not_json_is_one_problem_at_root(tmp_path: Path, content: bytes, found: str) -> None:
    path = tmp_path / "graph.json"
    path.write_bytes(content)
    with pytest.raises(ManifestError) as caught:
        load_graph(path)
    (problem,) = caught.value.problems
    assert problem.pointer == ""
    assert problem.file == str(path)
    assert found in problem.found
    assert str(caught.value).startswith(f"{path}: /: expected ")


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"a": "\u00e9"}).encode())
    assert read_json(path) == {"a": "\u00e9"}


def test_huge_file_is_refused_without_reading(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    with path.open("wb") as handle:
        handle.truncate(MAX_MANIFEST_BYTES + 1)
    with pytest.raises(ManifestError, match="at most"):
        read_json(path)


def test_write_json_matches_panorama_cli(tmp_path: Path, package_data: Doc) -> None:
    path = tmp_path / "package.json"
    write_json(path, package_data)
    text = path.read_text()
    assert text == json.dumps(package_data, indent=4)
    assert not text.endswith("\n")
    assert read_json(path) == package_data


def test_write_json_replaces_atomically_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "graph.json"
    path.write_text("old")
    path.chmod(0o640)
    write_json(path, {"b": ["\u00e9"]})
    assert path.read_text() == '{\n    "b": [\n        "\\u00e9"\n    ]\n}'
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert [child.name for child in tmp_path.iterdir()] == ["graph.json"]


def test_write_json_new_file_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        write_json(tmp_path / "new.json", [])
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new.json").stat().st_mode) == 0o640


def test_write_json_failure_is_project_error_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(ProjectError, match="cannot write"):
        write_json(tmp_path / "missing" / "graph.json", {})
    target = tmp_path / "graph.json"
    target.write_text("keep")
    with pytest.raises(TypeError):
        write_json(target, {"x": object()})
    assert target.read_text() == "keep"
    assert [child.name for child in tmp_path.iterdir()] == ["graph.json"]


@pytest.mark.parametrize(
    ("dirname", "parts"),
    [
        ("123456789012-SAMPLE_CODE-1.0", ("123456789012", "SAMPLE_CODE", "1.0")),
        ("123456789012-my-code-pkg-2.0", ("123456789012", "my-code-pkg", "2.0")),
        ("SAMPLE_CODE", None),
        ("1-2", None),
        ("1--2", None),
        ("-A-1.0", None),
        ("1-A-", None),
    ],
)
def test_package_folder_parts(dirname: str, parts: tuple[str, str, str] | None) -> None:
    assert package_folder_parts(dirname) == parts
