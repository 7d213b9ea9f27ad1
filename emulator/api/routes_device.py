"""Routes that describe and drive the device: status, deployment, power, cameras, metrics."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse

from emulator.api.errors import PayloadTooLargeError, RequestError
from emulator.api.manager import ApplianceManager
from emulator.api.models import (
    BundleResult,
    CameraStatus,
    DeployRequest,
    DeviceStatus,
    ErrorResponse,
    Metrics,
)
from emulator.api.prometheus import CONTENT_TYPE, prometheus_text

__all__ = ["ERRORS", "get_manager", "router"]

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "bad request: the reason is in detail"},
    401: {"model": ErrorResponse, "description": "missing or wrong token"},
    404: {"model": ErrorResponse, "description": "no such node, camera or file"},
    409: {"model": ErrorResponse, "description": "not possible in the device's state"},
    503: {"model": ErrorResponse, "description": "the host cannot provide an engine or sandbox"},
}
_BUNDLE_TYPES = ("application/gzip", "application/x-gzip", "application/octet-stream")


def get_manager(request: Request) -> ApplianceManager:
    """The device manager of the application (a FastAPI dependency)."""
    manager: ApplianceManager = request.app.state.manager
    return manager


Manager = Annotated[ApplianceManager, Depends(get_manager)]
router = APIRouter(responses=ERRORS)


def _status(manager: ApplianceManager) -> DeviceStatus:
    return DeviceStatus.model_validate(manager.status())


@router.get("/api/status", response_model=DeviceStatus, tags=["device"], summary="Device and node status")
def status(manager: Manager) -> DeviceStatus:
    """The device, the deployed app, its nodes, cameras and HDMI output."""
    return _status(manager)


@router.post("/api/app", response_model=DeviceStatus, tags=["app"], summary="Deploy a project folder")
def deploy_project(body: DeployRequest, manager: Manager) -> DeviceStatus:
    """Deploy and boot the application of a project folder on this machine, replacing the deployed one."""
    manager.deploy_project(
        Path(body.project),
        graph=Path(body.graph) if body.graph else None,
        override=Path(body.override) if body.override else None,
    )
    return _status(manager)


@router.post(
    "/api/app/bundle",
    response_model=BundleResult,
    tags=["app"],
    summary="Deploy an uploaded bundle",
    responses={413: {"model": ErrorResponse, "description": "the bundle is too large"}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
async def deploy_bundle(request: Request, manager: Manager) -> BundleResult:
    """Upload a ``.tar.gz`` of ``graphs/``, ``packages/`` and ``assets/`` as the request body.

    The bundle is checked whole (safe member names, valid manifests, each asset's SHA-256 equal to its name,
    size limits) before anything is written; then it is unpacked into the device's state directory and
    deployed, replacing the deployed app.
    """
    limit: int = request.app.state.max_upload_bytes
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in _BUNDLE_TYPES:
        raise RequestError(f"send the bundle as application/gzip, not {kind or 'no content type'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"the bundle is larger than the {limit} bytes this server accepts")
    with tempfile.TemporaryFile(prefix="panorama-bundle-") as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(f"the bundle is larger than the {limit} bytes this server accepts")
            await run_in_threadpool(spool.write, chunk)
        if size == 0:
            raise RequestError("the request has no body: send the bundle's bytes")
        _, info = await run_in_threadpool(manager.deploy_bundle, spool)
    return BundleResult(
        app=info.app,
        packages=list(info.packages),
        assets=list(info.assets),
        files=info.files,
        unpacked_bytes=info.unpacked_bytes,
        status=await run_in_threadpool(_status, manager),
    )


@router.delete("/api/app", response_model=DeviceStatus, tags=["app"], summary="Remove the deployed app")
def remove_app(manager: Manager) -> DeviceStatus:
    """Shut the app down and forget it; its storage and logs stay on the device."""
    manager.remove()
    return _status(manager)


@router.post("/api/device/boot", response_model=DeviceStatus, tags=["device"], summary="Boot after shutdown")
def boot(manager: Manager) -> DeviceStatus:
    """Boot the deployed app after a shutdown."""
    manager.boot()
    return _status(manager)


@router.post("/api/device/reboot", response_model=DeviceStatus, tags=["device"], summary="Reboot")
def reboot(manager: Manager) -> DeviceStatus:
    """Graceful reboot: storage and logs kept, temporary paths cleared."""
    manager.reboot()
    return _status(manager)


@router.post("/api/device/power-cut", response_model=DeviceStatus, tags=["device"], summary="Cut the power")
def power_cut(manager: Manager) -> DeviceStatus:
    """Kill every process at once, then boot again."""
    manager.power_cut()
    return _status(manager)


@router.post("/api/device/shutdown", response_model=DeviceStatus, tags=["device"], summary="Shut down")
def shutdown(manager: Manager) -> DeviceStatus:
    """Graceful shutdown; the app stays deployed (boot it again with /api/device/boot)."""
    manager.shutdown()
    return _status(manager)


def _camera(manager: ApplianceManager, name: str) -> CameraStatus:
    for camera in manager.status()["cameras"]:
        if camera["name"] == name:
            return CameraStatus.model_validate(camera)
    return CameraStatus(name=name, paused=False, source=None)


@router.post(
    "/api/cameras/{name}/pause", response_model=CameraStatus, tags=["cameras"], summary="Pause a camera"
)
def pause_camera(name: str, manager: Manager) -> CameraStatus:
    """Stop a camera's frames until it is resumed."""
    manager.pause_camera(name)
    return _camera(manager, name)


@router.post(
    "/api/cameras/{name}/resume", response_model=CameraStatus, tags=["cameras"], summary="Resume a camera"
)
def resume_camera(name: str, manager: Manager) -> CameraStatus:
    """Let a paused camera deliver frames again."""
    manager.resume_camera(name)
    return _camera(manager, name)


@router.get("/api/metrics", response_model=Metrics, tags=["metrics"], summary="Metrics as JSON")
def metrics(manager: Manager) -> Metrics:
    """Boots, uptime, HDMI outputs, per-node supervision figures and the app's runtime figures."""
    return Metrics.model_validate(manager.metrics())


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=["metrics"],
    summary="Metrics in the Prometheus text format",
    responses={200: {"content": {CONTENT_TYPE.split(";")[0]: {}}}},
)
def prometheus(manager: Manager) -> PlainTextResponse:
    """The figures of /api/metrics in the Prometheus exposition format 0.0.4."""
    return PlainTextResponse(prometheus_text(manager.metrics()), media_type=CONTENT_TYPE)
