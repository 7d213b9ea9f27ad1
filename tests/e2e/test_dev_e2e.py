"""`panorama-emulator dev` and `shell` on a small app, with the real build stage and real sandboxes.

One development session runs for the module: the tests edit the app's sources in turn (a new version, a
syntax error, a fix, requirements.txt) and look at what the loop did, then a `shell` runs in the node. The
CLI test runs `dev` and `shell` as commands on a copy of the built project.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from _e2e_helpers import APPS_DIR, public_tmp_dir, wait_for

from emulator.dev import DevSession

pytestmark = [pytest.mark.sandbox, pytest.mark.docker, pytest.mark.slow]

CLI = str(Path(sys.executable).parent / "panorama-emulator")
PACKAGE = "123456789012-DEV_LOOP-1.0"
NODE = "code_node"


@dataclass
class Dev:
    """The running session and what it printed."""

    session: DevSession
    project: Path
    state_dir: Path
    pristine: Path
    lines: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)

    @property
    def app(self) -> Path:
        return self.project / "packages" / PACKAGE / "src" / "app.py"

    @property
    def requirements(self) -> Path:
        return self.project / "packages" / PACKAGE / "requirements.txt"

    def kinds(self) -> list[str]:
        return [event.kind for event in self.session.events]

    def assets(self) -> set[str]:
        return {path.name for path in (self.project / "assets").glob("*.tar.gz")}


@pytest.fixture(scope="module")
def dev() -> Iterator[Dev]:
    from rich.console import Console

    try:
        from emulator.builder import ensure_base_image

        ensure_base_image(console=Console(file=io.StringIO()))
    except Exception as error:  # no engine here
        pytest.skip(f"cannot build the dev-loop app: {error}")
    base = public_tmp_dir("pe-e2e-dev-")
    project = base / "dev-loop"
    shutil.copytree(APPS_DIR / "dev-loop", project, ignore=shutil.ignore_patterns("__pycache__"))
    state = base / "state"
    lines: list[str] = []
    said: list[str] = []
    session = DevSession(
        project,
        state_dir=state,
        device="dev-e2e",
        say=said.append,
        echo=lambda node, line: lines.append(line),
    )
    session.start()
    pristine = base / "pristine"
    shutil.copytree(project, pristine)
    wait_for(lambda: "dev-app: v1 first frame" in lines, "the first frame of v1")
    yield Dev(session, project, state, pristine, lines, said)
    session.close()
    shutil.rmtree(base, ignore_errors=True)


def test_a_saved_edit_shows_without_a_rebuild_and_storage_is_kept(dev: Dev) -> None:
    assets = dev.assets()
    text = dev.app.read_text()
    dev.app.write_text(
        text.replace('VERSION = "v1"', 'VERSION = "v2"').replace(
            "        self.frames += 1\n",
            "        self.frames += 1\n        if self.frames == 2:\n"
            '            print("dev-app: a new log line", flush=True)\n',
        )
    )
    wait_for(lambda: "dev-app: a new log line" in dev.lines, "the new log line")
    assert "dev-app: v2 first frame" in dev.lines
    wait_for(lambda: "restart" in dev.kinds(), "the restart line")
    restart = next(event for event in dev.session.events if event.kind == "restart")
    assert restart.node == NODE
    assert restart.files == (f"{PACKAGE}/src/app.py",)
    assert restart.seconds is not None and "first frame" in restart.message
    assert "rebuild" not in dev.kinds()
    assert dev.assets() == assets
    # The node restarted with the storage of the first start.
    assert dev.lines.count("dev-app: start 1") == 1
    assert "dev-app: start 2" in dev.lines


def test_a_syntax_error_shows_once_and_the_next_save_recovers(dev: Dev) -> None:
    good = dev.app.read_text()
    dev.app.write_text(good.replace("def count_start():", "def count_start(:"))
    wait_for(lambda: "exit" in dev.kinds(), "the node to exit on the syntax error")
    exit_event = next(event for event in dev.session.events if event.kind == "exit")
    assert "waiting for the next save" in exit_event.message
    assert dev.session.appliance.status().nodes[NODE].state == "stopped"
    # Not restarted: the traceback is there once, however long the broken code waits.
    wait_for(lambda: len(dev.session.events) >= 2 and dev.session.events[-1].kind == "exit", "the exit")
    threading.Event().wait(1.5)
    assert sum("SyntaxError" in line for line in dev.lines) == 1
    dev.app.write_text(good.replace('VERSION = "v2"', 'VERSION = "v3"'))
    wait_for(lambda: "dev-app: v3 first frame" in dev.lines, "v3 after the fix")
    assert "dev-app: start 3" in dev.lines
    assert sum("SyntaxError" in line for line in dev.lines) == 1


def test_shell_reads_storage_and_cannot_write_the_code(dev: Dev) -> None:
    state = str(dev.state_dir)
    cat = subprocess.run(
        [
            CLI,
            "shell",
            "--device",
            "dev-e2e",
            "--state-dir",
            state,
            NODE,
            "cat",
            "/opt/aws/panorama/storage/starts",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert cat.returncode == 0, cat.stderr
    assert cat.stdout.strip() == "3"
    touch = subprocess.run(
        [CLI, "shell", "--device", "dev-e2e", "--state-dir", state, NODE, "touch", "/panorama/x"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert touch.returncode != 0
    assert "Read-only file system" in touch.stderr
    # The shell sees the code the node runs: the saved sources over the image, and the node's environment.
    look = subprocess.run(
        [CLI, "shell", "--device", "dev-e2e", "--state-dir", state, NODE, "sh", "-c",
         "grep ^VERSION /panorama/app.py; echo $PYTHONPATH; hostname"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert look.returncode == 0, look.stderr
    assert look.stdout.splitlines() == ['VERSION = "v3"', "/opt/panorama-emulator/sdk", "dev-e2e"]
    missing = subprocess.run(
        [CLI, "shell", "--device", "dev-e2e", "--state-dir", state, "no_such_node", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    assert "no such node" in missing.stderr and NODE in missing.stderr


def test_a_file_the_image_does_not_hold_changes_nothing(dev: Dev) -> None:
    restarts = dev.kinds().count("restart")
    (dev.project / "packages" / PACKAGE / "NOTES.md").write_text("not copied by the Dockerfile\n")
    wait_for(lambda: "ignored" in dev.kinds(), "the line about the file")
    ignored = next(event for event in dev.session.events if event.kind == "ignored")
    assert ignored.files == (f"{PACKAGE}/NOTES.md",) and "not in the image" in ignored.message
    assert dev.kinds().count("restart") == restarts and "rebuild" not in dev.kinds()


def test_editing_requirements_rebuilds_the_asset(dev: Dev) -> None:
    assets = dev.assets()
    dev.requirements.write_text(dev.requirements.read_text() + "# edited by the test\n")
    wait_for(lambda: "rebuild" in dev.kinds() or "failed" in dev.kinds(), "the rebuild", timeout=600)
    assert "failed" not in dev.kinds(), dev.said
    assert any("requirements.txt changed: rebuilding dev_loop_code" in line for line in dev.said)
    assert dev.assets() - assets, "no new asset was written"
    wait_for(lambda: "dev-app: start 4" in dev.lines, "the app of the rebuilt asset")
    wait_for(lambda: dev.lines.count("dev-app: v3 first frame") == 2, "its first frame")
    # The new image holds the edited file; the overlay still shows the sources.
    rootfs = dev.session.appliance.store.rootfs(
        dev.session.appliance.plan.code_nodes[0].asset_uri, progress=False
    )
    assert "edited by the test" in (rootfs / "panorama" / "requirements.txt").read_text()


@dataclass
class DevCommand:
    """A `panorama-emulator dev` command running, and what it printed so far."""

    process: subprocess.Popen[str]
    out: list[str]
    err: list[str]
    readers: list[threading.Thread]

    def stop(self) -> None:
        """Ctrl-C, as a developer stops it (the device powers off), then SIGKILL if it is still there."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        for reader in self.readers:
            reader.join(timeout=10)


