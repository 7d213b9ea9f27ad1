"""ApplianceOptions: one checked, frozen record of how an appliance runs, built from keywords too."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from emulator import ApplianceOptions
from emulator.device.limits import Limits
from emulator.device.supervisor import Backoff
from emulator.errors import DeviceError


def test_defaults_are_an_appliances_defaults() -> None:
    options = ApplianceOptions()
    assert (options.device, options.mode, options.network, options.aws) == (
        "default",
        "lockstep",
        "app",
        "none",
    )
    assert (options.grace_period, options.quiet_timeout, options.inbound_host) == (3.0, 10.0, "127.0.0.1")
    assert options.backoff == Backoff()
    assert options.limits == Limits(memory_mib=2048, pids=512)
    assert options.cameras == {} and options.quiet is False


def test_paths_become_paths_and_cameras_are_copied() -> None:
    cameras = {"camera_node": "synthetic"}
    options = ApplianceOptions(state_dir="state", hdmi_out="out", cameras=cameras)  # type: ignore[arg-type]
    cameras["camera_node"] = "video.mp4"
    assert options.state_dir == Path("state") and options.hdmi_out == Path("out")
    assert options.cameras == {"camera_node": "synthetic"}


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        ApplianceOptions().mode = "realtime"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("mode", "fast", "mode must be lockstep or realtime"),
        ("network", "bridge", "network must be app, host or none"),
        ("aws", "cloud", "aws must be none, host or local"),
        ("quiet_timeout", -1.0, "quiet_timeout must be a number of seconds"),
        ("quiet_timeout", float("nan"), "quiet_timeout must be a number of seconds"),
        ("grace_period", float("inf"), "grace_period must be a number of seconds"),
    ],
)
def test_bad_values_fail_where_given(field: str, value: object, said: str) -> None:
    with pytest.raises(DeviceError, match=said):
        ApplianceOptions(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(DeviceError, match=said):
        ApplianceOptions().changed(**{field: value})


def test_changed_copies_and_checks_names() -> None:
    options = ApplianceOptions(device="dev")
    quiet = options.changed(quiet=True, graph="graphs/app/graph.json")
    assert quiet.quiet and quiet.device == "dev" and quiet.graph == Path("graphs/app/graph.json")
    assert not options.quiet
    assert options.changed() is options
    with pytest.raises(TypeError):
        options.changed(colour="blue")


def test_negative_limits_fail_where_given() -> None:
    with pytest.raises(DeviceError, match="memory_mib must be 0"):
        Limits(memory_mib=-1)


def test_run_serve_and_dev_share_the_network_and_hdmi_flags(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from emulator.cli import main

    for command in ("run", "serve", "dev"):
        result = CliRunner().invoke(main, [command, "--network", "bridge"])
        assert result.exit_code == 2, (command, result.output)
        assert "'bridge' is not one of 'app', 'host', 'none'" in result.output
        lone = CliRunner().invoke(main, [command, "--project", str(tmp_path), "--every", "2"])
        assert lone.exit_code == 1, (command, lone.output)
        assert "needs --hdmi-out" in lone.output
