"""``panoramasdk.media``: one camera frame handed to the app, with the overlays it adds for HDMI."""

import numbers

import numpy as np

__all__ = ["media"]


def _coordinate(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("{} must be a number in [0, 1], found {!r}".format(name, value))
    number = float(value)
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise ValueError("{} must be in [0, 1], found {!r}".format(name, value))
    return number


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

        Raises:
            ValueError: a coordinate is outside [0, 1].
            TypeError: a coordinate is not a number.
        """
        self._labels.append((str(text), _coordinate("x", x), _coordinate("y", y)))

    def add_rect(self, left, top, right, bottom):
        """Attach a rectangle for the HDMI output; coordinates relative to the image, in [0, 1].

        Raises:
            ValueError: a coordinate is outside [0, 1], or ``left >= right`` or ``top >= bottom``.
            TypeError: a coordinate is not a number.
        """
        rect = (
            _coordinate("left", left),
            _coordinate("top", top),
            _coordinate("right", right),
            _coordinate("bottom", bottom),
        )
        if rect[0] >= rect[2]:
            raise ValueError("left must be less than right, found left={!r} right={!r}".format(left, right))
        if rect[1] >= rect[3]:
            raise ValueError("top must be less than bottom, found top={!r} bottom={!r}".format(top, bottom))
        self._rects.append(rect)

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
