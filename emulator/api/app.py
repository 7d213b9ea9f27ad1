"""The device API: a FastAPI application over one :class:`~emulator.api.manager.ApplianceManager`.

    app = create_app(ApplianceManager(ApplianceOptions(device="dev")), token="s3cret")

Every ``EmulatorError`` becomes ``{"detail": "<one line>"}`` with a 4xx or 503 status
(:func:`emulator.api.errors.http_status`); anything unexpected is logged here and answered 500 with a
one-line detail, never a traceback. The web console is served at ``/`` from ``emulator/api/static``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from emulator.api import routes_data, routes_device, routes_export
from emulator.api.bundle import BundleLimits
from emulator.api.errors import http_status
from emulator.api.manager import ApplianceManager
from emulator.api.security import AccessMiddleware
from emulator.errors import EmulatorError

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "STATIC_DIR", "create_app"]

log = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_BYTES = BundleLimits().max_bytes
"""Largest bundle upload accepted by default (1 GiB)."""
STATIC_DIR = Path(str(resources.files("emulator.api") / "static"))
"""The console's files: index.html, app.js, style.css."""


async def _emulator_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, EmulatorError)
    detail = " / ".join(str(error).splitlines()) or type(error).__name__
    return JSONResponse({"detail": detail}, status_code=http_status(error))


async def _unexpected(request: Request, error: Exception) -> Response:
    log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=error)
    detail = f"internal error ({type(error).__name__}); the server log has the details"
    return JSONResponse({"detail": detail}, status_code=500)


def create_app(
    appliance_manager: ApplianceManager,
    *,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    allowed_hosts: Iterable[str] | None = None,
    close_on_shutdown: bool = True,
) -> FastAPI:
    """Make the device API and console.

    Args:
        appliance_manager: the device the API drives.
        token: when set, every request but the console's static files needs ``Authorization: Bearer <token>``.
        max_upload_bytes: largest bundle upload accepted (413 above).
        allowed_hosts: host names accepted in the Host header (None: any); a server bound to loopback only
            passes the loopback names, so that pages of other sites cannot reach it by DNS rebinding.
        close_on_shutdown: shut the deployed app down when the server stops.

    Returns:
        The FastAPI application (``app.state.manager`` is ``appliance_manager``,
        ``app.state.max_upload_bytes`` the upload limit).
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            await run_in_threadpool(appliance_manager.close)

    app = FastAPI(
        title="panorama-emulator device API",
        version="1",
        summary="Drive an emulated AWS Panorama appliance: deploy, reboot, power cut, logs, HDMI, storage.",
        lifespan=lifespan,
    )
    app.state.manager = appliance_manager
    app.state.max_upload_bytes = max_upload_bytes
    app.add_exception_handler(EmulatorError, _emulator_error)
    app.add_exception_handler(Exception, _unexpected)
    app.include_router(routes_device.router)
    app.include_router(routes_data.router)
    app.include_router(routes_export.router)

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/console", StaticFiles(directory=STATIC_DIR), name="console")
    app.add_middleware(AccessMiddleware, token=token, allowed_hosts=allowed_hosts)
    return app
