"""The pytest plugin, used as a Panorama developer would: pytest runs (pytester, in subprocesses) over
sample projects built with the real engine and booted in real sandboxes. Also runs every sample app's
own smoke tests (sample-apps/<app>/tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLES_WITH_TESTS = sorted(
    path.parent.parent.name for path in (REPO_ROOT / "sample-apps").glob("*/tests/test_*.py")
)
BUILT = {
    "boot-counter": "boot_counter_project",
    "people-counter": "people_counter_project",
    "people-detector": "people_detector_project",
}


def _link_or_copy(source: str, dest: str) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copy2(source, dest)


def copy_project(source: Path, dest: Path) -> Path:
    """A copy of a project (large files hard-linked when possible), without its tests."""
    shutil.copytree(
        source, dest, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("tests", "__pycache__")
    )
    return dest


@pytest.fixture(scope="module")
def plugin_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One device state folder for the pytest runs below, so root filesystems are unpacked once."""
    path = tmp_path_factory.mktemp("plugin-state")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", *args, timeout=900)


@pytest.mark.parametrize("sample", SAMPLES_WITH_TESTS)
def test_sample_app_smoke_tests_pass(
    sample: str, request: pytest.FixtureRequest, tmp_path: Path, plugin_state: Path
) -> None:
    """Each sample's tests, run from a copy of the sample as from its own repository."""
    built = request.getfixturevalue(BUILT[sample]) if sample in BUILT else REPO_ROOT / "sample-apps" / sample
    project = copy_project(built, tmp_path / sample)
    shutil.copytree(REPO_ROOT / "sample-apps" / sample / "tests", project / "tests")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "tests",
            f"--panorama-state-dir={plugin_state}",
        ],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout and "error" not in result.stdout


def test_builds_missing_assets_then_boots(pytester: pytest.Pytester, plugin_state: Path) -> None:
    project = copy_project(REPO_ROOT / "sample-apps" / "boot-counter", pytester.path / "app")
    assert not list((project / "assets").glob("*.tar.gz"))
    (project / "tests").mkdir()
    (project / "tests" / "test_boot.py").write_text(
        "def test_boots(panorama_app):\n"
        "    panorama_app.wait_until(lambda: panorama_app.storage('boot_count').exists())\n"
        "    assert panorama_app.storage('boot_count').read_text() == '1\\n'\n"
        "    assert panorama_app.boots == 1\n"
    )
    result = run(pytester, "app/tests", f"--panorama-state-dir={plugin_state}")
    result.assert_outcomes(passed=1)
    assert len(list((project / "assets").glob("*.tar.gz"))) == 1


def test_options_and_fixtures(
    pytester: pytest.Pytester, people_counter_project: Path, plugin_state: Path
) -> None:
    pytester.makepyfile(
        test_options="""
        import pytest

        def test_options_reach_the_appliance(panorama_app, panorama_project_dir):
            appliance = panorama_app.appliance
            assert appliance.cameras == {"camera_node": "synthetic:640x360@15"}
            assert appliance.mode == "realtime"
            assert appliance.device == "smoke"
            assert panorama_project_dir.name == "people-counter"
            assert panorama_app.run_frames(3) >= 3
            assert panorama_app.storage("a/b.txt") == panorama_app.storage_path / "a" / "b.txt"
            with pytest.raises(ValueError):
                panorama_app.storage("../outside")
        """
    )
    result = run(
        pytester,
        f"--panorama-project={people_counter_project}",
        "--panorama-camera=camera_node=synthetic:640x360@15",
        "--panorama-mode=realtime",
        "--panorama-device=smoke",
        f"--panorama-state-dir={plugin_state}",
    )
    result.assert_outcomes(passed=1)


def test_ini_settings_and_overridden_fixtures(
    pytester: pytest.Pytester, boot_counter_project: Path, plugin_state: Path
) -> None:
    pytester.makeini(
        f"""
        [pytest]
        panorama_project = {boot_counter_project}
        panorama_state_dir = {plugin_state}
        panorama_device = from-ini
        panorama_aws = local
        """
    )
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def panorama_fresh_storage():
            return False
        """
    )
    pytester.makepyfile(
        test_kept="""
        def count(app):
            path = app.storage("boot_count")
            return int(path.read_text()) if path.exists() else 0

        def test_first(panorama_app):
            assert panorama_app.appliance.device == "from-ini"
            assert panorama_app.appliance.aws == "local"
            panorama_app.wait_until(lambda: count(panorama_app) >= 1)

        def test_second_sees_the_first_boots(panorama_app):
            panorama_app.wait_until(lambda: count(panorama_app) >= 2, timeout=30)
        """
    )
    run(pytester).assert_outcomes(passed=2)


def test_a_failed_test_reports_the_app_output(
    pytester: pytest.Pytester, boot_counter_project: Path, plugin_state: Path
) -> None:
    pytester.makepyfile(
        test_fails="""
        def test_fails(panorama_app):
            panorama_app.wait_until(lambda: "boot-counter: {" in panorama_app.logs())
            assert False, "on purpose"
        """
    )
    result = run(
        pytester, f"--panorama-project={boot_counter_project}", f"--panorama-state-dir={plugin_state}"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*panorama boot_counter_node console_output*", 'boot-counter: {"boot": 1*'])


def test_waiting_too_long_is_a_clear_failure(
    pytester: pytest.Pytester, people_counter_project: Path, plugin_state: Path
) -> None:
    pytester.makepyfile(
        test_wait="""
        import pytest
        from emulator.pytest_plugin import PanoramaTimeout

        def test_paused_camera_gives_no_frames(panorama_app):
            panorama_app.run_frames(1)
            panorama_app.pause_camera("camera_node")
            # A frame the app took before the pause may still reach the HDMI output; no other does.
            with pytest.raises(PanoramaTimeout, match="received [01] of 1000 frames in 1 s"):
                panorama_app.run_frames(1000, timeout=1)
            panorama_app.resume_camera("camera_node")
            panorama_app.run_frames(2)
        """
    )
    result = run(
        pytester,
        f"--panorama-project={people_counter_project}",
        f"--panorama-state-dir={plugin_state}",
        "--panorama-mode=realtime",
    )
    result.assert_outcomes(passed=1)


def test_state_is_removed_unless_kept(pytester: pytest.Pytester, boot_counter_project: Path) -> None:
    record = pytester.path / "state-path.txt"
    pytester.makepyfile(
        test_state=f"""
        def test_boot(panorama_app, panorama_state_dir):
            open({str(record)!r}, "w").write(str(panorama_state_dir))
            panorama_app.wait_until(lambda: panorama_app.storage("boot_count").exists())
        """
    )
    run(pytester, f"--panorama-project={boot_counter_project}").assert_outcomes(passed=1)
    assert not Path(record.read_text()).exists()
    kept = run(pytester, f"--panorama-project={boot_counter_project}", "--panorama-keep-state")
    kept.assert_outcomes(passed=1)
    state = Path(record.read_text())
    try:
        assert (state / "devices" / "pytest").is_dir()
        kept.stdout.fnmatch_lines([f"panorama-emulator device state kept in {state}"])
    finally:
        shutil.rmtree(state, ignore_errors=True)


def test_usage_errors(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_none="def test_needs_a_project(panorama_app):\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*no Panorama project (a folder with graphs/ and packages/) above*"])
    result = run(pytester, "--panorama-camera=nodeonly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--panorama-camera expects NODE=SOURCE, found 'nodeonly'*"])
