"""What an app's AWS SDK meets (``--aws none|host|local``), and the endpoint the emulator serves for it.

- ``none``: nothing is given; boto3 finds no credentials and raises ``NoCredentialsError``.
- ``host``: the app gets the caller's credentials and region the way a device gives its runtime role: a
  container credentials endpoint (``AWS_CONTAINER_CREDENTIALS_FULL_URI`` plus
  ``AWS_CONTAINER_AUTHORIZATION_TOKEN``, read by every botocore the published apps pin). The credentials
  stay in the emulator's memory; no file holds them.
- ``local``: the app's botocore is sent through an HTTPS proxy the emulator runs (``HTTPS_PROXY``), which
  answers AWS hosts itself with certificates of a CA made for this boot (``AWS_CA_BUNDLE``):
  CloudWatch ``PutMetricData`` is kept (:mod:`emulator.device.cloudwatch_local`), every other AWS call
  gets an error naming the mode, and nothing reaches AWS.

Either way the emulator listens on a unix socket in the run directory (bound into the sandbox); a small
forwarder started in front of the entry point (``panoramasdk/_awsgate.py``, on the image's Python) gives
the app a port on its own loopback, so this works whether the app shares the host's network or has its own.
"""

from __future__ import annotations

import contextlib
import datetime
import hmac
import http.server
import importlib
import ipaddress
import json
import os
import re
import secrets
import socket
import socketserver
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emulator.device.aws_certs import LocalCA
from emulator.device.cloudwatch_local import MetricStore
from emulator.device.options import AWS_MODES
from emulator.device.sandbox import RUN_MOUNT, SDK_MOUNT
from emulator.errors import DeviceError
from runtime.sdk.panoramasdk._protocol import bind_unix

__all__ = [
    "AWS_MODES",
    "CA_FILE",
    "GATE_SCRIPT",
    "LOCAL_ACCESS_KEY",
    "SOCKET_FILE",
    "AwsEndpoint",
    "Credentials",
    "cloudwatch_lines",
    "host_credentials",
    "start_aws",
]

SOCKET_FILE = "aws.sock"
CA_FILE = "aws-ca.pem"
GATE_SCRIPT = f"{SDK_MOUNT}/panoramasdk/_awsgate.py"
LOCAL_ACCESS_KEY = "PANORAMAEMULATORLOCAL"
_LOCAL_REGION = "us-east-1"
_LIFETIME = datetime.timedelta(hours=1)
_PYTHONS = ("python3", "python3.8", "python3.7", "python")
_AWS_HOST = re.compile(r"^[a-z0-9.-]+\.(amazonaws\.com|amazonaws\.com\.cn|api\.aws)$")
_MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """One set of AWS credentials (never printed: ``repr`` shows the access key only)."""

    access_key: str
    secret_key: str
    token: str
    expiration: datetime.datetime

    def __repr__(self) -> str:
        return f"Credentials(access_key={self.access_key!r}, expiration={self.expiration.isoformat()})"


