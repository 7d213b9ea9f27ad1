"""Inbound networking as on the device: a routed port answers on the host at its ``hostPort``.

On the appliance, a port an interface declares in ``network.inboundPorts`` and that a ``networkRoutingRule``
maps ``containerPort -> hostPort`` is reachable at the device's ``hostPort``. The appliance process relays
TCP connections from ``hostPort`` to the app's ``containerPort``:

- with ``network="app"`` (the default) the app has a network namespace of its own whose user-space stack
  (``netstack``) forwards ``containerPort`` from a free port on the host's loopback, which the relay connects
  to; this works as root and as an ordinary user, and the relay keeps ``hostPort`` open while the app
  restarts;
- with host networking the app listens in the host's own network namespace, so the relay connects to
  ``127.0.0.1:containerPort``;
- with ``network="none"`` the app has a network namespace of its own (loopback only); as root the relay
  opens its connection inside that namespace (``setns`` on the relaying thread only), so the routed port
  is the only way in, as on the device. An ordinary user cannot enter the namespace of its sandbox
  (``setns`` needs CAP_SYS_ADMIN in the caller's own user namespace), so there such routes are reported
  as unsupported.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from emulator.errors import DeviceError
from emulator.plan import CodeNodePlan

__all__ = [
    "PortForwarder",
    "Route",
    "can_enter_network_namespaces",
    "connect_in_namespace",
    "namespace_connector",
    "open_routes",
    "routed_ports",
    "stack_connector",
]

log = logging.getLogger(__name__)

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0
_CLONE_NEWNET = 0x40000000


def can_enter_network_namespaces() -> bool:
    """Whether this process may enter its sandboxes' network namespaces (it runs as root)."""
    return os.geteuid() == 0


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        number = ctypes.get_errno()
        raise OSError(number, f"setns: {os.strerror(number)}")


def connect_in_namespace(namespace: str, port: int, timeout: float = _CONNECT_TIMEOUT) -> socket.socket:
    """Connect to ``127.0.0.1:port`` inside another network namespace.

    The calling thread enters the namespace only to create the socket and returns at once; the socket stays
    in the namespace it was made in. Call it from a thread of its own.

    Args:
        namespace: the namespace file, e.g. ``/proc/<pid>/ns/net``.
        port: the port to connect to.
        timeout: seconds to wait for the connection.

    Returns:
        The connected socket.

    Raises:
        OSError: the namespace cannot be entered, or nothing listens on the port there.
    """
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(namespace, os.O_RDONLY)
        try:
            _setns(target)
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)
    try:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


@dataclass(frozen=True)
class Route:
    """One inbound route of a node and how it is served.

    ``state`` is ``forwarding`` (a relay listens on ``host_port``), ``direct`` (the ports are equal and the
    app shares the host's network, so it answers itself) or ``unsupported`` (the app's own network
    namespace cannot be entered by an ordinary user).
    """

    node: str
    container_port: int
    host_port: int
    state: str


