"""Writing what the HDMI output shows to disk, off the caller's thread: PNG snapshots and an MP4 recording.

Encoding a 1080p PNG or an MP4 frame takes milliseconds, so a thread does it: the screen that is shown is
handed over and the caller goes on. Every frame shown reaches the recording, in order (the hand-over waits
when the encoder falls far behind); the snapshot ``last.png`` is rewritten at most once per interval, and
once more when the writer closes so it always ends up holding the last frame. With ``every=K``, every K-th
screen is also kept as a numbered PNG.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from emulator.errors import DeviceError

__all__ = ["SNAPSHOT_NAME", "FrameWriter", "encode_png", "numbered_name", "write_atomic"]

SNAPSHOT_NAME = "last.png"
"""File name of the snapshot in the output directory."""

_MAX_PENDING = 32


def numbered_name(number: int) -> str:
    """The file name of HDMI screen ``number`` kept by ``--every``: ``hdmi-000042.png``."""
    return f"hdmi-{number:06d}.png"


def encode_png(image: np.ndarray, compression: int = 1) -> bytes:
    """Encode an image as PNG.

    Args:
        image: H x W x 3 uint8 BGR.
        compression: zlib level 0-9 (1 is fast and still lossless).

    Returns:
        The PNG file's bytes.

    Raises:
        DeviceError: OpenCV could not encode the image.
    """
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:
        raise DeviceError("the HDMI frame could not be encoded as PNG")
    return bytes(buffer.tobytes())


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half of one.

    Args:
        path: the file to (over)write; its folder must exist.
        data: the bytes.

    Raises:
        OSError: the file could not be written.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


class FrameWriter:
    """Writes snapshots and a recording of the screens handed to it, on a thread of its own.

    Args:
        size: the screen's ``(width, height)``.
        out_dir: folder for ``last.png`` (created if missing), or None for no snapshots.
        record: MP4 file to record to (its folder is created if missing), or None for no recording.
        fps: frame rate written in the MP4 file.
        snapshot_interval: least seconds between two writes of ``last.png`` (0: every frame).
        every: also keep every ``every``-th screen as a numbered PNG, ``hdmi-<n>.png`` with n the screen's
            number from 1 (needs ``out_dir``; none are skipped, the hand-over waits for the encoder).

    Raises:
        DeviceError: the output folder cannot be created or the MP4 file cannot be opened for writing.
    """

    def __init__(
        self,
        size: tuple[int, int],
        *,
        out_dir: Path | None = None,
        record: Path | None = None,
        fps: float = 30.0,
        snapshot_interval: float = 0.5,
        every: int | None = None,
    ) -> None:
        if every is not None and (every < 1 or out_dir is None):
            raise DeviceError(
                f"keeping every K-th HDMI screen needs an output folder and K >= 1, found {every}"
            )
        self.size = size
        self.every = every
        self.numbered = 0
        self._shown = 0
        self._numbered: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.record = Path(record) if record is not None else None
        self.snapshot_interval = max(0.0, snapshot_interval)
        self.recorded = 0
        self.snapshots = 0
        self.failure: str | None = None
        self._cond = threading.Condition()
        self._pending: collections.deque[np.ndarray] = collections.deque()
        self._latest: np.ndarray | None = None
        self._latest_dirty = False
        self._next_snapshot = 0.0
        self._closing = False
        self._writer: cv2.VideoWriter | None = None
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DeviceError(
                    f"cannot create the HDMI output folder: {error.strerror}", file=str(out_dir)
                ) from None
        if self.record is not None:
            try:
                self.record.parent.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DeviceError(
                    f"cannot create the recording's folder: {error.strerror}", file=str(record)
                ) from None
            writer = cv2.VideoWriter(str(self.record), cv2.VideoWriter.fourcc(*"mp4v"), float(fps), size)
            if not writer.isOpened():
                writer.release()
                raise DeviceError("cannot open the MP4 recording for writing", file=str(record))
            self._writer = writer
        self._thread = threading.Thread(target=self._run, name="hdmi-writer", daemon=True)
        self._thread.start()

    @property
    def snapshot_path(self) -> Path | None:
        """Where ``last.png`` is written, or None without an output folder."""
        return self.out_dir / SNAPSHOT_NAME if self.out_dir is not None else None

    def submit(self, screen: np.ndarray) -> None:
        """Hand over a screen just shown. ``screen`` must not be modified afterwards.

        Args:
            screen: H x W x 3 uint8 of the writer's size.
        """
        with self._cond:
            if self._closing:
                return
            if self._writer is not None and self.failure is None:
                # Keep every frame of the recording: wait for the encoder rather than drop.
                self._cond.wait_for(lambda: len(self._pending) < _MAX_PENDING or self._closing)
                self._pending.append(screen)
            self._shown += 1
            if self.every is not None and self._shown % self.every == 0 and self.failure is None:
                self._cond.wait_for(lambda: len(self._numbered) < _MAX_PENDING or self._closing)
                self._numbered.append((self._shown, screen))
            if self.out_dir is not None:
                self._latest = screen
                self._latest_dirty = True
            self._cond.notify_all()

    def _snapshot_due(self) -> bool:
        return self._latest_dirty and time.monotonic() >= self._next_snapshot

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: (
                        self._closing or bool(self._pending) or bool(self._numbered) or self._snapshot_due()
                    ),
                    timeout=self._wake_in(),
                )
                frames = list(self._pending)
                self._pending.clear()
                numbered = list(self._numbered)
                self._numbered.clear()
                snapshot = None
                if self._snapshot_due():
                    snapshot, self._latest_dirty = self._latest, False
                    self._next_snapshot = time.monotonic() + self.snapshot_interval
                closing = self._closing
                self._cond.notify_all()
            for frame in frames:
                self._record(frame)
            for number, frame in numbered:
                self._keep(number, frame)
            if snapshot is not None:
                self._snapshot(snapshot)
            if closing:
                return

    def _wake_in(self) -> float | None:
        if not self._latest_dirty:
            return None
        return max(0.0, self._next_snapshot - time.monotonic())

    def _record(self, frame: np.ndarray) -> None:
        if self._writer is None or self.failure is not None:
            return
        try:
            self._writer.write(frame)
            self.recorded += 1
        except cv2.error as error:
            self.failure = f"recording to {self.record} failed: {error.err}"

    def _keep(self, number: int, frame: np.ndarray) -> None:
        if self.out_dir is None or self.failure is not None:
            return
        path = self.out_dir / numbered_name(number)
        try:
            write_atomic(path, encode_png(frame))
            self.numbered += 1
        except (OSError, DeviceError) as error:
            self.failure = f"writing {path} failed: {error}"

    def _snapshot(self, frame: np.ndarray) -> None:
        path = self.snapshot_path
        if path is None:
            return
        try:
            write_atomic(path, encode_png(frame))
            self.snapshots += 1
        except (OSError, DeviceError) as error:
            self.failure = f"writing {path} failed: {error}"

    def close(self) -> None:
        """Write what is pending and the final snapshot, and finish the MP4 file. Closing twice is harmless.

        Raises:
            DeviceError: a snapshot or the recording could not be written (the first failure).
        """
        with self._cond:
            already = self._closing
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if already:
            return
        if self._latest_dirty and self._latest is not None:
            self._latest_dirty = False
            self._snapshot(self._latest)
        if self._writer is not None:
            self._writer.release()
        if self.failure is not None:
            raise DeviceError(self.failure)
