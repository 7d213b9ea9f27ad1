"""`panorama-emulator run` from the command line, on the boot-counter sample built by the build stage."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "panorama-emulator")
DEVICE = "cli-device"
NODE = "boot_counter_node"


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("cli-state")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CLI, "run", *args], capture_output=True, text=True, cwd=cwd, timeout=900, check=False
    )


def boot_reports(output: str) -> list[dict[str, object]]:
    return [json.loads(found) for found in re.findall(rf"^{NODE} \| boot-counter: (\{{.*\}})$", output, re.M)]


def test_storage_survives_from_one_run_to_the_next(boot_counter_project: Path, state_dir: Path) -> None:
    common = ["--project", str(boot_counter_project), "--state-dir", str(state_dir), "--device", DEVICE]
    first = run(*common, "--duration", "2")
    assert first.returncode == 0, first.stderr
    summary_file = state_dir / "summary.json"
    second = run(*common, "--duration", "2", "--summary-json", str(summary_file))
    assert second.returncode == 0, second.stderr
    (before,) = boot_reports(first.stdout)
    (after,) = boot_reports(second.stdout)
    assert after["boot"] == int(before["boot"]) + 1  # type: ignore[call-overload]
    assert before["previous_scratch_file_present"] is after["previous_scratch_file_present"] is False
    assert after["root_dir"] == after["code_dir"] == "read-only file system"
    assert after["hostname"] == DEVICE
    assert f"{NODE} | boot-counter: stopping" in second.stdout

    summary = json.loads(summary_file.read_text())
    assert summary["boots"] >= 2 and summary["device"] == DEVICE and summary["app"] == "boot-counter"
    assert summary["frames"] == 0 and summary["restarts"] == 0 and summary["dropped_frames"] == 0
    assert summary["exit_codes"] == {NODE: [0]}
    assert set(summary["nodes"][NODE]) >= {
        "fps",
        "latency_ms",
        "frames_in",
        "dropped",
        "restarts",
        "exit_codes",
    }
    assert summary["seconds"] >= 2
    storage = Path(summary["paths"]["storage"])
    assert (storage / "boot_count").read_text() == f"{after['boot']}\n"
    logs = Path(summary["paths"]["logs"][NODE])
    assert "boot-counter: stopping" in (logs / "console_output").read_text()
    assert (logs / "app.log").is_file()
    assert summary["paths"]["last_hdmi_frame"] is None


def _copy(project: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "boot-counter"
    shutil.copytree(project, copy)
    return copy


def test_a_bad_graph_is_one_line_and_a_failure(
    boot_counter_project: Path, state_dir: Path, tmp_path: Path
) -> None:
    project = _copy(boot_counter_project, tmp_path)
    graph = project / "graphs" / "boot-counter" / "graph.json"
    document = json.loads(graph.read_text())
    document["nodeGraph"]["edges"] = "none"
    graph.write_text(json.dumps(document))
    result = run("--project", str(project), "--state-dir", str(state_dir), "--duration", "1")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "graph.json" in lines[0] and "/nodeGraph/edges" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_missing_graph_file_is_one_line(boot_counter_project: Path, state_dir: Path) -> None:
    result = run(
        "--project", str(boot_counter_project), "--state-dir", str(state_dir), "--graph", "nope.json"
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1 and "nope.json" in result.stderr


def test_an_app_that_crashes_at_start_fails_the_run(
    boot_counter_project: Path, state_dir: Path, tmp_path: Path
) -> None:
    project = _copy(boot_counter_project, tmp_path)
    entry = {"path": "python3", "name": "/panorama/missing.py"}
    descriptor = {"runtimeDescriptor": {"envelopeVersion": "2021-01-01", "entry": entry}}
    raw = json.dumps(descriptor, indent=4).encode()
    name = hashlib.sha256(raw).hexdigest() + ".json"
    (project / "assets" / name).write_bytes(raw)
    package = project / "packages" / "123456789012-BOOT_COUNTER-1.0" / "package.json"
    document = json.loads(package.read_text())
    document["nodePackage"]["assets"][0]["implementations"][0]["descriptorUri"] = name
    package.write_text(json.dumps(document, indent=4))
    result = run("--project", str(project), "--state-dir", str(state_dir), "--duration", "60")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert f"node {NODE}: the app exited with status 2 before its first frame" in errors[0]
    assert "missing.py" in errors[0]


def test_frames_need_an_hdmi_output(boot_counter_project: Path, state_dir: Path) -> None:
    result = run("--project", str(boot_counter_project), "--state-dir", str(state_dir), "--frames", "1")
    assert result.returncode == 1
    assert "no HDMI output node" in result.stderr


def test_run_build_builds_the_missing_asset_first(state_dir: Path, tmp_path: Path) -> None:
    sample = Path(__file__).resolve().parents[2] / "sample-apps" / "boot-counter"
    project = tmp_path / "fresh"
    shutil.copytree(sample, project)
    result = run("--project", str(project), "--state-dir", str(state_dir), "--device", "build-device",
                 "--duration", "1", "--build")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "building the missing asset boot_counter_code" in result.stderr
    assert list((project / "assets").glob("*.tar.gz"))
    assert boot_reports(result.stdout)[0]["boot"] == 1
