"""Synthetic cameras: deterministic moving shapes, cheap enough for several 1080p30 streams.

Spec: ``synthetic[:WxH][@FPS][?key=value&...]``, for example ``synthetic``, ``synthetic:1280x720@15``,
``synthetic:1920x1080@30?seed=2`` or ``synthetic:640x360?scene=people&objects=3``.

Keys:
    seed     an integer; without it the seed is derived from the camera node's name, so two synthetic cameras
             differ while each one is the same on every run.
    scene    ``shapes`` (default: coloured rectangles and circles on a gradient) or ``people`` (bright upright
             blobs on a dark background: what a simple brightness-threshold "person detector" finds).
    objects  how many shapes move in the scene (1-64; default 5 for shapes, 3 for people).

Frame ``k`` of a given spec and camera name is identical pixel for pixel on every run: shapes move along
integer bouncing paths computed from ``k`` alone, and the seed drives a small generator whose sequence does
not depend on any library's version. The background is computed once; a frame is one copy of it plus a few
filled shapes.
"""

from __future__ import annotations

import re
import time
import zlib
from dataclasses import dataclass
from urllib.parse import parse_qsl

import cv2
import numpy as np

from runtime.media.camera import CameraSource, Clock

__all__ = ["SCENES", "SceneObject", "SyntheticSource", "SyntheticSpec"]

SCENES = ("people", "shapes")
"""Scene kinds a synthetic camera can show."""

_SPEC = re.compile(
    r"synthetic(?::(?:(?P<w>\d+)x(?P<h>\d+))?(?:@(?P<fps>\d+(?:\.\d+)?))?)?(?:\?(?P<query>.*))?"
)
_MAX_SIDE = 8192
_MAX_OBJECTS = 64
_FORMAT = "synthetic[:WxH][@FPS][?seed=N&scene=shapes|people&objects=N]"

# BGR colours for the shapes scene: none near white (people stay the brightest things) and none near the pure
# green of HDMI rectangle outlines.
_PALETTE = (
    (40, 40, 220),
    (150, 170, 50),
    (220, 90, 30),
    (30, 200, 230),
    (200, 50, 200),
    (210, 200, 40),
    (20, 130, 240),
    (150, 60, 120),
)


@dataclass(frozen=True)
class SyntheticSpec:
    """A parsed synthetic camera spec.

    Args:
        width: frame width in pixels.
        height: frame height in pixels.
        fps: nominal frame rate.
        seed: the seed, or None to derive it from the camera node's name.
        scene: one of :data:`SCENES`.
        objects: how many shapes move in the scene, or None for the scene's default.
    """

    width: int = 1920
    height: int = 1080
    fps: float = 30.0
    seed: int | None = None
    scene: str = "shapes"
    objects: int | None = None

    @classmethod
    def parse(cls, spec: str) -> SyntheticSpec:
        """Parse ``synthetic[:WxH][@FPS][?seed=N&scene=S&objects=N]``.

        Args:
            spec: the spec text.

        Returns:
            The parsed spec.

        Raises:
            ValueError: the spec is malformed or out of range; the message says what was expected.
        """
        match = _SPEC.fullmatch(spec.strip())
        if match is None:
            raise ValueError(f"expected {_FORMAT}, found {spec!r}")
        width, height, fps = cls.width, cls.height, cls.fps
        if match["w"] is not None:
            width, height = int(match["w"]), int(match["h"])
            if not (16 <= width <= _MAX_SIDE and 16 <= height <= _MAX_SIDE):
                raise ValueError(f"frame size must be 16..{_MAX_SIDE} pixels a side, found {width}x{height}")
        if match["fps"] is not None:
            fps = float(match["fps"])
            if not 0 < fps <= 240:
                raise ValueError(f"fps must be more than 0 and at most 240, found {match['fps']}")
        seed: int | None = None
        scene = cls.scene
        objects: int | None = None
        for key, value in parse_qsl(match["query"] or "", keep_blank_values=True, strict_parsing=False):
            if key == "seed":
                if not value.isdigit() or int(value) >= 2**63:
                    raise ValueError(f"seed must be a non-negative integer, found {value!r}")
                seed = int(value)
            elif key == "scene":
                if value not in SCENES:
                    raise ValueError(f"scene must be one of {', '.join(SCENES)}, found {value!r}")
                scene = value
            elif key == "objects":
                if not value.isdigit() or not 1 <= int(value) <= _MAX_OBJECTS:
                    raise ValueError(f"objects must be an integer from 1 to {_MAX_OBJECTS}, found {value!r}")
                objects = int(value)
            else:
                raise ValueError(f"unknown key {key!r}: expected seed, scene or objects")
        return cls(width=width, height=height, fps=fps, seed=seed, scene=scene, objects=objects)

    def __str__(self) -> str:
        text = f"synthetic:{self.width}x{self.height}@{self.fps:g}"
        query = []
        if self.seed is not None:
            query.append(f"seed={self.seed}")
        if self.scene != "shapes":
            query.append(f"scene={self.scene}")
        if self.objects is not None:
            query.append(f"objects={self.objects}")
        return f"{text}?{'&'.join(query)}" if query else text


