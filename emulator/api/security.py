"""Who may talk to the device API: a bearer token, same-origin browsers, and known host names.

A pure ASGI middleware (it does not buffer streamed responses). The console's static files are public (they
hold no data); every other request needs ``Authorization: Bearer <token>`` when a token is set. Requests
that change something are refused when a browser says they come from another origin, and when the server
is only for this machine, requests naming another host (DNS rebinding) are refused too.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import urlsplit

__all__ = ["PUBLIC_PATHS", "AccessMiddleware", "is_loopback"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC_PATHS = ("/", "/favicon.ico")
"""Paths served without a token, besides everything under ``/console/``."""
_SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def is_loopback(host: str) -> bool:
    """Tell whether a host name or address is this machine only (``localhost``, 127.0.0.0/8, ``::1``).

    Args:
        host: a host name or IP address, IPv6 with or without brackets.

    Returns:
        True for loopback names and addresses.
    """
    name = host.strip().strip("[]").lower()
    if name in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _host_name(value: str) -> str:
    value = value.strip()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class AccessMiddleware:
    """Check the token, the origin of changing requests and, optionally, the Host header.

    Args:
        app: the application to protect.
        token: the bearer token every non-public request must carry, or None.
        allowed_hosts: host names accepted in the Host header (None: any).
    """

    def __init__(
        self, app: ASGIApp, *, token: str | None, allowed_hosts: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = {host.lower() for host in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = headers.get("host", "")
        refusal = self._refusal(scope, headers, host)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        status, detail = refusal
        body = json.dumps({"detail": detail}).encode()
        extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    *extra,
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _refusal(self, scope: Scope, headers: dict[str, str], host: str) -> tuple[int, str] | None:
        if self.allowed_hosts is not None and _host_name(host).lower() not in self.allowed_hosts:
            return 403, "this server answers only requests addressed to this machine (Host header refused)"
        origin = headers.get("origin")
        cross_origin = origin is not None and urlsplit(origin).netloc.lower() != host.lower()
        if scope["method"] not in _SAFE_METHODS and cross_origin:
            return 403, "cross-origin requests that change the device are refused"
        path = scope["path"]
        if self.token is None or path in PUBLIC_PATHS or path.startswith("/console/"):
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return 401, "missing or wrong token: send the header 'Authorization: Bearer <token>'"
        return None
