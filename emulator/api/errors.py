"""Errors of the device API, and the HTTP status each error of the emulator maps to.

The API answers every ``EmulatorError`` with ``{"detail": str(error)}`` and the status :func:`http_status`
gives: a request the device cannot satisfy in its state is a conflict (409), an engine or sandbox the host
cannot provide is unavailable (503), anything else wrong in what was sent is a bad request (400).
"""

from __future__ import annotations

from emulator.errors import (
    AssetError,
    BuildError,
    DeviceError,
    EmulatorError,
    EngineError,
    ManifestError,
    ModelError,
    ProjectError,
    SandboxError,
    SourceError,
)

__all__ = [
    "NotFoundError",
    "PayloadTooLargeError",
    "RequestError",
    "http_status",
]


class NotFoundError(DeviceError):
    """A node, camera or storage path that the request names does not exist on the device."""


class RequestError(ProjectError):
    """A request is malformed: a path that leaves the app's storage, a bundle that is not a bundle."""


class PayloadTooLargeError(AssetError):
    """An uploaded bundle is larger than the server accepts."""


# Most specific classes first: the first match along the error's MRO wins.
_STATUS: dict[type[EmulatorError], int] = {
    NotFoundError: 404,
    PayloadTooLargeError: 413,
    RequestError: 400,
    BuildError: 400,
    ManifestError: 400,
    ProjectError: 400,
    AssetError: 400,
    SourceError: 400,
    DeviceError: 409,
    EngineError: 503,
    SandboxError: 503,
    ModelError: 503,
}


def http_status(error: EmulatorError) -> int:
    """Return the HTTP status that answers a request which failed with ``error``.

    Args:
        error: the error raised while handling the request.

    Returns:
        404, 413, 400, 409 or 503 (400 for an ``EmulatorError`` of no more specific kind).
    """
    for cls in type(error).__mro__:
        status = _STATUS.get(cls)
        if status is not None:
            return status
    return 400
