"""Channels lent to apps: the model server answers an app's own requests, checking everything it is sent."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from _model_factory import IMAGE, WAIT, image

from runtime.models import ModelHost, ModelLease
from runtime.sdk.panoramasdk import _protocol as P


class App:
    """The app's end of a lent channel, driven from the test as a hostile app could drive it."""

    def __init__(self, lease: ModelLease, sock: socket.socket) -> None:
        self.lease = lease
        self.sock = sock

    def send(self, request: dict[str, Any] | bytes) -> dict[str, Any]:
        self.sock.send(request if isinstance(request, bytes) else json.dumps(request).encode())
        return P.decode_call(self.sock.recv(P.MAX_CALL))

    def call(self, x: np.ndarray, offset: int = 0) -> dict[str, Any]:
        self.lease.buffer.array(x.dtype, x.shape, offset)[...] = x
        spec = {"name": "data", "dtype": x.dtype.str, "shape": list(x.shape), "offset": offset}
        return self.send({"model": "conv_node", "inputs": [spec]})

    def outputs(self, answer: dict[str, Any]) -> list[np.ndarray]:
        assert answer["op"] == P.OP_RESULT, answer
        self.lease.buffer.follow(answer["size"])
        return [
            self.lease.buffer.array(spec["dtype"], spec["shape"], spec["offset"]).copy()
            for spec in answer["outputs"]
        ]


@pytest.fixture
def app(onnx_host: ModelHost) -> Iterator[App]:
    lease = onnx_host.lease(1 << 16)
    sock = lease.lend(["conv_node"])
    try:
        yield App(lease, sock)
    finally:
        sock.close()
        lease.close()


def test_a_lent_channel_answers_what_the_host_computes_and_counts_the_call(
    onnx_host: ModelHost, app: App
) -> None:
    before = onnx_host.metrics()["conv_node"]["calls"]
    x = image(3)
    got = app.outputs(app.call(x))
    want = onnx_host.call("conv_node", x)
    assert len(got) == len(want)
    for have, expected in zip(got, want, strict=True):
        assert have.dtype == np.float32
        np.testing.assert_array_equal(have, expected)
    # uint8 inputs are converted to the model's float32 by the server, as the host does.
    as_bytes = app.outputs(app.call((x * 255).astype(np.uint8), offset=1 << 15))
    np.testing.assert_array_equal(as_bytes[0], onnx_host.call("conv_node", (x * 255).astype(np.uint8))[0])
    assert (app.lease.tally.calls(), app.lease.tally.errors()) == (2, 0)
    assert onnx_host.metrics()["conv_node"]["calls"] == before + 2 + 2


def test_outputs_that_do_not_fit_grow_the_file_and_the_answer_says_so(onnx_host: ModelHost) -> None:
    lease = onnx_host.lease(64)
    sock = lease.lend(["conv_node"])
    try:
        lease.ensure(int(np.prod(IMAGE)) * 4)
        app = App(lease, sock)
        answer = app.call(image(0))
        assert answer["size"] > int(np.prod(IMAGE)) * 4
        np.testing.assert_array_equal(app.outputs(answer)[0], onnx_host.call("conv_node", image(0))[0])
    finally:
        sock.close()
        lease.close()


SPEC = {"name": "data", "dtype": "<f4", "shape": list(IMAGE), "offset": 0}

