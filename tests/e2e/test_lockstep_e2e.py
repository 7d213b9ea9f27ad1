"""Lockstep mode is deterministic: the same app on the same camera shows the same HDMI frames on every boot.

The probe in ``lockstep`` mode draws, for ``LOCKSTEP_FRAMES`` frames, a picture that depends on every frame
it has seen so far (a running average, and a rectangle where it is brightest), then stops taking frames, so
that the HDMI output's last frame is frame number ``LOCKSTEP_FRAMES``. Three boots (a first, a reboot, and a
fresh appliance on the same device) must show it pixel for pixel the same.

A run of N frames ends at a quiet point: the probe in ``counted`` mode labels frame k ``probe k`` and saves
``frames_done`` after each put; after ``wait_for_frames(N)``, ``run --frames N`` or ``run_frames`` the HDMI
output's last frame is frame N and storage says N. The ``lockstep`` probe, which never asks for a frame after
its last, shows the bounded wait instead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from _e2e_helpers import (
    CODE_NODE,
    DEVICE,
    LOCKSTEP_FRAMES,
    probe_appliance,
    probe_graph,
    reports,
    wait_for,
)

from emulator import Appliance

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "panorama-emulator")


def frame_n(appliance: Appliance, stopped_before: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Wait for the probe to stop after its frames; the HDMI frame it left, and its report."""
    assert appliance.wait_for_frames(LOCKSTEP_FRAMES, timeout=180)
    stopped = wait_for(
        lambda: len(found := reports(appliance.logs(CODE_NODE), "stopped")) > stopped_before and found,
        "the probe to stop",
    )
    assert appliance.metrics().frames_out == LOCKSTEP_FRAMES  # it put exactly that many, then stopped
    point = appliance.quiet_point
    assert point is not None and not point.quiet and point.busy == (CODE_NODE,)  # it never asked again
    frame = appliance.hdmi.last_frame
    assert frame is not None
    return np.array(frame, copy=True), stopped[-1]


def test_the_same_app_and_camera_give_identical_frames_on_every_boot(
    sdk_probe_project: Path, e2e_state_dir: Path
) -> None:
    first = probe_appliance(sdk_probe_project, e2e_state_dir, "lockstep", quiet_timeout=0.5)
    known = len(reports(first.logs(CODE_NODE), "stopped"))
    with first:
        frame_1, report_1 = frame_n(first, known)
        boot_1 = first.boots
        first.reboot()
        frame_2, report_2 = frame_n(first, known + 1)
        labels = first.hdmi.labels()
    second = probe_appliance(sdk_probe_project, e2e_state_dir, "lockstep", quiet_timeout=0.5)
    with second:
        frame_3, report_3 = frame_n(second, known + 2)
        assert second.boots == boot_1 + 2
    assert report_1["frames"] == report_2["frames"] == report_3["frames"] == LOCKSTEP_FRAMES
    assert report_1["checksum"] == report_2["checksum"] == report_3["checksum"]
    assert report_1["checksum"] != report_1["first_checksum"]  # the scene moved: frame N is not frame 1
    # What was compared is a real picture: camera pixels plus the app's drawing and overlays.
    assert frame_1.shape == (1080, 1920, 3) and frame_1.std() > 10
    assert f"frame {LOCKSTEP_FRAMES - 1}" in labels and f"frame {LOCKSTEP_FRAMES}" not in labels
    assert np.array_equal(frame_1, frame_2), f"{int((frame_1 != frame_2).any(axis=2).sum())} pixels differ"
    assert np.array_equal(frame_1, frame_3), f"{int((frame_1 != frame_3).any(axis=2).sum())} pixels differ"


