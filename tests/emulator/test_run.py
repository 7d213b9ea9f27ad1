"""emulator.run: one run of an application from ApplianceOptions, and the summary it writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emulator import ApplianceOptions
from emulator.errors import DeviceError
from emulator.run import default_mode, run_application

NODE = "boot_counter_node"
SUMMARY_KEYS = {
    "app", "aws", "boots", "cameras", "device", "dropped_frames", "emulated", "end", "exit_codes", "frames",
    "mode", "models", "nodes", "paths", "restarts", "seconds",
}  # fmt: skip
NODE_KEYS = {
    "arch", "dropped", "emulated", "exit_codes", "fps", "frames_in", "frames_out", "latency_ms",
    "last_cause", "model_calls", "restarts",
}  # fmt: skip


def test_the_default_mode_is_lockstep_for_frames_and_realtime_otherwise() -> None:
    assert default_mode(10) == "lockstep"
    assert default_mode(None) == "realtime"


@pytest.mark.parametrize(
    ("frames", "duration", "said"),
    [
        (1, 1.0, "not both"),
        (0, None, "at least 1"),
        (None, -1.0, "seconds >= 0"),
        (None, float("nan"), ">= 0"),
    ],
)
def test_bad_lengths_are_refused_before_anything_runs(
    frames: int | None, duration: float | None, said: str, tmp_path: Path
) -> None:
    with pytest.raises(DeviceError, match=said):
        run_application(tmp_path / "no-project", ApplianceOptions(), frames=frames, duration=duration)
    assert not (tmp_path / "no-project").exists()


def test_a_run_of_the_options_writes_the_summary_of_its_records(
    boot_counter_project: Path, tmp_path: Path
) -> None:
    options = ApplianceOptions(device="run-test", state_dir=tmp_path / "state", mode="realtime", quiet=True)
    summary_file = tmp_path / "summary.json"
    summary = run_application(boot_counter_project, options, duration=0.5, summary_json=summary_file)
    assert json.loads(summary_file.read_text()) == summary
    assert set(summary) == SUMMARY_KEYS
    assert (summary["device"], summary["mode"], summary["boots"]) == ("run-test", "realtime", 1)
    nodes = summary["nodes"]
    assert isinstance(nodes, dict) and set(nodes) == {NODE} and set(nodes[NODE]) == NODE_KEYS
    exit_codes = summary["exit_codes"]
    assert isinstance(exit_codes, dict) and len(exit_codes[NODE]) == 1 and summary["restarts"] == 0
    assert summary["end"] == {"by": "duration", "outputs": 0, "note": "stopped after 0.5 s"}
    again = run_application(boot_counter_project, options, duration=0)
    assert again["boots"] == 2
