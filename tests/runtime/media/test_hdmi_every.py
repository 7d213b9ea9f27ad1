"""``--hdmi-out DIR --every K``: every K-th HDMI screen kept as a numbered PNG, none skipped."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from emulator.errors import DeviceError
from runtime.media.hdmi import HdmiSink
from runtime.media.overlay import Output


def test_every_kth_screen_is_kept_numbered(tmp_path: Path) -> None:
    with HdmiSink((64, 48), out_dir=tmp_path, every=3) as sink:
        for value in range(1, 11):
            sink.show([Output(np.full((48, 64, 3), value * 20, np.uint8), [], [])])
    kept = sorted(path.name for path in tmp_path.glob("hdmi-*.png"))
    assert kept == ["hdmi-000003.png", "hdmi-000006.png", "hdmi-000009.png"]
    for name in kept:
        number = int(name[5:11])
        image = cv2.imread(str(tmp_path / name))
        assert image.shape == (48, 64, 3) and abs(float(image.mean()) - number * 20) < 2
    assert (tmp_path / "last.png").is_file()


def test_every_needs_an_output_folder() -> None:
    with pytest.raises(DeviceError, match="output folder"):
        HdmiSink((64, 48), every=2)
