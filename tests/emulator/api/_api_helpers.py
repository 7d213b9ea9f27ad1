"""Helpers of the device API tests (imported by the test modules and conftest.py of this folder)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

__all__ = ["PROMETHEUS_LINE", "ensure_deployed", "read_mjpeg", "snapshot", "wait_for"]

PROMETHEUS_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-z_]+="[^"]*",?)*\})? -?[0-9.e+-]+$')


def wait_for(condition: Callable[[], Any], timeout: float = 60.0, interval: float = 0.05) -> Any:
    """Return condition()'s first true value, checking until ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{getattr(condition, '__name__', 'condition')} stayed false for {timeout} s"
            )
        time.sleep(interval)


def ensure_deployed(client: httpx.Client, project: Path) -> dict[str, Any]:
    """Deploy ``project`` through the API unless it already runs; return the status."""
    status: dict[str, Any] = client.get("/api/status").json()
    if status["state"] != "running" or status["app"]["project"] != str(project.resolve()):
        response = client.post("/api/app", json={"project": str(project)})
        assert response.status_code == 200, response.text
        status = response.json()
    return status


def snapshot(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its size, to show that nothing was written (the running app's own
    storage and logs under ``apps/`` are left out: it keeps writing them)."""
    files = (p for p in folder.rglob("*") if p.is_file() and "apps" not in p.relative_to(folder).parts[2:3])
    return {str(p.relative_to(folder)): p.stat().st_size for p in files}


def read_mjpeg(client: httpx.Client, count: int) -> list[np.ndarray]:
    """The first ``count`` frames of the MJPEG stream, decoded."""
    frames: list[np.ndarray] = []
    buffer = b""
    with client.stream("GET", "/api/hdmi.mjpeg", params={"quality": 70}) as response:
        assert response.headers["content-type"] == "multipart/x-mixed-replace; boundary=frame"
        for chunk in response.iter_bytes():
            buffer += chunk
            while True:
                match = re.search(
                    rb"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: (\d+)\r\n\r\n", buffer
                )
                if match is None or len(buffer) < match.end() + int(match.group(1)):
                    break
                jpeg = buffer[match.end() : match.end() + int(match.group(1))]
                buffer = buffer[match.end() + int(match.group(1)) :]
                frame = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
                assert frame is not None, "a part is not a decodable JPEG"
                frames.append(frame)
            if len(frames) >= count:
                return frames
    raise AssertionError(f"the stream ended after {len(frames)} frames")
