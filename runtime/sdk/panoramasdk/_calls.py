"""The app's model calls (``self.call``): each thread's call buffer and its channel to the model server.

A thread's first call asks the appliance, on the thread's request connection, for a *call buffer* (a memfd
that the app, the appliance and the model server map) and gets with it the thread's own *model channel*, a
socket to the model server. Each call then writes its inputs into the buffer, sends one datagram of JSON on
the channel (the model node and an :class:`~._protocol.ArraySlot` per input) and reads the outputs where the
answer says the model server wrote them; the appliance is not on the way. A call whose inputs do not fit
asks for a bigger buffer (with a new channel). When the channel ends during a call (the model server died),
the appliance says why (``lost``) and the next call gets a new channel. See :mod:`._protocol`.

This module runs inside the app's root filesystem: Python 3.7 or later, standard library and numpy only.
"""

import contextlib
import mmap
import os
import socket
import threading

import numpy as np

from . import _protocol as P
from ._errors import ApplianceConnectionError, ModelCallError, PortTimeoutError, raise_error
from ._media import media

__all__ = ["ModelCalls"]


class ModelCalls(object):
    """The model calls of a session: which model nodes the app may call, and each thread's call buffer.

    Args:
        session: the session (its ``request`` and ``drop_connection``).
        models: model node -> its declared input names.
    """

    def __init__(self, session, models):
        self._session = session
        self.models = models
        self._local = threading.local()

    def call(self, model, inputs, timeout):
        """Run a model node on ``inputs``; its outputs, copied out of the call buffer.

        Raises:
            KeyError: the graph has no such model node.
            ValueError: the inputs are empty, hold Python objects, or are too big for a call buffer.
            ModelCallError: the model node failed (the message names it), or no model runtime is attached.
            PortTimeoutError: no answer within ``timeout`` seconds.
            ApplianceConnectionError: the appliance is gone.
        """
        if model not in self.models:
            raise KeyError(
                "model node {!r} is not in the application graph (model nodes: {})".format(
                    model, ", ".join(sorted(self.models)) or "none"
                )
            )
        named = self._inputs(model, inputs)
        for array in named.values():
            if array.dtype.hasobject:
                raise ValueError("arrays of Python objects cannot cross the bridge")
        slots, end = P.place((name, array.dtype, array.shape) for name, array in named.items())
        request = P.encode_call({"model": model, "inputs": [slot.to_json() for slot in slots]})
        data = None
        again = True
        while data is None:
            buffer = self._buffer(model, max(end, 1))
            for slot in slots:
                np.copyto(slot.view(buffer.map), named[slot.name], casting="no")
            data = self._exchange(buffer, request, model, timeout, again)
            again = False  # a channel gone before the call is replaced once
        answer = self._decode(data)
        try:
            outputs = [P.ArraySlot.from_json(spec, "output") for spec in answer.get("outputs", [])]
            size = int(answer["size"])
            if size > buffer.size:
                buffer.remap(size)  # the model server grew the memfd for the outputs
            return tuple(slot.view(buffer.map).copy() for slot in outputs)
        except (P.ProtocolError, KeyError, TypeError, ValueError, OSError) as error:
            self._session.drop_connection()
            raise ApplianceConnectionError(
                "panoramasdk: bad answer from the model server: {}".format(error)
            ) from None

    def drop(self):
        """Close this thread's call buffer and channel (its request connection is gone)."""
        buffer = getattr(self._local, "buffer", None)
        self._local.buffer = None
        if buffer is not None:
            buffer.close()

    def after_fork(self):
        """Forget every thread's buffer in a forked child (the child cannot call models)."""
        self._local = threading.local()

    def _buffer(self, model, size):
        """This thread's call buffer, holding ``size`` bytes at least, with a model channel."""
        buffer = getattr(self._local, "buffer", None)
        if buffer is not None and buffer.channel is not None and buffer.size >= size:
            return buffer
        fds = []
        try:
            answer, _ = self._session.request({"op": P.OP_BUFFER, "model": model, "size": size}, fds=fds)
            if len(fds) != 2 or not isinstance(answer.get("size"), int) or answer["size"] < size:
                self._session.drop_connection()
                raise ApplianceConnectionError(
                    "panoramasdk: bad message from the appliance: a call buffer without its channel"
                )
            fresh = _CallBuffer(fds.pop(0), fds.pop(0), answer["size"])
        finally:
            for fd in fds:
                os.close(fd)
        self.drop()
        self._local.buffer = fresh
        return fresh

    def _exchange(self, buffer, request, model, timeout, again):
        """Send a request on the buffer's model channel; the answer's bytes.

        With ``again``, returns None, dropping the channel, when the channel had ended before the request was
        sent (the call can go on a new one). A channel that ends during the call raises the appliance's word
        on why.
        """
        channel = buffer.channel
        if buffer.timeout != timeout:
            channel.settimeout(timeout)
            buffer.timeout = timeout
        data = b""
        try:
            channel.send(request)
        except OSError:
            if again:
                buffer.drop_channel()
                return None
        else:
            data = self._answer_of(channel)
        if not data:
            # The model server stopped: the appliance says why (and lends a new channel next time).
            buffer.drop_channel()
            self._session.request({"op": P.OP_LOST, "model": model})
            raise ModelCallError("model node {}: the model channel closed".format(model))
        return data

    def _answer_of(self, channel):
        try:
            return channel.recv(P.MAX_CALL)
        except socket.timeout:
            # The model server may still write this call's outputs: this connection and buffer are done with.
            timeout = channel.gettimeout()
            self._session.drop_connection()
            raise PortTimeoutError("panoramasdk: no answer within {} s".format(timeout)) from None
        except OSError:
            return b""

    def _decode(self, data):
        """The model server's answer (a ``result``), or raise its error."""
        try:
            answer = P.decode_call(data)
        except P.ProtocolError as error:
            self._session.drop_connection()
            raise ApplianceConnectionError(
                "panoramasdk: bad answer from the model server: {}".format(error)
            ) from None
        if answer.get("op") == P.OP_ERROR:
            raise_error(answer)
        return answer

    def _inputs(self, model, inputs):
        if isinstance(inputs, media):
            inputs = inputs.image
        if isinstance(inputs, dict):
            named = {}
            for name, value in inputs.items():
                if isinstance(value, media):
                    value = value.image
                named[str(name)] = np.asarray(value)
            if not named:
                raise ValueError("model inputs must not be empty")
            return named
        declared = self.models.get(model) or ["data"]
        return {declared[0]: np.asarray(inputs)}


class _CallBuffer(object):
    """This side's mapping of a connection's call buffer (a memfd the appliance sent) and its channel."""

    def __init__(self, fd, channel_fd, size):
        try:
            self.map = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            os.close(channel_fd)
            raise
        self.fd = fd
        self.size = size
        self.channel = socket.socket(fileno=channel_fd)
        """The socket of the model channel lent with the buffer, or None once it ended."""
        self.timeout = None

    def drop_channel(self):
        """Close the model channel (it ended)."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None

    def remap(self, size):
        """Map the memfd again after the model server grew it to ``size`` bytes."""
        self.map = mmap.mmap(self.fd, size)
        self.size = size

    def close(self):
        """Close the memfd (the mapping goes with its last view) and the model channel."""
        self.drop_channel()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self):
        # A thread that ends drops its buffer without a word: its fds must not outlive it.
        with contextlib.suppress(Exception):
            self.close()
