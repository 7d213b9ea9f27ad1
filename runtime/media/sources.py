"""Camera sources: open one from the text a user gives for a camera node.

``open_source(spec, name=node)`` accepts:

- ``synthetic`` (default camera): deterministic moving shapes, ``synthetic:1920x1080@30?seed=2&scene=people``
  (see :mod:`runtime.media.synthetic`);
- a video file (played in a loop, at the file's frame rate);
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
from urllib.parse import unquote, urlsplit

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
        return _open_path(Path(unquote(urlsplit(text).path)), text, name=name, fps=fps, clock=clock)
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
    return _open_path(Path(text).expanduser(), text, name=name, fps=fps, clock=clock)


def _open_path(path: Path, uri: str, *, name: str, fps: float | None, clock: Clock) -> CameraSource:
    if path.is_dir() or (path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
        return ImageFolderSource(path, name=name, uri=uri, fps=fps, clock=clock)
    if path.is_file():
        return VideoFileSource(path, name=name, uri=uri, fps=fps, clock=clock)
    raise SourceError(f"no such file or folder {uri!r}: expected {_EXPECTED}", node=name)
