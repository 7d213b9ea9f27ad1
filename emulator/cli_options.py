"""Options that several `panorama-emulator` commands share, declared once: what a device boots with (``run``,
``serve``, ``dev``) and where a device API listens (``serve``, ``dev``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

__all__ = [
    "F",
    "aws_option",
    "camera_specs",
    "hdmi_out_options",
    "limit_options",
    "limits_of",
    "listen_options",
    "network_option",
    "serve_mode_options",
]

F = TypeVar("F", bound=Callable[..., Any])

if TYPE_CHECKING:
    from emulator.device.limits import Limits

#: flag, ``Limits`` field, metavar, help, the default shown (``Limits``'s; the device package is imported
#: only when a command runs, so the figure is written here and a test holds it to ``Limits``).
LIMIT_FLAGS = (
    ("--memory-limit", "memory_mib", "MIB", "Memory of each app in MiB (past it the app is killed and "
     "restarted)", 2048),
    ("--pids-limit", "pids", "N", "Processes and threads of each app at once", 512),
    ("--storage-limit", "storage_mib", "MIB", "Size of each app's storage in MiB (past it writes fail "
     "with ENOSPC)", 10240),
)  # fmt: skip


def limit_options(func: F) -> F:
    """``--memory-limit``, ``--pids-limit`` and ``--storage-limit`` (see ``limits_of``)."""
    for flag, _, metavar, text, shown in reversed(LIMIT_FLAGS):
        func = click.option(
            flag,
            type=click.IntRange(min=0),
            metavar=metavar,
            help=f"{text}; 0 for no limit. [default: {shown}]",
        )(func)
    return func


def limits_of(**given: int | None) -> Limits:
    """The ``Limits`` of the ``limit_options`` values a command got (``memory_limit=`` ...): the defaults
    for those not given."""
    from emulator.device.limits import Limits

    fields = {field: given.get(flag[2:].replace("-", "_")) for flag, field, *_ in LIMIT_FLAGS}
    return Limits(**{field: value for field, value in fields.items() if value is not None})


aws_option = click.option(
    "--aws",
    type=click.Choice(["none", "host", "local"]),
    default="none",
    show_default=True,
    help="What the app's AWS SDK meets: no credentials, your credentials (a device's runtime role), "
    "or CloudWatch metrics kept here and nothing sent to AWS.",
)
"""``--aws none|host|local`` of ``run``, ``serve`` and ``dev`` (see ``emulator.device.aws``)."""


def listen_options(func: F) -> F:
    """``--host``, ``--port`` and ``--token`` of a command that serves the device API (``serve``, ``dev``)."""
    func = click.option(
        "--token",
        envvar="PANORAMA_EMULATOR_TOKEN",
        help="Require 'Authorization: Bearer TOKEN' on every request (env PANORAMA_EMULATOR_TOKEN).",
    )(func)
    func = click.option(
        "--port", default=8123, show_default=True, type=click.IntRange(0, 65535), help="TCP port."
    )(func)
    return click.option(
        "--host",
        default="127.0.0.1",
        show_default=True,
        help="Address to listen on; any other than loopback needs --token.",
    )(func)


def network_option(func: F) -> F:
    """``--network app|host|none`` of a command that boots a device (``run``, ``serve``, ``dev``)."""
    return click.option(
        "--network",
        type=click.Choice(["app", "host", "none"]),
        default="app",
        show_default=True,
        help="Each app in a network of its own with a way out (as on a device), the host's network, or none.",
    )(func)


def hdmi_out_options(func: F) -> F:
    """``--hdmi-out DIR`` and ``--every K`` (HDMI screens kept as PNG) of ``run``, ``serve`` and ``dev``."""
    func = click.option(
        "--every",
        "hdmi_every",
        type=click.IntRange(min=1),
        metavar="K",
        help="With --hdmi-out: also keep every K-th HDMI screen as hdmi-<n>.png.",
    )(func)
    return click.option("--hdmi-out", help="A folder where the HDMI output's last.png is kept.")(func)


def serve_mode_options(func: F) -> F:
    """``--mode`` (realtime by default, as a device) and ``--aws`` of a command that keeps a device on."""
    func = aws_option(func)
    return click.option(
        "--mode",
        type=click.Choice(["lockstep", "realtime"]),
        default="realtime",
        show_default=True,
        help="Cameras run at their fps (realtime) or wait for the app (lockstep).",
    )(func)


def camera_specs(values: tuple[str, ...]) -> dict[str, str]:
    """``--camera NODE=SOURCE`` values as a mapping.

    Raises:
        click.BadParameter: a value is not ``NODE=SOURCE``.
    """
    cameras: dict[str, str] = {}
    for value in values:
        node, sep, source = value.partition("=")
        if not sep or not node or not source:
            raise click.BadParameter(f"expected NODE=SOURCE, found {value!r}", param_hint="--camera")
        cameras[node] = source
    return cameras
