"""A shell in a node's sandbox: what ``panorama-emulator shell NODE [COMMAND...]`` runs.

While a device is on, every code node's sandbox is recorded in its state directory
(``emulator.device.records``). :func:`shell_command` reads the record and returns the
bubblewrap command line of a new sandbox made the same way that runs a shell or the given command, with the
caller's terminal: the same view of the files as the node, read-only root included, but its own processes and
its own (empty) temporary paths, as ``docker run -it`` of the image gave a developer. It needs no server: the
state directory is the caller's own, so the file system's permissions are the access rule.

When the node has a network namespace of its own (network ``app`` or ``none``), the shell joins the one of
the sandbox that runs now, as ``docker exec`` does: ``nsenter`` enters it (an ordinary user enters the
sandbox's user namespace first, which owns it) and bubblewrap then makes no network namespace of its own, so
``localhost`` in the shell is the app's loopback and the host's stays out of reach. While the node is not
running (restarting, or stopped after a crash under ``dev``) the shell gets a loopback of its own, and says
so.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from emulator.device.records import read_sandbox_record
from emulator.device.sandbox import SandboxSpec, build_argv, find_bwrap, preflight
from emulator.device.store import DeviceStore
from emulator.errors import SandboxError

__all__ = ["ShellCommand", "shell_command"]

_SHELLS = ("/bin/bash", "/bin/sh")


@dataclass(frozen=True)
class ShellCommand:
    """A command line that opens a shell (or runs a command) in a sandbox like a node's.

    Args:
        argv: bubblewrap's argv.
        env: the environment to start it with (the node's).
        spec: the sandbox it makes.
        joins: host pid of the node's sandbox whose network namespace the shell joins, or None (the node
            shares the host's network, or is not running now).
        note: a line to show the caller before the shell starts, or None.
    """

    argv: list[str]
    env: dict[str, str]
    spec: SandboxSpec
    joins: int | None = None
    note: str | None = None


def _join_network(init_pid: int, unprivileged: bool) -> list[str]:
    """The ``nsenter`` prefix that runs the shell's bubblewrap in the network namespace of ``init_pid``."""
    nsenter = shutil.which("nsenter")
    if nsenter is None:
        raise SandboxError(
            "a shell in a node with a network of its own needs nsenter to join it: install util-linux"
        )
    prefix = [nsenter, f"--net=/proc/{init_pid}/ns/net"]
    if unprivileged:
        # The sandbox's user namespace owns its network namespace; there the caller is root. bwrap denies
        # setgroups in it, so nsenter must keep the credentials rather than set them.
        prefix += [f"--user=/proc/{init_pid}/ns/user", "--preserve-credentials"]
    return [*prefix, "--"]


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
        SandboxError: the node's root filesystem or a folder it mounts is gone, or nsenter is missing.
    """
    store = DeviceStore(state_dir, device)
    record = read_sandbox_record(store, node)
    recorded = record.spec
    if not command:
        shell = next((path for path in _SHELLS if (recorded.rootfs / path.lstrip("/")).exists()), _SHELLS[-1])
        command = (shell,)
    unprivileged = os.geteuid() != 0
    spec = dataclasses.replace(recorded, command=tuple(command), user_namespace=unprivileged)
    preflight(spec)
    prefix: list[str] = []
    made = spec
    joins: int | None = None
    note: str | None = None
    if spec.network != "host":
        if record.init_pid is not None:
            joins = record.init_pid
            prefix = _join_network(joins, unprivileged)
            # Inside the joined namespaces bwrap makes no network (nor user) namespace of its own.
            made = dataclasses.replace(spec, network="host", user_namespace=False)
        else:
            note = (
                f"{node} is not running now (restarting, or stopped): the shell has a loopback of its own, "
                "not the app's network"
            )
    argv = prefix + build_argv(made, find_bwrap())
    if interactive is None:
        interactive = sys.stdin.isatty()
    env = dict(spec.env)
    if interactive:
        # A session of its own would take the terminal away from the shell (no job control, no Ctrl-C).
        argv.remove("--new-session")
        if "TERM" in os.environ:
            env.setdefault("TERM", os.environ["TERM"])
    return ShellCommand(argv, env, spec, joins, note)