def host_credentials(
    environ: Mapping[str, str] | None = None,
) -> tuple[Callable[[], Credentials], str | None]:
    """The caller's credentials and region: boto3's (botocore's) chain when it is installed, else ``AWS_*``.

    Args:
        environ: the environment to read when botocore is not installed (default: ``os.environ``).

    Returns:
        A function giving the current credentials (refreshed as botocore refreshes them), and the
        region or None.

    Raises:
        DeviceError: no credentials are found.
    """
    env = os.environ if environ is None else environ
    try:
        session_module: Any = importlib.import_module("botocore.session")
    except ImportError:
        session_module = None
    if session_module is not None and environ is None:
        session = session_module.Session()
        found = session.get_credentials()
        region = session.get_config_variable("region")
        if found is None:
            raise DeviceError(
                "--aws host: botocore on this machine finds no AWS credentials (configure a profile, "
                "AWS_PROFILE or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            )

        def current() -> Credentials:
            frozen = found.get_frozen_credentials()
            expiry = getattr(found, "_expiry_time", None)
            latest = _now() + _LIFETIME
            expiration = min(expiry, latest) if isinstance(expiry, datetime.datetime) else latest
            return Credentials(frozen.access_key, frozen.secret_key, frozen.token or "", expiration)

        return current, region or None
    access_key, secret_key = env.get("AWS_ACCESS_KEY_ID", ""), env.get("AWS_SECRET_ACCESS_KEY", "")
    if not access_key or not secret_key:
        raise DeviceError(
            "--aws host: no AWS credentials in the environment (set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY, and AWS_SESSION_TOKEN for temporary ones; or install boto3 to use "
            "profiles)"
        )
    token = env.get("AWS_SESSION_TOKEN", "")
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None
    return (lambda: Credentials(access_key, secret_key, token, _now() + _LIFETIME)), region


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    endpoint: AwsEndpoint

    def server_bind(self) -> None:
        bind_unix(self.socket, str(self.server_address))


class _Handler(http.server.BaseHTTPRequestHandler):
    """The app's requests that came through the forwarder: credentials (host) or proxy CONNECTs (local)."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def address_string(self) -> str:
        return "app"

    def _send(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, value: object) -> None:
        self._send(status, {"Content-Type": "application/json"}, json.dumps(value).encode())

    def do_GET(self) -> None:
        endpoint = self.server.endpoint
        if endpoint.mode != "host" or self.path.split("?")[0] != "/credentials":
            self._json(404, {"message": f"panorama-emulator --aws {endpoint.mode}: no {self.path} here"})
            return
        given = self.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), endpoint.token.encode()):
            self._json(403, {"message": "panorama-emulator: wrong or missing authorization token"})
            return
        try:
            credentials = endpoint.credentials()
        except Exception as error:  # the caller's chain failed to refresh: tell the app, keep serving
            self._json(500, {"message": f"panorama-emulator --aws host: cannot get credentials: {error}"})
            return
        self._json(
            200,
            {
                "AccessKeyId": credentials.access_key,
                "SecretAccessKey": credentials.secret_key,
                "Token": credentials.token,
                "Expiration": credentials.expiration.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )

    def do_CONNECT(self) -> None:
        endpoint = self.server.endpoint
        host, _, port = self.path.rpartition(":")
        host = host.strip("[]").lower()
        if endpoint.mode != "local" or not port.isdigit():
            self._json(405, {"message": f"panorama-emulator --aws {endpoint.mode}: not a proxy"})
            return
        if _AWS_HOST.match(host):
            self._answer_aws(host, endpoint)
        elif endpoint.tunnel:
            self._tunnel(host, int(port))
        else:
            self._json(403, {"message": f"panorama-emulator: the app has no network for {host}"})
        self.close_connection = True

    def _answer_aws(self, host: str, endpoint: AwsEndpoint) -> None:
        try:
            context = endpoint.ca_context(host)
        except DeviceError as error:
            self._json(502, {"message": str(error)})
            return
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        try:
            tls = context.wrap_socket(self.connection, server_side=True)
        except OSError:
            return
        with contextlib.closing(tls):
            _CallHandler(tls, host, self.server)

    def _tunnel(self, host: str, port: int) -> None:
        try:
            address = _public_address(host, port)
            if address is None:
                self._json(403, {"message": f"panorama-emulator: {host} is this machine's, not the app's"})
                return
            upstream = socket.create_connection(address, timeout=30)
        except OSError as error:
            self._json(502, {"message": f"panorama-emulator: cannot reach {host}:{port}: {error}"})
            return
        upstream.settimeout(None)
        self.send_response(200, "Connection established")
        self.end_headers()
        self.wfile.flush()
        client = self.connection

        def pump(source: socket.socket, target: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    target.sendall(data)
            with contextlib.suppress(OSError):
                target.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()
        upstream.close()


def _public_address(host: str, port: int) -> tuple[str, int] | None:
    """Where a CONNECT to ``host`` goes, or None when that is this machine (loopback, link-local...).

    The app's own network cannot reach the host's loopback services; the proxy must not either.
    """
    address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][4]
    ip = ipaddress.ip_address(address[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    return str(ip), port


class _CallHandler(http.server.BaseHTTPRequestHandler):
    """HTTP inside the TLS tunnel to an AWS host: every request is an AWS call for the local endpoint."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def __init__(self, request: Any, host: str, server: _Server) -> None:
        self.aws_host = host
        super().__init__(request, ("app", 0), server)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            total = 0
            while (size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)) > 0:
                total += size
                if total > _MAX_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length)

    def _call(self) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.send_error(413)
            self.close_connection = True
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.endpoint.store.answer(self.aws_host, headers, self.path.split("?")[0], body)
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(reply.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _call


class AwsEndpoint:
    """The emulator's side of one boot's AWS endpoint (``host`` or ``local`` mode).

    Args:
        mode: ``host`` or ``local``.
        run_dir: the boot's run directory (bound at ``/opt/panorama-emulator/run`` in every sandbox).
        network: the apps' network (``none`` stops the local proxy from carrying non-AWS connections).
        environ: for ``host`` mode, read credentials from this environment instead of botocore's chain.

    Raises:
        DeviceError: a bad mode, no credentials (``host``), no openssl (``local``), or the socket cannot
            be created.
    """

    def __init__(
        self, mode: str, run_dir: Path, *, network: str = "host", environ: Mapping[str, str] | None = None
    ) -> None:
        if mode not in ("host", "local"):
            raise DeviceError(f"no AWS endpoint for --aws {mode}")
        self.mode = mode
        self.token = secrets.token_urlsafe(32)
        self.tunnel = network != "none"
        self.store = MetricStore()
        self.region: str | None = _LOCAL_REGION
        self._ca: LocalCA | None = None
        self.credentials: Callable[[], Credentials]
        if mode == "host":
            self.credentials, self.region = host_credentials(environ)
        else:
            self._ca = LocalCA()
            try:
                (run_dir / CA_FILE).write_bytes(self._ca.certificate_pem)
            except OSError as error:
                self._ca.close()
                raise DeviceError(f"cannot write the local CA certificate: {error.strerror}") from None
        self.socket_path = run_dir / SOCKET_FILE
        try:
            self._server = _Server(str(self.socket_path), _Handler)
        except OSError as error:
            self.close()
            raise DeviceError(f"cannot create the AWS endpoint socket {self.socket_path}: {error}") from None
        self._server.endpoint = self
        self._thread = threading.Thread(target=self._server.serve_forever, name="aws-endpoint", daemon=True)
        self._thread.start()

    def ca_context(self, host: str) -> Any:
        """The TLS server context for ``host`` (local mode)."""
        if self._ca is None:
            raise DeviceError("--aws host does not answer AWS calls itself")
        return self._ca.context_for(host)

    def app_env(self) -> dict[str, str]:
        """Environment variables the app gets (the forwarder adds the loopback URL it listens on)."""
        env: dict[str, str] = {}
        if self.mode == "host":
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = self.token
        else:
            env.update(
                {
                    "AWS_CA_BUNDLE": f"{RUN_MOUNT}/{CA_FILE}",
                    "AWS_ACCESS_KEY_ID": LOCAL_ACCESS_KEY,
                    "AWS_SECRET_ACCESS_KEY": "not-a-secret-the-emulator-answers-locally",
                }
            )
        if self.region:
            env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = self.region
        return env

    def gate(self, command: tuple[str, ...], rootfs: Path, search_path: str) -> tuple[str, ...]:
        """The entry command behind the forwarder, run on the image's Python.

        Args:
            command: the descriptor's entry command.
            rootfs: the app's root filesystem on the host.
            search_path: the app's ``PATH``.

        Returns:
            ``python _awsgate.py SOCKET MODE -- command...``.

        Raises:
            DeviceError: the image has no Python to run the forwarder on.
        """
        python = command[0] if re.fullmatch(r"python[0-9.]*", Path(command[0]).name) else None
        for name in () if python else _PYTHONS:
            for folder in search_path.split(":"):
                if folder.startswith("/") and os.path.lexists(rootfs / folder.lstrip("/") / name):
                    python = f"{folder.rstrip('/')}/{name}"
                    break
            if python:
                break
        if python is None:
            raise DeviceError(
                f"--aws {self.mode} needs a Python in the app's image to serve the AWS endpoint inside the "
                f"sandbox, and none of {', '.join(_PYTHONS)} is on its PATH"
            )
        return (python, GATE_SCRIPT, f"{RUN_MOUNT}/{SOCKET_FILE}", self.mode, "--", *command)

    def figures(self) -> dict[str, object]:
        """``{"mode", "cloudwatch": {...}}`` (CloudWatch in local mode only)."""
        figures: dict[str, object] = {"mode": self.mode}
        if self.mode == "local":
            figures["cloudwatch"] = self.store.figures()
        return figures

    def close(self) -> None:
        """Stop serving, remove the socket and the CA's keys."""
        server = getattr(self, "_server", None)
        if server is not None:
            server.shutdown()
            server.server_close()
        with contextlib.suppress(OSError):
            self.socket_path.unlink()
        if self._ca is not None:
            self._ca.close()


def start_aws(
    mode: str, run_dir: Path, *, network: str = "host", environ: Mapping[str, str] | None = None
) -> AwsEndpoint | None:
    """The boot's AWS endpoint for ``mode`` (None for ``none``).

    Args:
        mode: ``none``, ``host`` or ``local``.
        run_dir: the boot's run directory.
        network: the apps' network mode.
        environ: read host credentials from this mapping instead of botocore's chain or ``os.environ``.

    Returns:
        The running endpoint, or None.

    Raises:
        DeviceError: a bad mode, or the endpoint cannot start (see :class:`AwsEndpoint`).
    """
    if mode not in AWS_MODES:
        raise DeviceError(f"--aws must be one of {', '.join(AWS_MODES)}, not {mode!r}")
    if mode == "none":
        return None
    return AwsEndpoint(mode, run_dir, network=network, environ=environ)


def cloudwatch_lines(figures: object) -> list[str]:
    """What ``run`` prints about the CloudWatch metrics an app put with ``--aws local``.

    Args:
        figures: ``metrics()["aws"]`` (anything else gives no lines).

    Returns:
        One line with the calls, then one per metric (``namespace/name``, samples, last value, unit).
    """
    cloudwatch = figures.get("cloudwatch") if isinstance(figures, dict) else None
    if not isinstance(cloudwatch, dict):
        return []
    series = cloudwatch.get("series") or {}
    lines = [
        f"CloudWatch kept here (--aws local): {cloudwatch.get('calls', 0)} calls, "
        f"{cloudwatch.get('refused', 0)} refused, {len(series)} metrics"
    ]
    for key, item in series.items():
        unit = f" {item['unit']}" if item.get("unit") else ""
        lines.append(f"  {key}: {item['samples']} samples, last {item['last']:g}{unit}")
    return lines
