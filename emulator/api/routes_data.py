"""Routes that read from the device: node logs, the HDMI output, the app's storage."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, BinaryIO

import anyio
from anyio.to_thread import run_sync
from fastapi import APIRouter, Query
from fastapi.responses import Response, StreamingResponse

from emulator.api.device import CONSOLE_OUTPUT
from emulator.api.errors import RequestError
from emulator.api.manager import ApplianceManager
from emulator.api.models import LogTail, StorageEntryModel, StorageListing
from emulator.api.routes_device import ERRORS, Manager
from emulator.api.storage import open_storage_file
from emulator.errors import EmulatorError
from runtime.media.hdmi import MJPEG_CONTENT_TYPE, HdmiSink, mjpeg_part

__all__ = ["STREAM_THREADS", "router"]

STREAM_THREADS = 64
"""Most threads that live streams (MJPEG, log events) may block at once, apart from other requests."""
_NO_STORE = {"Cache-Control": "no-store"}
_POLL = 0.25
_KEEPALIVE_POLLS = 60
_SINK_WAIT = 10.0

router = APIRouter(responses=ERRORS)
_limiter: anyio.CapacityLimiter | None = None


def _streams() -> anyio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(STREAM_THREADS)
    return _limiter


Lines = Annotated[int, Query(ge=0, le=10_000, description="how many lines of the end of the log")]
LogFile = Annotated[
    str,
    Query(
        min_length=1,
        max_length=255,
        description="a file of the node's log folder (/opt/aws/panorama/logs), such as app.log",
    ),
]


@router.get("/api/nodes/{node}/logs", response_model=LogTail, tags=["logs"], summary="Tail of a node's log")
def logs(node: str, manager: Manager, lines: Lines = 200, file: LogFile = CONSOLE_OUTPUT) -> LogTail:
    """The last lines of a node's console output (stdout and stderr of its process, kept across boots), or
    of another file of its log folder."""
    return LogTail(node=node, file=file, files=manager.log_files(node), lines=manager.logs(node, lines, file))


@router.get(
    "/api/nodes/{node}/logs/stream",
    tags=["logs"],
    summary="Follow a node's log (server-sent events)",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "one event per log line"}},
)
def follow_logs(
    node: str, manager: Manager, lines: Lines = 20, file: LogFile = CONSOLE_OUTPUT
) -> StreamingResponse:
    """The last lines, then every new line as it is written, as ``text/event-stream`` (``data: <line>``)."""
    follower = manager.follow_logs(node, file)
    backlog = manager.logs(node, lines, file)

    async def events() -> AsyncIterator[str]:
        try:
            for line in backlog:
                yield f"data: {line}\n\n"
            idle = 0
            while True:
                new = await run_sync(follower.read_new, limiter=_streams())
                for line in new:
                    yield f"data: {line}\n\n"
                if new:
                    idle = 0
                    continue
                idle += 1
                if idle % _KEEPALIVE_POLLS == 0:
                    yield ": keepalive\n\n"
                await anyio.sleep(_POLL)
        finally:
            follower.close()

    return StreamingResponse(
        events(), media_type="text/event-stream", headers={**_NO_STORE, "X-Accel-Buffering": "no"}
    )


@router.get(
    "/api/hdmi.png",
    tags=["hdmi"],
    summary="The last HDMI frame as PNG",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "NO SIGNAL before the first frame"}},
)
def hdmi_png(manager: Manager) -> Response:
    """The screen the app shows now."""
    return Response(manager.hdmi().last_png(), media_type="image/png", headers=_NO_STORE)


def _next_sink(manager: ApplianceManager, previous: HdmiSink | None) -> HdmiSink | None:
    """The sink to follow: the current one, or after a reboot that replaced it, the new one."""
    try:
        sink = manager.hdmi()
    except EmulatorError:
        return None
    if sink is previous or sink.closed:
        return None
    return sink


async def _mjpeg(manager: ApplianceManager, first: HdmiSink, quality: int) -> AsyncIterator[bytes]:
    sink: HdmiSink | None = first
    while sink is not None:
        subscription = sink.subscribe(quality)
        try:
            while True:
                jpeg = await run_sync(next, subscription, None, limiter=_streams())
                if jpeg is None:
                    break
                yield mjpeg_part(jpeg)
        finally:
            subscription.close()
        previous, sink = sink, None
        with anyio.move_on_after(_SINK_WAIT):
            while sink is None:
                sink = _next_sink(manager, previous)
                if sink is None:
                    await anyio.sleep(_POLL)


@router.get(
    "/api/hdmi.mjpeg",
    tags=["hdmi"],
    summary="The HDMI output as a live MJPEG stream",
    response_class=StreamingResponse,
    responses={200: {"content": {MJPEG_CONTENT_TYPE.split(";")[0]: {}}, "description": "JPEG parts"}},
)
def hdmi_mjpeg(
    manager: Manager, quality: Annotated[int, Query(ge=1, le=100, description="JPEG quality")] = 80
) -> StreamingResponse:
    """Every new screen as a JPEG part of a ``multipart/x-mixed-replace`` stream (for an ``<img>``)."""
    sink = manager.hdmi()
    return StreamingResponse(_mjpeg(manager, sink, quality), media_type=MJPEG_CONTENT_TYPE, headers=_NO_STORE)


StoragePath = Annotated[str, Query(max_length=4096, description="relative to the app's storage")]


@router.get("/api/storage", response_model=StorageListing, tags=["storage"], summary="List the app's storage")
def storage_list(manager: Manager, path: StoragePath = "") -> StorageListing:
    """One folder of /opt/aws/panorama/storage (read-only); links leading out are listed, not followed."""
    entries = [
        StorageEntryModel(name=e.name, path=e.path, kind=e.kind, size=e.size, modified=e.modified)  # type: ignore[arg-type]
        for e in manager.storage_list(path)
    ]
    return StorageListing(path=path, entries=entries)


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(256 * 1024):
            yield chunk


@router.get(
    "/api/storage/file",
    tags=["storage"],
    summary="Download a file of the app's storage",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def storage_file(manager: Manager, path: StoragePath) -> StreamingResponse:
    """The file's bytes; paths that are absolute, hold ``..`` or lead out of the storage are refused."""
    if not path:
        raise RequestError("name a file to download")
    handle, size = open_storage_file(manager.device.storage_path, path)
    name = re.sub(r"[^A-Za-z0-9._ -]", "_", path.rsplit("/", 1)[-1])
    return StreamingResponse(
        _chunks(handle),
        media_type="application/octet-stream",
        headers={
            **_NO_STORE,
            "Content-Length": str(size),
            "Content-Disposition": f'attachment; filename="{name}"',
        },
    )