@dataclass(frozen=True)
class SceneObject:
    """Where one shape of a synthetic scene is in a given frame.

    Args:
        kind: ``rect``, ``circle`` or ``person``.
        box: ``(left, top, right, bottom)`` in pixels, right and bottom exclusive.
    """

    kind: str
    box: tuple[int, int, int, int]


class _SplitMix64:
    """A tiny generator whose sequence is fixed by its definition (library generators change by version)."""

    def __init__(self, seed: int) -> None:
        self._state = seed & 0xFFFFFFFFFFFFFFFF

    def next(self) -> int:
        self._state = (self._state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + self.next() % (high - low + 1)


@dataclass(frozen=True)
class _Sprite:
    kind: str
    width: int
    height: int
    x0: int
    y0: int
    vx: int
    vy: int
    color: tuple[int, int, int]

    def position(self, index: int, frame_w: int, frame_h: int) -> tuple[int, int]:
        return _bounce(self.x0 + self.vx * index, frame_w - self.width), _bounce(
            self.y0 + self.vy * index, frame_h - self.height
        )

    def draw(self, image: np.ndarray, x: int, y: int) -> None:
        """Fill the shape inside the box at (x, y); OpenCV's integer rasteriser is exact and far faster than
        numpy assignments with a 3-channel colour."""
        w, h = self.width, self.height
        if self.kind == "rect":
            cv2.rectangle(image, (x, y), (x + w - 1, y + h - 1), self.color, -1, cv2.LINE_8)
        elif self.kind == "circle":
            _fill_ellipse(image, x + w // 2, y + h // 2, w // 2 - 1, h // 2 - 1, self.color)
        else:
            head = max(w // 2, 2)
            cv2.circle(image, (x + w // 2, y + head // 2 + 1), head // 2, self.color, -1, cv2.LINE_8)
            body_top = head + max(h // 40, 1)
            _fill_ellipse(
                image, x + w // 2, y + (body_top + h) // 2, w // 2 - 1, (h - body_top) // 2 - 1, self.color
            )


def _fill_ellipse(image: np.ndarray, cx: int, cy: int, ax: int, ay: int, color: tuple[int, int, int]) -> None:
    cv2.ellipse(image, (cx, cy), (max(ax, 1), max(ay, 1)), 0, 0, 360, color, -1, cv2.LINE_8)


def _bounce(travelled: int, span: int) -> int:
    """Position after travelling ``travelled`` pixels back and forth along ``[0, span]``."""
    if span <= 0:
        return 0
    phase = travelled % (2 * span)
    return phase if phase <= span else 2 * span - phase


def _gradient(
    width: int, height: int, top_left: tuple[int, int, int], bottom_right: tuple[int, int, int]
) -> np.ndarray:
    ramp = (np.arange(width, dtype=np.float32)[None, :] / max(width - 1, 1)) + (
        np.arange(height, dtype=np.float32)[:, None] / max(height - 1, 1)
    )
    ramp *= 0.5
    start = np.array(top_left, dtype=np.float32)
    end = np.array(bottom_right, dtype=np.float32)
    image = start + ramp[:, :, None] * (end - start)
    return np.rint(image).astype(np.uint8)


class SyntheticSource(CameraSource):
    """A deterministic synthetic camera.

    Args:
        spec: the parsed spec (see :class:`SyntheticSpec`).
        name: the camera node; it names the stream in the corner text and seeds the scene when the spec has
            no seed.
        uri: what ``uri`` reports (the spec as given); defaults to the canonical spec text.
        clock: the wall clock used for timestamps.
    """

    def __init__(
        self, spec: SyntheticSpec, *, name: str = "camera", uri: str | None = None, clock: Clock = time.time
    ) -> None:
        super().__init__(clock=clock)
        self.spec = spec
        self.name = name
        self.uri = uri if uri is not None else str(spec)
        self.codec = "synthetic"
        self.fps = spec.fps
        self.size = (spec.width, spec.height)
        self.seed = spec.seed if spec.seed is not None else zlib.crc32(name.encode("utf-8"))
        rng = _SplitMix64(self.seed)
        if spec.scene == "people":
            self._background = self._people_background(rng)
            self._sprites = self._people(rng, spec.objects or 3)
            self._text_color = (150, 150, 150)
        else:
            self._background = self._shapes_background(rng)
            self._sprites = self._shapes(rng, spec.objects or 5)
            self._text_color = (255, 255, 255)
        self._font_scale = max(0.35, spec.height / 1080 * 0.7)
        self._thickness = 1 if spec.height < 900 else 2
        (text_w, text_h), baseline = cv2.getTextSize(
            f"{name} #0000000", cv2.FONT_HERSHEY_SIMPLEX, self._font_scale, self._thickness
        )
        pad = max(2, spec.height // 270)
        self._text_origin = (pad * 2, pad * 2 + text_h)
        self._text_box = (
            pad,
            pad,
            min(spec.width, pad * 3 + text_w),
            min(spec.height, pad * 3 + text_h + baseline),
        )

    def _shapes_background(self, rng: _SplitMix64) -> np.ndarray:
        first = (rng.between(60, 140), rng.between(40, 120), rng.between(20, 80))
        second = (rng.between(10, 60), rng.between(60, 140), rng.between(80, 160))
        return _gradient(self.spec.width, self.spec.height, first, second)

    def _people_background(self, rng: _SplitMix64) -> np.ndarray:
        first = (rng.between(40, 70), rng.between(30, 55), rng.between(20, 40))
        second = (rng.between(15, 30), rng.between(20, 40), rng.between(25, 45))
        return _gradient(self.spec.width, self.spec.height, first, second)

    def _shapes(self, rng: _SplitMix64, count: int) -> tuple[_Sprite, ...]:
        width, height = self.size
        short = min(width, height)
        sprites = []
        for number in range(count):
            kind = "circle" if number % 2 else "rect"
            if kind == "circle":
                side_w = side_h = max(4, short * rng.between(8, 20) // 100)
            else:
                side_w = max(4, short * rng.between(8, 26) // 100)
                side_h = max(4, short * rng.between(6, 18) // 100)
            side_w, side_h = min(side_w, width), min(side_h, height)
            color = _PALETTE[rng.between(0, len(_PALETTE) - 1)]
            sprites.append(self._moving(rng, kind, side_w, side_h, color, vertical=True))
        return tuple(sprites)

    def _people(self, rng: _SplitMix64, count: int) -> tuple[_Sprite, ...]:
        width, height = self.size
        sprites = []
        for _ in range(count):
            side_h = min(height, max(8, height * rng.between(22, 36) // 100))
            side_w = min(width, max(4, side_h * 2 // 5))
            level = rng.between(235, 255)
            color = (level, level, level)
            sprites.append(self._moving(rng, "person", side_w, side_h, color, vertical=False))
        return tuple(sprites)

    def _moving(
        self,
        rng: _SplitMix64,
        kind: str,
        side_w: int,
        side_h: int,
        color: tuple[int, int, int],
        *,
        vertical: bool,
    ) -> _Sprite:
        width, height = self.size
        fast = max(2, width // 120)
        vx = rng.between(max(1, width // 480), fast) * (1 if rng.next() & 1 else -1)
        vy_top = fast if vertical else max(1, height // 540)
        vy = rng.between(0 if not vertical else 1, vy_top) * (1 if rng.next() & 1 else -1)
        return _Sprite(
            kind=kind,
            width=side_w,
            height=side_h,
            x0=rng.between(0, max(width - side_w, 0)),
            y0=rng.between(0, max(height - side_h, 0)),
            vx=vx,
            vy=vy,
            color=color,
        )

    def objects(self, index: int) -> tuple[SceneObject, ...]:
        """Where every shape is in frame ``index``: ground truth for tests of detectors.

        Args:
            index: the frame index.

        Returns:
            One :class:`SceneObject` per shape, in drawing order (later ones are drawn over earlier ones).
        """
        width, height = self.size
        found = []
        for sprite in self._sprites:
            x, y = sprite.position(index, width, height)
            found.append(SceneObject(sprite.kind, (x, y, x + sprite.width, y + sprite.height)))
        return tuple(found)

    def render(self, index: int, out: np.ndarray | None = None) -> np.ndarray:
        """Draw frame ``index`` without moving the source's position: any frame can be drawn at any time.

        Args:
            index: the frame index (0 or more).
            out: an H x W x 3 uint8 array to draw into, or None for a new one.

        Returns:
            The frame (``out`` when given).

        Raises:
            ValueError: ``out`` does not have the frame's shape.
        """
        if out is None:
            image = self._background.copy()
        else:
            if out.shape != self._background.shape or out.dtype != np.uint8:
                raise ValueError(f"out must be {self._background.shape} uint8, found {out.shape} {out.dtype}")
            np.copyto(out, self._background)
            image = out
        width, height = self.size
        for sprite in self._sprites:
            x, y = sprite.position(index, width, height)
            sprite.draw(image, x, y)
        left, top, right, bottom = self._text_box
        cv2.rectangle(image, (left, top), (right - 1, bottom - 1), (0, 0, 0), -1, cv2.LINE_8)
        cv2.putText(
            image,
            f"{self.name} #{index}",
            self._text_origin,
            cv2.FONT_HERSHEY_SIMPLEX,
            self._font_scale,
            self._text_color,
            self._thickness,
            cv2.LINE_8,
        )
        return image

    def _next_image(self, index: int, out: np.ndarray | None) -> np.ndarray:
        if out is not None and out.shape == self._background.shape and out.dtype == np.uint8:
            return self.render(index, out)
        return self.render(index)
