"""Helpers for the media tests: a real MJPEG-over-HTTP camera server and small media files."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np

MakeFrame = Callable[[int], np.ndarray]


def solid_frame(value: int, size: tuple[int, int] = (160, 120)) -> np.ndarray:
    """A frame of one grey level: easy to tell apart after lossy coding."""
    width, height = size
    return np.full((height, width, 3), value % 256, np.uint8)


@dataclass
class MjpegServer:
    """A tiny MJPEG camera: ``multipart/x-mixed-replace`` JPEG parts over HTTP on 127.0.0.1."""

    make_frame: MakeFrame
    frames_per_connection: int | None = None
    interval: float = 0.01
    connections: int = 0
    served: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str = "/stream.mjpg") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> MjpegServer:
        camera = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                if self.path != "/stream.mjpg":
                    self.send_error(404)
                    return
                camera.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=camframe")
                self.end_headers()
                sent = 0
                while not camera.stop.is_set():
                    if camera.frames_per_connection is not None and sent >= camera.frames_per_connection:
                        return
                    ok, buffer = cv2.imencode(
                        ".jpg", camera.make_frame(camera.served), [cv2.IMWRITE_JPEG_QUALITY, 95]
                    )
                    assert ok
                    data = buffer.tobytes()
                    head = f"--camframe\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                    try:
                        self.wfile.write(head.encode() + data + b"\r\n")
                        self.wfile.flush()
                    except OSError:
                        return
                    camera.served += 1
                    sent += 1
                    camera.stop.wait(camera.interval)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="mjpeg-server", daemon=True).start()
        return self

    def close(self) -> None:
        self.stop.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def write_video(path: Path, count: int, fps: float = 12.0, size: tuple[int, int] = (160, 120)) -> Path:
    """Write an MP4 (mp4v) whose frame i is the solid grey ``i * 20``."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    assert writer.isOpened()
    for index in range(count):
        writer.write(solid_frame(index * 20, size))
    writer.release()
    return path
