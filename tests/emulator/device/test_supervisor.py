"""Supervision: restarts with backoff, graceful stop, power cut, console_output capture and rotation."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
from _sandbox_helpers import make_host_rootfs

from emulator.device.sandbox import DEFAULT_PATH, BwrapLauncher, SandboxSpec
from emulator.device.supervisor import Backoff, RotatingLog, Service, Supervisor, read_rotated
from emulator.errors import SandboxError

FAST = Backoff(initial=0.05, factor=2.0, maximum=0.2, stable_after=60.0)


class HostProcess:
    """A plain host process (no sandbox) behind the LaunchedProcess interface, for fast supervision tests."""

    def __init__(self, argv: list[str]) -> None:
        self._popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self._popen.pid

    @property
    def stdout(self) -> IO[bytes] | None:
        return self._popen.stdout

    def poll(self) -> int | None:
        return self._popen.poll()

    def wait(self, timeout: float | None = None) -> int:
        code = self._popen.wait(timeout)
        return 128 - code if code < 0 else code

    def terminate(self) -> None:
        self._popen.terminate()

    def kill(self) -> None:
        # As the sandbox's kill: a process group that is gone already is not an error.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._popen.pid, signal.SIGKILL)


def python(code: str) -> Callable[[], HostProcess]:
    return lambda: HostProcess([sys.executable, "-u", "-c", code])


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


@pytest.fixture
def supervisors() -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.kill()


# --- backoff and logs (pure) --------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap() -> None:
    backoff = Backoff()
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_rotating_log_keeps_the_newest_bytes_in_order(tmp_path: Path) -> None:
    path = tmp_path / "console_output"
    log = RotatingLog(path, max_bytes=100, keep=3)
    lines = [f"line {n:03d}\n".encode() for n in range(60)]
    for line in lines:
        log.write(line)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "console_output", "console_output.1", "console_output.2", "console_output.3"
    ]  # fmt: skip
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    kept = read_rotated(path)
    assert kept.endswith("line 059\n")
    assert b"".join(lines).decode().endswith(kept)
    assert "line 000" not in kept


def test_rotating_log_appends_to_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "console_output"
    path.write_bytes(b"from the last boot\n")
    log = RotatingLog(path)
    log.write(b"this boot\n")
    log.close()
    assert path.read_text() == "from the last boot\nthis boot\n"


# --- supervision of plain processes -------------------------------------------------------------------------


def test_output_goes_to_console_output_and_the_echo(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    seen: list[tuple[str, str]] = []
    service = Service(
        "code_node",
        python("print('hello'); import sys; print('oops', file=sys.stderr)\nimport time; time.sleep(60)"),
        tmp_path / "logs/console_output",
    )
    supervisor = Supervisor([service], backoff=FAST, echo=lambda node, line: seen.append((node, line)))
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: len(seen) >= 2)
    assert seen == [("code_node", "hello"), ("code_node", "oops")]
    assert (tmp_path / "logs/console_output").read_text() == "hello\noops\n"
    status = supervisor.status()["code_node"]
    assert status["state"] == "running" and status["restarts"] == 0 and isinstance(status["pid"], int)


def test_a_crashing_node_is_restarted_with_backoff_and_counted(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    log = tmp_path / "console_output"
    crash = python("print('starting'); raise RuntimeError('boom')")
    steady = python("import time; print('steady'); time.sleep(60)")
    supervisor = Supervisor(
        [Service("bad", crash, log), Service("good", steady, tmp_path / "good")], backoff=FAST
    )
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: int(supervisor.status()["bad"]["restarts"]) >= 4)  # type: ignore[call-overload]
    status = supervisor.status()
    assert status["good"]["state"] == "running" and status["good"]["restarts"] == 0
    exits = supervisor.exits("bad")
    assert all(record.code == 1 and not record.expected for record in exits)
    assert [record.instance for record in exits[:4]] == [1, 2, 3, 4]
    assert exits[0].last_line == "RuntimeError: boom"
    assert read_rotated(log).count("RuntimeError: boom") >= 4
    assert supervisor.first_failure() == ("bad", exits[0])
    assert [record.restart_delay for record in exits[:4]] == [0.05, 0.1, 0.2, 0.2]
    # The delays are waited for: each restart comes at least its delay after the previous exit.
    for earlier, later in itertools.pairwise(exits):
        assert earlier.restart_delay is not None
        assert later.at - earlier.at >= earlier.restart_delay * 0.9


def test_a_stable_run_resets_the_backoff(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    backoff = Backoff(initial=0.05, factor=10.0, maximum=100.0, stable_after=0.3)
    marker = tmp_path / "runs"
    # First instance crashes at once, the second after a stable period, the third at once again.
    code = (
        "import pathlib, time\n"
        f"p = pathlib.Path({str(marker)!r})\n"
        "n = len(p.read_text()) if p.exists() else 0\n"
        "p.write_text('x' * (n + 1))\n"
        "if n == 1: time.sleep(0.5)\n"
        "if n >= 4: time.sleep(60)\n"
        "raise SystemExit(2)\n"
    )
    supervisor = Supervisor([Service("node", python(code), tmp_path / "log")], backoff=backoff)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: len(supervisor.exits("node")) >= 4)
    exits = supervisor.exits("node")
    assert exits[1].ran_for >= 0.3
    # After the stable second run the sequence starts again: 0.05 s, then 0.5 s.
    assert [record.restart_delay for record in exits[:4]] == [0.05, 0.05, 0.5, 5.0]


def test_stop_sends_sigterm_and_waits_for_a_clean_exit(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n"
        "    print('cleaning up'); sys.stdout.flush(); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\n"
        "print('up')\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor([Service("node", python(code), tmp_path / "log")], backoff=FAST, grace=30)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: "up" in (tmp_path / "log").read_text())
    supervisor.stop()
    assert not supervisor.running
    assert (tmp_path / "log").read_text() == "up\ncleaning up\n"
    (record,) = supervisor.exits("node")
    assert record.code == 0 and record.expected
    assert supervisor.status()["node"]["state"] == "stopped"
    assert supervisor.first_failure() is None


def test_stop_kills_what_ignores_sigterm_after_the_grace_period(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up'); time.sleep(60)"
    supervisor = Supervisor([Service("node", python(code), tmp_path / "log")], backoff=FAST, grace=0.5)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: "up" in (tmp_path / "log").read_text())
    started = time.monotonic()
    supervisor.stop()
    assert time.monotonic() - started >= 0.5
    assert [record.code for record in supervisor.exits("node")] == [128 + signal.SIGKILL]


def test_kill_is_immediate(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, lambda *_: print('term!')); print('up')\n"
    code += "time.sleep(60)"
    supervisor = Supervisor([Service("node", python(code), tmp_path / "log")], backoff=FAST, grace=60)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: "up" in (tmp_path / "log").read_text())
    supervisor.kill()
    assert "term!" not in (tmp_path / "log").read_text()
    assert [record.code for record in supervisor.exits("node")] == [128 + signal.SIGKILL]


def test_stop_cancels_a_pending_restart(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    slow = Backoff(initial=60.0)
    supervisor = Supervisor([Service("node", python("raise SystemExit(5)"), tmp_path / "log")], backoff=slow)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: supervisor.status()["node"]["state"] == "backoff")
    supervisor.stop()
    assert supervisor.status()["node"]["state"] == "stopped"
    assert [record.code for record in supervisor.exits("node")] == [5]


def test_a_launch_failure_at_start_is_raised_and_nothing_keeps_running(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    started: list[HostProcess] = []

    def good() -> HostProcess:
        started.append(HostProcess([sys.executable, "-c", "import time; time.sleep(60)"]))
        return started[-1]

    def bad() -> HostProcess:
        raise SandboxError("the app sandbox did not start: nope", node="bad")

    supervisor = Supervisor([Service("good", good, tmp_path / "a"), Service("bad", bad, tmp_path / "b")])
    supervisors.append(supervisor)
    with pytest.raises(SandboxError, match="nope"):
        supervisor.start()
    assert started and started[0].poll() is not None


def test_echo_gets_partial_last_lines_and_long_lines(tmp_path: Path, supervisors: list[Supervisor]) -> None:
    seen: list[str] = []
    code = "import sys; sys.stdout.write('x' * 70000 + '\\nno newline at the end'); sys.stdout.flush()"
    service = Service("n", python(code), tmp_path / "log")
    supervisor = Supervisor([service], backoff=Backoff(initial=60), echo=lambda _, line: seen.append(line))
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: supervisor.status()["n"]["state"] == "backoff")
    supervisor.stop()
    assert seen == ["x" * 70000, "no newline at the end"]
    text = (tmp_path / "log").read_text()
    # The console log ends the unterminated line, so that the next instance starts on a new line.
    assert text == "x" * 70000 + "\nno newline at the end\n"
    assert supervisor.tail("n")[-1] == "no newline at the end"


# --- supervision of real sandboxes --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("supervised")
    yield make_host_rootfs(base / "rootfs")
    shutil.rmtree(base, ignore_errors=True)


def sandboxed(rootfs: Path, tmp_path: Path, code: str) -> Callable[[], object]:
    spec = SandboxSpec(
        rootfs=rootfs,
        command=("python3", "-u", "-c", code),
        env={"PATH": DEFAULT_PATH},
        hostname="dev",
        user_namespace=os.geteuid() != 0,
    )
    launcher = BwrapLauncher()
    return lambda: launcher.launch(spec)


@pytest.mark.sandbox
def test_sandboxes_started_by_the_supervisor_outlive_the_caller_thread(
    rootfs: Path, tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    supervisor = Supervisor(
        [
            Service(
                "node",
                sandboxed(rootfs, tmp_path, "import time; print('up'); time.sleep(60)"),  # type: ignore[arg-type]
                tmp_path / "log",
            )
        ],
        backoff=FAST,
    )
    supervisors.append(supervisor)
    caller = threading.Thread(target=supervisor.start)
    caller.start()
    caller.join()
    wait_until(lambda: "up" in (tmp_path / "log").read_text())
    time.sleep(0.3)
    status = supervisor.status()["node"]
    assert status["state"] == "running" and status["restarts"] == 0


@pytest.mark.sandbox
def test_sandboxed_crash_is_restarted_and_graceful_stop_reaches_the_app(
    rootfs: Path, tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'stopping\\n'), sys.exit(0)))\n"
        "print('pid', os.getpid())\n"
        "if not os.path.exists('/tmp/x'): open('/tmp/x', 'w').close()\n"
        "time.sleep(0.2)\n"
        "raise SystemExit(7)\n"
    )
    service = Service("node", sandboxed(rootfs, tmp_path, code), tmp_path / "log")  # type: ignore[arg-type]
    supervisor = Supervisor([service], backoff=FAST, grace=30)
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: len(supervisor.exits("node")) >= 2)
    assert {record.code for record in supervisor.exits("node")} == {7}
    assert read_rotated(tmp_path / "log").count("pid 2") >= 2
    supervisor.stop()
    assert not supervisor.running


# --- restart on request (dev) -------------------------------------------------------------------------------


def test_restart_replaces_one_node_and_leaves_the_others_running(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    runs = tmp_path / "runs"
    code = f"import time; open({str(runs)!r}, 'a').write('x'); print('up', flush=True); time.sleep(60)"
    supervisor = Supervisor(
        [Service("app", python(code), tmp_path / "app"), Service("other", python(code), tmp_path / "other")],
        backoff=FAST,
    )
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: runs.exists() and runs.read_text() == "xx")
    first = supervisor.process("app")
    other = supervisor.process("other")
    supervisor.restart("app", grace=5.0)
    status = supervisor.status()
    assert status["app"]["state"] == "running" and status["app"]["restarts"] == 1
    assert supervisor.process("app") is not first
    assert supervisor.process("other") is other and status["other"]["restarts"] == 0
    (record,) = supervisor.exits("app")
    assert record.expected and record.instance == 1 and record.restart_delay is None
    wait_until(lambda: runs.exists() and runs.read_text() == "xxx")


def test_without_restart_on_exit_a_crashed_node_waits_for_restart(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    flag = tmp_path / "fixed"
    code = f"import os, time; print('run'); os.path.exists({str(flag)!r}) or exit(3); time.sleep(60)"
    supervisor = Supervisor(
        [Service("app", python(code), tmp_path / "log")], backoff=FAST, restart_on_exit=False
    )
    supervisors.append(supervisor)
    supervisor.start()
    wait_until(lambda: supervisor.status()["app"]["state"] == "stopped")
    time.sleep(FAST.maximum * 3)  # well past every backoff delay: still not restarted
    status = supervisor.status()
    assert status["app"]["state"] == "stopped" and status["app"]["exit_codes"] == [3]
    assert supervisor.exits("app")[0].restart_delay is None
    ended = supervisor.ended()
    assert ended is not None and ended[0] == "app" and (ended[1].code, ended[1].last_line) == (3, "run")
    flag.touch()
    supervisor.restart("app")
    assert supervisor.status()["app"]["state"] == "running" and supervisor.ended() is None
    wait_until(lambda: read_rotated(tmp_path / "log").count("run") == 2)


def test_restart_of_an_unknown_node_or_a_stopped_supervisor_is_refused(
    tmp_path: Path, supervisors: list[Supervisor]
) -> None:
    from emulator.errors import DeviceError

    supervisor = Supervisor([Service("app", python("import time; time.sleep(60)"), tmp_path / "log")])
    supervisors.append(supervisor)
    supervisor.start()
    with pytest.raises(DeviceError, match="no such node"):
        supervisor.restart("nope")
    supervisor.kill()
    with pytest.raises(DeviceError, match="stopping"):
        supervisor.restart("app")
