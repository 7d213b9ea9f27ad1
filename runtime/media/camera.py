"""What every camera source is: the frame it yields, the interface it implements, and an in-memory fake.

A camera source yields the frames of one camera node. ``read()`` returns the next frame as fast as it can be
produced; pacing to ``fps`` is the caller's job, so a lockstep run takes frames exactly when the app is ready.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from emulator.errors import SourceError

__all__ = ["ArraySource", "CameraSource", "Clock", "Frame", "as_bgr", "redact_uri"]

Clock = Callable[[], float]
"""A function returning the current time in seconds since the epoch (``time.time`` by default)."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One frame taken from a camera.

    Args:
        image: H x W x 3 uint8 BGR pixels.
        index: position of the frame in the sequence this source has delivered since it was opened
            (0, 1, 2, ...; it keeps counting when a file loops or a stream reconnects).
        timestamp: wall-clock time, in seconds since the epoch, at which the frame was read.
    """

    image: np.ndarray
    index: int
    timestamp: float

    @property
    def time_stamp(self) -> tuple[int, int]:
        """The timestamp as ``(seconds, microseconds)``, the form ``panoramasdk.media.time_stamp`` has."""
        micros = round(self.timestamp * 1_000_000)
        return micros // 1_000_000, micros % 1_000_000


def as_bgr(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as a contiguous H x W x 3 uint8 BGR array, converting grey, BGRA and float images.

    Args:
        image: an H x W, H x W x 1, H x W x 3 or H x W x 4 array.

    Returns:
        The image itself when it already has the right layout, else a converted copy.

    Raises:
        ValueError: the array cannot be read as an image.
    """
    if image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8:
        return image if image.flags.c_contiguous else np.ascontiguousarray(image)
    if image.dtype != np.uint8:
        if not np.issubdtype(image.dtype, np.number):
            raise ValueError(f"an image must hold numbers, found dtype {image.dtype}")
        image = np.clip(np.nan_to_num(image), 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.ascontiguousarray(np.repeat(image[:, :, None], 3, axis=2))
    if image.ndim == 3 and image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    if image.ndim == 3 and image.shape[2] == 3:
        return np.ascontiguousarray(image)
    raise ValueError(f"an image must be H x W x 3, found shape {tuple(image.shape)}")


class CameraSource(abc.ABC):
    """One camera node's source of frames.

    Subclasses set ``uri``, ``name``, ``fps`` and ``size`` in their constructor and implement
    :meth:`_next_image` (and :meth:`_release` if they hold resources).

    Attributes:
        uri: the source as given (a spec, a path or a URL); the app sees it as ``media.stream_uri``.
        name: the camera node this source feeds.
        fps: frames per second the source is meant to be played at (the caller paces; ``read()`` does not
            wait).
        size: ``(width, height)`` of the frames (of the first frame for a folder of images of several sizes).
        codec: what the frames are decoded from (a video codec's four-character code, image file types,
            ``synthetic``), empty when unknown.
        live: True when frames arrive on their own schedule (a network stream): frames not taken in time are
            dropped, and ``dropped`` counts them.
    """

    uri: str
    name: str
    fps: float
    size: tuple[int, int]
    live: bool = False
    codec: str = ""

    def __init__(self, *, clock: Clock = time.time) -> None:
        self._clock = clock
        self._next_index = 0
        self._closed = False

    @property
    def frames_read(self) -> int:
        """How many frames ``read()`` has returned so far."""
        return self._next_index

    @property
    def dropped(self) -> int:
        """Frames this source produced that were never read (only live sources drop frames)."""
        return 0

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def read(self) -> Frame:
        """Return the next frame, as fast as it can be produced.

        Returns:
            The next :class:`Frame`; files and folders loop at their end.

        Raises:
            SourceError: the source was closed, or it cannot produce a frame any more (naming node and URI).
        """
        return self._make_frame(None)

    def read_into(self, out: np.ndarray) -> Frame:
        """Return the next frame, written into ``out`` when its shape matches, to spare a copy.

        Args:
            out: a writable H x W x 3 uint8 array (for example a shared-memory buffer).

        Returns:
            The next frame. Its ``image`` is ``out`` when the frame has ``out``'s shape; otherwise (a folder
            of images of several sizes) it is a new array and ``out`` is left untouched.

        Raises:
            SourceError: as for :meth:`read`.
        """
        return self._make_frame(out)

    def _make_frame(self, out: np.ndarray | None) -> Frame:
        if self._closed:
            raise self.error("the camera source is closed")
        image = self._next_image(self._next_index, out)
        frame = Frame(image=image, index=self._next_index, timestamp=self._clock())
        self._next_index += 1
        return frame

    @abc.abstractmethod
    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        """Produce the image of frame ``index``; write it into ``out`` if given and shaped alike."""

    @staticmethod
    def _deliver(image: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        if out is not None and out.shape == image.shape and out.dtype == image.dtype:
            np.copyto(out, image)
            return out
        return image

    def error(self, message: str) -> SourceError:
        """Build a one-line :class:`SourceError` naming this camera node and its URI.

        Args:
            message: what went wrong.

        Returns:
            The error, to be raised by the caller.
        """
        return SourceError(f"{message} (source {redact_uri(self.uri)})", node=self.name)

    def close(self) -> None:
        """Release the source. Further reads raise :class:`SourceError`; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            self._release()

    def _release(self) -> None:  # noqa: B027 - optional hook, a no-op for sources that hold nothing
        """Free what the source holds (files, captures, threads)."""

    def __enter__(self) -> CameraSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        width, height = self.size
        return f"<{type(self).__name__} {self.name} {redact_uri(self.uri)} {width}x{height}@{self.fps:g}>"


def redact_uri(uri: str) -> str:
    """Hide the password of a ``scheme://user:password@host`` URI so it can be shown in messages."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return uri
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}{slash}{path}"


class ArraySource(CameraSource):
    """A camera that plays a list of in-memory images, looping at the end: the fake for fast tests.

    Args:
        frames: the images (H x W x 3 uint8 BGR; other layouts are converted), at least one.
        name: the camera node.
        fps: the nominal frame rate.
        uri: what ``uri`` reports.
        loop: play again from the first image after the last; when False, reading past the end raises
            :class:`SourceError`.
        clock: the wall clock used for timestamps.

    Raises:
        SourceError: ``frames`` is empty or holds something that is not an image.
    """

    def __init__(
        self,
        frames: Sequence[np.ndarray],
        *,
        name: str = "camera",
        fps: float = 30.0,
        uri: str = "array://",
        loop: bool = True,
        clock: Clock = time.time,
    ) -> None:
        super().__init__(clock=clock)
        self.uri = uri
        self.name = name
        self.fps = float(fps)
        self._loop = loop
        if not frames:
            raise self.error("an array source needs at least one frame")
        try:
            self._frames = [as_bgr(np.asarray(frame)) for frame in frames]
        except ValueError as error:
            raise self.error(str(error)) from None
        height, width = self._frames[0].shape[:2]
        self.size = (width, height)

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        if not self._loop and index >= len(self._frames):
            raise self.error(f"no frame after the last one ({len(self._frames)} frames)")
        image = self._frames[index % len(self._frames)]
        # Hand out a copy so an app drawing on a frame cannot change the ones that follow.
        return self._deliver(image, out) if out is not None else image.copy()
