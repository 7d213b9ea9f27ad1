"""The call service: what the appliance answers to an app's `buffer` and `lost` requests, however hostile."""

from __future__ import annotations

import mmap
import os
import socket
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from runtime.bridge import Runtime
from runtime.bridge.testing import BridgeLab, FakeModels, app_plan, code_node, model_plan
from runtime.sdk.panoramasdk import _protocol as P


class RawApp:
    """An app speaking the bridge protocol by hand: a watch connection and one request connection."""

    def __init__(self, runtime: Runtime) -> None:
        path = runtime.node_env("code_node", sandbox_paths=False)[P.ENV_BRIDGE]
        self.watch = P.connect_unix(path, timeout=10)
        P.send_message(self.watch, {"op": P.OP_HELLO, "protocol": P.PROTOCOL_VERSION, "role": P.ROLE_WATCH})
        welcome, _ = P.recv_message(self.watch)
        self.sock = P.connect_unix(path, timeout=10)
        hello = {"op": P.OP_HELLO, "protocol": P.PROTOCOL_VERSION, "role": P.ROLE_REQUEST}
        P.send_message(self.sock, {**hello, "session": welcome["session"]})
        assert P.recv_message(self.sock)[0]["op"] == P.OP_READY

    def ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[int]]:
        fds: list[int] = []
        P.send_message(self.sock, request)
        answer, _ = P.recv_message(self.sock, fds)
        return answer, fds

    def close(self) -> None:
        self.sock.close()
        self.watch.close()


@pytest.fixture
def models() -> FakeModels:
    return FakeModels({"model_node": lambda inputs: (inputs["data"] * 2,)})


@pytest.fixture
def raw(lab: BridgeLab, models: FakeModels) -> Iterator[tuple[Runtime, RawApp]]:
    runtime = lab.runtime(app_plan(code_node(), models=[model_plan()]), models=models)
    app = RawApp(runtime)
    try:
        yield runtime, app
    finally:
        app.close()


@pytest.mark.parametrize(
    ("request_", "kind", "message"),
    [
        (
            {"model": "other_node", "size": 64},
            P.ERR_KEY,
            "model node 'other_node' is not in the application graph",
        ),
        ({"size": 64}, P.ERR_KEY, "model node None is not in the application graph"),
        ({"model": "model_node", "size": -1}, P.ERR_VALUE, "model node model_node: bad call buffer size -1"),
        (
            {"model": "model_node", "size": True},
            P.ERR_VALUE,
            "model node model_node: bad call buffer size True",
        ),
        (
            {"model": "model_node", "size": "64"},
            P.ERR_VALUE,
            "model node model_node: bad call buffer size '64'",
        ),
        (
            {"model": "model_node", "size": 1 << 40},
            P.ERR_VALUE,
            f"model node model_node: no call buffer of {1 << 40} bytes: {1 << 40} bytes is over the",
        ),
    ],
    ids=["another node", "no node", "negative size", "boolean size", "size as text", "too big"],
)
def test_a_bad_buffer_request_is_refused_and_counted_and_the_connection_serves_on(
    raw: tuple[Runtime, RawApp], request_: dict[str, Any], kind: str, message: str
) -> None:
    runtime, app = raw
    answer, fds = app.ask({"op": P.OP_BUFFER, **request_})
    assert fds == []
    assert (answer["op"], answer["kind"]) == (P.OP_ERROR, kind)
    assert answer["message"].startswith(message), answer["message"]
    figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
    assert (figures["model_calls"], figures["model_errors"]) == (1, 1)
    answer, fds = app.ask({"op": P.OP_BUFFER, "model": "model_node", "size": 64})
    try:
        assert answer["op"] == P.OP_BUFFER and len(fds) == 2
    finally:
        for fd in fds:
            os.close(fd)


def test_a_buffer_comes_with_a_channel_that_serves_calls_and_grows_never_shrinks(
    raw: tuple[Runtime, RawApp], models: FakeModels
) -> None:
    runtime, app = raw
    answer, (memfd, channel_fd) = app.ask({"op": P.OP_BUFFER, "model": "model_node", "size": 64})
    channel = socket.socket(fileno=channel_fd)
    try:
        assert answer["size"] >= 64 and os.fstat(memfd).st_size == answer["size"]
        with pytest.raises(PermissionError):
            os.ftruncate(memfd, 0)
        shared = mmap.mmap(memfd, answer["size"])
        slots, _ = P.place([("data", np.float32, (4,))])
        slots[0].view(shared)[...] = [1, 2, 3, 4]
        channel.send(P.encode_call({"model": "model_node", "inputs": [slots[0].to_json()]}))
        result = P.decode_call(channel.recv(P.MAX_CALL))
        assert result["op"] == P.OP_RESULT
        shared = mmap.mmap(memfd, result["size"])
        (out,) = [P.ArraySlot.from_json(spec, "output").view(shared) for spec in result["outputs"]]
        assert out.tolist() == [2.0, 4.0, 6.0, 8.0]
        # Asking for more grows the same memfd and lends another channel.
        bigger, fds = app.ask({"op": P.OP_BUFFER, "model": "model_node", "size": 1 << 20})
        for fd in fds:
            os.close(fd)
        assert bigger["size"] >= 1 << 20 and os.fstat(memfd).st_size == bigger["size"]
    finally:
        channel.close()
        os.close(memfd)
    figures = runtime.metrics()["nodes"]["code_node"]  # type: ignore[index]
    assert (figures["model_calls"], figures["model_errors"]) == (1, 0)


def test_lost_without_a_channel_is_a_protocol_error(raw: tuple[Runtime, RawApp]) -> None:
    _, app = raw
    answer, _ = app.ask({"op": P.OP_LOST, "model": "model_node"})
    assert (answer["op"], answer["kind"]) == (P.OP_ERROR, P.ERR_PROTOCOL)
    assert answer["message"] == "no model channel was lent to this connection"


def test_an_old_call_request_to_the_appliance_is_refused(raw: tuple[Runtime, RawApp]) -> None:
    _, app = raw
    answer, _ = app.ask({"op": "call", "model": "model_node", "inputs": []})
    assert (answer["op"], answer["kind"]) == (P.OP_ERROR, P.ERR_PROTOCOL)
    assert answer["message"] == "unknown request 'call'"
