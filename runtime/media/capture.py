"""Camera sources read through OpenCV: video files, folders of images, and network streams.

Video files and folders loop at their end; a video file can be limited to frames ``start`` to ``stop``,
taking every ``step``-th. Network streams (``rtsp://``, ``http://`` ...) go through
OpenCV's FFmpeg backend; a thread takes frames as they arrive, as a camera on the appliance would, so a
reader that falls behind gets the newest frame and the ones it missed are counted as dropped. A stream
that breaks is reopened with backoff.
"""

from __future__ import annotations

import base64
import http.client
import math
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit

import cv2
import numpy as np

from runtime.media.camera import CameraSource, Clock, redact_uri

__all__ = ["IMAGE_SUFFIXES", "ImageFolderSource", "StreamSource", "VideoFileSource", "diagnose_stream"]

IMAGE_SUFFIXES = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
"""File name endings read as still images (a folder of them, or one image shown as a still camera)."""

_DEFAULT_FPS = 30.0
_FOLDER_CACHE_BYTES = 256 * 1024 * 1024


def _sane_fps(value: float, fallback: float = _DEFAULT_FPS) -> float:
    """FFmpeg reports 0, NaN or a timebase (90000) when a container does not know its rate."""
    return value if math.isfinite(value) and 0 < value <= 240 else fallback


class VideoFileSource(CameraSource):
    """A video file played in a loop, optionally only frames ``start`` to ``stop`` taking every ``step``-th.

    Args:
        path: the video file.
        name: the camera node.
        uri: what ``uri`` reports (defaults to the path).
        fps: a frame rate to report instead of the file's own.
        clock: the wall clock used for timestamps.
        start: the first frame played (0 is the file's first), again at every loop.
        stop: the frame the loop ends before (None: the end of the file).
        step: play every ``step``-th frame from ``start`` (the others are skipped, not shown).

    Raises:
        SourceError: the file does not exist, cannot be decoded, holds no frame, or has no frame at ``start``.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str = "camera",
        uri: str | None = None,
        fps: float | None = None,
        clock: Clock = time.time,
        start: int = 0,
        stop: int | None = None,
        step: int = 1,
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self.name = name
        self.uri = uri if uri is not None else str(path)
        if start < 0 or step < 1 or (stop is not None and stop <= start):
            raise self.error(
                f"expected 0 <= start < stop and step >= 1, found start={start} stop={stop} step={step}"
            )
        self.start, self.stop, self.step = start, stop, step
        if not self.path.is_file():
            raise self.error("no such video file")
        self._position = 0
        self._capture = self._rewind()
        first = self._read_frame()
        if first is None:
            self._capture.release()
            if start:
                raise self.error(f"the video file has no frame at start={start} (it is shorter)")
            raise self.error("the video file holds no frame OpenCV can decode")
        self._pending: np.ndarray | None = first
        self.fps = float(fps) if fps else _sane_fps(self._capture.get(cv2.CAP_PROP_FPS))
        self.codec = _fourcc(self._capture)
        self.size = (first.shape[1], first.shape[0])
        self.loops = 0

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise self.error("cannot open the video file (not a video OpenCV's FFmpeg can read)")
        return capture

    def _rewind(self) -> cv2.VideoCapture:
        """Open the file at frame ``start`` (frames before it are grabbed, not decoded to images)."""
        capture = self._open()
        for _ in range(self.start):
            if not capture.grab():
                break
        self._position = self.start
        return capture

    def _read_frame(self) -> np.ndarray | None:
        """The frame at the current position, then skip ``step - 1``; None at ``stop`` or the end."""
        if self.stop is not None and self._position >= self.stop:
            return None
        ok, image = self._capture.read()
        if not ok or image is None:
            return None
        self._position += 1
        for _ in range(self.step - 1):
            if (self.stop is not None and self._position >= self.stop) or not self._capture.grab():
                break
            self._position += 1
        return image

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            return self._deliver(pending, out)
        image = self._read_frame()
        if image is None:
            # End of the range: start again. Reopening is more reliable than seeking for every container.
            self._capture.release()
            self._capture = self._rewind()
            self.loops += 1
            image = self._read_frame()
            if image is None:
                raise self.error("the video file could not be read again from its start")
        return self._deliver(image, out)

    def _release(self) -> None:
        self._capture.release()


def _fourcc(capture: cv2.VideoCapture) -> str:
    """The codec's four-character code as FFmpeg reports it (``h264``, ``MJPG``...), or empty."""
    code = int(capture.get(cv2.CAP_PROP_FOURCC) or 0)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4)).strip("\x00 ")
    return text if text.isprintable() else ""


