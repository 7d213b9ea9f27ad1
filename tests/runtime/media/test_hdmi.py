"""The HDMI sink: overlays against a golden image, grid layouts, snapshots, MP4 recording, live viewers."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from _media_helpers import solid_frame

from emulator.errors import DeviceError
from runtime.media import MJPEG_CONTENT_TYPE, HdmiSink, Output, mjpeg_part, open_source
from runtime.media.overlay import LABEL_BACKGROUND, LABEL_COLOR, RECT_COLOR, grid_cells, grid_shape

GOLDEN = Path(__file__).parent / "golden" / "overlay_640x360.png"
UPDATE_GOLDEN = os.environ.get("PANORAMA_EMULATOR_UPDATE_GOLDEN") == "1"


def golden_outputs() -> list[Output]:
    source = open_source("synthetic:640x360?seed=7", name="golden")
    image = source.read()
    for _ in range(11):
        image = source.read()
    return [
        Output(
            image.image,
            labels=[("person 0.97", 0.05, 0.8), ("count: 2", 0.6, 0.05)],
            rects=[(0.25, 0.25, 0.75, 0.75), (0.1, 0.1, 0.2, 0.3)],
            stream_id="golden",
        )
    ]


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- rendering ----------------------------------------------------------------------------------------------


def _label_boxes(image: np.ndarray) -> list[tuple[int, int, int, int]]:
    """The label boxes (x, y, w, h) on a screen: the regions filled with the label background colour."""
    background = np.all(image == np.array(LABEL_BACKGROUND, np.uint8), axis=2).astype(np.uint8)
    count, _, stats, _ = cv2.connectedComponentsWithStats(background)
    return sorted(tuple(int(v) for v in stats[i, :4]) for i in range(1, count) if stats[i, 4] > 50)


def _ink(image: np.ndarray) -> int:
    return int(np.sum(np.abs(image.astype(np.int16) - np.array(LABEL_COLOR, np.int16)).max(axis=2) < 64))


def test_overlays_match_the_golden_image() -> None:
    # The label text is rasterised by OpenCV's Hershey fonts, whose glyphs move between OpenCV releases
    # (5.0 -> 5.1 widened some labels by a sixth). So the camera image and the rectangles are compared pixel
    # for pixel outside the label boxes (with a margin), and each label box only for where it is, its size,
    # and about how much text it holds: a missing, moved or wrong label fails, a new rasteriser does not.
    with HdmiSink(size=(640, 360)) as sink:
        screen = sink.show(golden_outputs())
    if UPDATE_GOLDEN:
        GOLDEN.parent.mkdir(exist_ok=True)
        cv2.imwrite(str(GOLDEN), screen)
        pytest.skip("golden image rewritten")
    golden = cv2.imread(str(GOLDEN), cv2.IMREAD_COLOR)
    assert golden is not None, f"missing {GOLDEN}; run with PANORAMA_EMULATOR_UPDATE_GOLDEN=1"
    assert golden.shape == screen.shape
    golden_boxes, screen_boxes = _label_boxes(golden), _label_boxes(screen)
    assert len(golden_boxes) == len(screen_boxes) >= 2  # the two labels, and the stream name where shown
    margin = 6
    outside = np.ones(golden.shape[:2], bool)
    for (x, y, w, h), (sx, sy, sw, sh) in zip(golden_boxes, screen_boxes, strict=True):
        assert abs(sx - x) <= 2 and abs(sy - y) <= 2, (golden_boxes, screen_boxes)
        assert abs(sw - w) <= 0.25 * w + 2 and abs(sh - h) <= 0.2 * h + 2, (golden_boxes, screen_boxes)
        ink = _ink(screen[sy : sy + sh, sx : sx + sw]) / _ink(golden[y : y + h, x : x + w])
        assert 0.7 < ink < 1.4, (x, y, ink)
        for bx, by, bw, bh in ((x, y, w, h), (sx, sy, sw, sh)):
            outside[max(by - margin, 0) : by + bh + margin, max(bx - margin, 0) : bx + bw + margin] = False
    difference = np.abs(golden.astype(np.int16) - screen.astype(np.int16)).max(axis=2)[outside]
    assert difference.mean() < 0.1
    assert (difference > 40).mean() < 0.0005


def test_rectangle_edges_and_label_boxes_are_where_they_must_be() -> None:
    outputs = golden_outputs()
    original = outputs[0].image
    with HdmiSink(size=(640, 360)) as sink:
        screen = sink.show(outputs)
    rect = np.array(RECT_COLOR, np.uint8)
    # Rectangle (0.25, 0.25, 0.75, 0.75) of a 640x360 image shown at its own size: x 160..479, y 90..269,
    # outlined 2 pixels wide, inwards.
    for x, y in [(160, 180), (161, 180), (479, 180), (478, 180), (300, 90), (300, 91), (300, 269), (160, 90)]:
        assert np.array_equal(screen[y, x], rect), (x, y)
    # Outlines, not filled: inside and outside the edges the camera image is untouched.
    for x, y in [
        (159, 180),
        (162, 180),
        (477, 180),
        (480, 180),
        (300, 89),
        (300, 92),
        (300, 270),
        (300, 180),
    ]:
        assert np.array_equal(screen[y, x], original[y, x]), (x, y)
    # Label "person 0.97" at (0.05, 0.8): a black box with its top-left corner at (32, 288), white text in it.
    assert np.array_equal(screen[288, 32], np.array(LABEL_BACKGROUND, np.uint8))
    box = screen[288:310, 32:140]
    assert (box == np.array(LABEL_COLOR, np.uint8)).all(axis=2).any()
    assert np.array_equal(screen[287, 31], original[287, 31])


def test_overlays_are_drawn_after_scaling_so_text_is_readable() -> None:
    """A small camera image shown full screen: the outline stays thin and the label keeps its screen size."""
    image = solid_frame(60, (320, 180))
    with HdmiSink() as sink:
        screen = sink.show([Output(image, [("person", 0.1, 0.1)], [(0.5, 0.5, 1.0, 1.0)])])
    assert screen.shape == (1080, 1920, 3)
    row = screen[800, 900:1000]
    edge = (row == np.array(RECT_COLOR, np.uint8)).all(axis=1)
    assert 1 <= edge.sum() <= 4
    assert np.array_equal(screen[800, 960], np.array(RECT_COLOR, np.uint8))
    white = (screen[108:160, 192:400] == np.array(LABEL_COLOR, np.uint8)).all(axis=2)
    assert white.any()


def test_malformed_overlays_are_skipped_and_odd_text_survives() -> None:
    image = solid_frame(60, (320, 180))
    with HdmiSink(size=(320, 180)) as sink:
        screen = sink.show(
            [
                Output(
                    image,
                    [("café ünïcode", 0.1, 0.1), ("nan", float("nan"), 0.5)],
                    [(0.1, float("nan"), 1, 1)],
                )
            ]
        )
        assert sink.labels() == {"café ünïcode", "nan"}
    assert screen.shape == (180, 320, 3)
    assert not (screen == np.array(RECT_COLOR, np.uint8)).all(axis=2).any()


def test_grey_and_bgra_images_are_shown() -> None:
    with HdmiSink(size=(320, 180)) as sink:
        grey = sink.show([Output(np.full((180, 320), 90, np.uint8))])
        assert np.array_equal(grey[90, 160], [90, 90, 90])
        bgra = sink.show([Output(np.full((180, 320, 4), 30, np.uint8))])
        assert np.array_equal(bgra[90, 160], [30, 30, 30])


def test_an_image_that_is_not_an_image_is_a_device_error() -> None:
    with HdmiSink(size=(320, 180)) as sink, pytest.raises(DeviceError):
        sink.show([Output(np.zeros((5, 5, 7), np.uint8))])


# --- grid layouts -------------------------------------------------------------------------------------------

COLORS = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200)]


def colored(index: int, size: tuple[int, int] = (320, 180)) -> Output:
    width, height = size
    image = np.empty((height, width, 3), np.uint8)
    image[:] = COLORS[index]
    return Output(image, stream_id=f"cam{index}")


@pytest.mark.parametrize(
    ("count", "shape"),
    [(1, (1, 1)), (2, (2, 1)), (3, (2, 2)), (4, (2, 2)), (5, (3, 3)), (9, (3, 3)), (10, (4, 4))],
)
def test_grid_shape(count: int, shape: tuple[int, int]) -> None:
    assert grid_shape(count) == shape


def test_one_stream_fills_the_screen() -> None:
    with HdmiSink() as sink:
        screen = sink.show([colored(0)])
    assert (screen == np.array(COLORS[0], np.uint8)).all()


def test_one_4_3_stream_is_pillarboxed() -> None:
    with HdmiSink() as sink:
        screen = sink.show([colored(0, (640, 480))])
    # 4:3 at 1080 lines is 1440 wide: black bars of 240 on each side.
    assert not screen[:, :239].any() and not screen[:, 1681:].any()
    assert (screen[:, 241:1679] == np.array(COLORS[0], np.uint8)).all()


def test_two_streams_side_by_side_letterboxed() -> None:
    with HdmiSink() as sink:
        screen = sink.show([colored(0), colored(1)])
        assert sink.streams == ("cam0", "cam1")
    # Each 16:9 image gets 960x540 in a 960x1080 half, centred: rows 270..809.
    assert np.array_equal(screen[540, 480], COLORS[0])
    assert np.array_equal(screen[540, 1440], COLORS[1])
    assert not screen[:269].any() and not screen[811:].any()


@pytest.mark.parametrize("count", [3, 4])
def test_three_or_four_streams_in_a_2x2_grid(count: int) -> None:
    with HdmiSink() as sink:
        screen = sink.show([colored(index) for index in range(count)])
    centres = [(480, 270), (1440, 270), (480, 810), (1440, 810)]
    for index, (x, y) in enumerate(centres):
        expected = COLORS[index] if index < count else (0, 0, 0)
        assert np.array_equal(screen[y, x], expected), index
    assert [cell[2:] for cell in grid_cells(count, (1920, 1080))] == [(960, 540)] * count


def test_five_streams_in_a_3x3_grid() -> None:
    with HdmiSink() as sink:
        screen = sink.show([colored(index) for index in range(5)])
    assert np.array_equal(screen[180, 320], COLORS[0])
    assert np.array_equal(screen[540, 960], COLORS[4])
    assert not screen[900, 1600].any()


# --- state, encodings, snapshots ----------------------------------------------------------------------------


def test_counts_labels_and_keeps_the_last_frame() -> None:
    sink = HdmiSink(size=(320, 180))
    assert sink.last_frame is None and sink.outputs == 0
    sink.show([Output(solid_frame(10, (320, 180)), [("person", 0.1, 0.1)])])
    last = sink.show([Output(solid_frame(20, (320, 180)), [("car", 0.1, 0.1), ("person", 0.2, 0.2)])])
    assert sink.outputs == 2
    assert sink.labels() == {"person", "car"}
    assert "person" in sink.labels()
    assert sink.last_frame is last
    with pytest.raises(ValueError):
        last[0, 0] = 1  # read-only: viewers share it
    metrics = sink.metrics()
    assert metrics["outputs"] == 2 and metrics["labels"] == 2
    assert isinstance(metrics["render_ms_p50"], float)
    sink.close()
    with pytest.raises(DeviceError):
        sink.show([Output(solid_frame(20, (320, 180)))])


def test_png_is_lossless_jpeg_is_close_and_both_are_cached() -> None:
    with HdmiSink(size=(320, 180)) as sink:
        no_signal = cv2.imdecode(np.frombuffer(sink.last_png(), np.uint8), cv2.IMREAD_COLOR)
        assert no_signal.shape == (180, 320, 3)
        assert no_signal[:, :40].max() == 0 and no_signal.max() > 0  # "NO SIGNAL" in the middle
        screen = sink.show(golden_outputs()[:1])
        png = sink.last_png()
        assert png.startswith(b"\x89PNG")
        assert np.array_equal(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), screen)
        assert sink.last_png() is png
        jpeg = sink.last_jpeg(90)
        assert jpeg.startswith(b"\xff\xd8")
        decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert np.abs(decoded.astype(int) - screen.astype(int)).mean() < 4
        assert sink.last_jpeg(90) is jpeg
        assert len(sink.last_jpeg(10)) < len(jpeg)


def test_snapshot_writes_a_png_file(tmp_path: Path) -> None:
    with HdmiSink(size=(320, 180)) as sink:
        screen = sink.show([colored(2)])
        path = sink.snapshot(tmp_path / "shot.png")
    assert np.array_equal(cv2.imread(str(path)), screen)


def test_last_png_in_out_dir_follows_the_interval_and_is_final_on_close(tmp_path: Path) -> None:
    out = tmp_path / "hdmi"
    sink = HdmiSink(size=(320, 180), out_dir=out, snapshot_interval=3600)
    first = sink.show([colored(0)])
    last_png = out / "last.png"
    # The first snapshot is due at once; then not again within the hour.
    assert wait_until(lambda: last_png.exists())
    assert np.array_equal(cv2.imread(str(last_png)), first)
    sink.show([colored(1)])
    final = sink.show([colored(2)])
    assert sink.metrics()["snapshots"] == 1
    assert np.array_equal(cv2.imread(str(last_png)), first)
    sink.close()
    assert np.array_equal(cv2.imread(str(last_png)), final)
    assert sink.metrics()["snapshots"] == 2
    assert [item.name for item in out.iterdir()] == ["last.png"]


def test_last_png_every_output_with_no_interval(tmp_path: Path) -> None:
    with HdmiSink(size=(320, 180), out_dir=tmp_path, snapshot_interval=0) as sink:
        for index in range(3):
            screen = sink.show([colored(index)])
            assert wait_until(
                lambda screen=screen: np.array_equal(cv2.imread(str(tmp_path / "last.png")), screen)
            )


def test_mp4_recording_has_every_frame(tmp_path: Path) -> None:
    record = tmp_path / "rec" / "hdmi.mp4"
    with HdmiSink(size=(320, 180), record=record, record_fps=10) as sink:
        for index in range(7):
            sink.show([Output(solid_frame(index * 30, (320, 180)))])
    assert sink.metrics()["recorded"] == 7
    capture = cv2.VideoCapture(str(record))
    assert capture.isOpened()
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10)
    levels = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (180, 320, 3)
        levels.append(float(frame.mean()))
    capture.release()
    assert len(levels) == 7
    for index, level in enumerate(levels):
        assert level == pytest.approx(index * 30, abs=4)


def test_recording_to_an_impossible_path_is_a_device_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DeviceError) as caught:
        HdmiSink(size=(320, 180), record=blocker / "sub" / "x.mp4")
    assert "\n" not in str(caught.value) and str(blocker) in str(caught.value)


def test_bad_screen_size_is_a_device_error() -> None:
    with pytest.raises(DeviceError):
        HdmiSink(size=(0, 1080))


# --- live viewers -------------------------------------------------------------------------------------------


def test_wait_for_output_wakes_on_the_next_frame() -> None:
    with HdmiSink(size=(320, 180)) as sink:
        assert sink.wait_for_output(0, timeout=0.05) == 0
        timer = threading.Timer(0.1, lambda: sink.show([colored(0)]))
        timer.start()
        assert sink.wait_for_output(0, timeout=30) == 1
        timer.join()


def test_subscription_yields_current_then_new_frames_and_ends_on_close() -> None:
    sink = HdmiSink(size=(320, 180))
    sink.show([colored(0)])
    viewer = sink.subscribe(quality=90, keepalive=30)
    first = cv2.imdecode(np.frombuffer(next(viewer), np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(first.astype(int) - np.array(COLORS[0])).mean() < 4
    timer = threading.Timer(0.1, lambda: sink.show([colored(1)]))
    timer.start()
    second = cv2.imdecode(np.frombuffer(next(viewer), np.uint8), cv2.IMREAD_COLOR)
    timer.join()
    assert np.abs(second.astype(int) - np.array(COLORS[1])).mean() < 4
    sink.close()
    with pytest.raises(StopIteration):
        next(viewer)


def test_subscription_repeats_the_last_frame_as_keepalive() -> None:
    with HdmiSink(size=(320, 180)) as sink:
        viewer = sink.subscribe(keepalive=0.05)
        assert next(viewer) == next(viewer)  # "NO SIGNAL" twice
        viewer.close()
        with pytest.raises(StopIteration):
            next(viewer)


@pytest.fixture
def mjpeg_endpoint() -> Iterator[tuple[HdmiSink, str]]:
    """The sink served as an MJPEG stream over real HTTP, as a console endpoint would serve it."""
    sink = HdmiSink(size=(320, 180))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", MJPEG_CONTENT_TYPE)
            self.end_headers()
            for jpeg in sink.subscribe(quality=90, keepalive=0.2):
                try:
                    self.wfile.write(mjpeg_part(jpeg))
                    self.wfile.flush()
                except OSError:
                    return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield sink, f"http://127.0.0.1:{server.server_address[1]}/hdmi.mjpg"
    sink.close()
    server.shutdown()
    server.server_close()


def test_mjpeg_parts_are_read_back_by_opencv(mjpeg_endpoint: tuple[HdmiSink, str]) -> None:
    sink, url = mjpeg_endpoint
    sink.show([colored(2)])
    with open_source(url, name="hdmi_viewer") as viewer:
        assert viewer.size == (320, 180)
        frame = viewer.read()
        assert np.abs(frame.image.astype(int) - np.array(COLORS[2])).mean() < 4
