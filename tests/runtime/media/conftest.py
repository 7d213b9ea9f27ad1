"""Fixtures for the media tests: a real MJPEG-over-HTTP camera server and small media files."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _media_helpers import MakeFrame, MjpegServer, solid_frame, write_video


@pytest.fixture
def mjpeg_server() -> Iterator[Callable[..., MjpegServer]]:
    """Start MJPEG cameras: ``mjpeg_server(make_frame=..., frames_per_connection=..., interval=...)``."""
    servers: list[MjpegServer] = []

    def start(
        make_frame: MakeFrame = solid_frame, frames_per_connection: int | None = None, interval: float = 0.01
    ) -> MjpegServer:
        server = MjpegServer(make_frame, frames_per_connection, interval).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-frame 160x120 video at 12 fps; frame i is solid grey i * 20."""
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 10)
