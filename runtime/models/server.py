"""The model server process as the appliance sees it: started, loaded, reached through channels.

A :class:`Server` is one ``python -m runtime.models.worker`` process; it is never reused after it is lost.
A :class:`Channel` is one socket + shared memory pair to it, used by one call at a time (see
:mod:`runtime.models.protocol`). :class:`runtime.models.host.ModelHost` decides when to start one and what
a lost server means for the calls.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import runtime
from emulator.errors import ModelError
from runtime.models.base import ModelSpec
from runtime.models.protocol import SharedBuffer, receive, send
from runtime.models.tally import Tally
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["SERVER_ENV", "CallFailed", "Channel", "Server", "ServerLost"]

logger = logging.getLogger("runtime.models")
_server_log = logging.getLogger("runtime.models.server")

#: Environment the model server gets unless the appliance's environment sets these already. glibc's malloc
#: returns a framework's large per-call buffers (activations) to the kernel after every call and takes them
#: back as fresh zeroed pages on the next one, thousands of page faults per call; a model server's working
#: set is stable, so it keeps them.
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(256 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


class ServerLost(Exception):
    """The server process went away (or its socket broke) during a call."""


class CallFailed(Exception):
    """The model raised; the server is fine."""


class Channel:
    """One socket + shared memory pair to the server, used by one call at a time."""

    def __init__(self, sock: socket.socket, buffer: SharedBuffer) -> None:
        self.sock = sock
        self.buffer = buffer

    def call(
        self, node: str, arrays: Sequence[tuple[str, np.ndarray, np.dtype[Any]]]
    ) -> tuple[np.ndarray, ...]:
        """Copy checked inputs into the shared memory, run the model, and copy its outputs out.

        Args:
            node: the model node.
            arrays: ``(name, array, dtype the model takes)`` of each input.

        Raises:
            CallFailed: the model raised, or the shared memory cannot grow.
            ServerLost: the server went away.
        """
        slots, end = P.place((name, dtype, array.shape) for name, array, dtype in arrays)
        try:
            self.buffer.ensure(end)
        except OSError as error:
            raise CallFailed(f"no shared memory for the inputs: {error}") from None
        for slot, (_, array, _) in zip(slots, arrays, strict=True):
            np.copyto(self.buffer.view(slot), array, casting="unsafe")
        return tuple(self.buffer.view(slot).copy() for slot in self.run(node, slots))

    def run(self, node: str, inputs: list[P.ArraySlot]) -> list[P.ArraySlot]:
        """Run the model on inputs already in the shared memory; its outputs are left there.

        Args:
            node: the model node.
            inputs: where the inputs are.

        Returns:
            Where the outputs are (the buffer has followed the server if it grew the memory).

        Raises:
            CallFailed: the model raised.
            ServerLost: the server went away.
        """
        try:
            send(self.sock, ("call", node, self.buffer.size, inputs))
            received = receive(self.sock)
        except OSError as error:
            raise ServerLost(str(error)) from None
        if received is None:
            raise ServerLost("end of file")
        reply = received[0]
        if reply[0] == "error":
            raise CallFailed(reply[1])
        _, size, outputs = reply
        self.buffer.follow(size)
        return list(outputs)

    def close(self) -> None:
        """Close the socket and the shared memory."""
        self.sock.close()
        self.buffer.close()


class Server:
    """One model server process: started, loaded, serving; never reused after it is lost.

    Args:
        specs: the model nodes to load.

    Raises:
        ModelError: the process cannot start, a model fails to load, or the process dies while loading.
    """

    def __init__(self, specs: list[ModelSpec], tally: Tally) -> None:
        control, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        package_root = Path(runtime.__file__).resolve().parent.parent
        env = dict(os.environ)
        for name, value in SERVER_ENV.items():
            env.setdefault(name, value)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(package_root), env.get("PYTHONPATH")]))
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "runtime.models.worker", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Run from the package root so that nothing in the user's working directory shadows a module.
                # The server stays in the appliance's session: with the kernel's session autogroups, a new
                # session would compete with the appliance for CPU as a separate group.
                cwd=package_root,
                env=env,
            )
        except OSError as error:
            control.close()
            raise ModelError(f"cannot start the model server: {error}") from None
        finally:
            child.close()
        self._control = control
        self._control_lock = threading.Lock()
        self._idle: list[Channel] = []
        self._idle_lock = threading.Lock()
        self._tail: deque[str] = deque(maxlen=50)
        self._reader = threading.Thread(target=self._read_output, name="model-server-output", daemon=True)
        self._reader.start()
        self._cause: str | None = None
        self._cause_lock = threading.Lock()
        self.closing = False
        try:
            self.ready = self._load(specs, tally)
        except BaseException:
            self.close()
            raise

    @property
    def pid(self) -> int:
        """The process id."""
        return self.proc.pid

    def _read_output(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace").rstrip()
            if line:
                self._tail.append(line)
                _server_log.debug("%s", line)
        self.proc.stdout.close()

    def _load(self, specs: list[ModelSpec], tally: Tally) -> dict[str, tuple[dict[str, str], list[str]]]:
        by_node = {spec.node: spec for spec in specs}
        loading: str | None = None
        try:
            send(self._control, ("load", specs), fds=(tally.fd,))
            while (received := receive(self._control)) is not None:
                message = received[0]
                if message[0] == "loading":
                    loading = message[1]
                elif message[0] == "failed":
                    raise ModelError(message[2], node=message[1], file=str(by_node[message[1]].path))
                else:
                    ready: dict[str, tuple[dict[str, str], list[str]]] = message[1]
                    return ready
        except OSError:
            pass  # the server is gone: say why below
        when = "while loading the model" if loading else "before loading any model"
        raise ModelError(f"the model server stopped {when} ({self.cause()})", node=loading)

    def alive(self) -> bool:
        """Whether the process runs and has not been found dead."""
        return self._cause is None and self.proc.poll() is None

    def cause(self) -> str:
        """Why the process is gone (waiting for it, and killing it if it is somehow still there)."""
        with self._cause_lock:
            if self._cause is not None:
                return self._cause
            try:
                status = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                status = self.proc.wait()
            self._reader.join(timeout=2)
            if status < 0:
                try:
                    cause = f"killed by {signal.Signals(-status).name}"
                except ValueError:
                    cause = f"killed by signal {-status}"
            else:
                cause = f"exited with status {status}"
            last = _last_words(list(self._tail))
            if last:
                cause += f"; last output: {last}"
            self._cause = cause
            if not self.closing:
                logger.warning("model server (pid %d) stopped: %s", self.proc.pid, cause)
            return cause

    def acquire(self) -> Channel:
        """An idle channel, or a new one with its own shared memory.

        Raises:
            ServerLost: the server is gone.
        """
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        buffer = SharedBuffer()
        try:
            return Channel(self.attach(buffer), buffer)
        except BaseException:
            buffer.close()
            raise

    def attach(self, buffer: SharedBuffer) -> socket.socket:
        """Open a channel whose shared memory is ``buffer`` (the server maps the same file).

        Args:
            buffer: the shared memory; it stays the caller's.

        Returns:
            This end of the channel's socket.

        Raises:
            ServerLost: the server is gone.
        """
        return self._open(("channel", buffer.size), buffer.fd)

    def lend(self, buffer: SharedBuffer, tally: Tally, nodes: Sequence[str]) -> socket.socket:
        """Open a channel for an app: it speaks the app's JSON and may call only ``nodes``.

        Args:
            buffer: the shared memory (the app maps it too); it stays the caller's.
            tally: where the server counts the channel's calls; it stays the caller's.
            nodes: the model nodes the app may call.

        Returns:
            The app's end of the channel's socket (to send to the app, then close).

        Raises:
            ServerLost: the server is gone.
        """
        return self._open(("app", buffer.size, list(nodes)), buffer.fd, tally.fd)

    def _open(self, message: tuple[object, ...], *fds: int) -> socket.socket:
        """Send the server one end of a new channel socket with ``message`` and ``fds``; return the other."""
        near, far = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            with self._control_lock:
                send(self._control, message, fds=(far.fileno(), *fds))
        except OSError as error:
            near.close()
            raise ServerLost(str(error)) from None
        finally:
            far.close()
        return near

    def release(self, channel: Channel) -> None:
        """Give a channel back after a call (the next call may take it)."""
        with self._idle_lock:
            self._idle.append(channel)

    def close(self) -> None:
        """Close the control socket (the process exits), wait for the process, close the idle channels."""
        self.closing = True
        self._control.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        with self._idle_lock:
            for channel in self._idle:
                channel.close()
            self._idle.clear()
        self._reader.join(timeout=2)


def _last_words(lines: list[str]) -> str:
    """The line of the server's output that best says why it died (a fatal error, else the last line)."""
    for line in reversed(lines):
        if line.startswith("Fatal Python error"):
            return line
    for line in reversed(lines):
        if not line[:1].isspace() and not line.startswith(
            ("Thread 0x", "Current thread", "Extension modules")
        ):
            return line[:300]
    return ""
