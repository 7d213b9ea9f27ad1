"""The `panorama-emulator` command line: a thin layer over the Python API.

Every command turns an ``EmulatorError`` into one line on stderr (one per manifest problem) and exit status 1.
"""

from __future__ import annotations

import functools
import sys
from typing import Any

import click
from rich.console import Console

from emulator.cli_options import (
    F,
    aws_option,
    camera_specs,
    hdmi_out_options,
    limit_options,
    limits_of,
    listen_options,
    network_option,
    serve_mode_options,
)
from emulator.errors import EmulatorError

__all__ = ["main"]

err_console = Console(stderr=True, highlight=False)


def reports_errors(func: F) -> F:
    """Turn an EmulatorError raised by a command into its message on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except EmulatorError as error:
            for line in str(error).splitlines() or [type(error).__name__]:
                err_console.print("[bold red]error:[/]", markup=True, end=" ")
                err_console.print(line, markup=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("interrupted")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="panorama-emulator")
def main() -> None:
    """An AWS Panorama appliance on your Linux machine.

    Build panorama-cli compatible assets, then run them as the appliance does.
    """


@main.command("base-image")
@click.option(
    "--arch",
    type=click.Choice(["host", "arm64"]),
    default="host",
    show_default=True,
    help="arm64: build it for the device's CPU (run through qemu-user) and point the arm64 tags at it; "
    "host: point them back at the host's (fast) stand-in.",
)
@click.option("--force", is_flag=True, help="Rebuild even if up to date (the cached rootfs is reused).")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="REF",
    help="Also tag the stand-in as REF (repeatable), for a Dockerfile that builds FROM another base.",
)
@reports_errors
def base_image(arch: str, force: bool, tags: tuple[str, ...]) -> None:
    """Build the offline stand-in for public.ecr.aws/panorama/panorama-application.

    Tags latest, 1.1.0-arm64v8, 1.2.0-py3.8 and 1.2.1-arm64v8, and .../sdkv1/python3.8/aarch64:latest (of the
    host's architecture), from a Debian rootfs made with debootstrap (needs root the first time; cached
    afterwards). With --arch arm64, the arm64v8 and aarch64 names point at an arm64 build instead, whose
    programs run through qemu-user (registered with binfmt_misc, as root). No container registry is used.
    """
    from emulator.builder.base_image import ensure_base_image

    ensure_base_image(arch=arch, force=force, tags=tags)


def _emulated_clause(summary: dict[str, object]) -> str:
    """``; code_node ran aarch64 through qemu-user`` for the nodes a run emulated, else ``""``."""
    emulated = summary.get("emulated")
    if not isinstance(emulated, dict) or not emulated:
        return ""
    return "; " + ", ".join(f"{node} ran {cpu} through qemu-user" for node, cpu in emulated.items())


def _print_tail(error: EmulatorError) -> None:
    """Show the engine's last lines above a build error (the build's own output may have gone elsewhere)."""
    tail = getattr(error, "log_tail", None)
    if tail:
        err_console.print("[dim]last lines from the engine:[/]", markup=True)
        for line in tail:
            err_console.print(f"  {line}", markup=False, highlight=False, soft_wrap=True)


@main.command("build-container")
@click.option("--container-asset-name", required=True, help="Name of the asset; also the image tag.")
@click.option("--package-path", required=True, help="The package folder, inside the project's packages/.")
@click.option("--local-image", is_flag=True, help="Use the local base image; do not try to pull a newer one.")
@click.option("--reproducible", is_flag=True, help="Same inputs give the same asset sha256.")
@reports_errors
def build_container_command(
    container_asset_name: str, package_path: str, local_image: bool, reproducible: bool
) -> None:
    """Build a package's Dockerfile into a container asset, as panorama-cli build-container does.

    Run from the project root. The image's filesystem goes to assets/<sha256>.tar.gz, the descriptor to
    assets/<sha256>.json, and package.json (and graph.json for a new asset) are updated.
    """
    import json
    from pathlib import Path

    from emulator.builder import BUILT_MESSAGE, build_container
    from emulator.errors import BuildError
    from emulator.project import Project

    console = Console(highlight=False)
    try:
        built = build_container(
            Project(Path.cwd()),
            container_asset_name,
            Path(package_path),
            local_image=local_image,
            reproducible=reproducible,
            console=console,
        )
    except BuildError as error:
        _print_tail(error)
        raise
    click.echo(json.dumps(built.asset, indent=4))
    click.echo(f"{BUILT_MESSAGE} {built.asset_path}")


@main.command("export-container")
@click.option("--container-asset-name", required=True, help="Name of the asset.")
@click.option("--container-image-uri", required=True, help="The local image to export (pulled if missing).")
@click.option("--package-path", required=True, help="The package folder, inside the project's packages/.")
@click.option("--reproducible", is_flag=True, help="Same image gives the same asset sha256.")
@reports_errors
def export_container_command(
    container_asset_name: str, container_image_uri: str, package_path: str, reproducible: bool
) -> None:
    """Export an existing image into a container asset, as panorama-cli export-container does."""
    import json
    from pathlib import Path

    from emulator.builder import BUILT_MESSAGE, export_container
    from emulator.project import Project

    built = export_container(
        Project(Path.cwd()),
        container_asset_name,
        container_image_uri,
        Path(package_path),
        reproducible=reproducible,
        console=Console(highlight=False),
    )
    click.echo(json.dumps(built.asset, indent=4))
    click.echo(f"{BUILT_MESSAGE} {built.asset_path}")


@main.command("run")
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
@click.option(
    "--frames",
    type=click.IntRange(min=1),
    help="Stop after the HDMI output received N outputs (lockstep: once the app has finished frame N).",
)
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after SECONDS.")
@click.option(
    "--mode",
    type=click.Choice(["lockstep", "realtime"]),
    help="Cameras wait for the app (lockstep; default with --frames) or run at their fps.",
)
@click.option("--device", default="default", show_default=True, help="The device name.")
@click.option("--state-dir", help="The state directory (default: $PANORAMA_EMULATOR_HOME or the data dir).")
@hdmi_out_options
@click.option("--hdmi-record", metavar="FILE.mp4", help="Record the HDMI output to an MP4 file.")
@click.option("--summary-json", help="Write the run's figures to this file.")
@network_option
@aws_option
@click.option(
    "--quiet-timeout",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Lockstep: most SECONDS to wait after frame N for every app to ask for its next frame.",
)
@limit_options
@click.option("--build", is_flag=True, help="Build missing container assets first (local base image).")
@reports_errors
def run_command(
    project_dir: str,
    graph: str | None,
    override: str | None,
    camera: tuple[str, ...],
    frames: int | None,
    duration: float | None,
    mode: str | None,
    device: str,
    state_dir: str | None,
    hdmi_out: str | None,
    hdmi_every: int | None,
    hdmi_record: str | None,
    summary_json: str | None,
    network: str,
    aws: str,
    quiet_timeout: float,
    memory_limit: int | None,
    pids_limit: int | None,
    storage_limit: int | None,
    build: bool,
) -> None:
    """Power the appliance on, run the application, and shut down.

    Each run against the same --device and --state-dir is one boot of the same appliance: what the app
    wrote to /opt/aws/panorama/storage is there in the next run, and temporary paths are empty again.
    App output is shown prefixed by node name and kept in the node's console_output log.
    """
    import logging
    import signal
    from pathlib import Path

    from emulator.device.options import ApplianceOptions
    from emulator.run import default_mode, run_application

    if frames is not None and duration is not None:
        raise click.UsageError("give --frames or --duration, not both")
    options = ApplianceOptions(
        device=device,
        state_dir=Path(state_dir) if state_dir else None,
        graph=Path(graph) if graph else None,
        override=Path(override) if override else None,
        cameras=camera_specs(camera),
        mode=mode or default_mode(frames),
        network=network,
        aws=aws,
        hdmi_out=Path(hdmi_out) if hdmi_out else None,
        hdmi_record=Path(hdmi_record) if hdmi_record else None,
        hdmi_every=hdmi_every,
        quiet_timeout=quiet_timeout,
        limits=limits_of(memory_limit=memory_limit, pids_limit=pids_limit, storage_limit=storage_limit),
    )
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)

    def interrupted(number: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    summary = run_application(
        Path(project_dir),
        options,
        frames=frames,
        duration=duration,
        summary_json=Path(summary_json) if summary_json else None,
        build=build,
        say=lambda line: err_console.print(line, markup=False, highlight=False),
    )
    err_console.print(
        f"boot {summary.get('boots')} of device {device}: {summary.get('seconds')} s, "
        f"{summary.get('frames')} frames, {summary.get('restarts')} restarts{_emulated_clause(summary)}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    end = summary.get("end")
    err_console.print(
        str(end.get("note")) if isinstance(end, dict) else "",
        markup=False,
        highlight=False,
    )
    from emulator.device.aws import cloudwatch_lines

    for line in cloudwatch_lines(summary.get("aws")):
        err_console.print(line, markup=False, highlight=False)


# --- the device API: `serve`, and the commands that talk to a running `serve` ----------------------------


def _api_client_options(func: F) -> F:
    """--host / --port / --token for the commands that talk to a running `serve`."""
    func = click.option(
        "--token", envvar="PANORAMA_EMULATOR_TOKEN", help="The server's token (env PANORAMA_EMULATOR_TOKEN)."
    )(func)
    func = click.option("--port", type=click.IntRange(1, 65535), help="The server's port (default 8123).")(
        func
    )
    func = click.option(
        "--host", help="The server's address (default: env PANORAMA_EMULATOR_URL, else 127.0.0.1)."
    )(func)
    return func


def _api_client(host: str | None, port: int | None, token: str | None) -> Any:
    from emulator.api.client import DeviceClient, client_url

    return DeviceClient(client_url(host, port), token=token)


def _echo_status(status: dict[str, Any]) -> None:
    uptime = status["uptime_s"]
    click.echo(
        f"device {status['device']}: {status['state']}, boots {status['boots']}"
        + (f", up {uptime:.1f} s" if isinstance(uptime, (int, float)) else "")
    )
    app = status.get("app")
    click.echo(f"app {app['name']} ({app['source']}: {app['project']})" if app else "no app deployed")
    for node in status.get("nodes", []):
        codes = " ".join(str(code) for code in node["exit_codes"][-5:]) or "-"
        click.echo(
            f"node {node['name']}: {node['state']}, pid {node['pid'] or '-'}, restarts {node['restarts']}, "
            f"exit codes {codes}" + (f", {node['arch']} through qemu-user" if node.get("emulated") else "")
        )
    for camera in status.get("cameras", []):
        click.echo(f"camera {camera['name']}: {'paused' if camera['paused'] else 'live'}, {camera['source']}")
    hdmi = status.get("hdmi")
    if hdmi:
        click.echo(f"hdmi: {hdmi['outputs']} frames, labels: {', '.join(hdmi['labels']) or '-'}")
    if status.get("storage_path"):
        click.echo(f"storage: {status['storage_path']}")


@main.command("serve")
@click.option(
    "--project",
    "project_dir",
    help="Deploy and boot this project at start (default: the current folder, if it is a project).",
)
@listen_options
@click.option("--device", default="default", show_default=True, help="The device name.")
@click.option("--state-dir", help="The state directory (default: $PANORAMA_EMULATOR_HOME or the data dir).")
@click.option(
    "--camera",
    "camera",
    multiple=True,
    metavar="NODE=SOURCE",
    help="A camera node's source: synthetic[:WxH@FPS], a video file, a folder of images, a URL.",
)
@serve_mode_options
@network_option
@hdmi_out_options
@click.option(
    "--max-upload-mb",
    type=click.IntRange(min=1),
    default=1024,
    show_default=True,
    help="Largest application bundle accepted, in MiB.",
)
@reports_errors
def serve_command(
    project_dir: str | None,
    host: str,
    port: int,
    device: str,
    state_dir: str | None,
    token: str | None,
    camera: tuple[str, ...],
    mode: str,
    aws: str,
    network: str,
    hdmi_out: str | None,
    hdmi_every: int | None,
    max_upload_mb: int,
) -> None:
    """Serve the device API and the web console for one emulated appliance.

    Open the printed URL for the console (device and node status, live HDMI, logs, reboot and power-cut
    buttons, the app's storage); the API is described at /docs. Listens on 127.0.0.1 unless --host says
    otherwise, which needs --token.
    """
    import contextlib
    import logging
    from pathlib import Path

    from emulator.api import ApplianceManager, bind_socket, check_bind, run_server
    from emulator.device.options import ApplianceOptions

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s", stream=sys.stderr)
    options = ApplianceOptions(
        device=device,
        state_dir=Path(state_dir) if state_dir else None,
        cameras=camera_specs(camera),
        mode=mode,
        aws=aws,
        network=network,
        hdmi_out=Path(hdmi_out) if hdmi_out else None,
        hdmi_every=hdmi_every,
        quiet=True,
    )
    check_bind(host, token)
    sock = bind_socket(host, port)
    manager = ApplianceManager(options)
    project = Path(project_dir) if project_dir else Path.cwd()
    if project_dir or ((project / "graphs").is_dir() and (project / "packages").is_dir()):
        err_console.print(f"booting {project.resolve()} on device {device}", markup=False, highlight=False)
        with contextlib.ExitStack() as undo:
            undo.callback(sock.close)
            manager.deploy_project(project)
            undo.pop_all()

    def ready(url: str) -> None:
        hint = " (open it with ?token=<token> once)" if token else ""
        err_console.print(f"device API and console: {url}{hint}", markup=False, highlight=False)

    run_server(
        manager,
        host=host,
        port=port,
        token=token,
        max_upload_bytes=max_upload_mb * 1024 * 1024,
        on_ready=ready,
        sock=sock,
    )


@main.command("status")
@_api_client_options
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@reports_errors
def status_command(host: str | None, port: int | None, token: str | None, as_json: bool) -> None:
    """Show the status of the device served by a running `serve`."""
    import json

    status = _api_client(host, port, token).status()
    if as_json:
        click.echo(json.dumps(status, indent=4))
    else:
        _echo_status(status)


@main.command("reboot")
@_api_client_options
@reports_errors
def reboot_command(host: str | None, port: int | None, token: str | None) -> None:
    """Reboot the device of a running `serve` gracefully (storage kept, temporary paths cleared)."""
    status = _api_client(host, port, token).reboot()
    click.echo(f"rebooted: boot {status['boots']} of device {status['device']}")


@main.command("power-cut")
@_api_client_options
@reports_errors
def power_cut_command(host: str | None, port: int | None, token: str | None) -> None:
    """Cut the power of the device of a running `serve` (every process killed at once), then boot it."""
    status = _api_client(host, port, token).power_cut()
    click.echo(f"power cut, booted again: boot {status['boots']} of device {status['device']}")


@main.command("logs")
@click.argument("node", required=False)
@_api_client_options
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines as the node writes them.")
@click.option(
    "--lines",
    "-n",
    type=click.IntRange(0, 10_000),
    default=100,
    show_default=True,
    help="How many of the last lines to print first.",
)
@click.option("--file", "log_file", help="Another file of the node's log folder, such as app.log.")
@reports_errors
def logs_command(
    node: str | None,
    host: str | None,
    port: int | None,
    token: str | None,
    follow: bool,
    lines: int,
    log_file: str | None,
) -> None:
    """Print a node's console output from a running `serve` (every node's, prefixed, without NODE)."""
    from emulator.errors import DeviceError

    client = _api_client(host, port, token)
    if node is None:
        names = [entry["name"] for entry in client.status()["nodes"]]
        if not names:
            raise DeviceError("no application is deployed: no logs to show")
        if follow and len(names) > 1:
            raise DeviceError(f"name the node to follow: {', '.join(names)}")
        if not follow:
            for name in names:
                for line in client.logs(name, lines, log_file):
                    click.echo(f"{name} | {line}")
            return
        node = names[0]
    if not follow:
        for line in client.logs(node, lines, log_file):
            click.echo(line)
        return
    try:
        for line in client.follow_logs(node, lines, log_file):
            click.echo(line)
    except KeyboardInterrupt:
        return


# Commands kept in modules of their own; they use this module's helpers.
from emulator import cli_backends, cli_dev, cli_project, cli_remote  # noqa: E402

cli_backends.register(main)
cli_dev.register(main)
cli_project.register(main)
cli_remote.register(main)
