"""Packages in the shape of published Panorama apps, unmodified, built offline and run on the appliance.

Every base image reference published Dockerfiles use builds here, with no registry in reach, FROM the
offline stand-in (real Docker engine; the stand-in is the cached one, each build adds a few small layers).
Two of them run in a real sandbox, with ``entry.path`` ``python3.8`` (people_counter's) and ``python3.7``
(pose_estimation's), drawing overlays that leave [0, 1] every frame.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from _e2e_helpers import APPS_DIR, camera_to_hdmi_graph, public_tmp_dir
from rich.console import Console

from emulator import Appliance
from emulator.errors import BuildError

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

REPOSITORY = "public.ecr.aws/panorama/panorama-application"
OWN_BASE = "pe-e2e/published-own-base:1.0"  # given to the stand-in with base-image --tag
NODE = "code_node"
FRAMES = 6
GREEN = [0, 255, 0]
BLACK = [0, 0, 0]


@dataclass(frozen=True)
class Case:
    """One package: its FROM, the RUN lines it has (a published app's), its entry.path, how it is built."""

    name: str
    base: str
    runs: tuple[str, ...]
    entry: str
    local_image: bool


CASES = (
    # people_counter / kinesis_video_streams: the SDK 1 image, pip through python3.8, entry python3.8.
    Case(
        "sdkv1",
        f"{REPOSITORY}/sdkv1/python3.8/aarch64:latest",
        ("python3.8 -m pip list",),
        "python3.8",
        False,
    ),
    # mot_analysis's base; pose_estimation's entry python3.7.
    Case("arm110", f"{REPOSITORY}:1.1.0-arm64v8", ("python3.7 -m pip --version",), "python3.7", True),
    Case("untagged", REPOSITORY, (), "python3", False),
    Case("latest", f"{REPOSITORY}:latest", ("pip3 --version",), "python3", True),
    # The developer guide's sample: WORKDIR /panorama, python3 -m pip.
    Case("guide", f"{REPOSITORY}:1.2.0-py3.8", ("python3 -m pip --version",), "python3", False),
    Case("arm121", f"{REPOSITORY}:1.2.1-arm64v8", ("python3.8 -c 'import cv2, numpy'",), "python3.8", True),
    Case("own", OWN_BASE, ("pip3 --version",), "python3", True),
)
RUN_CASES = ("sdkv1", "arm110")


def write_package(root: Path, case: Case) -> Path:
    """``packages/123456789012-<NAME>_CODE-1.0`` with the shared app, and a graph of its own."""
    name = f"{case.name.upper()}_CODE"
    folder = root / "packages" / f"123456789012-{name}-1.0"
    (folder / "src").mkdir(parents=True)
    shutil.copy(APPS_DIR / "published-shape" / "app.py", folder / "src" / "app.py")
    lines = [f"FROM {case.base}", "WORKDIR /panorama", "COPY src /panorama"]
    lines += [f"RUN {run}" for run in case.runs]
    (folder / "Dockerfile").write_text("\n".join(lines) + "\n")
    entry = {"path": case.entry, "name": "/panorama/app.py"}
    descriptor = {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}}
    (folder / "descriptor.json").write_text(json.dumps(descriptor, indent=4))
    interface = {
        "name": "code_interface",
        "category": "business_logic",
        "asset": f"pe_published_{case.name}",
        "inputs": [{"name": "video_in", "type": "media"}],
        "outputs": [{"name": "video_out", "type": "media"}],
    }
    package = {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "name": name,
            "version": "1.0",
            "description": f"{case.name}: a published app's shape",
            "assets": [],
            "interfaces": [interface],
        }
    }
    (folder / "package.json").write_text(json.dumps(package, indent=4))
    graph = camera_to_hdmi_graph(name, NODE)
    (root / "graphs" / case.name).mkdir(parents=True)
    (root / "graphs" / case.name / "graph.json").write_text(json.dumps(graph, indent=4))
    return folder


@dataclass
class Built:
    root: Path
    outputs: dict[str, str]  # case name -> what build-container printed