class ImageFolderSource(CameraSource):
    """The images of a folder, in name order, played in a loop; or one image shown as a still camera.

    Images keep their own size. Decoded images are kept in memory up to 256 MB so a looping folder is decoded
    once.

    Args:
        path: a folder holding images, or one image file.
        name: the camera node.
        uri: what ``uri`` reports (defaults to the path).
        fps: the nominal frame rate (30 unless given).
        clock: the wall clock used for timestamps.

    Raises:
        SourceError: the folder holds no image, or an image cannot be decoded.
    """

    def __init__(
        self,
        path: Path,
        *,
        name: str = "camera",
        uri: str | None = None,
        fps: float | None = None,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self.name = name
        self.uri = uri if uri is not None else str(path)
        self.fps = float(fps) if fps else _DEFAULT_FPS
        if self.path.is_dir():
            self.files = tuple(
                sorted(
                    (
                        item
                        for item in self.path.iterdir()
                        if item.suffix.lower() in IMAGE_SUFFIXES and item.is_file()
                    ),
                    key=lambda item: item.name,
                )
            )
            if not self.files:
                raise self.error(
                    "the folder holds no image (expected files ending in "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))})"
                )
        elif self.path.is_file():
            self.files = (self.path,)
        else:
            raise self.error("no such image folder or file")
        self._cache: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        first = self._load(0)
        self.size = (first.shape[1], first.shape[0])
        self.codec = "/".join(sorted({item.suffix.lower().lstrip(".") for item in self.files}))

    def _load(self, position: int) -> np.ndarray:
        cached = self._cache.get(position)
        if cached is not None:
            return cached
        file = self.files[position]
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise self.error(f"cannot decode image {file.name}")
        if self._cached_bytes + image.nbytes <= _FOLDER_CACHE_BYTES:
            self._cache[position] = image
            self._cached_bytes += image.nbytes
        return image

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        image = self._load(index % len(self.files))
        return self._deliver(image, out) if out is not None else image.copy()

    def _release(self) -> None:
        self._cache.clear()
        self._cached_bytes = 0


