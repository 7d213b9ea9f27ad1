"""Process supervision for the appliance: start every node, capture its output, restart it with backoff.

One supervisor runs one boot. A single long-lived thread starts every process: sandboxes die with the
thread that started them (bwrap ``--die-with-parent`` follows the starting thread, not the process), so no
short-lived thread may start one. Each process has a reader thread that copies its merged stdout/stderr to
the node's ``console_output`` (rotated by size) and, unless quiet, to the terminal prefixed with the node
name.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from emulator.device.sandbox import LaunchedProcess
from emulator.errors import DeviceError

__all__ = [
    "Backoff",
    "ExitRecord",
    "RotatingLog",
    "Service",
    "Supervisor",
    "read_rotated",
]

log = logging.getLogger(__name__)

MiB = 1024 * 1024
_TAIL_LINES = 40
_MAX_LINE = 64 * 1024
_MAX_EXITS = 100


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial``, multiplied by ``factor`` after each failure, at most ``maximum`` seconds.

    A process that ran at least ``stable_after`` seconds before it ended starts the sequence again.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 30.0
    stable_after: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait before the restart that follows ``failures`` consecutive short runs (>= 1)."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, failures - 1)))


class RotatingLog:
    """An append-only log file rotated by size: ``path`` is the newest, ``path.1`` ... ``path.<keep>`` older.

    Args:
        path: the log file.
        max_bytes: rotate before a write would make the file larger than this.
        keep: how many rotated files to keep.
    """

    def __init__(self, path: Path, max_bytes: int = 10 * MiB, keep: int = 3) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the log's lifetime
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        """Append ``data`` (rotating first when it would not fit) and flush it to the file."""
        with self._lock:
            if self._file.closed:
                return
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._file.write(data)
            self._file.flush()
            self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        for index in range(self.keep, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            newer = self.path if index == 1 else self.path.with_name(f"{self.path.name}.{index - 1}")
            if index == self.keep:
                with contextlib.suppress(FileNotFoundError):
                    older.unlink()
            with contextlib.suppress(FileNotFoundError):
                os.replace(newer, older)
        if self.keep == 0:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._file = open(self.path, "ab")  # noqa: SIM115
        self._size = 0

    def close(self) -> None:
        """Close the file; later writes are dropped."""
        with self._lock:
            self._file.close()


def read_rotated(path: Path, keep: int = 3) -> str:
    """The text of a rotated log, oldest part first.

    Args:
        path: the newest file.
        keep: how many rotated files may exist.

    Returns:
        The concatenated text (undecodable bytes replaced); empty when there is no log.
    """
    parts = []
    for index in range(keep, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            parts.append(path.with_name(f"{path.name}.{index}").read_bytes())
    with contextlib.suppress(FileNotFoundError):
        parts.append(path.read_bytes())
    return b"".join(parts).decode(errors="replace")


@dataclass(frozen=True)
class Service:
    """A node process the supervisor keeps running.

    Args:
        name: the node name (prefix on the terminal, key in the status).
        launch: starts one instance; may raise EmulatorError (the sandbox cannot start).
        console_log: where its stdout and stderr go.
    """

    name: str
    launch: Callable[[], LaunchedProcess]
    console_log: Path


@dataclass(frozen=True)
class ExitRecord:
    """How one instance of a node ended.

    ``code`` is the exit status (128+N for signal N, as shells report it); ``instance`` counts from 1 in this
    boot; ``expected`` is true when the appliance stopped it (shutdown, reboot, power cut); ``restart_delay``
    is the backoff before the next instance (None when none follows); ``cause`` says when a limit ended it
    (``memory limit N MiB``).
    """

    code: int
    instance: int
    ran_for: float
    at: float
    expected: bool
    last_line: str = ""
    restart_delay: float | None = None
    cause: str | None = None


@dataclass
class _RestartRequest:
    name: str
    grace: float
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


@dataclass
class _Node:
    service: Service
    console: RotatingLog
    process: LaunchedProcess | None = None
    state: str = "starting"
    instance: int = 0
    started: float = 0.0
    failures: int = 0
    restarts: int = 0
    next_start: float = 0.0
    launch_error: str | None = None
    exits: list[ExitRecord] = field(default_factory=list)
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)


class Supervisor:
    """Runs a set of services for one boot: starts them, restarts them with backoff, stops or kills them.

    Args:
        services: the node processes.
        backoff: the restart policy.
        grace: seconds between SIGTERM and SIGKILL on ``stop``.
        echo: called with (node, line) for every line of output; None keeps the terminal quiet.
        log_max_bytes: rotate ``console_output`` at this size.
        log_keep: rotated ``console_output`` files to keep.
        restart_on_exit: restart a node that ended on its own (with backoff); when False it stays stopped
            until :meth:`restart` (``dev`` waits for the next save).
    """

    def __init__(
        self,
        services: Sequence[Service],
        *,
        backoff: Backoff | None = None,
        grace: float = 3.0,
        echo: Callable[[str, str], None] | None = None,
        log_max_bytes: int = 10 * MiB,
        log_keep: int = 3,
        restart_on_exit: bool = True,
    ) -> None:
        names = [service.name for service in services]
        if len(set(names)) != len(names):
            raise ValueError(f"service names must be unique: {names}")
        self.backoff = backoff or Backoff()
        self.grace = grace
        self.log_keep = log_keep
        self._echo = echo
        self._log_max_bytes = log_max_bytes
        self._services = list(services)
        self._nodes: dict[str, _Node] = {}
        self._cond = threading.Condition()
        self._exited: list[tuple[_Node, int, LaunchedProcess]] = []
        self._request: str | None = None
        self._request_grace = grace
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.restart_on_exit = restart_on_exit
        self._restarts: list[_RestartRequest] = []

    # --- control --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every service and return once each first instance is running.

        Raises:
            DeviceError: already started.
            EmulatorError: a service could not be launched (e.g. SandboxError); nothing is left running.
        """
        if self._thread is not None:
            raise DeviceError("the supervisor has already been started")
        for service in self._services:
            console = RotatingLog(service.console_log, self._log_max_bytes, self.log_keep)
            self._nodes[service.name] = _Node(service=service, console=console)
        self._thread = threading.Thread(target=self._run, name="panorama-supervisor", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error

    def stop(self, grace: float | None = None) -> None:
        """Graceful stop: SIGTERM to every app, up to ``grace`` seconds for them to exit, then SIGKILL.

        Args:
            grace: seconds to wait; the supervisor's ``grace`` when None.
        """
        self._finish("stop", self.grace if grace is None else grace)

    def kill(self) -> None:
        """Power cut: SIGKILL every sandbox at once, no grace."""
        self._finish("kill", 0.0)

    def _finish(self, request: str, grace: float) -> None:
        if self._thread is None:
            return
        with self._cond:
            if self._request is None:
                self._request = request
                self._request_grace = grace
            self._cond.notify_all()
        self._thread.join()
        for node in self._nodes.values():
            for reader in node.readers:
                reader.join(timeout=5)
            node.console.close()

    def restart(self, name: str, grace: float | None = None) -> None:
        """Restart one node now: SIGTERM, up to ``grace`` seconds, SIGKILL, then a new instance at once.

        The backoff of the node starts again. Returns once the new instance is running.

        Args:
            name: the node.
            grace: seconds between SIGTERM and SIGKILL; the supervisor's ``grace`` when None.

        Raises:
            DeviceError: no such node, or the supervisor is not running.
            EmulatorError: the new instance could not be launched (the node stays stopped).
        """
        if name not in self._nodes:
            raise DeviceError(f"no such node {name!r} in this boot")
        request = _RestartRequest(name, self.grace if grace is None else grace)
        with self._cond:
            if self._request is not None or not self.running:
                raise DeviceError("the appliance is stopping: the node cannot restart")
            self._restarts.append(request)
            self._cond.notify_all()
        while not request.done.wait(0.1):
            if not self.running:
                raise DeviceError("the appliance stopped before the node restarted")
        if request.error is not None:
            raise request.error

    @property
    def running(self) -> bool:
        """True between ``start`` and the end of ``stop`` / ``kill``."""
        return self._thread is not None and self._thread.is_alive()

    # --- observation ----------------------------------------------------------------------------------------

    def status(self) -> dict[str, dict[str, object]]:
        """Per node: state, pid, restarts, exit codes of the instances that ended, uptime of the current one.

        Returns:
            ``{node: {"state", "pid", "restarts", "exit_codes", "last_cause", "uptime_s", "instance"}}``
            (``last_cause``: the latest limit that ended an instance, e.g. ``memory limit N MiB``); state is
            one of ``starting``, ``running``, ``backoff``, ``stopped``.
        """
        now = time.monotonic()
        with self._cond:
            result: dict[str, dict[str, object]] = {}
            for name, node in self._nodes.items():
                running = node.state == "running" and node.process is not None
                pid: int | None = None
                if running and node.process is not None:
                    pid = getattr(node.process, "app_pid", None) or node.process.pid
                result[name] = {
                    "state": node.state,
                    "pid": pid,
                    "restarts": node.restarts,
                    "instance": node.instance,
                    "exit_codes": [record.code for record in node.exits],
                    "last_cause": next((r.cause for r in reversed(node.exits) if r.cause), None),
                    "uptime_s": round(now - node.started, 3) if running else 0.0,
                }
            return result

    def process(self, name: str) -> LaunchedProcess | None:
        """The running instance of node ``name``, or None while it is not running."""
        with self._cond:
            return self._nodes[name].process

    def exits(self, name: str) -> list[ExitRecord]:
        """How the ended instances of node ``name`` ended, oldest first."""
        with self._cond:
            return list(self._nodes[name].exits)

    def tail(self, name: str) -> list[str]:
        """The last lines node ``name`` printed (up to 40)."""
        with self._cond:
            return list(self._nodes[name].tail)

    def first_failure(self) -> tuple[str, ExitRecord] | None:
        """The first node whose first instance ended on its own with a non-zero status, if any."""
        with self._cond:
            for name, node in self._nodes.items():
                for record in node.exits:
                    if record.instance == 1 and not record.expected and record.code != 0:
                        return name, record
        return None

    def ended(self) -> tuple[str, ExitRecord] | None:
        """Once every node has ended on its own and none will start again by itself: the last one to end.

        Returns:
            ``(node, its exit)``; None while a node runs, waits to restart, is being restarted, or when
            ``restart_on_exit`` is on (an ended node then always starts again).
        """
        with self._cond:
            if self.restart_on_exit or self._restarts or not self._nodes:
                return None
            last: list[tuple[str, ExitRecord]] = []
            for name, node in self._nodes.items():
                if node.state != "stopped" or node.process is not None or not node.exits:
                    return None
                if node.exits[-1].expected:
                    return None
                last.append((name, node.exits[-1]))
            return max(last, key=lambda item: item[1].at)

    # --- the supervisor thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        for node in self._nodes.values():
            try:
                self._spawn(node)
            except BaseException as error:  # reported to start()'s caller, in its thread
                self._start_error = error
                for other in self._nodes.values():
                    if other.process is not None:
                        other.process.kill()
                self._reap_all(timeout=10.0, expected=True)
                for other in self._nodes.values():
                    other.state = "stopped"
                self._started.set()
                return
        self._started.set()
        while True:
            with self._cond:
                if self._request is None and not self._exited and not self._restarts:
                    self._cond.wait(timeout=self._next_wakeup())
                request = self._request
                exited, self._exited = self._exited, []
                restarts, self._restarts = self._restarts, []
            for node, code, process in exited:
                self._record_exit(node, code, process, expected=False)
            if request is not None:
                for asked in restarts:
                    asked.error = DeviceError("the appliance is stopping: the node cannot restart")
                    asked.done.set()
                self._shutdown(request == "kill")
                return
            for asked in restarts:
                self._restart_now(asked)
            now = time.monotonic()
            for node in self._nodes.values():
                if node.state == "backoff" and node.next_start <= now:
                    self._restart(node)

    def _next_wakeup(self) -> float | None:
        waiting = [node.next_start for node in self._nodes.values() if node.state == "backoff"]
        if not waiting:
            return None
        return max(0.0, min(waiting) - time.monotonic())

    def _spawn(self, node: _Node) -> None:
        process = node.service.launch()
        with self._cond:
            node.process = process
            node.instance += 1
            node.started = time.monotonic()
            node.state = "running"
            node.launch_error = None
        reader = threading.Thread(
            target=self._read, args=(node, process), name=f"panorama-log-{node.service.name}", daemon=True
        )
        node.readers = [thread for thread in node.readers if thread.is_alive()] + [reader]
        reader.start()

    def _restart(self, node: _Node) -> None:
        node.restarts += 1
        try:
            self._spawn(node)
        except Exception as error:  # the node stays in backoff; the device keeps running
            message = f"[panorama-emulator] node {node.service.name} could not restart: {error}\n"
            node.console.write(message.encode())
            log.warning("%s", message.strip())
            with self._cond:
                node.launch_error = str(error)
            node.failures += 1
            self._schedule(node)

    def _restart_now(self, asked: _RestartRequest) -> None:
        node = self._nodes[asked.name]
        try:
            process = node.process
            if process is not None:
                process.terminate()
                self._reap_node(node, asked.grace)
                if node.process is not None:
                    node.process.kill()
                    self._reap_node(node, 10.0)
            node.failures = 0
            node.restarts += 1
            try:
                self._spawn(node)
            except BaseException:
                with self._cond:
                    node.state = "stopped"
                raise
        except BaseException as error:  # handed to restart()'s caller, in its thread
            asked.error = error
        finally:
            asked.done.set()

    def _reap_node(self, node: _Node, timeout: float) -> None:
        """Wait for ``node``'s instance to end (an expected exit); others that end meanwhile are recorded."""
        deadline = time.monotonic() + timeout
        while node.process is not None:
            with self._cond:
                if not self._exited:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return
                    self._cond.wait(timeout=remaining)
                exited, self._exited = self._exited, []
            for other, code, process in exited:
                self._record_exit(other, code, process, expected=other is node)

    def _schedule(self, node: _Node) -> None:
        delay = self.backoff.delay(node.failures)
        with self._cond:
            node.state = "backoff"
            node.next_start = time.monotonic() + delay
        log.warning("node %s restarts in %.1f s", node.service.name, delay)

    def _record_exit(self, node: _Node, code: int, process: LaunchedProcess, *, expected: bool) -> None:
        if node.process is not process:
            return
        ran_for = time.monotonic() - node.started
        last_line = next((line for line in reversed(node.tail) if line.strip()), "")
        delay: float | None = None
        if not expected:
            node.failures = 1 if ran_for >= self.backoff.stable_after else node.failures + 1
            delay = self.backoff.delay(node.failures) if self.restart_on_exit else None
        cause = getattr(process, "end_cause", None)
        record = ExitRecord(
            code, node.instance, round(ran_for, 3), time.time(), expected, last_line, delay, cause
        )
        if cause:
            node.console.write(f"[panorama-emulator] node {node.service.name} was killed: {cause}\n".encode())
        with self._cond:
            node.exits = [*node.exits[-(_MAX_EXITS - 1) :], record]
            node.process = None
            node.state = "stopped"
        if not expected:
            log.warning(
                "node %s exited with status %d after %.1f s%s",
                node.service.name, code, ran_for, f" ({cause})" if cause else "",
            )  # fmt: skip
            if self.restart_on_exit:
                self._schedule(node)

    def _shutdown(self, power_cut: bool) -> None:
        with self._cond:
            for node in self._nodes.values():
                if node.state == "backoff":
                    node.state = "stopped"
        live = [node for node in self._nodes.values() if node.process is not None]
        if power_cut:
            for node in live:
                if node.process is not None:
                    node.process.kill()
            self._reap_all(timeout=10.0, expected=True)
            return
        for node in live:
            if node.process is not None:
                node.process.terminate()
        self._reap_all(timeout=self._request_grace, expected=True)
        for node in self._nodes.values():
            if node.process is not None:
                log.warning(
                    "node %s did not stop within %.1f s: killed", node.service.name, self._request_grace
                )
                node.process.kill()
        self._reap_all(timeout=10.0, expected=True)

    def _reap_all(self, timeout: float, *, expected: bool) -> None:
        deadline = time.monotonic() + timeout
        while any(node.process is not None for node in self._nodes.values()):
            with self._cond:
                if not self._exited:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(timeout=remaining)
                exited, self._exited = self._exited, []
            for node, code, process in exited:
                self._record_exit(node, code, process, expected=expected)
        # Processes whose reader has not reported yet (output pipe held open): collect them directly.
        for node in self._nodes.values():
            left = node.process
            if left is None:
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = left.wait(timeout=max(0.0, deadline - time.monotonic()))
                self._record_exit(node, code, left, expected=expected)

    # --- reader threads -------------------------------------------------------------------------------------

    def _read(self, node: _Node, process: LaunchedProcess) -> None:
        stream = process.stdout
        pending = b""
        line_open = False
        if stream is not None:
            fd = stream.fileno()
            while True:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    break
                node.console.write(chunk)
                line_open = not chunk.endswith(b"\n")
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if len(pending) > _MAX_LINE:
                    lines.append(pending)
                    pending = b""
                self._lines(node, lines)
            if pending:
                self._lines(node, [pending])
            if line_open:
                # The app ended in the middle of a line (killed, or no final newline): end it, so that the
                # next instance's output starts on a line of its own.
                node.console.write(b"\n")
            stream.close()
        code = process.wait()
        with self._cond:
            self._exited.append((node, code, process))
            self._cond.notify_all()

    def _lines(self, node: _Node, lines: list[bytes]) -> None:
        if not lines:
            return
        texts = [line.decode(errors="replace").rstrip("\r") for line in lines]
        with self._cond:
            node.tail.extend(texts)
        if self._echo is not None:
            for text in texts:
                self._echo(node.service.name, text)
