"""What the bridge needs from its collaborators, as structural types.

These are the runtime's own inputs: the node plan that deploy makes (``emulator.plan``), the model host
(:mod:`runtime.models`) and the HDMI sink (:mod:`runtime.media.hdmi`) satisfy them as they are; tests pass
the small dataclasses of :mod:`runtime.bridge.testing` instead.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from typing import Protocol

from runtime.media.overlay import Output

__all__ = [
    "CallTally",
    "CodeNodeSpec",
    "FrameSink",
    "InterfaceSpec",
    "LeasedChannel",
    "ModelCaller",
    "ModelDescriptorSpec",
    "ModelInputSpec",
    "ModelNodeSpec",
    "ParamValue",
    "PlanSpec",
    "PortSpec",
]

ParamValue = bool | int | float | str
"""The Python types a parameter port hands the app: boolean, int32, float32, string."""


class PortSpec(Protocol):
    """A port of a node interface (``emulator.manifests.Port``)."""

    @property
    def name(self) -> str: ...

    @property
    def type(self) -> str: ...


class InterfaceSpec(Protocol):
    """A node interface (``emulator.manifests.Interface``)."""

    @property
    def inputs(self) -> Sequence[PortSpec]: ...

    @property
    def outputs(self) -> Sequence[PortSpec]: ...


class CodeNodeSpec(Protocol):
    """A business-logic node of the plan (``emulator.plan.CodeNodePlan``)."""

    @property
    def name(self) -> str: ...

    @property
    def interface(self) -> InterfaceSpec: ...

    @property
    def media_inputs(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def params(self) -> Mapping[str, ParamValue]: ...

    @property
    def outputs(self) -> Mapping[str, Sequence[str]]: ...

    @property
    def launch(self) -> str: ...


class ModelInputSpec(Protocol):
    """One declared input of a model (``emulator.manifests.ModelInput``)."""

    @property
    def name(self) -> str: ...


class ModelDescriptorSpec(Protocol):
    """A model descriptor (``emulator.manifests.ModelDescriptor``)."""

    @property
    def inputs(self) -> Sequence[ModelInputSpec]: ...


class ModelNodeSpec(Protocol):
    """A model node of the plan (``emulator.plan.ModelPlan``)."""

    @property
    def name(self) -> str: ...

    @property
    def descriptor(self) -> ModelDescriptorSpec: ...


class PlanSpec(Protocol):
    """The application plan (``emulator.plan.AppPlan``)."""

    @property
    def code_nodes(self) -> Sequence[CodeNodeSpec]: ...

    @property
    def models(self) -> Sequence[ModelNodeSpec]: ...


class CallTally(Protocol):
    """Counts of the calls an app made on the channels lent to it (``runtime.models.tally.Tally``)."""

    def calls(self, row: int = ...) -> int: ...

    def errors(self, row: int = ...) -> int: ...

    def last_error(self) -> tuple[float, str] | None: ...


class LeasedChannel(Protocol):
    """The shared memory (a memfd) of one app connection's model calls, which lends the app channels of its
    own to the model server (``runtime.models.ModelLease``)."""

    @property
    def tally(self) -> CallTally: ...

    def lend(self, nodes: Sequence[str]) -> socket.socket: ...

    def lost(self, node: str) -> Exception: ...

    @property
    def size(self) -> int: ...

    @property
    def fd(self) -> int: ...

    def ensure(self, size: int) -> None: ...

    def close(self) -> None: ...


class ModelCaller(Protocol):
    """Serves model nodes to apps (``runtime.models.ModelHost``): one lease per app connection that calls.

    ``lease`` raises ``OSError`` when there is no memory for the memfd; a lease's ``lend`` raises an exception
    whose ``str()`` is one line (``emulator.errors.ModelError``) when no model server can serve the channel.
    """

    def lease(self, size: int) -> LeasedChannel: ...


class FrameSink(Protocol):
    """Where put frames go (``runtime.media.hdmi.HdmiSink``); ``show`` must not keep the images it gets."""

    def show(self, outputs: Sequence[Output]) -> object: ...
