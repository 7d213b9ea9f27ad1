"""build_container / export_container through the Python API, with the in-package fake engine."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from _build_helpers import SAMPLE_PACKAGE, read, snapshot, write_package
from rich.console import Console

from emulator.builder import BuiltAsset, build_container, export_container
from emulator.builder import assets as assets_module
from emulator.builder.fake import FakeBuilder
from emulator.errors import BuildError, EngineError, ManifestError, ProjectError
from emulator.project import Project

BASE = "public.ecr.aws/panorama/panorama-application"


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, highlight=False), out


def build(root: Path, builder: FakeBuilder, package: str = SAMPLE_PACKAGE, **options: Any) -> BuiltAsset:
    return build_container(
        Project(root), options.pop("name", "code"), Path(package), builder=builder, **options
    )


def test_build_writes_the_asset_and_merges_the_manifests(project: Path) -> None:
    package_before = read(project / SAMPLE_PACKAGE / "package.json")
    graph_before = (project / "graphs/people-counter/graph.json").read_bytes()
    builder = FakeBuilder(local_images={BASE})
    built = build(project, builder, local_image=True)

    content = built.asset_path.read_bytes()
    assert built.asset_path.parent == project / "assets"
    assert built.sha256 == hashlib.sha256(content).hexdigest() == built.asset_path.name[:-7]
    assert built.size == len(content)
    descriptor = (project / SAMPLE_PACKAGE / "descriptor.json").read_bytes()
    assert built.descriptor_path.name == hashlib.sha256(descriptor).hexdigest() + ".json"
    assert built.descriptor_path.read_bytes() == descriptor
    with tarfile.open(built.asset_path) as archive:
        assert "panorama/app.py" in archive.getnames()

    expected = copy.deepcopy(package_before)
    expected["nodePackage"]["assets"] = [
        {
            "name": "code",
            "implementations": [
                {
                    "type": "container",
                    "assetUri": built.asset_path.name,
                    "descriptorUri": built.descriptor_path.name,
                }
            ],
        }
    ]
    package_file = project / SAMPLE_PACKAGE / "package.json"
    assert read(package_file) == expected
    assert package_file.read_text() == json.dumps(expected, indent=4)  # panorama-cli's formatting
    assert built.asset == expected["nodePackage"]["assets"][0]
    # The sample's interface already names the asset: panorama-cli leaves graph.json alone.
    assert (project / "graphs/people-counter/graph.json").read_bytes() == graph_before
    assert builder.builds == [(project / SAMPLE_PACKAGE, "code", False)]
    assert builder.exports == builder.removed == 1


def test_a_fresh_package_gets_an_interface_and_a_graph_node(project: Path) -> None:
    write_package(project)
    graph_file = project / "graphs/people-counter/graph.json"
    graph_before = read(graph_file)
    built = build(project, FakeBuilder(), "packages/123456789012-TINY_CODE-1.0", name="tiny")

    package = read(project / "packages/123456789012-TINY_CODE-1.0/package.json")
    assert package["nodePackage"]["assets"] == [built.asset]
    assert package["nodePackage"]["interfaces"] == [
        {
            "name": "tiny_interface",
            "category": "business_logic",
            "asset": "tiny",
            "inputs": [{"name": "video_in", "type": "media"}],
            "outputs": [{"name": "video_out", "type": "media"}],
        }
    ]
    graph_before["nodeGraph"]["nodes"].append(
        {
            "name": "tiny_node",
            "interface": "123456789012::TINY_CODE.tiny_interface",
            "overridable": False,
            "launch": "onAppStart",
        }
    )
    assert read(graph_file) == graph_before
    assert graph_file.read_text() == json.dumps(graph_before, indent=4)


def test_rebuild_replaces_the_asset_and_deletes_its_stale_blob(project: Path) -> None:
    builder = FakeBuilder(local_images={BASE}, volatile=True)
    first = build(project, builder, local_image=True)
    out, text = console()
    second = build(project, builder, local_image=True, console=out)
    assert first.sha256 != second.sha256
    assert not first.asset_path.exists() and second.asset_path.exists()
    assert first.descriptor_path == second.descriptor_path and second.descriptor_path.exists()
    assert "Updating an existing asset with the same name" in text.getvalue()
    assert f"Deleting old asset {first.asset_path.name}" in text.getvalue()
    assets = read(project / SAMPLE_PACKAGE / "package.json")["nodePackage"]["assets"]
    assert [asset["implementations"][0]["assetUri"] for asset in assets] == [second.asset_path.name]


def test_a_blob_another_package_still_uses_is_kept(project: Path) -> None:
    builder = FakeBuilder(local_images={BASE}, volatile=True)
    first = build(project, builder, local_image=True)
    other = write_package(project, "123456789012-OTHER_CODE-1.0")
    document = read(other / "package.json")
    document["nodePackage"]["assets"] = [first.asset]
    (other / "package.json").write_text(json.dumps(document))
    out, text = console()
    build(project, builder, local_image=True, console=out)
    assert first.asset_path.exists()
    assert f"Keeping old asset {first.asset_path.name}" in text.getvalue()


def test_reproducible_builds_of_one_image_give_one_hash(project: Path) -> None:
    builder = FakeBuilder(local_images={BASE}, volatile=True)
    first = build(project, builder, local_image=True, reproducible=True)
    second = build(project, builder, local_image=True, reproducible=True)
    assert first.sha256 == second.sha256 and second.asset_path.exists()
    assert second.asset_path.read_bytes()[4:8] == b"\0\0\0\0"  # no gzip time stamp


def test_registry_out_of_reach_falls_back_to_the_local_base_image(project: Path) -> None:
    builder = FakeBuilder(local_images={BASE}, pull_failure='Get "https://public.ecr.aws/v2/": no such host')
    out, text = console()
    build(project, builder, console=out)
    lines = [line for line in text.getvalue().splitlines() if "local image" in line]
    assert len(lines) == 1 and BASE in lines[0] and "no such host" in lines[0]
    assert [pull for _, _, pull in builder.builds] == [True, False]


def test_no_registry_and_no_local_base_image_is_one_clear_error(project: Path) -> None:
    before = snapshot(project)
    builder = FakeBuilder(pull_failure="no such host")
    with pytest.raises(BuildError) as caught:
        build(project, builder)
    message = str(caught.value)
    assert message.startswith(f"{SAMPLE_PACKAGE}/Dockerfile:1: FROM {BASE}")
    assert "no such host" in message and "panorama-emulator base-image" in message
    assert "\n" not in message
    assert snapshot(project) == before


def test_failing_step_names_the_dockerfile_line_and_changes_nothing(project: Path) -> None:
    before = snapshot(project)
    failure = BuildError(
        "The command '/bin/sh -c python3 -m pip install' returned a non-zero code: 1",
        step="Step 3/4 : RUN python3 -m pip install --no-cache-dir -r /panorama/requirements.txt",
        log_tail=["ERROR: No matching distribution found for nonexistent-package"],
    )
    builder = FakeBuilder(local_images={BASE}, failure=failure)
    with pytest.raises(BuildError) as caught:
        build(project, builder, local_image=True)
    error = caught.value
    assert str(error) == (
        f"{SAMPLE_PACKAGE}/Dockerfile:3: "
        "RUN python3 -m pip install --no-cache-dir -r /panorama/requirements.txt "
        "failed (step 3/4): The command '/bin/sh -c python3 -m pip install' returned a non-zero code: 1"
    )
    assert error.log_tail == ["ERROR: No matching distribution found for nonexistent-package"]
    assert snapshot(project) == before
    assert builder.exports == 0


def test_exec_format_error_explains_the_foreign_architecture(project: Path) -> None:
    failure = BuildError("exec /bin/sh: exec format error", step="Step 3/4 : RUN python3 -m pip install")
    with pytest.raises(BuildError, match=r"exec format error; the image is for arm64.*qemu"):
        build(project, FakeBuilder(local_images={BASE}, failure=failure), local_image=True)


def test_arm64_base_without_binfmt_gets_a_warning(
    project: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(assets_module, "BINFMT_AARCH64", tmp_path / "no-qemu-aarch64")
    monkeypatch.setattr(assets_module.platform, "machine", lambda: "x86_64")
    out, text = console()
    built = build(
        project, FakeBuilder(local_images={BASE}, architecture="arm64"), local_image=True, console=out
    )
    assert any("arm64" in warning and "qemu" in warning for warning in built.warnings)
    assert "qemu-user-static" in text.getvalue()
    entry = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: {}\n"
    (tmp_path / "no-qemu-aarch64").write_text(entry.format("OC"))
    without_f = build(project, FakeBuilder(local_images={BASE}, architecture="arm64"), local_image=True)
    assert any("with the F flag" in warning for warning in without_f.warnings)  # a build's RUN needs F
    (tmp_path / "no-qemu-aarch64").write_text(entry.format("F"))
    again = build(project, FakeBuilder(local_images={BASE}, architecture="arm64"), local_image=True)
    assert again.warnings == ()


def test_instructions_the_device_ignores_are_warned_about(project: Path) -> None:
    dockerfile = project / SAMPLE_PACKAGE / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text() + 'ENV MODE=fast\nCMD ["python3", "/panorama/app.py"]\n')
    out, text = console()
    built = build(project, FakeBuilder(local_images={BASE}), local_image=True, console=out)
    assert [warning.split(": ", 1)[0] for warning in built.warnings] == [
        f"{SAMPLE_PACKAGE}/Dockerfile:5",
        f"{SAMPLE_PACKAGE}/Dockerfile:6",
    ]
    assert f"warning: {SAMPLE_PACKAGE}/Dockerfile:5: ENV is ignored on the device" in text.getvalue()


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda p: (p / SAMPLE_PACKAGE / "Dockerfile").unlink(), ProjectError, "Dockerfile: no Dockerfile"),
        (
            lambda p: (p / SAMPLE_PACKAGE / "package.json").write_text('{"nodePackage": {'),
            ManifestError,
            "package.json: /: expected valid JSON",
        ),
        (
            lambda p: (p / SAMPLE_PACKAGE / "package.json").write_text('{"nodePackage": {"interfaces": 3}}'),
            ManifestError,
            "package.json: /nodePackage",
        ),
        (
            lambda p: (p / SAMPLE_PACKAGE / "descriptor.json").write_text("python3 /panorama/app.py"),
            ManifestError,
            "descriptor.json: /: expected valid JSON",
        ),
        (
            lambda p: (p / SAMPLE_PACKAGE / "descriptor.json").write_text(
                '{"mlModelDescriptor": {"envelopeVersion": "2021-01-01", "framework": "PYTORCH", '
                '"inputs": [{"name": "x", "shape": [1]}]}}'
            ),
            ManifestError,
            "expected a runtimeDescriptor, found a mlModelDescriptor",
        ),
        (
            lambda p: (p / SAMPLE_PACKAGE / "descriptor.json").unlink(),
            ProjectError,
            "descriptor.json: file not found",
        ),
    ],
)
def test_bad_input_is_refused_before_the_build(project: Path, change: Any, error: type, message: str) -> None:
    change(project)
    before = snapshot(project)
    builder = FakeBuilder(local_images={BASE})
    with pytest.raises(error, match=message):
        build(project, builder, local_image=True)
    assert builder.builds == []
    assert snapshot(project) == before


def test_package_path_outside_the_project_is_refused(project: Path, tmp_path: Path) -> None:
    outside = tmp_path / "123456789012-ELSEWHERE-1.0"
    outside.mkdir()
    builder = FakeBuilder()
    with pytest.raises(ProjectError, match="packages"):
        build(project, builder, str(outside))
    with pytest.raises(ProjectError):
        build(project, builder, "graphs/people-counter")
    assert builder.builds == []


def test_asset_names_docker_cannot_tag_are_refused(project: Path) -> None:
    with pytest.raises(ProjectError, match="cannot tag a Docker image"):
        build(project, FakeBuilder(), name="Code")
    with pytest.raises(ProjectError, match="is not allowed"):
        build(project, FakeBuilder(), name="../code")


def test_export_container_exports_an_existing_image(project: Path) -> None:
    builder = FakeBuilder(local_images={"my-app:1.0"})
    built = export_container(Project(project), "code", "my-app:1.0", Path(SAMPLE_PACKAGE), builder=builder)
    assert built.asset_path.exists() and builder.builds == []
    assert read(project / SAMPLE_PACKAGE / "package.json")["nodePackage"]["assets"] == [built.asset]


def test_export_container_pulls_a_missing_image_like_docker_create(project: Path) -> None:
    builder = FakeBuilder(pullable={"registry.example/app:2"})
    built = export_container(
        Project(project), "code", "registry.example/app:2", Path(SAMPLE_PACKAGE), builder=builder
    )
    assert built.asset_path.exists()


def test_export_container_of_an_unknown_image_is_one_clear_error(project: Path) -> None:
    before = snapshot(project)
    with pytest.raises(EngineError) as caught:
        export_container(
            Project(project), "code", "no-such-image", Path(SAMPLE_PACKAGE), builder=FakeBuilder()
        )
    assert str(caught.value).startswith("the Docker engine has no image no-such-image and cannot pull it")
    assert snapshot(project) == before
