"""The call service: the appliance's side of the model calls of one app connection.

An app's ``self.call`` has one way to the model: its request connection asks this service for a *call
buffer* (``buffer``: a memfd that grows but never shrinks, so the app cannot make the appliance or the model
server fault on it) and gets with it a *model channel*, a socket to the model server of the connection's own
(:meth:`runtime.models.ModelLease.lend`). The app writes the inputs into the buffer and sends its calls on
the channel; the model server checks each call, writes the outputs after the inputs and answers there. No
call passes through the appliance. When a channel ends during a call, the app says so (``lost``) and this
service gives the reason (the model server died, and is being restarted). The memfd is closed, and the
channel's call counts join the node's own, when the connection ends. See
:mod:`runtime.sdk.panoramasdk._protocol` for the messages.

Why this transport: the app is untrusted, and its call requests (JSON naming a model node and where the
inputs lie) are parsed and checked where a parse bug costs least, in the model server. That process holds
nothing of value: it only serves the application's models, never sees the state directory, the cameras, the
HDMI output or another application, and a fault that kills it is a failed call and a restart
(:class:`runtime.models.ModelHost`), while the appliance keeps running. Parsing in the appliance instead
would put every call's untrusted bytes beside everything the device holds, and add a hop (app -> appliance
-> model server and back) that competes for the appliance's interpreter with the cameras and the HDMI
output. The appliance only parses what it must: the ``buffer`` and ``lost`` requests, a size and a model
node's name. An app may call only its graph's model nodes: the appliance lends channels for those alone,
and the model server refuses any other node on them.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence
from typing import Any

from emulator.errors import one_line
from runtime.bridge.contracts import LeasedChannel, ModelCaller
from runtime.bridge.metrics import NodeStats
from runtime.sdk.panoramasdk import _protocol as P

__all__ = ["MAX_CALL_BUFFER", "CallService"]

MAX_CALL_BUFFER = 1 << 30
"""Largest call buffer an app may ask for."""


class CallService:
    """The model calls of one request connection: its call buffer and the channels lent to the app.

    Args:
        node: the code node (for the messages).
        models: the model host, or None when the appliance has none.
        allowed: the model nodes of the application graph (the app may call these only).
        stats: the node's counters.
        cond: the runtime's condition, which guards ``stats``.
    """

    def __init__(
        self,
        node: str,
        models: ModelCaller | None,
        allowed: Sequence[str],
        stats: NodeStats,
        cond: threading.Condition,
    ) -> None:
        self.node = node
        self.models = models
        self.allowed = list(allowed)
        self.stats = stats
        self.cond = cond
        self._lease: LeasedChannel | None = None
        self._counted = False  # whether the lease's tally is among the node's

    def buffer(self, conn: socket.socket, message: dict[str, Any]) -> None:
        """Answer a ``buffer`` request: the call buffer, grown to the size asked, and a new model channel.

        Args:
            conn: the request connection.
            message: the request (``model``, ``size``).

        Raises:
            BridgeClosed: the app is gone.
        """
        model, size = message.get("model"), message.get("size")
        if not isinstance(model, str) or model not in self.allowed:
            self._refuse(conn, P.ERR_KEY, f"model node {model!r} is not in the application graph")
            return
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            self._refuse(conn, P.ERR_VALUE, f"model node {model}: bad call buffer size {size!r}")
            return
        if self.models is None:
            self._refuse(conn, P.ERR_MODEL, f"model node {model}: no model runtime attached to the appliance")
            return
        try:
            if size > MAX_CALL_BUFFER:
                raise ValueError(f"{size} bytes is over the {MAX_CALL_BUFFER}-byte limit")
            if self._lease is None:
                self._lease = self.models.lease(max(size, 1))
            else:
                self._lease.ensure(size)
        except (OSError, ValueError) as error:
            self._refuse(
                conn, P.ERR_VALUE, f"model node {model}: no call buffer of {size} bytes: {one_line(error)}"
            )
            return
        lease = self._lease
        try:
            channel = lease.lend(self.allowed)
        except Exception as error:
            self._refuse(
                conn, P.ERR_MODEL, f"model node {model}: no channel to the model server: {one_line(error)}"
            )
            return
        if not self._counted:
            self._counted = True
            with self.cond:
                self.stats.tallies.append(lease.tally)
        with channel:
            P.send_message(conn, {"op": P.OP_BUFFER, "size": lease.size}, (), [lease.fd, channel.fileno()])

    def lost(self, conn: socket.socket, message: dict[str, Any]) -> None:
        """Answer a ``lost`` request: why the channel lent to the app ended during its call.

        Args:
            conn: the request connection.
            message: the request (``model``).

        Raises:
            BridgeClosed: the app is gone.
        """
        model = message.get("model")  # the model server counted the call when it began
        if self._lease is None or not isinstance(model, str) or model not in self.allowed:
            self._refuse(conn, P.ERR_PROTOCOL, "no model channel was lent to this connection", count=False)
            return
        self._refuse(conn, P.ERR_MODEL, one_line(self._lease.lost(model)), count=False)

    def close(self) -> None:
        """Close the call buffer (the connection ended); its calls join the node's counts."""
        lease, self._lease = self._lease, None
        if lease is None:
            return
        if self._counted:
            with self.cond:
                self.stats.fold(lease.tally)
        lease.close()

    def _refuse(self, conn: socket.socket, kind: str, text: str, *, count: bool = True) -> None:
        """Answer ``error``; a refused call counts as a failed one (unless the model server counted it)."""
        with self.cond:
            if count:
                self.stats.model_calls += 1
            self.stats.model_errors += 1
            self.stats.note_error(text)
        P.send_message(conn, {"op": P.OP_ERROR, "kind": kind, "message": text})