BAD_REQUESTS: list[tuple[str, dict[str, Any] | bytes, str, str]] = [
    ("not JSON", b"\x80not json", P.ERR_PROTOCOL, "model call message is not JSON"),
    ("a JSON list", b"[1, 2]", P.ERR_PROTOCOL, "model call message is not a JSON object"),
    ("JSON nested too deep", b"[" * 200_000, P.ERR_PROTOCOL, "bad model call message: RecursionError"),
    ("no model", {"inputs": [SPEC]}, P.ERR_KEY, "model node None is not in the application graph"),
    (
        "a model node of another app",
        {"model": "pair_node", "inputs": [SPEC]},
        P.ERR_KEY,
        "model node 'pair_node' is not in the application graph",
    ),
    (
        "inputs not a list",
        {"model": "conv_node", "inputs": {"data": 1}},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: no list of inputs",
    ),
    (
        "an input that is not an object",
        {"model": "conv_node", "inputs": ["data"]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: bad array spec",
    ),
    (
        "an object dtype",
        {"model": "conv_node", "inputs": [{**SPEC, "dtype": "O"}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: object arrays are not allowed",
    ),
    (
        "a negative dimension",
        {"model": "conv_node", "inputs": [{**SPEC, "shape": [1, 3, -32, 32]}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: bad array spec: negative dimension -32",
    ),
    (
        "a shape of fractions",
        {"model": "conv_node", "inputs": [{**SPEC, "shape": [1, 3, 32.5, 32]}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: bad array spec: the shape is not a list of integers",
    ),
    (
        "a shape that is a string",
        {"model": "conv_node", "inputs": [{**SPEC, "shape": "1332"}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: bad array spec: the shape is not a list of integers",
    ),
    (
        "no name",
        {"model": "conv_node", "inputs": [{**SPEC, "name": 7}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: an input has no name",
    ),
    (
        "an offset that is not a number",
        {"model": "conv_node", "inputs": [{**SPEC, "offset": "0"}]},
        P.ERR_VALUE,
        "bad inputs for model node conv_node: input 'data' has no offset in the call buffer",
    ),
    (
        "a structured dtype",
        {"model": "conv_node", "inputs": [{**SPEC, "dtype": "<i4,<i4"}]},
        P.ERR_MODEL,
        "node conv_node: input 'data' is a |V8 array; the model needs numbers",
    ),
    (
        "an input past the end of the file",
        {"model": "conv_node", "inputs": [{**SPEC, "offset": 1 << 40}]},
        P.ERR_MODEL,
        "node conv_node: input 'data' lies outside the call buffer",
    ),
    (
        "a negative offset",
        {"model": "conv_node", "inputs": [{**SPEC, "offset": -64}]},
        P.ERR_MODEL,
        "node conv_node: input 'data' lies outside the call buffer",
    ),
    (
        "another shape",
        {"model": "conv_node", "inputs": [{**SPEC, "shape": [1, 3, 16, 16]}]},
        P.ERR_MODEL,
        "node conv_node: input 'data' has shape (1, 3, 16, 16) but the descriptor declares (1, 3, 32, 32)",
    ),
    (
        "a missing input",
        {"model": "conv_node", "inputs": []},
        P.ERR_MODEL,
        "node conv_node: missing input 'data': the descriptor declares inputs ['data']",
    ),
]


@pytest.mark.parametrize(
    ("request_", "kind", "message"),
    [pytest.param(request, kind, message, id=name) for name, request, kind, message in BAD_REQUESTS],
)
def test_a_bad_request_gets_one_error_and_the_channel_serves_the_next_call(
    onnx_host: ModelHost, app: App, request_: dict[str, Any] | bytes, kind: str, message: str
) -> None:
    node_errors = onnx_host.metrics()["conv_node"]["errors"]
    answer = app.send(request_)
    assert answer["op"] == P.OP_ERROR
    assert answer["kind"] == kind
    assert answer["message"].startswith(message), answer["message"]
    assert (app.lease.tally.calls(), app.lease.tally.errors()) == (1, 1)
    last = app.lease.tally.last_error()
    assert last is not None and last[1] == answer["message"]
    # Only a call the model node was asked for counts against the node.
    assert onnx_host.metrics()["conv_node"]["errors"] == node_errors + (kind == P.ERR_MODEL)
    after = app.outputs(app.call(image(0)))
    np.testing.assert_array_equal(after[0], onnx_host.call("conv_node", image(0))[0])


def test_a_file_the_app_grew_is_mapped_at_its_real_size(onnx_host: ModelHost, app: App) -> None:
    grown = app.lease.size + (1 << 20)
    os.ftruncate(app.lease.fd, grown)  # an app may grow its call buffer, never shrink it
    offset = grown - (1 << 19)
    app.lease.buffer.follow(grown)
    answer = app.call(image(2), offset=offset)
    assert answer["size"] >= grown
    np.testing.assert_array_equal(app.outputs(answer)[0], onnx_host.call("conv_node", image(2))[0])


def test_a_closed_channel_leaves_nothing_open_in_the_model_server(onnx_host: ModelHost) -> None:
    pid = onnx_host.pid
    assert pid is not None

    def open_files() -> Counter[str]:
        found: Counter[str] = Counter()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):  # closed meanwhile
                found[os.readlink(f"/proc/{pid}/fd/{fd}")] += 1
        return found

    # Channels of earlier tests may still be closing: only what this test opened must be gone.
    before = open_files()
    for _ in range(3):
        lease = onnx_host.lease(1 << 16)
        sock = lease.lend(["conv_node"])
        App(lease, sock).call(image(0))
        sock.close()
        lease.close()
    deadline = time.monotonic() + WAIT
    while open_files() - before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not open_files() - before


def test_a_request_that_repeats_the_last_one_is_answered_for_the_new_inputs(
    onnx_host: ModelHost, app: App
) -> None:
    # An app sends the same request bytes every frame; only the data in the call buffer changes.
    for seed in (4, 5, 4):
        got = app.outputs(app.call(image(seed)))
        np.testing.assert_array_equal(got[0], onnx_host.call("conv_node", image(seed))[0])
    # Converted inputs (uint8 to the model's float32) are converted again on every repeat.
    for seed in (6, 7):
        x = (image(seed) * 255).astype(np.uint8)
        got = app.outputs(app.call(x, offset=1 << 15))
        np.testing.assert_array_equal(got[0], onnx_host.call("conv_node", x)[0])
    # A wrong request between two good ones, and a good one after the memory grew.
    assert app.send({"model": "conv_node", "inputs": []})["op"] == P.OP_ERROR
    np.testing.assert_array_equal(
        app.outputs(app.call(image(8)))[0], onnx_host.call("conv_node", image(8))[0]
    )
    app.lease.ensure(app.lease.size * 4)
    np.testing.assert_array_equal(
        app.outputs(app.call(image(9)))[0], onnx_host.call("conv_node", image(9))[0]
    )
    assert (app.lease.tally.calls(), app.lease.tally.errors()) == (8, 1)


def test_a_repeated_request_that_fails_its_checks_fails_every_time(app: App) -> None:
    request = {"model": "conv_node", "inputs": [{**SPEC, "shape": [1, 3, 16, 16]}]}
    for _ in range(3):
        answer = app.send(request)
        assert answer["op"] == P.OP_ERROR and "has shape (1, 3, 16, 16)" in answer["message"]
