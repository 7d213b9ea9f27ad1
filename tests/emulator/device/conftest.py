"""Fixtures that several device test modules use."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def blocked_port() -> Iterator[int]:
    """A port listening on the host's 127.0.0.1 that nothing in an app's network namespace may reach."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield int(server.getsockname()[1])
    server.close()