def run_counted(project: Path, state_dir: Path, frames: int, out: Path) -> dict[str, Any]:
    """``panorama-emulator run --frames N`` of the counted probe; its summary."""
    summary = out / "summary.json"
    done = subprocess.run(
        [
            CLI, "run", "--project", str(project), "--graph", str(probe_graph(project, "counted")),
            "--state-dir", str(state_dir), "--device", DEVICE, "--frames", str(frames),
            "--mode", "lockstep", "--hdmi-out", str(out / "hdmi"), "--summary-json", str(summary),
        ],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(summary.read_text())
    return result


def frames_done(appliance_or_summary: Appliance | dict[str, Any]) -> str:
    """What the counted probe last saved in storage."""
    if isinstance(appliance_or_summary, Appliance):
        storage = appliance_or_summary.storage_path
    else:
        storage = Path(appliance_or_summary["paths"]["storage"])
    return (storage / "frames_done").read_text()


def test_a_lockstep_wait_for_n_frames_ends_on_frame_n_every_time(
    sdk_probe_project: Path, e2e_state_dir: Path, tmp_path: Path
) -> None:
    last = 12
    boots: list[list[np.ndarray]] = []
    for _ in range(2):
        screens: list[np.ndarray] = []
        with probe_appliance(sdk_probe_project, e2e_state_dir, "counted") as appliance:
            for n in range(1, last + 1):
                assert appliance.wait_for_frames(n, timeout=180)
                point = appliance.quiet_point
                assert point is not None and point.quiet and point.outputs == n, point
                labels = appliance.hdmi.labels()
                assert f"probe {n}" in labels and f"probe {n + 1}" not in labels  # the app's own count
                assert frames_done(appliance) == str(n)
                screens.append(np.array(appliance.hdmi.last_frame, copy=True))
        boots.append(screens)
    for n, (one, two) in enumerate(zip(*boots, strict=True), start=1):
        assert np.array_equal(one, two), f"frame {n}: {int((one != two).any(axis=2).sum())} pixels differ"
    assert not np.array_equal(boots[0][0], boots[0][-1])  # the scene moved

    # `run --frames N` leaves frame N on HDMI: the screen the app labelled "probe N" above.
    for n in (1, 5, last):
        for attempt in range(2):
            out = tmp_path / f"run-{n}-{attempt}"
            summary = run_counted(sdk_probe_project, e2e_state_dir, n, out)
            assert summary["frames"] == n and summary["end"]["quiet"] is True, summary["end"]
            assert Path(summary["paths"]["last_hdmi_frame"]) == out / "hdmi" / "last.png"
            shown = cv2.imread(str(out / "hdmi" / "last.png"))
            assert shown is not None
            assert np.array_equal(shown, boots[0][n - 1]), f"run --frames {n}: last.png is not frame {n}"


def test_storage_written_after_each_put_says_n_after_run_frames_n(
    sdk_probe_project: Path, e2e_state_dir: Path, tmp_path: Path
) -> None:
    seen = []
    for attempt in range(2):
        for n in (1, 8, 13):
            summary = run_counted(sdk_probe_project, e2e_state_dir, n, tmp_path / f"run-{n}-{attempt}")
            seen.append((n, frames_done(summary), summary["frames"]))
    assert seen == [(n, str(n), n) for _ in range(2) for n in (1, 8, 13)]


def test_an_app_that_never_asks_again_ends_after_the_stated_wait(
    sdk_probe_project: Path, e2e_state_dir: Path, tmp_path: Path
) -> None:
    summary_file = tmp_path / "summary.json"
    done = subprocess.run(
        [
            CLI, "run", "--project", str(sdk_probe_project),
            "--graph", str(probe_graph(sdk_probe_project, "lockstep")), "--state-dir", str(e2e_state_dir),
            "--device", DEVICE, "--frames", str(LOCKSTEP_FRAMES), "--quiet-timeout", "1.5",
            "--summary-json", str(summary_file),
        ],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    end = json.loads(summary_file.read_text())["end"]
    assert end["by"] == "frames" and end["quiet"] is False and end["busy"] == [CODE_NODE]
    assert end["outputs"] == LOCKSTEP_FRAMES and end["quiet_timeout_s"] == 1.5 and end["waited_s"] >= 1.5
    note = f"{CODE_NODE} did not come back to get() within 1.5 s after frame {LOCKSTEP_FRAMES}"
    assert end["note"].startswith(note)
    assert note in " ".join(done.stderr.split())


def test_the_pytest_plugin_run_frames_returns_once_the_app_is_quiet(
    pytester: pytest.Pytester, sdk_probe_project: Path, e2e_state_dir: Path
) -> None:
    counted, stops = probe_graph(sdk_probe_project, "counted"), probe_graph(sdk_probe_project, "lockstep")
    pytester.makepyfile(
        test_counted=f"""
        import pytest

        @pytest.fixture
        def panorama_graph():
            return {str(counted)!r}

        def test_storage_says_n_after_run_frames(panorama_app):
            done = panorama_app.storage("frames_done")
            for total, more in ((1, 1), (8, 7), (13, 5)):
                assert panorama_app.run_frames(more) == total
                assert done.read_text() == str(total)
            labels = panorama_app.hdmi.labels()
            assert "probe 13" in labels and "probe 14" not in labels
        """,
        test_stops=f"""
        import pytest
        from emulator.pytest_plugin import PanoramaNotQuiet

        @pytest.fixture
        def panorama_graph():
            return {str(stops)!r}

        @pytest.fixture
        def panorama_appliance_options():
            return {{"quiet_timeout": 0.5}}

        def test_an_app_that_never_asks_again_is_a_warning(panorama_app):
            with pytest.warns(PanoramaNotQuiet, match="did not come back to get"):
                assert panorama_app.run_frames({LOCKSTEP_FRAMES}) == {LOCKSTEP_FRAMES}
        """,
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-q", f"--panorama-project={sdk_probe_project}",
        f"--panorama-state-dir={e2e_state_dir}", f"--panorama-device={DEVICE}", timeout=900,
    )  # fmt: skip
    result.assert_outcomes(passed=2)
