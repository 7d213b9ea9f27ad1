"""A shell in a node's sandbox: what ``panorama-emulator shell NODE [COMMAND...]`` runs.

While a device is on, every code node's sandbox is recorded in its state directory
(``emulator.device.records``). :func:`shell_command` reads the record and returns the
bubblewrap command line of a new sandbox made the same way that runs a shell or the given command, with the
caller's terminal: the same view of the files as the node, read-only root included, but its own processes and
its own (empty) temporary paths, as ``docker run -it`` of the image gave a developer. It needs no server: the
state directory is the caller's own, so the file system's permissions are the access rule.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emulator.device.records import read_sandbox_record
from emulator.device.sandbox import SandboxSpec, build_argv, find_bwrap, preflight
from emulator.device.store import DeviceStore

__all__ = ["ShellCommand", "shell_command"]

_SHELLS = ("/bin/bash", "/bin/sh")


@dataclass(frozen=True)
class ShellCommand:
    """A command line that opens a shell (or runs a command) in a sandbox like a node's.

    Args:
        argv: bubblewrap's argv.
        env: the environment to start it with (the node's).
        spec: the sandbox it makes.
    """

    argv: list[str]
    env: dict[str, str]
    spec: SandboxSpec


def shell_command(
    node: str,
    command: Sequence[str] = (),
    *,
    device: str = "default",
    state_dir: Path | None = None,
    interactive: bool | None = None,
) -> ShellCommand:
    """Make the command line of a shell in a node of a running device.

    Args:
        node: a code node of the running application.
        command: what to run inside (default: ``/bin/bash``, or ``/bin/sh`` when the image has no bash).
        device: the device name.
        state_dir: the state directory (default: ``$PANORAMA_EMULATOR_HOME`` or the data dir).
        interactive: keep the caller's terminal as the controlling terminal (default: when stdin is one);
            otherwise the sandbox runs in a session of its own, as the node does.

    Returns:
        The argv and environment to run (``os.execvpe`` or ``subprocess``).

    Raises:
        DeviceError: the device is not running or has no such node.
        SandboxError: the node's root filesystem or a folder it mounts is gone.
    """
    store = DeviceStore(state_dir, device)
    recorded = read_sandbox_record(store, node)
    if not command:
        shell = next((path for path in _SHELLS if (recorded.rootfs / path.lstrip("/")).exists()), _SHELLS[-1])
        command = (shell,)
    spec = dataclasses.replace(recorded, command=tuple(command), user_namespace=os.geteuid() != 0)
    preflight(spec)
    argv = build_argv(spec, find_bwrap())
    if interactive is None:
        interactive = sys.stdin.isatty()
    env = dict(spec.env)
    if interactive:
        # A session of its own would take the terminal away from the shell (no job control, no Ctrl-C).
        argv.remove("--new-session")
        if "TERM" in os.environ:
            env.setdefault("TERM", os.environ["TERM"])
    return ShellCommand(argv, env, spec)
