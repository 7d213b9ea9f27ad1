"""The ``dev`` and ``shell`` commands: the developer's loop, and a shell in a running node's sandbox.

Thin over :class:`emulator.dev.DevSession` and :func:`emulator.shell.shell_command`; registered on the
``panorama-emulator`` group by :func:`register`.
"""

from __future__ import annotations

import os
import sys

import click

from emulator.cli import err_console, reports_errors
from emulator.cli_options import (
    camera_specs,
    hdmi_out_options,
    listen_options,
    network_option,
    serve_mode_options,
)

__all__ = ["dev_command", "register", "shell_command"]


@click.command("dev")
@click.option("--project", "project_dir", default=".", show_default=True, help="The project folder.")
@click.option("--graph", help="The graph file (default: the project's only graphs/*/graph.json).")
@click.option("--override", help="An override.json to apply to the graph.")
@click.option(
    "--camera",
    "camera",
    multiple=True,
    metavar="NODE=SOURCE",
    help="A camera node's source: synthetic[:WxH@FPS], a video file, a folder of images, a URL.",
)
@click.option("--device", default="default", show_default=True, help="The device name.")
@click.option("--state-dir", help="The state directory (default: $PANORAMA_EMULATOR_HOME or the data dir).")
@listen_options
@serve_mode_options
@network_option
@hdmi_out_options
@reports_errors
def dev_command(
    project_dir: str,
    graph: str | None,
    override: str | None,
    camera: tuple[str, ...],
    device: str,
    state_dir: str | None,
    host: str,
    port: int,
    token: str | None,
    mode: str,
    aws: str,
    network: str,
    hdmi_out: str | None,
    hdmi_every: int | None,
) -> None:
    """Run the app for development: boot it, serve the console and API as `serve`, restart on save.

    Builds the container assets that are missing, then watches every code package. A saved file that the
    Dockerfile COPYs into the image shows at its image path at once (still read-only to the app) and the
    node restarts, storage kept: no rebuild. A change to the Dockerfile, descriptor.json or a file a RUN
    step reads (requirements.txt) rebuilds the asset with the engine's cache and redeploys. A node that
    crashes (a syntax error in the new code) shows its traceback once and waits for the next save.
    """
    import logging
    from pathlib import Path

    from emulator.api import bind_socket, check_bind, run_server
    from emulator.dev import DevSession
    from emulator.device.options import ApplianceOptions

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    check_bind(host, token)
    options = ApplianceOptions(
        device=device,
        state_dir=Path(state_dir) if state_dir else None,
        graph=Path(graph) if graph else None,
        override=Path(override) if override else None,
        cameras=camera_specs(camera),
        mode=mode,
        aws=aws,
        network=network,
        hdmi_out=Path(hdmi_out) if hdmi_out else None,
        hdmi_every=hdmi_every,
        quiet=True,
    )
    session = DevSession(
        Path(project_dir),
        options,
        say=lambda line: err_console.print(f"dev: {line}", markup=False, highlight=False, soft_wrap=True),
        echo=lambda node, line: click.echo(f"{node} | {line}"),
    )
    sock = bind_socket(host, port)
    try:
        err_console.print(
            f"dev: booting {session.project.root.resolve()} on device {device}", markup=False, highlight=False
        )
        session.start()
    except BaseException:
        sock.close()
        session.close()
        raise

    def ready(url: str) -> None:
        hint = " (open it with ?token=<token> once)" if token else ""
        err_console.print(
            f"dev: console and device API: {url}{hint}; watching the code packages (Ctrl-C to stop)",
            markup=False,
            highlight=False,
        )

    try:
        run_server(session.manager, host=host, port=port, token=token, on_ready=ready, sock=sock)
    finally:
        session.close()


@click.command("shell", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--device", default="default", show_default=True, help="The device name of the running serve/dev."
)
@click.option("--state-dir", help="Its state directory (default: $PANORAMA_EMULATOR_HOME or the data dir).")
@reports_errors
def shell_command(node: str, command: tuple[str, ...], device: str, state_dir: str | None) -> None:
    """Open a shell (or run COMMAND) in a node of a running `serve` or `dev`, as `docker run -it` did.

    The shell gets the node's root filesystem (read-only, with dev's overlay of the sources), its storage,
    logs and SDK mounts, environment and hostname, and the network of the running app (its loopback, its
    ports), in a sandbox of its own (its own processes and empty temporary paths). Found through the
    device's state directory, so give the --device and --state-dir the server runs with. Options go before
    NODE: everything after NODE is the command. The exit status is COMMAND's.
    """
    from pathlib import Path

    from emulator.shell import shell_command as make_shell

    made = make_shell(node, command, device=device, state_dir=Path(state_dir) if state_dir else None)
    if made.note:
        err_console.print(f"shell: {made.note}", markup=False, highlight=False, soft_wrap=True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(made.argv[0], made.argv, made.env)
    except OSError as error:
        from emulator.errors import SandboxError

        raise SandboxError(f"cannot run {made.argv[0]}: {error.strerror}") from None


def register(group: click.Group) -> None:
    """Add ``dev`` and ``shell`` to the command group."""
    group.add_command(dev_command)
    group.add_command(shell_command)
