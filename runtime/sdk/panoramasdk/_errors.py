"""Exceptions the SDK raises in the app."""

__all__ = ["ApplianceConnectionError", "ModelCallError", "PortTimeoutError"]


class PortTimeoutError(TimeoutError):
    """``port.get(timeout=...)`` (or ``node.call(..., time_out=...)``) waited longer than allowed.

    It is a ``TimeoutError``, as on SDK 1.2, so ``except TimeoutError`` catches it.
    """


class ModelCallError(RuntimeError):
    """A model node could not run the inputs it was given; the message is the appliance's."""


class ApplianceConnectionError(ConnectionError):
    """The app lost (or never had) its connection to the appliance."""
