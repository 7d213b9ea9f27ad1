"""``panoramasdk.media``: one camera frame handed to the app, with the overlays it adds for HDMI."""

import math
import numbers
import sys
import threading

import numpy as np

__all__ = ["media"]

# Kinds of drawing problem already noted in the app's log: each is noted once per process, not per frame.
_noted = set()
_noted_lock = threading.Lock()


def _note(kind, text):
    with _noted_lock:
        if kind in _noted:
            return
        _noted.add(kind)
    try:
        sys.stderr.write("panoramasdk: {} (noted once)\n".format(text))
        sys.stderr.flush()
    except Exception:
        pass


def _number(name, value):
    """A coordinate as a float; TypeError for what is not a number (as the device's binding would)."""
    if isinstance(value, (bool, str, bytes, bytearray)) or value is None:
        raise TypeError("{} must be a number in [0, 1], found {!r}".format(name, value))
    if isinstance(value, numbers.Real):
        return float(value)
    try:
        return float(value)  # numpy scalars and 0-d arrays
    except (TypeError, ValueError):
        raise TypeError("{} must be a number in [0, 1], found {!r}".format(name, value)) from None


def _call_text(method, names, values):
    shown = ["{}={!r}".format(names[i], values[i]) for i in range(len(names))]
    return "{}({})".format(method, ", ".join(shown))


def _coordinates(method, names, values):
    """The values clamped to [0, 1], noting once per kind what was wrong; None when one is NaN."""
    found = [_number(names[i], values[i]) for i in range(len(names))]
    if any(math.isnan(number) for number in found):
        _note(
            (method, "nan"),
            "{}: a coordinate is not a number, so this overlay is not drawn".format(
                _call_text(method, names, values)
            ),
        )
        return None
    clamped = [min(max(number, 0.0), 1.0) for number in found]
    if clamped != found:
        _note(
            (method, "outside"),
            "{}: coordinates outside [0, 1] are clamped to it".format(_call_text(method, names, values)),
        )
    return clamped


class media(object):
    """A frame from one camera stream.

    The appliance makes these; ``media(image)`` makes one from an array of your own (to put a picture
    that came from no camera).

    Args:
        image: H x W x 3 uint8 BGR pixels.
        stream_id: the camera node the frame came from.
        stream_uri: the camera's URI.
        time_stamp: ``(seconds, microseconds)`` of the frame.
        is_cached: True when the frame is not new in this batch.
    """

    __slots__ = (
        "__weakref__",
        "_image",
        "_is_cached",
        "_labels",
        "_rects",
        "_slot",
        "_slot_image",
        "_stream_id",
        "_stream_uri",
        "_time_stamp",
    )

    def __init__(self, image, stream_id="", stream_uri="", time_stamp=(0, 0), is_cached=False):
        self._image = image
        self._slot = -1
        self._slot_image = None
        self._stream_id = str(stream_id)
        self._stream_uri = str(stream_uri)
        self._time_stamp = (int(time_stamp[0]), int(time_stamp[1]))
        self._is_cached = bool(is_cached)
        self._labels = []
        self._rects = []

    @classmethod
    def _from_slot(cls, slot, image, stream_id, stream_uri, time_stamp, is_cached):
        frame = cls.__new__(cls)
        frame._image = image
        frame._slot = slot
        frame._slot_image = image
        frame._stream_id = stream_id
        frame._stream_uri = stream_uri
        frame._time_stamp = time_stamp
        frame._is_cached = is_cached
        frame._labels = []
        frame._rects = []
        return frame

    @property
    def image(self):
        """The frame's pixels: an H x W x 3 uint8 BGR numpy array. Drawing on it changes what HDMI shows."""
        return self._image

    @image.setter
    def image(self, value):
        self._image = value

    @property
    def stream_id(self):
        """The camera node this frame came from."""
        return self._stream_id

    @property
    def stream_uri(self):
        """The URI of the camera stream."""
        return self._stream_uri

    @property
    def time_stamp(self):
        """When the camera took the frame, as ``(seconds, microseconds)``."""
        return self._time_stamp

    @property
    def is_cached(self):
        """True when this stream has no new frame in this batch: the frame was handed out before."""
        return self._is_cached

    def add_label(self, text, x, y):
        """Attach a text label for the HDMI output; its top-left corner at ``(x, y)``, relative, in [0, 1].

        Coordinates outside [0, 1] are clamped to it and a label at NaN is not drawn; either is noted once
        in the app's log (stderr), never raised.

        Raises:
            TypeError: a coordinate is not a number.
        """
        point = _coordinates("add_label", ("x", "y"), (x, y))
        if point is not None:
            self._labels.append((str(text), point[0], point[1]))

    def add_rect(self, left, top, right, bottom):
        """Attach a rectangle for the HDMI output; coordinates relative to the image, in [0, 1].

        Coordinates outside [0, 1] are clamped to it, an inverted rectangle (``left > right`` or
        ``top > bottom``) is normalised and one with a NaN corner is not drawn; each kind of problem is noted
        once in the app's log (stderr), never raised.

        Raises:
            TypeError: a coordinate is not a number.
        """
        names = ("left", "top", "right", "bottom")
        values = (left, top, right, bottom)
        rect = _coordinates("add_rect", names, values)
        if rect is None:
            return
        x0, y0, x1, y1 = rect
        if x0 > x1 or y0 > y1:
            _note(
                ("add_rect", "inverted"),
                "{}: an inverted rectangle (left > right or top > bottom) is drawn with its corners "
                "swapped".format(_call_text("add_rect", names, values)),
            )
            x0, x1 = min(x0, x1), max(x0, x1)
            y0, y1 = min(y0, y1), max(y0, y1)
        self._rects.append((x0, y0, x1, y1))

    def _wire(self):
        """What ``put`` sends for this frame: ``(item, pixels)``; pixels is None when the slot carries them.

        Raises:
            ValueError: the image is not an image.
        """
        image = self._image
        slot = -1
        pixels = None
        if self._slot >= 0 and image is self._slot_image:
            slot = self._slot
        else:
            array = np.asarray(image)
            if self._slot >= 0 and array.shape == self._slot_image.shape and array.dtype == np.uint8:
                np.copyto(self._slot_image, array)
                slot = self._slot
            else:
                if (
                    array.dtype != np.uint8
                    or array.ndim not in (2, 3)
                    or (array.ndim == 3 and array.shape[2] not in (1, 3, 4))
                    or 0 in array.shape
                ):
                    raise ValueError(
                        "media.image must be an H x W x 3 uint8 array, found {} {}".format(
                            array.dtype, tuple(array.shape)
                        )
                    )
                pixels = array
        item = {"slot": slot, "stream_id": self._stream_id, "labels": self._labels, "rects": self._rects}
        if pixels is not None:
            item["shape"] = list(pixels.shape)
        return item, pixels

    def __repr__(self):
        shape = getattr(self._image, "shape", None)
        return "<panoramasdk.media stream_id={!r} shape={} time_stamp={} is_cached={}>".format(
            self._stream_id, shape, self._time_stamp, self._is_cached
        )
