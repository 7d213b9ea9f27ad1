"""`panorama-emulator shell` joins the network namespace of the node's running sandbox.

Real bwrap, slirp4netns and nsenter, as root and (when the suite runs as root) as the ordinary test account:
an app serves HTTP on its own loopback; a shell in its node gets the answer from ``localhost``, and does not
reach a port the test listens on at the host's loopback.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from _appliance_helpers import build_test_apps, public_tmp_dir
from _shell_probe import probe

from emulator.device.netstack import check_network_stack
from emulator.errors import SandboxError

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]


@pytest.fixture(scope="module")
def test_apps_asset() -> Iterator[Path]:
    try:
        check_network_stack()
    except SandboxError as error:
        pytest.skip(f"missing prerequisite: {error}")
    base = public_tmp_dir("pe-shell-apps-")
    try:
        yield build_test_apps(base / "build")
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def base() -> Iterator[Path]:
    path = public_tmp_dir("pe-shell-net-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def check(report: dict[str, object]) -> None:
    assert report["code"] == 0, report["stderr"]
    assert report["app"] == "hello from shell-net"
    assert str(report["host"]).startswith("refused"), report


@pytest.mark.parametrize("network", ["app", "none"])
def test_the_shell_reaches_the_app_on_its_loopback_and_not_the_host(
    test_apps_asset: Path, base: Path, blocked_port: int, network: str
) -> None:
    check(probe(test_apps_asset, base, blocked_port, network))


def test_the_shell_shares_the_host_network_when_the_app_does(
    test_apps_asset: Path, base: Path, blocked_port: int
) -> None:
    report = probe(test_apps_asset, base, blocked_port, "host")
    assert report["code"] == 0, report["stderr"]
    assert report["host"] == "reached"


def test_the_same_as_an_ordinary_user(
    test_apps_asset: Path, base: Path, blocked_port: int, test_user: pwd.struct_passwd
) -> None:
    here = Path(__file__).resolve().parent
    readable = subprocess.run(["runuser", "-u", test_user.pw_name, "--", "test", "-x", sys.executable])
    if readable.returncode != 0:
        pytest.skip(f"the test user cannot run {sys.executable}: make the venv readable")
    os.chown(base, test_user.pw_uid, test_user.pw_gid)
    args = json.dumps({"asset": str(test_apps_asset), "base": str(base), "blocked": blocked_port,
                       "network": "app"})  # fmt: skip
    env = {"PATH": os.environ["PATH"], "HOME": test_user.pw_dir}
    result = subprocess.run(
        ["runuser", "-u", test_user.pw_name, "--", sys.executable, str(here / "_shell_probe.py"), args],
        capture_output=True, text=True, env=env, check=False, cwd=base,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["uid"] == test_user.pw_uid
    check(report)
