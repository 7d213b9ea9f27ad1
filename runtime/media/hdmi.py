"""The appliance's HDMI output: what apps put on their video output, composed on one 1920x1080 screen.

``HdmiSink.show(outputs)`` draws each stream's image with its labels and rectangles and lays the streams
out in a grid (1 full screen, 2 side by side, 3-4 in 2x2, 5-9 in 3x3), aspect ratio kept. It keeps the last
screen, counts outputs, remembers every label text seen, and, off the caller's thread, rewrites
``out_dir/last.png`` at most every ``snapshot_interval`` seconds and records every screen to an MP4 file.
Live viewers wait for the next screen with :meth:`HdmiSink.wait_for_output` or iterate JPEG frames from
:meth:`HdmiSink.subscribe` (an MJPEG endpoint writes each one with :func:`mjpeg_part`). Encoding to PNG or
JPEG happens only when asked, once per screen.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import cv2
import numpy as np

from emulator.errors import DeviceError
from runtime.media.overlay import Output, compose, no_signal
from runtime.media.recording import FrameWriter, encode_png, write_atomic

__all__ = [
    "MJPEG_BOUNDARY",
    "MJPEG_CONTENT_TYPE",
    "HdmiSink",
    "Output",
    "Subscription",
    "mjpeg_part",
]

MJPEG_BOUNDARY = "frame"
"""Boundary between the parts of an MJPEG stream."""
MJPEG_CONTENT_TYPE = f"multipart/x-mixed-replace; boundary={MJPEG_BOUNDARY}"
"""HTTP Content-Type of an MJPEG stream made of :func:`mjpeg_part` parts."""


def mjpeg_part(jpeg: bytes) -> bytes:
    """Wrap one JPEG image as a part of a ``multipart/x-mixed-replace`` (MJPEG) HTTP stream.

    Args:
        jpeg: the JPEG file's bytes.

    Returns:
        The part: boundary, headers, the image and the closing line break.
    """
    head = f"--{MJPEG_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
    return head.encode("ascii") + jpeg + b"\r\n"


class HdmiSink:
    """The HDMI output of the appliance.

    Args:
        size: the screen's ``(width, height)``.
        out_dir: folder where ``last.png`` is kept up to date, or None.
        record: MP4 file recording every screen shown, or None.
        snapshot_interval: least seconds between two writes of ``last.png`` (it is also written on close).
        record_fps: frame rate written in the MP4 file.
        every: also keep every ``every``-th screen in ``out_dir`` as ``hdmi-<n>.png`` (n counts from 1).

    Raises:
        DeviceError: the size is out of range, ``out_dir`` cannot be created or ``record`` cannot be opened.
    """

    def __init__(
        self,
        size: tuple[int, int] = (1920, 1080),
        out_dir: Path | None = None,
        record: Path | None = None,
        *,
        snapshot_interval: float = 0.5,
        record_fps: float = 30.0,
        every: int | None = None,
    ) -> None:
        width, height = size
        if not (16 <= width <= 8192 and 16 <= height <= 8192):
            raise DeviceError(f"the HDMI screen must be 16..8192 pixels a side, found {width}x{height}")
        if every is not None and (out_dir is None or every < 1):
            raise DeviceError(
                f"keeping every K-th HDMI screen needs an output folder and K >= 1, found {every}"
            )
        self.size = (int(width), int(height))
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.record = Path(record) if record is not None else None
        self._cond = threading.Condition()
        self._last: np.ndarray | None = None
        self._outputs = 0
        self._labels: set[str] = set()
        self._streams: tuple[str, ...] = ()
        self._encoded: dict[str, tuple[int, bytes]] = {}
        self._render_ms: collections.deque[float] = collections.deque(maxlen=1000)
        self._closed = False
        self._writer: FrameWriter | None = None
        if self.out_dir is not None or self.record is not None:
            self._writer = FrameWriter(
                self.size,
                out_dir=self.out_dir,
                record=self.record,
                fps=record_fps,
                snapshot_interval=snapshot_interval,
                every=every,
            )

    @property
    def last_frame(self) -> np.ndarray | None:
        """The last screen shown (read-only), or None before the first output."""
        with self._cond:
            return self._last

    @property
    def outputs(self) -> int:
        """How many times :meth:`show` has been called."""
        with self._cond:
            return self._outputs

    @property
    def streams(self) -> tuple[str, ...]:
        """The stream ids of the last output, in screen order."""
        with self._cond:
            return self._streams

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def show(self, outputs: Sequence[Output]) -> np.ndarray:
        """Compose and show one screen made of ``outputs`` (one per stream, in screen order).

        Args:
            outputs: the frames an app put on its video output, with their labels and rectangles.

        Returns:
            The screen (read-only; copy it to draw on it).

        Raises:
            DeviceError: the sink is closed, or an output's image is not an image.
        """
        if self._closed:
            raise DeviceError("the HDMI output is closed")
        started = time.perf_counter()
        try:
            screen = compose(outputs, self.size)
        except ValueError as error:
            raise DeviceError(f"cannot show the frame on HDMI: {error}") from None
        screen.flags.writeable = False
        texts = {str(label[0]) for output in outputs for label in output.labels if len(label) == 3}
        with self._cond:
            self._last = screen
            self._outputs += 1
            self._labels |= texts
            self._streams = tuple(output.stream_id for output in outputs)
            self._render_ms.append((time.perf_counter() - started) * 1000)
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.submit(screen)
        return screen

    def labels(self) -> set[str]:
        """Every label text shown since the sink was created.

        Returns:
            A new set of the texts.
        """
        with self._cond:
            return set(self._labels)

    def _encoded_frame(self, kind: str, quality: int = 80) -> bytes:
        with self._cond:
            number, screen = self._outputs, self._last
            cached = self._encoded.get(kind)
        if cached is not None and cached[0] == number and screen is not None:
            return cached[1]
        image = screen if screen is not None else no_signal(self.size)
        if kind == "png":
            data = encode_png(image)
        else:
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if not ok:
                raise DeviceError("the HDMI frame could not be encoded as JPEG")
            data = bytes(buffer.tobytes())
        if screen is not None:
            with self._cond:
                self._encoded[kind] = (number, data)
        return data

    def last_png(self) -> bytes:
        """The last screen as a PNG file ("NO SIGNAL" before the first output); encoded once per screen.

        Returns:
            The PNG bytes.

        Raises:
            DeviceError: encoding failed.
        """
        return self._encoded_frame("png")

    def last_jpeg(self, quality: int = 80) -> bytes:
        """The last screen as JPEG ("NO SIGNAL" before the first output); encoded once per screen and quality.

        Args:
            quality: JPEG quality, 1-100.

        Returns:
            The JPEG bytes.

        Raises:
            DeviceError: encoding failed.
        """
        quality = min(max(int(quality), 1), 100)
        return self._encoded_frame(f"jpeg{quality}", quality=quality)

    def snapshot(self, path: Path) -> Path:
        """Write the last screen as a PNG file now.

        Args:
            path: the file to write (replaced atomically; its folder must exist).

        Returns:
            ``path``.

        Raises:
            DeviceError: the file cannot be written.
        """
        try:
            write_atomic(Path(path), self.last_png())
        except OSError as error:
            raise DeviceError(f"cannot write the HDMI snapshot: {error.strerror}", file=str(path)) from None
        return Path(path)

    def wait_for_output(self, after: int, timeout: float | None = None) -> int:
        """Wait until more than ``after`` outputs have been shown, the sink closes, or ``timeout`` passes.

        Args:
            after: the output count already seen.
            timeout: seconds to wait at most; None waits for ever.

        Returns:
            The output count now (still ``after`` when nothing new came in time).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._outputs > after or self._closed, timeout=timeout)
            return self._outputs

    def subscribe(self, quality: int = 80, keepalive: float = 1.0) -> Subscription:
        """Follow the screen live as JPEG frames (for an MJPEG endpoint).

        Args:
            quality: JPEG quality, 1-100.
            keepalive: when no new screen comes for this many seconds, the last one is given again so a
                viewer's connection stays alive ("NO SIGNAL" before the first output).

        Returns:
            An iterator of JPEG bytes: the current screen first, then each new one. A viewer slower than the
            output skips screens rather than falls behind. It ends when the sink or the subscription closes.
        """
        return Subscription(self, quality, keepalive)

    def metrics(self) -> dict[str, object]:
        """Figures about the output.

        Returns:
            ``outputs``, ``streams``, ``labels``, ``render_ms_p50`` and ``render_ms_p99`` (over the last 1000
            outputs), ``recorded`` (MP4 frames written) and ``snapshots`` (times ``last.png`` was written).
        """
        with self._cond:
            times = sorted(self._render_ms)
            figures: dict[str, object] = {
                "outputs": self._outputs,
                "streams": len(self._streams),
                "labels": len(self._labels),
                "render_ms_p50": round(times[len(times) // 2], 3) if times else None,
                "render_ms_p99": round(times[min(len(times) - 1, len(times) * 99 // 100)], 3)
                if times
                else None,
            }
        figures["recorded"] = self._writer.recorded if self._writer is not None else 0
        figures["snapshots"] = self._writer.snapshots if self._writer is not None else 0
        return figures

    def close(self) -> None:
        """Stop: write the final ``last.png``, finish the MP4 file, end subscriptions; closing twice is fine.

        Raises:
            DeviceError: a snapshot or the recording could not be written.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify_all()
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> HdmiSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Subscription(Iterator[bytes]):
    """A live viewer of an :class:`HdmiSink`: iterate it for JPEG frames; :meth:`close` ends it.

    Args:
        sink: the output to follow.
        quality: JPEG quality.
        keepalive: seconds after which the last frame is given again when nothing new came.
    """

    def __init__(self, sink: HdmiSink, quality: int = 80, keepalive: float = 1.0) -> None:
        self._sink = sink
        self._quality = quality
        self._keepalive = keepalive
        self._seen = -1
        self._closed = False

    def __next__(self) -> bytes:
        if self._closed or self._sink.closed:
            raise StopIteration
        if self._seen >= 0:
            # The first call gives the current screen at once; later ones wait for a new screen.
            deadline = time.monotonic() + self._keepalive
            while not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._sink.wait_for_output(self._seen, timeout=min(remaining, 0.25)) > self._seen:
                    break
                if self._sink.closed:
                    raise StopIteration
        if self._closed:
            raise StopIteration
        self._seen = self._sink.outputs
        return self._sink.last_jpeg(self._quality)

    def close(self) -> None:
        """End the subscription: iteration stops within a quarter of a second."""
        self._closed = True