class PortForwarder:
    """Relays TCP connections from ``listen_host:listen_port`` to ``target_host:target_port``.

    A connection that the target refuses (the app is not listening yet, or is restarting) is closed at once,
    as a closed port on the device would be.

    Args:
        listen_port: the host port (``hostPort``).
        target_port: the app's port (``containerPort``).
        listen_host: the address to listen on.
        target_host: the address the app listens on.
        node: the node concerned, for messages.
        connect: opens the connection to the target (default: a TCP connection to the target address).
    """

    def __init__(
        self,
        listen_port: int,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        target_host: str = "127.0.0.1",
        node: str | None = None,
        connect: Callable[[], socket.socket] | None = None,
    ) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self.listen_host = listen_host
        self.target_host = target_host
        self.node = node
        self._connect = connect or self._tcp_connect
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        self.connections = 0
        self.refused = 0

    def _tcp_connect(self) -> socket.socket:
        return socket.create_connection((self.target_host, self.target_port), timeout=_CONNECT_TIMEOUT)

    def start(self) -> None:
        """Listen on the host port and start relaying.

        Raises:
            DeviceError: the port cannot be listened on (in use, or privileged).
        """
        family = socket.AF_INET6 if ":" in self.listen_host else socket.AF_INET
        server = socket.socket(family, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((self.listen_host, self.listen_port))
            server.listen(64)
        except OSError as error:
            server.close()
            raise DeviceError(
                f"cannot listen on {self.listen_host}:{self.listen_port} for the route to port "
                f"{self.target_port}: {error.strerror or error}",
                node=self.node,
            ) from None
        self._server = server
        self._thread = threading.Thread(
            target=self._accept, name=f"panorama-port-{self.listen_port}", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop listening and drop every relayed connection."""
        with self._lock:
            self._closed = True
            server, self._server = self._server, None
            open_sockets, self._open = self._open, set()
        if server is not None:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _accept(self) -> None:
        server = self._server
        while server is not None:
            try:
                client, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            upstream = self._connect()
        except OSError:
            self.refused += 1
            client.close()
            return
        upstream.settimeout(None)
        with self._lock:
            if self._closed:
                client.close()
                upstream.close()
                return
            self._open.update((client, upstream))
            self.connections += 1
        remaining = [2]  # directions still open, guarded by self._lock
        threading.Thread(target=self._pipe, args=(upstream, client, remaining), daemon=True).start()
        self._pipe(client, upstream, remaining)

    def _pipe(self, source: socket.socket, dest: socket.socket, remaining: list[int]) -> None:
        try:
            while True:
                data = source.recv(_CHUNK)
                if not data:
                    break
                dest.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dest.shutdown(socket.SHUT_WR)
        with self._lock:
            remaining[0] -= 1
            over = remaining[0] == 0
            if over:
                self._open.discard(source)
                self._open.discard(dest)
        if over:
            source.close()
            dest.close()


def namespace_connector(
    process_of: Callable[[str], object], node: str, port: int
) -> Callable[[], socket.socket]:
    """A ``connect`` for ``PortForwarder`` that reaches ``port`` inside the node's current sandbox.

    Args:
        process_of: node -> its running sandbox process (with ``init_pid``), or None.
        node: the node.
        port: the app's port (``containerPort``).
    """

    def connect() -> socket.socket:
        pid = getattr(process_of(node), "init_pid", None)
        if pid is None:
            raise ConnectionRefusedError(f"node {node} is not running")
        return connect_in_namespace(f"/proc/{pid}/ns/net", port)

    return connect


def stack_connector(process_of: Callable[[str], object], node: str, port: int) -> Callable[[], socket.socket]:
    """A ``connect`` for ``PortForwarder`` that reaches ``port`` of the node's current sandbox through the
    loopback port its network stack forwards to it (``SandboxProcess.host_ports``).

    Args:
        process_of: node -> its running sandbox process, or None.
        node: the node.
        port: the app's port (``containerPort``).
    """

    def connect() -> socket.socket:
        ports = getattr(process_of(node), "host_ports", None)
        if not isinstance(ports, dict) or port not in ports:
            raise ConnectionRefusedError(f"node {node} is not running")
        return socket.create_connection(("127.0.0.1", ports[port]), timeout=_CONNECT_TIMEOUT)

    return connect


def routed_ports(node: CodeNodePlan) -> tuple[int, ...]:
    """The container ports of a node that ``open_routes`` relays: routed and declared in ``inboundPorts``."""
    return tuple(
        sorted(
            {
                rule.container_port
                for rule in node.routing
                if rule.container_port in node.interface.inbound_ports
            }
        )
    )


def open_routes(
    nodes: Sequence[CodeNodePlan],
    *,
    network: str,
    listen_host: str,
    process_of: Callable[[str], object],
) -> tuple[list[Route], list[PortForwarder]]:
    """Start a relay for every routed inbound port of the nodes that run.

    Args:
        nodes: the code nodes started at this boot.
        network: ``app``, ``host`` or ``none``.
        listen_host: the host address to listen on.
        process_of: node -> its running sandbox process (used unless ``network="host"``).

    Returns:
        The routes and the relays started (close them at shutdown).

    Raises:
        DeviceError: a host port cannot be listened on (nothing is left open).
    """
    routes: list[Route] = []
    forwarders: list[PortForwarder] = []
    try:
        for node in nodes:
            for rule in node.routing:
                if rule.container_port not in node.interface.inbound_ports:
                    log.warning(
                        "node %s: port %d is routed but is not in network.inboundPorts: not opened",
                        node.name, rule.container_port,
                    )  # fmt: skip
                    continue
                connect: Callable[[], socket.socket] | None = None
                if network == "app":
                    connect = stack_connector(process_of, node.name, rule.container_port)
                elif network == "none":
                    if not can_enter_network_namespaces():
                        log.warning(
                            "node %s: port %d cannot be routed with network none unless running as root",
                            node.name, rule.container_port,
                        )  # fmt: skip
                        routes.append(Route(node.name, rule.container_port, rule.host_port, "unsupported"))
                        continue
                    connect = namespace_connector(process_of, node.name, rule.container_port)
                elif rule.container_port == rule.host_port:
                    routes.append(Route(node.name, rule.container_port, rule.host_port, "direct"))
                    continue
                forwarder = PortForwarder(
                    rule.host_port, rule.container_port, listen_host=listen_host, node=node.name,
                    connect=connect,
                )  # fmt: skip
                forwarder.start()
                forwarders.append(forwarder)
                routes.append(Route(node.name, rule.container_port, rule.host_port, "forwarding"))
    except BaseException:
        for forwarder in forwarders:
            forwarder.close()
        raise
    return routes, forwarders
