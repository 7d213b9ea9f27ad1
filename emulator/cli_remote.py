"""The commands that act on a running ``serve`` (or ``dev``) as the console's buttons do, and device tools:
``deploy``, ``boot``, ``shutdown``, ``camera pause|resume|check``, ``storage ls|get`` and ``export-logs``.

Each is a few lines over :class:`emulator.api.client.DeviceClient`, :mod:`emulator.export_logs` and
:mod:`runtime.media.check`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from emulator.cli import _api_client, _api_client_options, err_console, reports_errors

__all__ = ["register"]


def _say(line: str) -> None:
    err_console.print(line, markup=False, highlight=False, soft_wrap=True)


@click.command("deploy")
@click.argument("source", default=".", metavar="[PROJECT|BUNDLE.tar.gz]")
@_api_client_options
@click.option("--graph", help="The graph file, if the project has several.")
@click.option("--override", help="An override.json to apply.")
@click.option("--upload", is_flag=True, help="Send the project as a bundle (for a serve on another machine).")
@reports_errors
def deploy_command(
    source: str,
    host: str | None,
    port: int | None,
    token: str | None,
    graph: str | None,
    override: str | None,
    upload: bool,
) -> None:
    """Deploy a project folder (or upload a bundle) to a running `serve` and boot it there."""
    import io

    from emulator.api.bundle import pack_project

    client = _api_client(host, port, token)
    path = Path(source)
    if path.is_file():
        answer = client.upload_bundle(path)
        status = answer["status"]
    elif upload:
        if graph or override:
            raise click.UsageError("--graph and --override apply to a project folder deployed in place")
        buffer = io.BytesIO()
        pack_project(path, buffer)
        answer = client.request(
            "POST", "/api/app/bundle", body=buffer.getvalue(), content_type="application/gzip"
        )
        status = answer["status"]
    else:
        body: dict[str, str] = {"project": str(path.resolve())}
        if graph:
            body["graph"] = str(Path(graph).resolve())
        if override:
            body["override"] = str(Path(override).resolve())
        status = client.request(
            "POST", "/api/app", body=json.dumps(body).encode(), content_type="application/json"
        )
    app = status.get("app") or {}
    click.echo(f"deployed {app.get('name', '?')}: boot {status['boots']} of device {status['device']}")


@click.command("boot")
@_api_client_options
@reports_errors
def boot_command(host: str | None, port: int | None, token: str | None) -> None:
    """Boot the device of a running `serve` after a shutdown."""
    status = _api_client(host, port, token).power("boot")
    click.echo(f"booted: boot {status['boots']} of device {status['device']}")


@click.command("shutdown")
@_api_client_options
@reports_errors
def shutdown_command(host: str | None, port: int | None, token: str | None) -> None:
    """Shut the device of a running `serve` down gracefully; the app stays deployed (`boot` starts it)."""
    status = _api_client(host, port, token).power("shutdown")
    click.echo(f"shut down: device {status['device']} is {status['state']}")


@click.group("camera")
def camera_group() -> None:
    """Pause or resume a camera node of a running `serve`, or check camera sources."""


def _camera_action(action: str) -> click.Command:
    @click.command(action)
    @click.argument("node")
    @_api_client_options
    @reports_errors
    def command(node: str, host: str | None, port: int | None, token: str | None) -> None:
        camera = _api_client(host, port, token).camera(node, action)
        click.echo(f"camera {camera['name']}: {'paused' if camera['paused'] else 'live'}")

    command.help = f"{action.capitalize()} camera node NODE of a running `serve`."
    return command


@camera_group.command("check")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--json", "as_json", is_flag=True, help="Print the reports as JSON.")
@click.option(
    "--frames",
    type=click.IntRange(1, 10_000),
    default=30,
    show_default=True,
    help="Frames to read from each.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a stream may take to open or to give a frame.",
)
@reports_errors
def camera_check_command(sources: tuple[str, ...], as_json: bool, frames: int, timeout: float) -> None:
    """Open each camera source as the emulator would and report resolution, fps, codec, first-frame latency.

    SOURCE is what --camera takes: a video file, a folder of images, an rtsp:// or http:// URL, synthetic.
    Passwords in URLs are shown as ***. Exit status 1 when a source cannot be opened.
    """
    import os

    # FFmpeg's own messages about a stream that does not open would repeat the report's one line.
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
    os.environ.setdefault("OPENCV_LOG_LEVEL", "OFF")
    from runtime.media.check import check_source

    reports = [check_source(source, frames=frames, open_timeout=timeout) for source in sources]
    if as_json:
        click.echo(json.dumps([report.as_dict() for report in reports], indent=4))
    else:
        for report in reports:
            if report.ok:
                click.echo(
                    f"{report.source}: {report.kind} {report.width}x{report.height}, {report.fps:g} fps "
                    f"(read {report.measured_fps:g} fps over {report.frames} frames), "
                    f"codec {report.codec or '?'}, first frame {report.first_frame_ms:.0f} ms"
                )
            else:
                click.echo(f"{report.source}: FAILED {report.error}")
    if not all(report.ok for report in reports):
        sys.exit(1)


@click.group("storage")
def storage_group() -> None:
    """List or download the app's /opt/aws/panorama/storage on a running `serve`."""