class StreamSource(CameraSource):
    """A network camera stream (``rtsp://``, ``rtsps://``, ``rtmp://``, ``http://``, ``https://``) via FFmpeg.

    The first frame is read before the constructor returns, so a stream that cannot be opened fails at once.
    After that a thread takes frames as they arrive; ``read()`` waits for a frame it has not returned yet.
    A broken stream is reopened with backoff (0.1 s doubling up to 2 s) for up to ``reconnect_timeout``
    seconds.

    Args:
        url: the stream URL.
        name: the camera node.
        fps: a frame rate to report instead of the stream's own.
        open_timeout: seconds FFmpeg may take to open the stream.
        read_timeout: seconds FFmpeg may wait for data before it calls the stream broken.
        reconnect_timeout: seconds to keep trying to reopen a broken stream before ``read()`` raises; None to
            try for ever (until :meth:`close`).
        clock: the wall clock used for timestamps.

    Raises:
        SourceError: the stream cannot be opened or gives no frame (naming the node and the URL, password
            hidden).
    """

    live = True

    def __init__(
        self,
        url: str,
        *,
        name: str = "camera",
        fps: float | None = None,
        open_timeout: float = 10.0,
        read_timeout: float = 10.0,
        reconnect_timeout: float | None = 30.0,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.uri = url
        self.name = name
        self._params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            max(1, int(open_timeout * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            max(1, int(read_timeout * 1000)),
        ]
        self._reconnect_timeout = reconnect_timeout
        self.reconnects = 0
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._latest_seq = 0
        self._taken_seq = 0
        self._dropped = 0
        self._failure: str | None = None
        capture = self._connect()
        if capture is None:
            raise self.error(f"cannot open the camera stream: {diagnose_stream(url, min(open_timeout, 5.0))}")
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise self.error("the camera stream opened but gave no frame")
        self.fps = float(fps) if fps else _sane_fps(capture.get(cv2.CAP_PROP_FPS))
        self.codec = _fourcc(capture)
        self.size = (first.shape[1], first.shape[0])
        self._latest, self._latest_seq = first, 1
        self._thread = threading.Thread(target=self._run, args=(capture,), name=f"camera-{name}", daemon=True)
        self._thread.start()

    @property
    def dropped(self) -> int:
        """Frames that arrived but were replaced by a newer one before ``read()`` took them."""
        with self._cond:
            return self._dropped

    def _connect(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(self.uri, cv2.CAP_FFMPEG, self._params)
        if capture.isOpened():
            return capture
        capture.release()
        return None

    def _run(self, capture: cv2.VideoCapture | None) -> None:
        delay = 0.1
        broken_since: float | None = None
        try:
            while not self._closed:
                if capture is None:
                    capture = self._connect()
                    if capture is None:
                        if self._give_up(broken_since):
                            return
                        self._sleep(delay)
                        delay = min(delay * 2, 2.0)
                        continue
                    with self._cond:
                        self.reconnects += 1
                ok, image = capture.read()
                if ok and image is not None:
                    delay, broken_since = 0.1, None
                    with self._cond:
                        if self._latest_seq > self._taken_seq:
                            self._dropped += 1
                        self._latest = image
                        self._latest_seq += 1
                        self._cond.notify_all()
                    continue
                capture.release()
                capture = None
                if broken_since is None:
                    broken_since = time.monotonic()
        except Exception as error:  # a reader that dies must not leave read() waiting for ever
            with self._cond:
                self._failure = f"the camera reader failed: {type(error).__name__}: {error}".replace(
                    "\n", " "
                )
                self._cond.notify_all()
        finally:
            if capture is not None:
                capture.release()

    def _give_up(self, broken_since: float | None) -> bool:
        if self._reconnect_timeout is None or broken_since is None:
            return False
        if time.monotonic() - broken_since < self._reconnect_timeout:
            return False
        with self._cond:
            self._failure = (
                f"the camera stream broke and could not be reopened for {self._reconnect_timeout:g} s"
            )
            self._cond.notify_all()
        return True

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._closed, timeout=seconds)

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or self._failure is not None or self._latest_seq > self._taken_seq
            )
            if self._latest_seq > self._taken_seq and self._latest is not None:
                self._taken_seq = self._latest_seq
                image = self._latest
            elif self._closed:
                raise self.error("the camera source is closed")
            else:
                raise self.error(self._failure or "the camera stream broke")
        return self._deliver(image, out)

    def _release(self) -> None:
        with self._cond:
            self._cond.notify_all()
        # The reader thread leaves after its current read (bounded by the read timeout) and frees the capture.
        self._thread.join(timeout=1.0)

    def __repr__(self) -> str:
        return f"<StreamSource {self.name} {redact_uri(self.uri)}>"


_DEFAULT_PORTS = {"http": 80, "https": 443, "rtmp": 1935, "rtsp": 554, "rtsps": 322}


def diagnose_stream(url: str, timeout: float = 5.0) -> str:
    """Say why a stream URL FFmpeg could not open is unusable, as far as a plain connection can tell.

    FFmpeg only logs its reason to stderr; this looks again with a socket (and an HTTP request for http URLs)
    so the error a user sees names the cause.

    Args:
        url: the stream URL.
        timeout: seconds for each network step.

    Returns:
        A short reason, such as ``connection refused by HOST:PORT``, ``HTTP 404 Not Found`` or ``the server
        answers but FFmpeg found no video stream there``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    except ValueError:
        return "the URL has an invalid port"
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except socket.gaierror:
        return f"host {host} not found"
    except ConnectionRefusedError:
        return f"connection refused by {host}:{port}"
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as error:
        return f"cannot connect to {host}:{port}: {error.strerror or error}"
    if parts.scheme.lower() in ("http", "https"):
        reason = _diagnose_http(parts.scheme.lower(), host, port, parts, timeout)
        if reason:
            return reason
    return "the server answers but FFmpeg found no video stream there"


def _diagnose_http(scheme: str, host: str, port: int, split: SplitResult, timeout: float) -> str | None:
    target = split.path or "/"
    if split.query:
        target += f"?{split.query}"
    headers = {}
    if split.username is not None:
        credentials = f"{unquote(split.username)}:{unquote(split.password or '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(credentials).decode("ascii")
    connection: http.client.HTTPConnection
    if scheme == "https":
        connection = http.client.HTTPSConnection(
            host, port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        if response.status >= 400:
            hint = " (wrong or missing credentials?)" if response.status in (401, 403) else ""
            return f"HTTP {response.status} {response.reason}{hint}"
        kind = response.getheader("Content-Type", "")
        if kind.startswith(("text/", "application/json")):
            return f"the server sent {kind.split(';')[0]}, not a video stream"
    except ssl.SSLError as error:
        return f"TLS failed: {error.reason or error}"
    except (OSError, http.client.HTTPException) as error:
        return f"HTTP request failed: {error}"
    finally:
        connection.close()
    return None
