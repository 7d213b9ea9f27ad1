"""The route that packs a device's logs for a bug report: ``GET /api/logs/export`` (see
:mod:`emulator.export_logs`)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from emulator.api.errors import RequestError
from emulator.api.manager import ApplianceManager
from emulator.api.routes_device import ERRORS, Manager
from emulator.export_logs import export_logs

__all__ = ["router"]

router = APIRouter(responses=ERRORS)

Seconds = Annotated[float | None, Query(ge=0, le=1e11, description="seconds since the epoch")]


def _export(manager: ApplianceManager, start: float | None, end: float | None) -> Path:
    deployment = manager.deployment
    status = manager.status()
    metrics = manager.metrics()
    handle, name = tempfile.mkstemp(prefix="panorama-logs-", suffix=".zip")
    os.close(handle)
    try:
        export_logs(
            Path(name),
            state_dir=manager.store.state_dir,
            device=manager.device_name,
            start=start,
            end=end,
            project=deployment.project if deployment is not None else None,
            graph=deployment.graph if deployment is not None else None,
            status=status,
            metrics=metrics,
        )
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


@router.get(
    "/api/logs/export",
    tags=["logs"],
    summary="A zip of every node's logs, the status, metrics, versions and graph",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}},
)
async def export(manager: Manager, start: Seconds = None, end: Seconds = None) -> FileResponse:
    """Log files written since ``start`` (all without it), ``status.json``, ``metrics.json``, ``graph.json``,
    ``versions.json`` and ``info.json`` (device, window, list of files)."""
    for value in (start, end):
        if value is not None and not math.isfinite(value):
            raise RequestError("start and end are seconds since the epoch")
    if start is not None and end is not None and end < start:
        raise RequestError("the window ends before it starts: end must not be before start")
    path = await run_in_threadpool(_export, manager, start, end)
    return FileResponse(
        path,
        media_type="application/zip",
        filename="panorama-logs.zip",
        headers={"Cache-Control": "no-store"},
        background=BackgroundTask(path.unlink, missing_ok=True),
    )
