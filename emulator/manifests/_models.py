"""Typed, immutable models of the Panorama manifests: graph, package, descriptor and override.

Every collection is a tuple, so a loaded manifest can be shared between threads and compared by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from emulator.errors import ProjectError

__all__ = [
    "CATEGORIES",
    "ENVELOPE_VERSION",
    "FRAMEWORKS",
    "IMPLEMENTATION_TYPES",
    "LAUNCH_VALUES",
    "PORT_TYPES",
    "VALUE_TYPES",
    "Asset",
    "Descriptor",
    "Edge",
    "EnvVar",
    "Graph",
    "Implementation",
    "Interface",
    "ModelDescriptor",
    "ModelInput",
    "Node",
    "NodeOverride",
    "Override",
    "Package",
    "PackageRef",
    "Port",
    "RoutingRule",
    "RuntimeDescriptor",
    "UnknownNameError",
]

ENVELOPE_VERSION = "2021-01-01"
VALUE_TYPES = ("boolean", "int32", "float32", "string")
PORT_TYPES = (*VALUE_TYPES, "media")
CATEGORIES = ("media_source", "media_sink", "business_logic", "ml_model")
IMPLEMENTATION_TYPES = ("system", "container", "model")
LAUNCH_VALUES = ("onAppStart", "onDemand", "onSignal")
# ONNX is not in the device's schema: the emulator accepts it so that models can run without SageMaker Neo.
FRAMEWORKS = ("PYTORCH", "TENSORFLOW", "MXNET", "ONNX")


class UnknownNameError(ProjectError, KeyError):
    """A name (interface, asset, node) looked up in a package or plan does not exist.

    It is a ``ProjectError`` (so the CLI prints one line) and a ``KeyError`` (so mapping-style callers work).
    """

    def __str__(self) -> str:
        return ProjectError.__str__(self)


@dataclass(frozen=True)
class Port:
    """An input or output port of an interface.

    Args:
        name: the port name (a Python attribute in the app: no hyphens).
        type: one of ``PORT_TYPES``.
        default: the default value of a parameter port, typed by ``type``; None when absent.
        max_connections: ``maxConnections`` of an input port; 0 means no limit.
    """

    name: str
    type: str
    default: object | None = None
    max_connections: int = 0


@dataclass(frozen=True)
class Interface:
    """A node interface declared by a package.

    Args:
        name: the interface name.
        category: one of ``CATEGORIES``.
        asset: the name of the asset that implements it, if any.
        inputs: input ports in file order.
        outputs: output ports in file order.
        inbound_ports: ports from ``network.inboundPorts`` that routing rules may route.
    """

    name: str
    category: str
    asset: str | None
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    inbound_ports: tuple[int, ...] = ()

    def input(self, name: str) -> Port | None:
        """Return the input port called ``name``, or None."""
        return next((port for port in self.inputs if port.name == name), None)

    def output(self, name: str) -> Port | None:
        """Return the output port called ``name``, or None."""
        return next((port for port in self.outputs if port.name == name), None)


@dataclass(frozen=True)
class Implementation:
    """One implementation of an asset.

    Args:
        type: ``system``, ``container`` or ``model``.
        asset_uri: the blob in ``assets/`` (or a system path for ``system``).
        descriptor_uri: the descriptor blob in ``assets/``, if any.
        requirements: the ``requirements`` objects, kept as parsed JSON.
    """

    type: str
    asset_uri: str | None
    descriptor_uri: str | None
    requirements: tuple[dict[str, Any], ...] = field(default=(), hash=False)


@dataclass(frozen=True)
class Asset:
    """A named asset of a package and its implementations."""

    name: str
    implementations: tuple[Implementation, ...]


@dataclass(frozen=True)
class Package:
    """A node package (``package.json``).

    Args:
        name: the package name (from the file, else from its folder name).
        version: the package version, such as ``1.0``.
        description: free text, empty when absent.
        assets: the assets, in file order.
        interfaces: the interfaces, in file order.
    """

    name: str
    version: str
    description: str
    assets: tuple[Asset, ...]
    interfaces: tuple[Interface, ...]

    def interface(self, name: str) -> Interface:
        """Return the interface called ``name``.

        Raises:
            UnknownNameError: the package declares no such interface (the message lists those it has).
        """
        for interface in self.interfaces:
            if interface.name == name:
                return interface
        known = ", ".join(item.name for item in self.interfaces) or "none"
        raise UnknownNameError(f"package {self.name} has no interface {name!r} (it has: {known})")

    def asset(self, name: str) -> Asset:
        """Return the asset called ``name``.

        Raises:
            UnknownNameError: the package declares no such asset (build it first).
        """
        for asset in self.assets:
            if asset.name == name:
                return asset
        known = ", ".join(item.name for item in self.assets) or "none"
        raise UnknownNameError(
            f"package {self.name} has no asset {name!r} in package.json (it has: {known}); build it first",
            asset=name,
        )


@dataclass(frozen=True)
class PackageRef:
    """A package included by a graph: ``name`` is ``account::package`` (or ``panorama::package``)."""

    name: str
    version: str

    @property
    def account(self) -> str:
        """The part before ``::``."""
        return self.name.partition("::")[0]

    @property
    def package(self) -> str:
        """The part after ``::``."""
        return self.name.partition("::")[2]


@dataclass(frozen=True)
class Node:
    """A graph node: an interface node (``account::pkg.interface``) or a value node (``int32`` ...).

    Args:
        name: the node name.
        interface: ``account::package.interface`` or one of ``VALUE_TYPES``.
        launch: ``onAppStart`` (the default), ``onDemand`` or ``onSignal`` for interface nodes;
            None for value nodes.
        overridable: whether an override may replace the node.
        override_mandatory: whether an override must replace the node at deployment.
        value: the typed value of a value node (float for float32 even when the JSON had an integer).
        title: ``decorator.title``, if any.
        description: ``decorator.description``, if any.
    """

    name: str
    interface: str
    launch: str | None = None
    overridable: bool = False
    override_mandatory: bool = False
    value: object | None = None
    title: str | None = None
    description: str | None = None

    @property
    def is_value(self) -> bool:
        """True for a value node (its interface is one of ``VALUE_TYPES``)."""
        return self.interface in VALUE_TYPES

    @property
    def package_name(self) -> str | None:
        """``account::package`` of an interface node, None for a value node."""
        if self.is_value:
            return None
        return self.interface.rpartition(".")[0]

    @property
    def interface_name(self) -> str | None:
        """The interface name inside the package of an interface node, None for a value node."""
        if self.is_value:
            return None
        return self.interface.rpartition(".")[2]


@dataclass(frozen=True)
class Edge:
    """An edge: ``producer`` is ``node.port`` or a value node name; ``consumer`` is ``node.port``."""

    producer: str
    consumer: str

    @property
    def producer_node(self) -> str:
        """The node part of ``producer``."""
        return self.producer.partition(".")[0]

    @property
    def producer_port(self) -> str | None:
        """The port part of ``producer``, None when it names a value node."""
        return self.producer.partition(".")[2] or None

    @property
    def consumer_node(self) -> str:
        """The node part of ``consumer``."""
        return self.consumer.partition(".")[0]

    @property
    def consumer_port(self) -> str:
        """The port part of ``consumer``."""
        return self.consumer.partition(".")[2]


@dataclass(frozen=True)
class RoutingRule:
    """A network routing rule: ``host_port`` on the host reaches ``container_port`` of ``node``."""

    node: str
    container_port: int
    host_port: int


@dataclass(frozen=True)
class Graph:
    """An application graph (``graph.json``)."""

    packages: tuple[PackageRef, ...]
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]
    routing_rules: tuple[RoutingRule, ...]

    def node(self, name: str) -> Node | None:
        """Return the node called ``name``, or None."""
        return next((node for node in self.nodes if node.name == name), None)


@dataclass(frozen=True)
class EnvVar:
    """One ``entry.environment`` variable of a runtime descriptor."""

    name: str
    value: str


@dataclass(frozen=True)
class RuntimeDescriptor:
    """A code asset's descriptor: the program the device runs, from ``/``.

    Args:
        path: the program, such as ``python3``.
        name: its first argument, such as ``/panorama/app.py``.
        arguments: further arguments.
        environment: the only environment variables the app gets (Dockerfile ENV does not apply).
    """

    path: str
    name: str
    arguments: tuple[str, ...] = ()
    environment: tuple[EnvVar, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """The command line the device runs: ``path name *arguments``."""
        return (self.path, self.name, *self.arguments)


@dataclass(frozen=True)
class ModelInput:
    """A model input tensor: its name and shape."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class ModelDescriptor:
    """A model asset's descriptor.

    Args:
        framework: ``PYTORCH``, ``TENSORFLOW``, ``MXNET`` or (emulator only) ``ONNX``.
        framework_version: ``frameworkVersion``, if any.
        precision_mode: ``FP16`` or ``FP32``, if given.
        inputs: the input tensors.
    """

    framework: str
    framework_version: str | None
    precision_mode: str | None
    inputs: tuple[ModelInput, ...]


Descriptor = RuntimeDescriptor | ModelDescriptor


@dataclass(frozen=True)
class NodeOverride:
    """Replace node ``replace`` by the nodes named in ``with_`` (possibly none)."""

    replace: str
    with_: tuple[str, ...]


@dataclass(frozen=True)
class Override:
    """A deployment override (``override.json``, ``nodeGraphOverrides``).

    Args:
        packages: packages the override nodes use.
        nodes: nodes added to the graph.
        node_overrides: node replacements.
        routing_rules: network routing rules (they win over the graph's rule for the same node and port).
        edges: edges added to the graph.
    """

    packages: tuple[PackageRef, ...]
    nodes: tuple[Node, ...]
    node_overrides: tuple[NodeOverride, ...]
    routing_rules: tuple[RoutingRule, ...] = ()
    edges: tuple[Edge, ...] = ()
