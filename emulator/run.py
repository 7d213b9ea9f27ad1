"""One run of an application: power on, run for some frames or seconds, shut down, and sum the run up.

This is what ``panorama-emulator run`` does, beside the command line that calls it: it may build missing
assets first (the build stage), then sits on :class:`emulator.Appliance`, given one
:class:`emulator.ApplianceOptions`. Each run against the same device and state directory is one boot of the
same appliance.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from emulator.device.appliance import Appliance
from emulator.device.figures import BootFigures, plain
from emulator.device.options import ApplianceOptions
from emulator.errors import DeviceError, EmulatorError
from emulator.manifests import load_graph
from emulator.project import Project

__all__ = ["build_missing_assets", "default_mode", "end_of_run", "run_application", "summarize"]


def build_missing_assets(
    project_dir: Path, graph: Path | None = None, *, say: Callable[[str], None] | None = None
) -> list[str]:
    """Build the container asset of every code package of the graph whose asset is missing.

    An asset is missing when package.json has no asset of the name its business-logic interface gives, or
    when a file it names is not in ``assets/``. Builds use the local base image (``--local-image``).

    Args:
        project_dir: the project.
        graph: the graph file (default: the project's only graph).
        say: called with a line of progress for each build.

    Returns:
        The names of the assets built.

    Raises:
        ProjectError, ManifestError: the project or a manifest is unusable.
        BuildError, EngineError: a build failed.
    """
    from rich.console import Console

    from emulator.builder import build_container

    project = Project(project_dir)
    loaded = load_graph(project.graph_path(graph))
    built: list[str] = []
    for ref in loaded.packages:
        if ref.name.startswith("panorama::"):
            continue
        package_dir = project.package_dir(ref.name)
        if not (package_dir / "Dockerfile").is_file():
            continue
        package = project.load_package(ref.name)
        for interface in package.interfaces:
            if interface.category != "business_logic" or not interface.asset or interface.asset in built:
                continue
            asset = next((item for item in package.assets if item.name == interface.asset), None)
            present = asset is not None and all(
                uri and (project.assets_dir / uri).is_file()
                for implementation in asset.implementations
                for uri in (implementation.asset_uri, implementation.descriptor_uri)
            )
            if present:
                continue
            if say is not None:
                say(f"building the missing asset {interface.asset} from {package_dir.name}")
            console = Console(stderr=True, highlight=False, quiet=say is None)
            build_container(project, interface.asset, package_dir, local_image=True, console=console)
            built.append(interface.asset)
    return built


def summarize(appliance: Appliance, metrics: BootFigures, *, seconds: float) -> dict[str, object]:
    """The figures of one run, as ``--summary-json`` writes them.

    Args:
        appliance: the appliance after the run.
        metrics: ``appliance.metrics()`` taken before shutdown.
        seconds: how long the run lasted.

    Returns:
        ``frames``, ``seconds``, ``boots``, ``nodes`` (fps, latency, frames in/out, dropped, model calls,
        restarts, exit codes, ``last_cause``: the limit that last ended it, arch, emulated), ``emulated``
        (node -> CPU, for the nodes that ran through qemu-user), ``cameras``, ``models``, ``aws`` (the mode;
        with ``--aws local`` the CloudWatch metrics the app put), ``dropped_frames``, ``restarts``,
        ``exit_codes``, ``paths`` (storage, logs per node, last HDMI frame).
    """
    # Restarts and exit codes after the shutdown: the exit statuses of the shutdown itself are in.
    status = appliance.status().nodes
    nodes: dict[str, dict[str, Any]] = {}
    for name, figures in metrics.nodes.items():
        nodes[name] = {
            "fps": figures.fps,
            "latency_ms": plain(figures.latency_ms),
            "frames_in": figures.frames_in,
            "frames_out": figures.frames_out,
            "dropped": figures.dropped,
            "model_calls": figures.model_calls,
            "restarts": status[name].restarts,
            "exit_codes": list(status[name].exit_codes),
            "last_cause": status[name].last_cause,
            "arch": status[name].arch,
            "emulated": status[name].emulated,
        }
    last_frame = _last_hdmi_frame(appliance)
    return {
        "app": appliance.app,
        "device": appliance.device,
        "mode": appliance.mode,
        "boots": appliance.boots,
        "seconds": round(seconds, 3),
        "frames": metrics.frames_out,
        "nodes": nodes,
        "cameras": plain(metrics.cameras),
        "models": plain(metrics.models),
        "aws": plain(metrics.aws) if metrics.aws is not None else {"mode": appliance.aws},
        "dropped_frames": sum(node["dropped"] for node in nodes.values()),
        "restarts": sum(node["restarts"] for node in nodes.values()),
        "exit_codes": {name: node["exit_codes"] for name, node in nodes.items()},
        "emulated": {name: node["arch"] for name, node in nodes.items() if node["emulated"]},
        "paths": {
            "storage": str(appliance.storage_path),
            "logs": {plan.name: str(appliance.logs_path(plan.name)) for plan in appliance.plan.code_nodes},
            "last_hdmi_frame": str(last_frame) if last_frame is not None else None,
            "hdmi_recording": str(record) if (record := appliance.options.hdmi_record) is not None else None,
        },
    }


def end_of_run(
    appliance: Appliance, metrics: BootFigures, *, frames: int | None, duration: float | None
) -> dict[str, object]:
    """How a run ended, for the summary's ``end``.

    Args:
        appliance: the appliance after the run.
        metrics: ``appliance.metrics()`` taken before shutdown.
        frames: the run's ``--frames``, or None.
        duration: the run's ``--duration``, or None.

    Returns:
        ``by`` (``frames``, ``duration`` or ``interrupt``) and a ``note``; a lockstep run of frames adds
        ``frames``, ``outputs``, ``quiet``, ``busy``, ``waited_s`` and ``quiet_timeout_s``.
    """
    point = appliance.quiet_point
    if frames is not None and point is not None:
        return {"by": "frames", **point.as_dict()}
    outputs = metrics.frames_out
    if frames is not None:
        note = (
            f"stopped at HDMI output {outputs} of {frames} asked for (realtime: frames may have been dropped "
            "and the app was not waited for)"
        )
        return {"by": "frames", "frames": frames, "outputs": outputs, "note": note}
    if duration is not None and math.isfinite(duration):
        return {"by": "duration", "outputs": outputs, "note": f"stopped after {duration:g} s"}
    return {"by": "interrupt", "outputs": outputs, "note": "stopped when interrupted"}


def _last_hdmi_frame(appliance: Appliance) -> Path | None:
    if not appliance.plan.sinks or appliance.hdmi is None or appliance.hdmi.last_frame is None:
        return None
    if appliance.options.hdmi_out is not None:
        path = appliance.options.hdmi_out / "last.png"
    else:
        folder = appliance.store.root / "hdmi"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "last.png"
    appliance.hdmi.snapshot(path)
    return path


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=4)
            file.write("\n")
        os.replace(temporary, path)
    except OSError as error:
        raise DeviceError(f"cannot write the summary: {error.strerror}", file=str(path)) from None


def default_mode(frames: int | None) -> str:
    """The camera pacing of a run that names none: lockstep for a run of ``frames``, realtime otherwise."""
    return "lockstep" if frames is not None else "realtime"


def run_application(
    project_dir: Path,
    options: ApplianceOptions,
    *,
    frames: int | None = None,
    duration: float | None = None,
    summary_json: Path | None = None,
    build: bool = False,
    say: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """Boot the application, run it for ``frames`` HDMI outputs or ``duration`` seconds, and shut down.

    Args:
        project_dir: the project.
        options: how the appliance runs (see ``ApplianceOptions``; ``default_mode`` gives the mode a run
            names none); in lockstep, after the last frame the run waits at most ``quiet_timeout`` seconds
            for every app to come back to ``get()``, then shuts down anyway and the summary's ``end`` says so.
        frames: stop once the HDMI output has received this many outputs; in lockstep, once every app
            has then finished its frame (see ``Appliance.wait_for_frames``).
        duration: stop after this many seconds. With neither, run until interrupted.
        summary_json: where to write the run's figures (also written when the run fails, with ``error``).
        build: build missing container assets first.
        say: called with lines of progress.

    Returns:
        The summary (see ``summarize``), with ``end``: how the run ended (see ``end_of_run``).

    Raises:
        EmulatorError: bad input, a failed build, a sandbox that cannot start, an app that crashed before
            its first frame, an app that ended for good before the last frame (``restart_on_exit`` off).
    """
    if frames is not None and duration is not None:
        raise DeviceError("give --frames or --duration, not both")
    if frames is not None and frames < 1:
        raise DeviceError(f"--frames must be at least 1, not {frames}")
    if duration is not None and not (duration >= 0 and math.isfinite(duration)):
        raise DeviceError(f"--duration must be a number of seconds >= 0, not {duration}")
    if build:
        build_missing_assets(project_dir, options.graph, say=say)
    appliance = Appliance(project_dir, options)
    if frames is not None and not appliance.plan.sinks:
        raise DeviceError(
            f"application {appliance.app} has no HDMI output node: --frames counts HDMI outputs; "
            "use --duration"
        )
    summary: dict[str, object] = {}
    metrics: BootFigures | None = None
    started = ended = time.monotonic()
    error: BaseException | None = None
    try:
        with appliance:
            if say is not None:
                say(f"booted {appliance.app} on device {appliance.device} (boot {appliance.boots})")
                say(appliance.limits_line)
            started = time.monotonic()
            try:
                if frames is not None:
                    if not appliance.wait_for_frames(frames) and appliance.app_ended:
                        raise DeviceError(appliance.app_ended)
                else:
                    appliance.run_for(duration if duration is not None else math.inf)
                appliance.check()
            finally:
                metrics = appliance.metrics()
                ended = time.monotonic()
    except BaseException as caught:
        error = caught
        raise
    finally:
        if appliance.boots and (summary_json is not None or error is None):
            with contextlib.suppress(EmulatorError):
                figures = metrics if metrics is not None else appliance.metrics()
                summary = summarize(appliance, figures, seconds=max(0.0, ended - started))
                summary["end"] = end_of_run(appliance, figures, frames=frames, duration=duration)
            if error is not None and summary:
                summary["error"] = str(error) if isinstance(error, EmulatorError) else type(error).__name__
            if summary_json is not None and summary:
                _write_json(summary_json, summary)
    return summary
