"""Exceptions the SDK raises in the app, and the one that an appliance's ``error`` answer means."""

from . import _protocol as P

__all__ = ["ApplianceConnectionError", "ModelCallError", "PortTimeoutError", "raise_error"]


class PortTimeoutError(TimeoutError):
    """``port.get(timeout=...)`` (or ``node.call(..., time_out=...)``) waited longer than allowed.

    It is a ``TimeoutError``, as on SDK 1.2, so ``except TimeoutError`` catches it.
    """


class ModelCallError(RuntimeError):
    """A model node could not run the inputs it was given; the message is the appliance's."""


class ApplianceConnectionError(ConnectionError):
    """The app lost (or never had) its connection to the appliance."""


def raise_error(answer):
    """Raise the exception an ``error`` answer (of the appliance or the model server) stands for.

    Args:
        answer: the answer's header (``kind``, ``message``).
    """
    kind = answer.get("kind")
    message = answer.get("message", "error")
    if kind == P.ERR_TIMEOUT:
        raise PortTimeoutError(message)
    if kind == P.ERR_KEY:
        raise KeyError(message)
    if kind == P.ERR_VALUE:
        raise ValueError(message)
    if kind == P.ERR_MODEL:
        raise ModelCallError(message)
    if kind == P.ERR_CLOSED:
        raise ApplianceConnectionError(message)
    raise RuntimeError(message)
