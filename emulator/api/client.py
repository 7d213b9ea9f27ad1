"""A small client of the device API (standard library only), used by the commands that talk to a running
``serve`` (``status``, ``reboot``, ``logs``, ``deploy``, ``camera``, ``storage``, ...).

    client = DeviceClient(client_url(), token=os.environ.get("PANORAMA_EMULATOR_TOKEN"))
    client.reboot()["boots"]
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from emulator.errors import DeviceError

__all__ = ["DEFAULT_URL", "ApiError", "DeviceClient", "client_url"]

DEFAULT_URL = "http://127.0.0.1:8123"
"""Where ``panorama-emulator serve`` listens by default."""
URL_ENV = "PANORAMA_EMULATOR_URL"
TOKEN_ENV = "PANORAMA_EMULATOR_TOKEN"


class ApiError(DeviceError):
    """The device API answered a request with an error; ``status`` is the HTTP status."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)


def client_url(host: str | None = None, port: int | None = None) -> str:
    """The base URL of the device API: from ``host`` / ``port`` when given, else ``$PANORAMA_EMULATOR_URL``,
    else :data:`DEFAULT_URL`.

    Args:
        host: host name or address.
        port: TCP port.

    Returns:
        The URL without a trailing slash.
    """
    base = urllib.parse.urlsplit(os.environ.get(URL_ENV) or DEFAULT_URL)
    if host is None and port is None:
        return urllib.parse.urlunsplit(base).rstrip("/")
    name = host or base.hostname or "127.0.0.1"
    if ":" in name and not name.startswith("["):
        name = f"[{name}]"
    return f"{base.scheme or 'http'}://{name}:{port or base.port or 8123}"


class DeviceClient:
    """Talk to a running ``panorama-emulator serve``.

    Args:
        url: the server's base URL.
        token: the bearer token (default: ``$PANORAMA_EMULATOR_TOKEN``).
        timeout: seconds to wait for an answer (a reboot or a deploy takes a few seconds).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 300.0) -> None:
        self.url = (url or client_url()).rstrip("/")
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout

    def _open(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: bytes | None = None,
        content_type: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        request = urllib.request.Request(url, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as error:
            raise _api_error(error) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise DeviceError(
                f"no device API answers at {self.url} ({reason}): start one with `panorama-emulator serve`"
            ) from None

    def request(self, method: str, path: str, **options: Any) -> Any:
        """Send a request and decode its JSON answer.

        Args:
            method: the HTTP method.
            path: the path, starting with ``/``.
            options: ``query`` (dict), ``body`` (bytes), ``content_type``.

        Returns:
            The decoded JSON.

        Raises:
            ApiError: the server answered with an error (its one-line detail is the message).
            DeviceError: no server answers.
        """
        with self._open(method, path, **options) as response:
            return json.loads(response.read() or b"null")

    def status(self) -> dict[str, Any]:
        """The device status (``GET /api/status``)."""
        result: dict[str, Any] = self.request("GET", "/api/status")
        return result

    def power(self, action: str) -> dict[str, Any]:
        """``boot``, ``reboot``, ``power-cut`` or ``shutdown``; returns the status afterwards."""
        result: dict[str, Any] = self.request("POST", f"/api/device/{action}")
        return result

    def reboot(self) -> dict[str, Any]:
        """Reboot gracefully; returns the status afterwards."""
        return self.power("reboot")

    def power_cut(self) -> dict[str, Any]:
        """Cut the power (then the device boots again); returns the status afterwards."""
        return self.power("power-cut")

    def deploy(self, project: Path) -> dict[str, Any]:
        """Deploy a project folder of the server's machine; returns the status afterwards."""
        result: dict[str, Any] = self.request(
            "POST",
            "/api/app",
            body=json.dumps({"project": str(project)}).encode(),
            content_type="application/json",
        )
        return result

    def upload_bundle(self, bundle: Path) -> dict[str, Any]:
        """Upload and deploy a bundle file (``.tar.gz`` of graphs/, packages/, assets/)."""
        result: dict[str, Any] = self.request(
            "POST", "/api/app/bundle", body=Path(bundle).read_bytes(), content_type="application/gzip"
        )
        return result

    def metrics(self) -> dict[str, Any]:
        """The device's figures (``GET /api/metrics``)."""
        result: dict[str, Any] = self.request("GET", "/api/metrics")
        return result

    def camera(self, name: str, action: str) -> dict[str, Any]:
        """``pause`` or ``resume`` a camera node; returns its status (``name``, ``paused``, ``source``)."""
        result: dict[str, Any] = self.request(
            "POST", f"/api/cameras/{urllib.parse.quote(name, safe='')}/{action}"
        )
        return result

    def storage_list(self, path: str = "") -> list[dict[str, Any]]:
        """The entries of one folder of the app's storage (``name``, ``path``, ``kind``, ``size``,
        ``modified``)."""
        listing = self.request("GET", "/api/storage", query={"path": path})
        return list(listing["entries"])

    def storage_get(self, path: str, out: BinaryIO) -> int:
        """Copy a file of the app's storage to ``out``; returns the bytes copied."""
        copied = 0
        with self._open("GET", "/api/storage/file", query={"path": path}) as response:
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                copied += len(chunk)
        return copied

    def export_logs(self, out: BinaryIO, start: float | None = None, end: float | None = None) -> int:
        """Write the zip of ``GET /api/logs/export`` (logs written since ``start``) to ``out``.

        Returns:
            Its size in bytes.
        """
        query = {key: value for key, value in (("start", start), ("end", end)) if value is not None}
        copied = 0
        with self._open("GET", "/api/logs/export", query=query) as response:
            while chunk := response.read(256 * 1024):
                out.write(chunk)
                copied += len(chunk)
        return copied

    def logs(self, node: str, lines: int = 200, file: str | None = None) -> list[str]:
        """The last ``lines`` lines of a node's console output (or of ``file`` in its log folder)."""
        path = f"/api/nodes/{urllib.parse.quote(node, safe='')}/logs"
        tail = self.request("GET", path, query={"lines": lines, **({"file": file} if file else {})})
        return list(tail["lines"])

    def follow_logs(self, node: str, lines: int = 20, file: str | None = None) -> Iterator[str]:
        """The last ``lines`` lines of a node's log, then every new line, until the server stops."""
        path = f"/api/nodes/{urllib.parse.quote(node, safe='')}/logs/stream"
        query = {"lines": lines, **({"file": file} if file else {})}
        with self._open("GET", path, query=query, timeout=3600) as response:
            while True:
                try:
                    raw = response.readline()
                except TimeoutError:
                    continue
                if not raw:
                    return
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.startswith("data: "):
                    yield line[6:]
                elif line == "data:":
                    yield ""


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    try:
        detail = json.loads(error.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    if isinstance(detail, list):  # request validation errors
        detail = "; ".join(
            str(item.get("msg", item)) if isinstance(item, dict) else str(item) for item in detail
        )
    message = str(detail) if detail else f"HTTP {error.code} {error.reason}"
    if error.code == 401:
        message = f"the device API refused the token ({message}): pass --token or set {TOKEN_ENV}"
    return ApiError(message, status=error.code)