def start_dev(project: Path, device: str, state: Path, *flags: str) -> DevCommand:
    """Run `dev` on the project and wait until it watches the packages, without building anything."""
    process = subprocess.Popen(
        [CLI, "dev", "--project", str(project), "--device", device, "--state-dir", str(state), "--port", "0",
         *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    out: list[str] = []
    err: list[str] = []

    def read(stream: io.TextIOBase | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line.rstrip("\n"))

    readers = [
        threading.Thread(target=read, args=(process.stdout, out), daemon=True),
        threading.Thread(target=read, args=(process.stderr, err), daemon=True),
    ]
    for reader in readers:
        reader.start()
    command = DevCommand(process, out, err, readers)
    try:
        wait_for(lambda: any("watching the code packages" in line for line in err) or process.poll(), "dev")
        assert process.poll() is None, "\n".join(err)
        assert not any("rebuilding" in line or "building the missing" in line for line in err)
    except BaseException:
        command.stop()
        raise
    return command


def test_dev_and_shell_commands(dev: Dev) -> None:
    project = dev.pristine
    state = public_tmp_dir("pe-e2e-dev-cli-")
    command = start_dev(project, "dev-cli", state)
    out, err = command.out, command.err
    try:
        wait_for(lambda: f"{NODE} | dev-app: v1 first frame" in out, "v1")
        app = project / "packages" / PACKAGE / "src" / "app.py"
        app.write_text(app.read_text().replace('VERSION = "v1"', 'VERSION = "cli"'))
        wait_for(lambda: f"{NODE} | dev-app: cli first frame" in out, "the edited code")
        wait_for(lambda: any(f"dev: {NODE} restarted" in line for line in err), "the restart line")
        line = next(line for line in err if f"dev: {NODE} restarted" in line)
        assert "src/app.py" in line and "s after the save" in line
        cat = subprocess.run(
            [CLI, "shell", "--device", "dev-cli", "--state-dir", str(state), NODE, "cat",
             "/opt/aws/panorama/storage/starts"],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
        )  # fmt: skip
        assert (cat.returncode, cat.stdout.strip()) == (0, "2"), cat.stderr
        os.killpg(command.process.pid, signal.SIGINT)
        assert command.process.wait(timeout=60) in (0, 130)
        after = subprocess.run(
            [CLI, "shell", "--device", "dev-cli", "--state-dir", str(state), NODE, "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert after.returncode == 1 and "not running" in after.stderr
    finally:
        command.stop()
        shutil.rmtree(state, ignore_errors=True)


NETWORK_PROBE = """
import socket


def network_seen():
    with open("/proc/net/dev") as file:
        names = sorted(line.split(":")[0].strip() for line in file.readlines()[2:])
    try:
        socket.create_connection(("192.0.2.1", 80), timeout=5).close()
        return names, "reached"
    except OSError as error:
        return names, error.strerror


def main():
    print("dev-app: network", *network_seen(), flush=True)
"""


def test_dev_takes_the_network_and_hdmi_flags_of_run(dev: Dev) -> None:
    base = public_tmp_dir("pe-e2e-dev-flags-")
    project = base / "dev-loop"
    shutil.copytree(dev.pristine, project)
    app = project / "packages" / PACKAGE / "src" / "app.py"
    app.write_text(
        app.read_text()
        .replace('VERSION = "cli"', 'VERSION = "v1"')
        .replace("\n\ndef main():\n", NETWORK_PROBE)
    )
    hdmi = base / "hdmi"
    try:
        command = start_dev(
            project, "dev-flags", base / "state", "--network", "none", "--hdmi-out", str(hdmi), "--every", "2"
        )
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        wait_for(lambda: f"{NODE} | dev-app: v1 first frame" in command.out, "the first frame")
        # Network none: a loopback only, and no way out.
        assert f"{NODE} | dev-app: network ['lo'] Network is unreachable" in command.out, command.out
        wait_for(lambda: (hdmi / "hdmi-000004.png").is_file(), "every second HDMI screen kept")
        assert (hdmi / "last.png").is_file() and not (hdmi / "hdmi-000003.png").exists()
    finally:
        command.stop()
        shutil.rmtree(base, ignore_errors=True)