@storage_group.command("ls")
@click.argument("path", default="")
@_api_client_options
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@reports_errors
def storage_ls_command(
    path: str, host: str | None, port: int | None, token: str | None, as_json: bool
) -> None:
    """List one folder of the app's storage (PATH relative to it)."""
    entries = _api_client(host, port, token).storage_list(path)
    if as_json:
        click.echo(json.dumps(entries, indent=4))
        return
    for entry in entries:
        mark = "/" if entry["kind"] == "dir" else ("@" if entry["kind"] == "link" else "")
        click.echo(f"{entry['size']:>12}  {entry['path']}{mark}")


@storage_group.command("get")
@click.argument("path")
@_api_client_options
@click.option(
    "-o", "--output", help="Where to write it (default: its name in the current folder; - for stdout)."
)
@reports_errors
def storage_get_command(
    path: str, host: str | None, port: int | None, token: str | None, output: str | None
) -> None:
    """Download one file of the app's storage."""
    from emulator.errors import DeviceError

    client = _api_client(host, port, token)
    if output == "-":
        client.storage_get(path, sys.stdout.buffer)
        return
    target = Path(output) if output else Path(path.rstrip("/").rsplit("/", 1)[-1])
    temp = target.with_name(f".{target.name}.part")
    try:
        with temp.open("wb") as handle:
            size = client.storage_get(path, handle)
        temp.replace(target)
    except OSError as error:
        raise DeviceError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        temp.unlink(missing_ok=True)
    _say(f"{path} -> {target} ({size} bytes)")


@click.command("export-logs")
@click.option("-o", "--output", default="panorama-logs.zip", show_default=True, help="The zip file to write.")
@click.option(
    "--start", help="Include log files written since: ISO time, epoch seconds, or 30m / 2h / 1d ago."
)
@click.option("--end", help="The window's end (default: now), as --start.")
@click.option("--device", help="Read this device's state directory (implies --offline; default 'default').")
@click.option("--state-dir", help="The state directory to read (implies --offline; default as for run).")
@click.option("--project", "project_dir", help="Offline: the app's project, for graph.json and versions.")
@click.option("--offline", is_flag=True, help="Read the state directory; do not ask a running serve.")
@_api_client_options
@reports_errors
def export_logs_command(
    output: str,
    start: str | None,
    end: str | None,
    device: str | None,
    state_dir: str | None,
    project_dir: str | None,
    offline: bool,
    host: str | None,
    port: int | None,
    token: str | None,
) -> None:
    """Write a zip of every node's logs, the status, metrics, versions and graph, with info.json.

    From a running `serve` when one answers (GET /api/logs/export: it works for a serve on another machine);
    otherwise, or with --offline, from the device's state directory alone.
    """
    from emulator.errors import DeviceError
    from emulator.export_logs import export_logs, parse_time

    begin = parse_time(start) if start else None
    finish = parse_time(end) if end else None
    target = Path(output)
    if not offline and not (device or state_dir or project_dir):
        client = _api_client(host, port, token)
        temp = target.with_name(f".{target.name}.part")
        try:
            with temp.open("wb") as handle:
                size = client.export_logs(handle, begin, finish)
            temp.replace(target)
            _say(f"wrote {target} ({size} bytes) from {client.url}")
            return
        except DeviceError as error:
            if host or port or getattr(error, "status", None) is not None:
                raise
            _say(f"no serve answers ({error}); reading the state directory alone")
        except OSError as error:
            raise DeviceError(f"cannot write {target}: {error.strerror or error}") from None
        finally:
            temp.unlink(missing_ok=True)
    written = export_logs(
        target,
        state_dir=Path(state_dir) if state_dir else None,
        device=device or "default",
        start=begin,
        end=finish,
        project=Path(project_dir) if project_dir else None,
    )
    _say(f"wrote {written.path}: {len(written.files)} files")


def register(group: click.Group) -> None:
    """Add these commands to ``group`` (the ``panorama-emulator`` command line)."""
    camera_group.add_command(_camera_action("pause"))
    camera_group.add_command(_camera_action("resume"))
    for command in (
        deploy_command,
        boot_command,
        shutdown_command,
        camera_group,
        storage_group,
        export_logs_command,
    ):
        group.add_command(command)