@pytest.fixture(scope="module")
def published() -> Iterator[Built]:
    try:
        from emulator.builder import build_container, ensure_base_image
        from emulator.project import Project

        ensure_base_image(tags=[OWN_BASE], console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here
        pytest.skip(f"cannot build FROM the stand-in: {error}")
    base = public_tmp_dir("pe-e2e-published-")
    root = base / "published"
    (root / "assets").mkdir(parents=True)
    outputs: dict[str, str] = {}
    try:
        for case in CASES:
            folder = write_package(root, case)
            out = io.StringIO()
            build_container(
                Project(root),
                f"pe_published_{case.name}",
                folder,
                local_image=case.local_image,
                console=Console(file=out, width=400, highlight=False),
            )
            outputs[case.name] = out.getvalue()
        yield Built(root, outputs)
    finally:
        import docker
        import docker.errors

        client = docker.from_env()
        for reference in [OWN_BASE, *(f"pe_published_{case.name}:latest" for case in CASES)]:
            with contextlib.suppress(docker.errors.APIError):
                client.images.remove(reference, force=True)
        client.close()
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_published_base_reference_builds_offline_from_the_stand_in(
    published: Built, case: Case
) -> None:
    text = published.outputs[case.name]
    served = [
        line
        for line in text.splitlines()
        if "offline stand-in serves" in line and not line.startswith("note:")
    ]
    assert len(served) == 1, text
    assert case.base in served[0]
    if not case.local_image:
        assert (
            served[0].startswith(f"Cannot pull {case.base} (")
            and "building with the local image" in served[0]
        )
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    versioned = [name for name in ("python3.8", "python3.7") if name in " ".join([*case.runs, case.entry])]
    assert len(notes) == (1 if versioned else 0), text
    for name in versioned:
        assert name in notes[0] and "serves with its own Python 3.11" in notes[0]
    package = json.loads(
        (
            published.root / "packages" / f"123456789012-{case.name.upper()}_CODE-1.0" / "package.json"
        ).read_text()
    )
    (asset,) = package["nodePackage"]["assets"]
    assert (published.root / "assets" / asset["implementations"][0]["assetUri"]).is_file()


@pytest.fixture(scope="module")
def runs(published: Built) -> Iterator[dict[str, dict[str, object]]]:
    state = public_tmp_dir("pe-e2e-published-state-")
    seen: dict[str, dict[str, object]] = {}
    try:
        for name in RUN_CASES:
            appliance = Appliance(
                published.root,
                graph=published.root / "graphs" / name / "graph.json",
                device=f"published-{name}",
                state_dir=state,
                quiet=True,
            )
            with appliance:
                assert appliance.wait_for_frames(FRAMES, timeout=300)
                frame = np.array(appliance.hdmi.last_frame, copy=True)
                metrics = appliance.metrics().to_json()
                app_log = (appliance.logs_path(NODE) / "app.log").read_text()
                console = appliance.logs(NODE)
            seen[name] = {"frame": frame, "metrics": metrics, "app_log": app_log, "console": console}
        yield seen
    finally:
        shutil.rmtree(state, ignore_errors=True)


@pytest.mark.parametrize("name", RUN_CASES)
def test_entry_python3_8_and_python3_7_run_on_the_stand_ins_python(
    runs: dict[str, dict[str, object]], name: str
) -> None:
    seen = runs[name]
    entry = next(case.entry for case in CASES if case.name == name)
    (report,) = re.findall(r"^published-shape (\{.*\})$", str(seen["console"]), re.M)
    found = json.loads(report)
    assert found["executable"].endswith("/" + entry)
    assert found["version"][:1] == [3]
    assert "first frame on Python 3." in str(seen["app_log"])
    assert "Exception during processing loop" not in str(seen["app_log"])
    node = seen["metrics"]["nodes"][NODE]  # type: ignore[index]
    assert node["frames_out"] >= FRAMES and node["restarts"] == 0


@pytest.mark.parametrize("name", RUN_CASES)
def test_overlays_outside_the_frame_are_drawn_clamped_and_noted_once(
    runs: dict[str, dict[str, object]], name: str
) -> None:
    seen = runs[name]
    frame = seen["frame"]
    assert isinstance(frame, np.ndarray) and frame.shape == (1080, 1920, 3)
    # The box (-0.04, 0.14, 2.06, 1.65) is drawn as (0, 0.14, 1, 1): its outline runs along three edges.
    assert frame[600, 0].tolist() == GREEN and frame[600, 1919].tolist() == GREEN
    assert frame[1079, 960].tolist() == GREEN and frame[152, 960].tolist() == GREEN
    assert frame[100, 960].tolist() == BLACK and frame[600, 960].tolist() == BLACK
    notes = [line for line in str(seen["console"]).splitlines() if "panoramasdk: add_" in line]
    assert len(notes) == 2, notes  # one for add_rect, one for add_label, over every frame
    assert any("add_rect(" in note and "clamped" in note for note in notes)
    assert any("add_label(" in note and "clamped" in note for note in notes)


def test_a_reference_the_stand_in_does_not_carry_names_the_command_that_would(published: Built) -> None:
    from emulator.builder import build_container
    from emulator.project import Project

    case = Case("unknown", f"{REPOSITORY}:0.9.9-never-published", (), "python3", True)
    folder = write_package(published.root, case)
    with pytest.raises(BuildError) as caught:
        build_container(Project(published.root), "pe_published_unknown", folder, local_image=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.endswith(
        f"to build FROM the offline stand-in instead: panorama-emulator base-image --tag {case.base}"
    )
