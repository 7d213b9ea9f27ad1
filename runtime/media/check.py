"""Check camera sources before pointing an application at them: open each as the appliance would and report
what it gives.

    report = check_source("rtsp://user:secret@cam/stream", frames=30)
    report.as_dict()   # {"source": "rtsp://user:***@cam/stream", "ok": True, "width": 1920, ...}

A report says the resolution, the frame rate the source declares and the rate measured over ``frames``
frames, the codec, how long the source took to open and give its first frame, and the error (one line) when
it cannot be opened. Passwords in URLs are never shown.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from emulator.errors import EmulatorError
from runtime.media.camera import redact_uri
from runtime.media.sources import open_source

__all__ = ["SourceReport", "check_source"]

_NODE = "check"


@dataclass(frozen=True)
class SourceReport:
    """What :func:`check_source` found for one source.

    Args:
        source: the source, password hidden.
        ok: it opened and gave frames.
        kind: ``video``, ``images``, ``stream`` or ``synthetic`` (empty when it did not open).
        width: frame width in pixels.
        height: frame height in pixels.
        fps: the frame rate the source declares (the file's or the stream's own).
        measured_fps: frames read per second over the frames read (for a stream, its real rate).
        codec: the codec or image types.
        first_frame_ms: milliseconds from opening to the first frame.
        frames: frames read.
        error: why it failed (one line), else empty.
    """

    source: str
    ok: bool
    kind: str = ""
    width: int = 0
    height: int = 0
    fps: float = 0.0
    measured_fps: float = 0.0
    codec: str = ""
    first_frame_ms: float = 0.0
    frames: int = 0
    error: str = ""

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        return asdict(self)


def _cause(error: EmulatorError, spec: str, shown: str) -> str:
    """The error's line without the ``node check:`` prefix, password hidden."""
    return str(error).removeprefix(f"node {_NODE}: ").replace(spec, shown)


def _kind(name: str) -> str:
    return {
        "VideoFileSource": "video",
        "ImageFolderSource": "images",
        "StreamSource": "stream",
        "SyntheticSource": "synthetic",
    }.get(name, name)


def check_source(spec: str, *, frames: int = 30, open_timeout: float = 10.0) -> SourceReport:
    """Open ``spec`` as a camera source, read ``frames`` frames, and report.

    Args:
        spec: a camera source as ``--camera`` takes it (file, folder, URL, ``synthetic``...).
        frames: how many frames to read to measure the rate (at least 1).
        open_timeout: seconds a network stream may take to open, and to give each frame.

    Returns:
        The report; a source that cannot be opened gives ``ok=False`` and its error, never an exception.
    """
    shown = redact_uri(spec)
    started = time.perf_counter()
    try:
        source = open_source(
            spec, name=_NODE, open_timeout=open_timeout, read_timeout=open_timeout, reconnect_timeout=0.0
        )
    except EmulatorError as error:
        return SourceReport(source=shown, ok=False, error=_cause(error, spec, shown))
    try:
        # A stream gives its first frame while opening; files and folders when first read.
        source.read()
        first_ms = (time.perf_counter() - started) * 1000
        count = 1
        measured_from = time.perf_counter()
        while count < max(1, frames):
            source.read()
            count += 1
        elapsed = time.perf_counter() - measured_from
        measured = (count - 1) / elapsed if count > 1 and elapsed > 0 else 0.0
        width, height = source.size
        return SourceReport(
            source=shown,
            ok=True,
            kind=_kind(type(source).__name__),
            width=width,
            height=height,
            fps=round(source.fps, 3),
            measured_fps=round(measured, 3),
            codec=source.codec,
            first_frame_ms=round(first_ms, 3),
            frames=count,
        )
    except EmulatorError as error:
        return SourceReport(source=shown, ok=False, error=_cause(error, spec, shown))
    finally:
        source.close()
