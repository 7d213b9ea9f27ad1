"""`panorama-emulator serve` as a real process, and the commands that talk to it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from _api_helpers import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

CLI = [str(Path(sys.executable).with_name("panorama-emulator"))]


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_serve_refuses_a_public_address_without_a_token() -> None:
    env = {k: v for k, v in os.environ.items() if k != "PANORAMA_EMULATOR_TOKEN"}
    result = subprocess.run(
        [*CLI, "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert "refusing to listen on 0.0.0.0 without a token" in line


@pytest.fixture(scope="module")
def served(boot_counter_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """`serve` running boot-counter with a token on a free port: (base URL, pid)."""
    state = tmp_path_factory.mktemp("serve-state")
    process = subprocess.Popen(
        [
            *CLI,
            "serve",
            "--project",
            str(boot_counter_project),
            "--port",
            "0",
            "--state-dir",
            str(state),
            "--device",
            "served",
            "--token",
            "t0ken",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    url = None
    for line in process.stderr:
        found = re.search(r"device API and console: (http://\S+)/", line)
        if found:
            url = found.group(1)
            break
    assert url is not None, "serve did not say where it listens"
    yield url, process.pid
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    shutil.rmtree(state, ignore_errors=True)


def test_served_api_needs_the_token(served: tuple[str, int]) -> None:
    url, _ = served
    assert httpx.get(f"{url}/api/status").status_code == 401
    status = httpx.get(f"{url}/api/status", headers={"Authorization": "Bearer t0ken"}).json()
    assert (status["device"], status["state"], status["app"]["name"]) == ("served", "running", "boot-counter")
    assert httpx.get(f"{url}/").status_code == 200


def test_client_commands_against_serve(served: tuple[str, int]) -> None:
    url, _ = served
    env = {"PANORAMA_EMULATOR_URL": url, "PANORAMA_EMULATOR_TOKEN": "t0ken"}
    status = cli("status", env=env)
    assert status.returncode == 0, status.stderr
    assert "device served: running" in status.stdout and "node boot_counter_node: running" in status.stdout
    boots = int(re.search(r"boots (\d+)", status.stdout).group(1))  # type: ignore[union-attr]
    assert cli("reboot", env=env).stdout == f"rebooted: boot {boots + 1} of device served\n"
    assert cli("power-cut", env=env).stdout == f"power cut, booted again: boot {boots + 2} of device served\n"
    logs = wait_for(
        lambda: (r := cli("logs", "boot_counter_node", env=env)).stdout.count("boot-counter: {") >= 3 and r
    )
    assert logs.returncode == 0
    wrong = cli("status", "--token", "nope", env={"PANORAMA_EMULATOR_URL": url})
    assert wrong.returncode == 1 and len(wrong.stderr.strip().splitlines()) == 1 and "token" in wrong.stderr


def test_logs_follow_prints_new_lines(served: tuple[str, int]) -> None:
    url, _ = served
    host, port = url.removeprefix("http://").rsplit(":", 1)
    follower = subprocess.Popen(
        [*CLI, "logs", "--follow", "-n", "1", "--host", host, "--port", port, "--token", "t0ken"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert follower.stdout is not None
        # The last line already written: the follower is subscribed, what comes next is new.
        assert follower.stdout.readline().strip()
        env = {"PANORAMA_EMULATOR_URL": url, "PANORAMA_EMULATOR_TOKEN": "t0ken"}
        assert cli("reboot", env=env).returncode == 0
        seen = [follower.stdout.readline() for _ in range(2)]
        assert seen[0].startswith("boot-counter: stopping"), seen
        assert seen[1].startswith("boot-counter: {"), seen  # the next boot's report
    finally:
        follower.terminate()
        follower.wait(timeout=30)


def test_serve_stops_cleanly_and_takes_the_app_down(served: tuple[str, int]) -> None:
    url, pid = served
    status = httpx.get(f"{url}/api/status", headers={"Authorization": "Bearer t0ken"}).json()
    app_pid = status["nodes"][0]["pid"]
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not _alive(pid) or _zombie(pid), timeout=60)
    wait_for(lambda: not _alive(app_pid), timeout=30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1].startswith("Z")
    except OSError:
        return True
