"""What the HDMI output draws: each stream's image with its labels and rectangles, laid out in a grid.

Labels and rectangles are metadata an app attaches to a frame (``media.add_label`` / ``media.add_rect``) with
coordinates relative to the image, in [0, 1]. They are drawn after the image has been scaled into its place on
the screen, so text has the same readable size whatever the camera's resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from runtime.media.camera import as_bgr

__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_COLOR",
    "RECT_COLOR",
    "Output",
    "compose",
    "draw_overlays",
    "fit_rect",
    "grid_cells",
    "grid_shape",
    "no_signal",
]

RECT_COLOR = (0, 255, 0)
"""BGR colour of rectangle outlines."""
LABEL_COLOR = (255, 255, 255)
"""BGR colour of label text."""
LABEL_BACKGROUND = (0, 0, 0)
"""BGR colour of the box behind label text."""

_FONT = cv2.FONT_HERSHEY_SIMPLEX

Label = tuple[str, float, float]
Rect = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Output:
    """One stream's frame as an app put it on its video output.

    Args:
        image: H x W x 3 uint8 BGR pixels (grey, BGRA and float images are converted when drawn).
        labels: ``(text, x, y)`` with ``x``, ``y`` in [0, 1] relative to the image: the top-left corner of
            the text.
        rects: ``(left, top, right, bottom)`` in [0, 1] relative to the image, drawn as outlines.
        stream_id: the stream (camera) the frame came from.
    """

    image: np.ndarray
    labels: Sequence[Label] = ()
    rects: Sequence[Rect] = ()
    stream_id: str = ""


def grid_shape(count: int) -> tuple[int, int]:
    """Columns and rows of the grid that shows ``count`` streams.

    1 -> 1x1, 2 -> 2x1 (side by side), 3-4 -> 2x2, 5-9 -> 3x3, then 4x4 and so on.

    Args:
        count: the number of streams (0 is shown as one empty cell).

    Returns:
        ``(columns, rows)``.
    """
    if count <= 1:
        return 1, 1
    if count == 2:
        return 2, 1
    side = math.ceil(math.sqrt(count))
    return side, side


def grid_cells(count: int, size: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """The screen area of each of ``count`` streams, row by row.

    Args:
        count: the number of streams.
        size: the screen's ``(width, height)``.

    Returns:
        ``(x, y, width, height)`` per stream.
    """
    columns, rows = grid_shape(count)
    width, height = size
    cells = []
    for number in range(count):
        row, column = divmod(number, columns)
        left, right = width * column // columns, width * (column + 1) // columns
        top, bottom = height * row // rows, height * (row + 1) // rows
        cells.append((left, top, right - left, bottom - top))
    return cells


def fit_rect(image_size: tuple[int, int], cell: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """Where an image of ``image_size`` goes in ``cell``: as large as fits, aspect ratio kept, centred.

    Args:
        image_size: the image's ``(width, height)``.
        cell: ``(x, y, width, height)`` of the area.

    Returns:
        ``(x, y, width, height)`` of the scaled image (letterboxed or pillarboxed).
    """
    image_w, image_h = image_size
    x, y, cell_w, cell_h = cell
    scale = min(cell_w / image_w, cell_h / image_h)
    width = max(1, min(cell_w, round(image_w * scale)))
    height = max(1, min(cell_h, round(image_h * scale)))
    return x + (cell_w - width) // 2, y + (cell_h - height) // 2, width, height


def _finite(values: Sequence[object]) -> list[float] | None:
    try:
        numbers = [float(value) for value in values]  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return numbers if all(math.isfinite(number) for number in numbers) else None


def _ascii(text: str) -> str:
    """Hershey fonts draw ASCII only; anything else shows as '?' rather than garbage."""
    return "".join(char if 32 <= ord(char) < 127 else "?" for char in text)


def draw_overlays(tile: np.ndarray, labels: Sequence[Label], rects: Sequence[Rect]) -> None:
    """Draw rectangles (outlines) and labels (text on a box) onto ``tile`` in place.

    Args:
        tile: the scaled image's area of the screen (a view into the screen is fine).
        labels: ``(text, x, y)`` relative to the tile; malformed entries are skipped.
        rects: ``(left, top, right, bottom)`` relative to the tile; malformed entries are skipped.
    """
    height, width = tile.shape[:2]
    thickness = max(2, height // 360)  # 2 px up to 719 lines, 3 px at 1080
    for rect in rects:
        numbers = _finite(rect)
        if numbers is None or len(numbers) != 4:
            continue
        left, top, right, bottom = (min(max(value, 0.0), 1.0) for value in numbers)
        left, right = sorted((left, right))
        top, bottom = sorted((top, bottom))
        x0, y0 = round(left * width), round(top * height)
        x1, y1 = max(round(right * width) - 1, x0), max(round(bottom * height) - 1, y0)
        # Nested one-pixel outlines: the border grows inwards, so the box covers exactly what the app asked.
        for inset in range(thickness):
            if x0 + inset > x1 - inset or y0 + inset > y1 - inset:
                break
            cv2.rectangle(tile, (x0 + inset, y0 + inset), (x1 - inset, y1 - inset), RECT_COLOR, 1, cv2.LINE_8)
    scale = min(max(height / 1080, 0.4), 1.2)
    text_thickness = 2 if scale >= 0.75 else 1
    pad = max(2, round(6 * scale))
    for label in labels:
        if len(label) != 3:
            continue
        numbers = _finite(label[1:])
        if numbers is None:
            continue
        text = _ascii(str(label[0]))
        (text_w, text_h), baseline = cv2.getTextSize(text, _FONT, scale, text_thickness)
        box_w, box_h = text_w + 2 * pad, text_h + baseline + 2 * pad
        left = min(max(round(numbers[0] * width), 0), max(width - box_w, 0))
        top = min(max(round(numbers[1] * height), 0), max(height - box_h, 0))
        tile[top : top + box_h, left : left + box_w] = LABEL_BACKGROUND
        cv2.putText(
            tile,
            text,
            (left + pad, top + pad + text_h),
            _FONT,
            scale,
            LABEL_COLOR,
            text_thickness,
            cv2.LINE_AA,
        )


def compose(outputs: Sequence[Output], size: tuple[int, int]) -> np.ndarray:
    """Render every output with its overlays and lay them out on one screen.

    Args:
        outputs: the streams to show, in screen order (row by row).
        size: the screen's ``(width, height)``.

    Returns:
        A new H x W x 3 uint8 screen image, black where no image is.

    Raises:
        ValueError: an output's image cannot be read as an image.
    """
    width, height = size
    screen = np.zeros((height, width, 3), np.uint8)
    for output, cell in zip(outputs, grid_cells(len(outputs), size), strict=True):
        image = as_bgr(np.asarray(output.image))
        image_h, image_w = image.shape[:2]
        if image_w == 0 or image_h == 0:
            continue
        x, y, fit_w, fit_h = fit_rect((image_w, image_h), cell)
        tile = screen[y : y + fit_h, x : x + fit_w]
        if (fit_w, fit_h) == (image_w, image_h):
            tile[:] = image
        else:
            # Bilinear: a fraction of a millisecond per tile, where area averaging costs 2-10x more on grids.
            tile[:] = cv2.resize(image, (fit_w, fit_h), interpolation=cv2.INTER_LINEAR)
        draw_overlays(tile, output.labels, output.rects)
    return screen


def no_signal(size: tuple[int, int]) -> np.ndarray:
    """The screen shown before any output: black with "NO SIGNAL" in the middle.

    Args:
        size: the screen's ``(width, height)``.

    Returns:
        A new H x W x 3 uint8 image.
    """
    width, height = size
    screen = np.zeros((height, width, 3), np.uint8)
    scale = max(height / 1080 * 1.5, 0.4)
    text = "NO SIGNAL"
    (text_w, text_h), _ = cv2.getTextSize(text, _FONT, scale, 2)
    origin = ((width - text_w) // 2, (height + text_h) // 2)
    cv2.putText(screen, text, origin, _FONT, scale, (128, 128, 128), 2, cv2.LINE_AA)
    return screen
