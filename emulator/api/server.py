"""Running the device API with uvicorn: in the foreground for ``serve``, or in a thread for tests or tools."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from types import TracebackType

import uvicorn
from fastapi import FastAPI

from emulator.api.app import DEFAULT_MAX_UPLOAD_BYTES, create_app
from emulator.api.manager import ApplianceManager
from emulator.api.security import is_loopback
from emulator.errors import DeviceError

__all__ = ["LOOPBACK_NAMES", "BackgroundServer", "bind_socket", "check_bind", "run_server"]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
"""Host names a loopback-only server answers to."""
GRACEFUL_SHUTDOWN_SECONDS = 2
"""How long open streams (MJPEG, log events) may keep a stopping server waiting."""


def check_bind(host: str, token: str | None) -> None:
    """Refuse to listen beyond this machine without a token.

    Args:
        host: the address to listen on.
        token: the bearer token clients must send, or None.

    Raises:
        DeviceError: ``host`` is not a loopback address and no token is set, or the token is blank.
    """
    if token is not None and not token.strip():
        raise DeviceError("the token is empty: choose a long random one (for example: openssl rand -hex 32)")
    if not is_loopback(host) and token is None:
        raise DeviceError(
            f"refusing to listen on {host} without a token: pass --token (or set PANORAMA_EMULATOR_TOKEN), "
            "or listen on 127.0.0.1"
        )


def bind_socket(host: str, port: int) -> socket.socket:
    """Open the listening socket (port 0 picks a free one).

    Raises:
        DeviceError: the address cannot be used (in use, not of this machine, no permission).
    """
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # IPPROTO_TCP named explicitly: asyncio turns Nagle's algorithm off only on sockets that say so, and
    # with it on, every response waits for the client's delayed acknowledgement (about 40 ms).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as error:
        sock.close()
        raise DeviceError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def _server(app: FastAPI, log_level: str) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level == "debug",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        lifespan="on",
    )
    return uvicorn.Server(config)


def _app(manager: ApplianceManager, host: str, token: str | None, max_upload_bytes: int) -> FastAPI:
    allowed = None if token is not None else {*LOOPBACK_NAMES, host.strip("[]")}
    return create_app(manager, token=token, max_upload_bytes=max_upload_bytes, allowed_hosts=allowed)


def run_server(
    manager: ApplianceManager,
    *,
    host: str = "127.0.0.1",
    port: int = 8123,
    token: str | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    log_level: str = "warning",
    on_ready: Callable[[str], None] | None = None,
    sock: socket.socket | None = None,
) -> None:
    """Serve the device API until interrupted (Ctrl-C or SIGTERM), then shut the deployed app down.

    Args:
        manager: the device.
        host: the address to listen on; any address but loopback needs ``token``.
        port: the TCP port.
        token: bearer token required on every request, or None (loopback only).
        max_upload_bytes: largest bundle accepted.
        log_level: uvicorn's log level.
        on_ready: called with the console's URL once the socket listens.
        sock: a socket already bound by :func:`bind_socket` (``host`` and ``port`` then only name it).

    Raises:
        DeviceError: the address needs a token, or cannot be listened on.
    """
    check_bind(host, token)
    sock = sock if sock is not None else bind_socket(host, port)
    server = _server(_app(manager, host, token, max_upload_bytes), log_level)
    if on_ready is not None:
        bound = sock.getsockname()
        name = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
        on_ready(f"http://{name}:{bound[1]}/")
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        manager.close()


class BackgroundServer:
    """The device API served from a thread (for tests, notebooks, tools); a context manager.

    Args:
        manager: the device.
        host: the address to listen on.
        port: the TCP port (0: a free one).
        token: bearer token, or None.
        max_upload_bytes: largest bundle accepted.
        close_on_exit: shut the deployed app down when the server stops.

    Raises:
        DeviceError: see :func:`check_bind` and :func:`bind_socket`.
    """

    def __init__(
        self,
        manager: ApplianceManager,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
        close_on_exit: bool = False,
    ) -> None:
        check_bind(host, token)
        self.manager = manager
        self.close_on_exit = close_on_exit
        self._sock = bind_socket(host, port)
        bound = self._sock.getsockname()
        self.url = f"http://{'[' + bound[0] + ']' if ':' in bound[0] else bound[0]}:{bound[1]}"
        """Base URL, without a trailing slash."""
        app = create_app(
            manager,
            token=token,
            max_upload_bytes=max_upload_bytes,
            allowed_hosts=None if token is not None else {*LOOPBACK_NAMES, host},
            close_on_shutdown=close_on_exit,
        )
        self.app = app
        self._server = _server(app, "warning")
        self._thread = threading.Thread(target=self._serve, name="device-api", daemon=True)

    def _serve(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> BackgroundServer:
        """Start serving and wait until requests are answered.

        Raises:
            DeviceError: the server did not start within 30 seconds.
        """
        self._thread.start()
        for _ in range(3000):
            if self._server.started or not self._thread.is_alive():
                break
            self._thread.join(0.01)
        if not self._server.started:
            raise DeviceError("the device API did not start")
        return self

    def stop(self) -> None:
        """Stop serving (open streams are cut after a short grace) and wait for the thread."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join()
        self._sock.close()

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
