"""The bridge protocol: framed JSON headers with raw array tails, and unix sockets at any path length."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from runtime.bridge.testing import BridgeLab
from runtime.sdk.panoramasdk import _protocol as P


def test_message_with_arrays_round_trips() -> None:
    left, right = socket.socketpair()
    with left, right:
        arrays = [np.arange(12, dtype=np.float32).reshape(3, 4), np.array([[True, False]]), np.zeros((0, 3))]
        big = np.random.default_rng(1).integers(0, 256, (1080, 1920, 3), dtype=np.uint8)
        arrays.append(big[:, ::2])  # not contiguous: copied once for sending
        specs = [{"dtype": array.dtype.str, "shape": list(array.shape)} for array in arrays]
        header = {"op": "put", "items": specs, "text": "ünïcode"}
        sender = threading.Thread(target=P.send_message, args=(left, header, P.tail_buffers(arrays)))
        sender.start()
        received, tail = P.recv_message(right)
        sender.join()
    assert received == header
    back = P.arrays_from_tail(received["items"], tail)
    assert [array.dtype for array in back] == [array.dtype for array in arrays]
    for original, copy in zip(arrays, back, strict=True):
        assert np.array_equal(original, copy)
    assert back[0].flags.writeable


def test_file_descriptors_travel_with_a_message_and_only_to_who_takes_them() -> None:
    left, right = socket.socketpair()
    files = [os.memfd_create(f"protocol-test-{index}") for index in range(2)]
    try:
        with left, right:
            big = np.zeros(3 << 20, np.uint8)  # several socket buffers: the fds ride on the first bytes
            header = {"op": "frames", "items": [{"fd": 0}, {"fd": 1}]}
            sender = threading.Thread(
                target=P.send_message, args=(left, header, [big]), kwargs={"fds": files}
            )
            sender.start()
            fds: list[int] = []
            received, tail = P.recv_message(right, fds)
            sender.join()
            assert received == header and len(tail) == big.nbytes
            assert [os.fstat(fd).st_ino for fd in fds] == [os.fstat(fd).st_ino for fd in files]
            assert all(os.get_inheritable(fd) is False for fd in fds)
            for fd in fds:
                os.close(fd)
            # A receiver that takes none gets none: the kernel closes them.
            open_before = len(os.listdir("/proc/self/fd"))
            P.send_message(left, {"op": "frames"}, fds=files)
            assert P.recv_message(right)[0] == {"op": "frames"}
            assert len(os.listdir("/proc/self/fd")) == open_before
            with pytest.raises(ValueError, match="file descriptors in one message"):
                P.send_message(left, {"op": "frames"}, fds=[files[0]] * (P.MAX_FDS + 1))
    finally:
        for fd in files:
            os.close(fd)


def test_a_closed_peer_is_bridge_closed() -> None:
    left, right = socket.socketpair()
    left.close()
    with right, pytest.raises(P.BridgeClosed):
        P.recv_message(right)


@pytest.mark.parametrize(
    "raw",
    [
        struct.pack("<II", 5, 0) + b"nope!",
        struct.pack("<II", 2, 0) + b"[]",
        struct.pack("<II", 0xFFFFFFFF, 0),
    ],
    ids=["not json", "no op", "too large"],
)
def test_malformed_messages_are_protocol_errors(raw: bytes) -> None:
    left, right = socket.socketpair()
    with left, right:
        left.sendall(raw)
        with pytest.raises(P.ProtocolError):
            P.recv_message(right)


def test_array_specs_must_match_the_tail() -> None:
    with pytest.raises(P.ProtocolError):
        P.arrays_from_tail([{"dtype": "<f4", "shape": [4]}], bytearray(8))
    with pytest.raises(P.ProtocolError):
        P.arrays_from_tail([{"dtype": "<f4", "shape": [1]}], bytearray(8))
    with pytest.raises(P.ProtocolError):
        P.arrays_from_tail([{"dtype": "|O", "shape": [1]}], bytearray(8))


def test_sockets_work_at_paths_longer_than_a_socket_address(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = str(deep / "code_node.sock")
    assert len(path) > 108
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with server:
        P.bind_unix(server, path)
        server.listen(1)
        client = P.connect_unix(path, timeout=5)
        conn, _ = server.accept()
        with client, conn:
            P.send_message(client, {"op": "hello"})
            assert P.recv_message(conn)[0] == {"op": "hello"}


def test_an_app_reaches_a_bridge_in_a_deep_run_directory(lab: BridgeLab, tmp_path: Path) -> None:
    run_dir = tmp_path / ("r" * 80) / ("s" * 80)
    runtime = lab.runtime(run_dir=run_dir)
    app = lab.app(
        runtime,
        """
        import panoramasdk
        node = panoramasdk.node()
        node.outputs.video_out.put(node.inputs.video_in.get(timeout=30))
        print("RESULT 1")
        """,
    )
    done = lab.finish(app)
    assert done.returncode == 0, done.stderr
    assert runtime.frames_out == 1


def test_a_client_with_another_protocol_version_is_refused(lab: BridgeLab) -> None:
    runtime = lab.runtime()
    path = runtime.node_env("code_node", sandbox_paths=False)[P.ENV_BRIDGE]
    with P.connect_unix(path, timeout=5) as sock:
        P.send_message(sock, {"op": P.OP_HELLO, "protocol": 99, "role": P.ROLE_WATCH, "node": "code_node"})
        reply, _ = P.recv_message(sock)
    assert reply["op"] == P.OP_ERROR
    assert reply["message"].startswith(f"the appliance speaks bridge protocol {P.PROTOCOL_VERSION}")
    with P.connect_unix(path, timeout=5) as sock:
        hello = {"op": P.OP_HELLO, "protocol": P.PROTOCOL_VERSION, "role": P.ROLE_WATCH, "node": "other_node"}
        P.send_message(sock, hello)
        reply, _ = P.recv_message(sock)
    assert reply["message"] == "this bridge serves node code_node, not other_node"
