"""Camera sources: open one from the text a user gives for a camera node.

``open_source(spec, name=node)`` accepts:

- ``synthetic`` (default camera): deterministic moving shapes, ``synthetic:1920x1080@30?seed=2&scene=people``
  (see :mod:`runtime.media.synthetic`);
- a video file (played in a loop, at the file's frame rate); ``video.mp4?start=100&stop=400&step=2`` plays
  frames 100 to 399, every second one, in a loop;
- a folder of images (name order, looping, native sizes) or one image (a still camera);
- an ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://`` or ``https://`` URL read through OpenCV's FFmpeg
  backend, reopened when it breaks;
- ``file://PATH`` for a path that would otherwise look like something else.

Every source has ``uri``, ``fps``, ``size`` (w, h), ``read() -> Frame`` and ``close()``. ``read()`` does not
pace: the caller plays frames at ``fps`` when it wants real time.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from emulator.errors import SourceError
from runtime.media.camera import ArraySource, CameraSource, Clock, Frame, as_bgr, redact_uri
from runtime.media.capture import IMAGE_SUFFIXES, ImageFolderSource, StreamSource, VideoFileSource
from runtime.media.synthetic import SCENES, SceneObject, SyntheticSource, SyntheticSpec

__all__ = [
    "DEFAULT_SOURCE",
    "IMAGE_SUFFIXES",
    "SCENES",
    "STREAM_SCHEMES",
    "ArraySource",
    "CameraSource",
    "Clock",
    "Frame",
    "ImageFolderSource",
    "SceneObject",
    "StreamSource",
    "SyntheticSource",
    "SyntheticSpec",
    "VideoFileSource",
    "as_bgr",
    "open_source",
    "redact_uri",
]

DEFAULT_SOURCE = "synthetic"
"""The source a camera node gets when none is given."""

STREAM_SCHEMES = ("http", "https", "rtmp", "rtsp", "rtsps")
"""URL schemes opened as network streams."""

_EXPECTED = "synthetic[:WxH][@FPS], a video file, a folder of images, or an rtsp:// or http:// URL"


def open_source(
    spec: str,
    *,
    name: str = "camera",
    fps: float | None = None,
    clock: Clock = time.time,
    open_timeout: float = 10.0,
    read_timeout: float = 10.0,
    reconnect_timeout: float | None = 30.0,
) -> CameraSource:
    """Open the camera source ``spec`` for the camera node ``name``.

    Args:
        spec: ``synthetic...``, a path, ``file://PATH`` or a stream URL (see the module's description).
        name: the camera node; it appears in errors and in synthetic frames, and seeds synthetic scenes that
            have no explicit seed.
        fps: a frame rate to report instead of the source's own (folders and images default to 30).
        clock: the wall clock used for frame timestamps.
        open_timeout: seconds a network stream may take to open.
        read_timeout: seconds a network stream may stay silent before it is called broken.
        reconnect_timeout: seconds to keep reopening a broken network stream (None: until closed).

    Returns:
        An open :class:`CameraSource`.

    Raises:
        SourceError: the spec is malformed or the source cannot be opened; one line naming the node and the
            source.
    """
    if fps is not None and not 0 < fps <= 240:
        raise SourceError(
            f"fps must be more than 0 and at most 240, found {fps:g} (source {spec})", node=name
        )
    text = spec.strip()
    if not text:
        raise SourceError(f"empty camera source: expected {_EXPECTED}", node=name)
    if text == "synthetic" or text.startswith(("synthetic:", "synthetic?")):
        try:
            parsed = SyntheticSpec.parse(text)
        except ValueError as error:
            raise SourceError(f"bad synthetic camera spec {text!r}: {error}", node=name) from None
        if fps is not None:
            parsed = SyntheticSpec(
                parsed.width, parsed.height, fps, parsed.seed, parsed.scene, parsed.objects
            )
        return SyntheticSource(parsed, name=name, uri=text, clock=clock)
    scheme, sep, _ = text.partition("://")
    if sep and scheme.lower() == "file":
        parts = urlsplit(text)
        window = _video_window(parts.query, text, name) if parts.query else None
        return _open_path(Path(unquote(parts.path)), text, name=name, fps=fps, clock=clock, window=window)
    if sep and scheme.lower() in STREAM_SCHEMES:
        if not urlsplit(text).hostname:
            raise SourceError(f"the URL {redact_uri(text)} names no host", node=name)
        return StreamSource(
            text,
            name=name,
            fps=fps,
            open_timeout=open_timeout,
            read_timeout=read_timeout,
            reconnect_timeout=reconnect_timeout,
            clock=clock,
        )
    if sep and scheme.isalnum():
        raise SourceError(
            f"unsupported URL scheme {scheme}:// in {redact_uri(text)}: expected one of "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)} or file://",
            node=name,
        )
    path = Path(text).expanduser()
    if "?" in text and not path.exists():
        base, _, query = text.rpartition("?")
        window = _video_window(query, text, name)
        return _open_path(Path(base).expanduser(), text, name=name, fps=fps, clock=clock, window=window)
    return _open_path(path, text, name=name, fps=fps, clock=clock)


_WINDOW_KEYS = ("start", "stop", "step")


def _video_window(query: str, spec: str, name: str) -> dict[str, int]:
    """``start=100&stop=400&step=2`` of a video file source, as integers."""
    window: dict[str, int] = {}
    for key, values in parse_qs(query, keep_blank_values=True).items():
        if key not in _WINDOW_KEYS:
            raise SourceError(
                f"unknown option {key!r} in {spec!r}: a video file takes {', '.join(_WINDOW_KEYS)}", node=name
            )
        value = values[-1]
        if not value.isdigit():
            raise SourceError(
                f"{key} must be a whole number of frames, found {value!r} in {spec!r}", node=name
            )
        window[key] = int(value)
    return window


def _open_path(
    path: Path,
    uri: str,
    *,
    name: str,
    fps: float | None,
    clock: Clock,
    window: dict[str, int] | None = None,
) -> CameraSource:
    is_images = path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if window is not None and (is_images or not path.is_file()):
        what = "a folder of images or an image" if is_images else "no such file"
        raise SourceError(f"start, stop and step apply to video files; {uri!r} is {what}", node=name)
    if is_images:
        return ImageFolderSource(path, name=name, uri=uri, fps=fps, clock=clock)
    if path.is_file():
        window = window or {}
        return VideoFileSource(
            path,
            name=name,
            uri=uri,
            fps=fps,
            clock=clock,
            start=window.get("start", 0),
            stop=window.get("stop"),
            step=window.get("step", 1),
        )
    raise SourceError(f"no such file or folder {uri!r}: expected {_EXPECTED}", node=name)
