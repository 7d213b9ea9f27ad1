# Types of the bridge protocol module, for the appliance's type checker (the module itself stays 3.8 syntax).
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np

PROTOCOL_VERSION: int
ENV_BRIDGE: str
ENV_NODE: str
SANDBOX_SDK_DIR: str
SANDBOX_RUN_DIR: str
ROLE_WATCH: str
ROLE_REQUEST: str
OP_HELLO: str
OP_WELCOME: str
OP_READY: str
OP_GET: str
OP_FRAMES: str
OP_PUT: str
OP_BUFFER: str
OP_RESULT: str
OP_ERROR: str
OP_LOST: str
ERR_TIMEOUT: str
ERR_KEY: str
ERR_VALUE: str
ERR_MODEL: str
ERR_CLOSED: str
ERR_PROTOCOL: str
HEADER: struct.Struct
MAX_JSON: int
MAX_TAIL: int
MAX_CALL: int
MAX_FDS: int
ALIGN: int

class BridgeClosed(ConnectionError): ...
class ProtocolError(ValueError): ...

def send_message(
    sock: socket.socket, header: dict[str, Any], buffers: Iterable[Any] = ..., fds: Sequence[int] = ...
) -> None: ...
def recv_message(sock: socket.socket, fds: list[int] | None = ...) -> tuple[dict[str, Any], bytearray]: ...
def tail_buffers(arrays: Iterable[np.ndarray]) -> list[memoryview]: ...
def arrays_from_tail(specs: Sequence[Any], tail: bytearray | bytes) -> list[np.ndarray]: ...
def parse_spec(spec: Any) -> tuple[np.dtype[Any], tuple[int, ...], int]: ...
def align(offset: int) -> int: ...
def place(
    arrays: Iterable[tuple[str, np.dtype[Any] | str, Sequence[int]]], start: int = ...
) -> tuple[list[ArraySlot], int]: ...

class ArraySlot(NamedTuple):
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    @property
    def nbytes(self) -> int: ...
    @property
    def end(self) -> int: ...
    def to_json(self) -> dict[str, Any]: ...
    @classmethod
    def from_json(cls, spec: object, what: str = ...) -> ArraySlot: ...
    def view(self, buffer: Any) -> np.ndarray: ...

def encode_call(header: dict[str, Any]) -> bytes: ...
def decode_call(data: bytes | bytearray) -> dict[str, Any]: ...
def connect_unix(path: str, timeout: float | None = ...) -> socket.socket: ...
def bind_unix(sock: socket.socket, path: str) -> None: ...
