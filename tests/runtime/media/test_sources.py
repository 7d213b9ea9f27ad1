"""Camera sources: the in-memory fake, video files, image folders, and real MJPEG-over-HTTP streams."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from _media_helpers import MjpegServer, solid_frame

from emulator.errors import SourceError
from runtime.media import ArraySource, Frame, ImageFolderSource, StreamSource, VideoFileSource, open_source
from runtime.media.camera import redact_uri


def grey_level(image: np.ndarray) -> float:
    return float(image.mean())


def assert_one_line(error: SourceError, node: str, *parts: str) -> str:
    message = str(error)
    assert "\n" not in message
    assert message.startswith(f"node {node}: ")
    for part in parts:
        assert part in message
    return message


# --- the in-memory fake -------------------------------------------------------------------------------------


def test_array_source_loops_counts_and_stamps() -> None:
    ticks = iter([100.0, 100.5, 101.0, 101.5])
    source = ArraySource([solid_frame(10), solid_frame(20)], name="cam", fps=5, clock=lambda: next(ticks))
    frames = [source.read() for _ in range(4)]
    assert [frame.index for frame in frames] == [0, 1, 2, 3]
    assert [grey_level(frame.image) for frame in frames] == [10, 20, 10, 20]
    assert [frame.timestamp for frame in frames] == [100.0, 100.5, 101.0, 101.5]
    assert source.fps == 5 and source.size == (160, 120) and source.frames_read == 4


def test_array_source_hands_out_copies() -> None:
    source = ArraySource([solid_frame(10)])
    first = source.read()
    first.image[:] = 255  # an app drawing on its frame
    assert grey_level(source.read().image) == 10


def test_array_source_without_loop_ends_with_source_error() -> None:
    source = ArraySource([solid_frame(1)], name="cam", loop=False)
    source.read()
    with pytest.raises(SourceError) as caught:
        source.read()
    assert_one_line(caught.value, "cam", "no frame after the last one")


def test_array_source_converts_grey_and_rejects_empty() -> None:
    grey = np.full((4, 6), 7, np.uint8)
    assert ArraySource([grey]).read().image.shape == (4, 6, 3)
    with pytest.raises(SourceError):
        ArraySource([], name="cam")


def test_closed_source_refuses_to_read() -> None:
    source = ArraySource([solid_frame(1)], name="cam")
    source.close()
    source.close()
    with pytest.raises(SourceError) as caught:
        source.read()
    assert_one_line(caught.value, "cam", "closed")


def test_frame_time_stamp_is_seconds_and_microseconds() -> None:
    frame = Frame(np.zeros((1, 1, 3), np.uint8), 0, 1700000000.25)
    assert frame.time_stamp == (1700000000, 250000)


def test_redact_uri_hides_passwords() -> None:
    assert redact_uri("rtsp://admin:hunter2@10.0.0.5:554/s1") == "rtsp://admin:***@10.0.0.5:554/s1"
    assert redact_uri("rtsp://10.0.0.5/s1") == "rtsp://10.0.0.5/s1"
    assert redact_uri("/videos/a.mp4") == "/videos/a.mp4"


# --- video files --------------------------------------------------------------------------------------------


def test_video_file_plays_in_a_loop_at_its_own_rate(small_video: Path) -> None:
    before = time.time()
    source = open_source(str(small_video), name="cam")
    assert isinstance(source, VideoFileSource)
    assert source.size == (160, 120)
    assert source.fps == pytest.approx(12.0)
    frames = [source.read() for _ in range(25)]
    after = time.time()
    assert [frame.index for frame in frames] == list(range(25))
    levels = [grey_level(frame.image) for frame in frames]
    for index, level in enumerate(levels):
        assert level == pytest.approx((index % 10) * 20, abs=4), index
    assert source.loops == 2
    assert all(before <= frame.timestamp <= after for frame in frames)
    source.close()


def test_video_file_read_into_fills_the_buffer(small_video: Path) -> None:
    with open_source(str(small_video), name="cam") as source:
        buffer = np.zeros((120, 160, 3), np.uint8)
        source.read()
        frame = source.read_into(buffer)
        assert frame.image is buffer
        assert grey_level(buffer) == pytest.approx(20, abs=4)


def test_file_uri_opens_a_path(small_video: Path) -> None:
    with open_source(small_video.as_uri(), name="cam") as source:
        assert source.size == (160, 120)
        assert source.uri == small_video.as_uri()


def test_not_a_video_is_a_source_error(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n")
    with pytest.raises(SourceError) as caught:
        open_source(str(bogus), name="cam")
    assert_one_line(caught.value, "cam", str(bogus))


def test_missing_path_is_a_source_error(tmp_path: Path) -> None:
    missing = tmp_path / "nothing.mp4"
    with pytest.raises(SourceError) as caught:
        open_source(str(missing), name="door")
    assert_one_line(caught.value, "door", str(missing), "no such file or folder", "synthetic")


@pytest.mark.parametrize("spec", ["", "   ", "ftp://host/video.mp4", "http:///nohost"])
def test_unusable_specs_are_source_errors(spec: str) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(spec, name="cam")
    assert_one_line(caught.value, "cam")


def test_bad_fps_argument_is_a_source_error() -> None:
    with pytest.raises(SourceError) as caught:
        open_source("synthetic", name="cam", fps=0)
    assert_one_line(caught.value, "cam", "fps")


# --- image folders ------------------------------------------------------------------------------------------


def test_image_folder_in_name_order_native_sizes_looping(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "b.png"), solid_frame(20, (64, 48)))
    cv2.imwrite(str(tmp_path / "a.png"), solid_frame(10, (32, 24)))
    cv2.imwrite(str(tmp_path / "c.jpg"), solid_frame(30, (80, 60)))
    (tmp_path / "readme.txt").write_text("not an image")
    source = open_source(str(tmp_path), name="cam", fps=4)
    assert isinstance(source, ImageFolderSource)
    assert source.fps == 4
    assert source.size == (32, 24)
    frames = [source.read() for _ in range(4)]
    assert [frame.image.shape[:2] for frame in frames] == [(24, 32), (48, 64), (60, 80), (24, 32)]
    assert [round(grey_level(frame.image)) for frame in frames] == [10, 20, 30, 10]


def test_image_folder_defaults_to_30_fps_and_hands_out_copies(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), solid_frame(10))
    source = open_source(str(tmp_path), name="cam")
    assert source.fps == 30
    source.read().image[:] = 0
    assert grey_level(source.read().image) == 10


def test_single_image_is_a_still_camera(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    cv2.imwrite(str(path), solid_frame(42))
    source = open_source(str(path), name="cam")
    assert [grey_level(source.read().image) for _ in range(3)] == [42, 42, 42]


def test_empty_folder_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        open_source(str(tmp_path), name="cam")
    assert_one_line(caught.value, "cam", "holds no image", str(tmp_path))


def test_undecodable_image_is_a_source_error_naming_it(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), solid_frame(10))
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    source = open_source(str(tmp_path), name="cam")
    source.read()
    with pytest.raises(SourceError) as caught:
        source.read()
    assert_one_line(caught.value, "cam", "b.jpg")


# --- network streams (a real HTTP server, read through OpenCV's FFmpeg backend) -----------------------------


def test_mjpeg_over_http_is_read_in_order(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server(make_frame=lambda index: solid_frame(index * 5), interval=0.02)
    source = open_source(server.url(), name="lobby")
    try:
        assert isinstance(source, StreamSource)
        assert source.live
        assert source.size == (160, 120)
        assert 0 < source.fps <= 240
        frames = [source.read() for _ in range(8)]
        levels = [grey_level(frame.image) for frame in frames]
        assert levels[0] == pytest.approx(0, abs=3)
        assert all(later > earlier for earlier, later in itertools.pairwise(levels))
        assert [frame.index for frame in frames] == list(range(8))
    finally:
        source.close()
    with pytest.raises(SourceError):
        source.read()


def test_stream_reconnects_when_the_server_drops_it(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server(make_frame=lambda index: solid_frame(index * 5), frames_per_connection=4)
    with open_source(server.url(), name="lobby") as source:
        assert isinstance(source, StreamSource)
        levels = [grey_level(source.read().image) for _ in range(10)]
        assert server.connections >= 2
        assert source.reconnects >= 1
        assert all(later > earlier for earlier, later in itertools.pairwise(levels))


def test_slow_reader_gets_the_newest_frame_and_drops_are_counted(
    mjpeg_server: Callable[..., MjpegServer],
) -> None:
    server = mjpeg_server(make_frame=lambda index: solid_frame(index * 3), interval=0.005)
    with open_source(server.url(), name="lobby") as source:
        source.read()
        deadline = time.monotonic() + 30
        while server.served < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        frame = source.read()
        assert frame.index == 1
        assert source.dropped >= 1
        assert grey_level(frame.image) > 3 * 5


def test_stream_that_stays_down_ends_with_source_error(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server()
    source = open_source(server.url(), name="lobby", reconnect_timeout=0.5)
    server.close()
    with pytest.raises(SourceError) as caught:
        for _ in range(100):
            source.read()
    assert_one_line(caught.value, "lobby", "could not be reopened", server.url())
    source.close()


def test_refused_url_is_a_source_error_naming_node_and_url() -> None:
    url = "http://admin:secret@127.0.0.1:1/stream.mjpg"
    with pytest.raises(SourceError) as caught:
        open_source(url, name="gate", open_timeout=5)
    message = assert_one_line(
        caught.value, "gate", "connection refused by 127.0.0.1:1", "127.0.0.1:1/stream.mjpg"
    )
    assert "secret" not in message


def test_missing_stream_path_is_a_source_error(mjpeg_server: Callable[..., MjpegServer]) -> None:
    server = mjpeg_server()
    with pytest.raises(SourceError) as caught:
        open_source(server.url("/nothing-here"), name="gate", open_timeout=5)
    assert_one_line(caught.value, "gate", "HTTP 404", server.url("/nothing-here"))


def test_rtsp_url_with_nothing_listening_is_a_source_error() -> None:
    url = "rtsp://127.0.0.1:1/live"
    with pytest.raises(SourceError) as caught:
        open_source(url, name="gate", open_timeout=5)
    assert_one_line(caught.value, "gate", "connection refused", url)


def test_web_page_instead_of_a_stream_is_named(tmp_path: Path) -> None:
    class Page(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            body = b"<html><body>camera admin</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with pytest.raises(SourceError) as caught:
            open_source(url, name="gate", open_timeout=5)
        assert_one_line(caught.value, "gate", "text/html, not a video stream", url)
    finally:
        server.shutdown()
        server.server_close()


def test_unknown_host_is_named() -> None:
    with pytest.raises(SourceError) as caught:
        open_source("rtsp://no-such-camera.invalid/live", name="gate", open_timeout=5)
    assert_one_line(caught.value, "gate", "no-such-camera.invalid")
