"""The node plan: a graph (plus an optional override) resolved into what the appliance runs, and how.

``plan_application`` reads ``graph.json`` (and ``override.json``), applies node overrides, finds every
interface in its package, every asset in ``assets/``, and works out which cameras feed which code node input,
which value each parameter port gets, which code output goes to the HDMI sink, and which network ports are
routed. The plan is immutable.

Stock nodes need no package on disk: the abstract camera
``panorama::abstract_rtsp_media_source.rtsp_v1_interface`` (output ``video_out``) and the HDMI sink
``panorama::hdmi_data_sink.hdmi0`` (input ``video_in``). A camera node that an override puts in place of the
abstract camera may also have no package in the project (on a device such cameras are created in the
console): it is planned as a camera whose source is chosen at run time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from emulator.errors import ManifestError, Problem
from emulator.manifests import (
    Edge,
    Interface,
    ModelDescriptor,
    Port,
    RoutingRule,
    RuntimeDescriptor,
    UnknownNameError,
    describe,
    load_graph,
    load_override,
    pointer,
)
from emulator.plan._merge import Merged, Origin, merge
from emulator.plan._resolve import Resolved, Resolver
from emulator.project import Project

__all__ = ["AppPlan", "CameraPlan", "CodeNodePlan", "ModelPlan", "ParamValue", "SinkPlan", "plan_application"]

# The Python types a parameter port hands the app: boolean, int32, float32, string.
ParamValue = bool | int | float | str


@dataclass(frozen=True)
class CameraPlan:
    """A camera node. ``stream_url`` is None for the abstract camera (the source is chosen at run time)."""

    name: str
    interface: str
    stream_url: str | None


@dataclass(frozen=True)
class SinkPlan:
    """A media sink node, such as the HDMI output ``panorama::hdmi_data_sink.hdmi0``."""

    name: str
    interface: str


@dataclass(frozen=True)
class ModelPlan:
    """A model node that code nodes call with ``self.call(inputs, name)``.

    Args:
        name: the node name.
        package: ``account::NAME`` of its package.
        asset: the asset name in package.json.
        asset_uri: the model archive in ``assets/``.
        descriptor_uri: the descriptor in ``assets/``.
        descriptor: the loaded descriptor.
    """

    name: str
    package: str
    asset: str
    asset_uri: str
    descriptor_uri: str
    descriptor: ModelDescriptor


@dataclass(frozen=True)
class CodeNodePlan:
    """A business-logic node: a container asset whose descriptor entry runs in a sandbox.

    Args:
        name: the node name.
        package: ``account::NAME`` of its package.
        interface: its interface (ports, inbound network ports).
        asset: the asset name in package.json.
        asset_uri: the container archive in ``assets/``.
        descriptor_uri: the descriptor in ``assets/``.
        descriptor: the loaded runtime descriptor.
        launch: ``onAppStart``, ``onDemand`` or ``onSignal`` (only ``onAppStart`` nodes start at boot).
        media_inputs: input port -> camera node names, in graph order (after overrides).
        params: input port -> typed value, from a value node edge, else the port default.
        outputs: output port -> sink node names.
        routing: the network routing rules of this node (graph and override).
    """

    name: str
    package: str
    interface: Interface
    asset: str
    asset_uri: str
    descriptor_uri: str
    descriptor: RuntimeDescriptor
    launch: str
    media_inputs: Mapping[str, tuple[str, ...]]
    params: Mapping[str, ParamValue]
    outputs: Mapping[str, tuple[str, ...]]
    routing: tuple[RoutingRule, ...] = ()

    @property
    def starts_at_boot(self) -> bool:
        """True when the appliance starts the node at boot (``launch`` is ``onAppStart``)."""
        return self.launch == "onAppStart"


@dataclass(frozen=True)
class AppPlan:
    """Everything the appliance needs to run an application.

    Args:
        app: the application name (the graph's folder).
        graph_file: the graph it was planned from.
        code_nodes: business-logic nodes, in graph order.
        cameras: camera nodes, in graph order (replacements where the replaced node stood).
        models: model nodes.
        sinks: media sinks.
        override_file: the override applied, if any.
    """

    app: str
    graph_file: Path
    code_nodes: tuple[CodeNodePlan, ...]
    cameras: tuple[CameraPlan, ...]
    models: tuple[ModelPlan, ...]
    sinks: tuple[SinkPlan, ...]
    override_file: Path | None = None

    def code_node(self, name: str) -> CodeNodePlan:
        """Return the code node called ``name``.

        Raises:
            UnknownNameError: no such code node (a ``ProjectError`` and a ``KeyError``).
        """
        for node in self.code_nodes:
            if node.name == name:
                return node
        known = ", ".join(node.name for node in self.code_nodes) or "none"
        raise UnknownNameError(f"no code node {name!r} in application {self.app} (code nodes: {known})")

    @property
    def model_names(self) -> tuple[str, ...]:
        """The names of the model nodes."""
        return tuple(model.name for model in self.models)


class _Connector:
    """Turns resolved nodes and merged edges into per-node inputs, parameters, outputs and routes."""

    def __init__(self, merged: Merged, resolved: dict[str, Resolved]) -> None:
        self.merged = merged
        self.resolved = resolved
        self.problems: list[Problem] = []
        self.media_inputs: dict[str, dict[str, list[str]]] = {}
        self.params: dict[str, dict[str, ParamValue]] = {}
        self.outputs: dict[str, dict[str, list[str]]] = {}
        self.stream_urls: dict[str, str] = {}
        self.routing: dict[str, list[RoutingRule]] = {}
        for name, entry in resolved.items():
            if entry.kind == "code" and entry.interface is not None:
                media = [port.name for port in entry.interface.inputs if port.type == "media"]
                self.media_inputs[name] = {port: [] for port in media}
                self.params[name] = {}
                self.outputs[name] = {port.name: [] for port in entry.interface.outputs}

    def problem(self, origin: Origin, at: str, expected: str, found: str) -> None:
        self.problems.append(Problem(origin.file, at, expected, found))

    def _ports(self, edge: Edge, origin: Origin) -> tuple[str, Port] | None:
        """Return (producer type, consumer port) of a well-formed edge, else report it and return None."""
        producer = self.resolved[edge.producer_node]
        consumer = self.resolved[edge.consumer_node]
        ok = True
        consumer_port = consumer.interface.input(edge.consumer_port) if consumer.interface else None
        if consumer_port is None:
            names = ", ".join(port.name for port in consumer.interface.inputs) if consumer.interface else ""
            self.problem(
                origin,
                pointer(origin.at, "consumer"),
                f"an input port of {consumer.node.name} ({names or 'it has none'})",
                describe(edge.consumer),
            )
            ok = False
        producer_type = producer.node.interface if producer.node.is_value else None
        if not producer.node.is_value:
            port = producer.interface.output(str(edge.producer_port)) if producer.interface else None
            if port is None:
                outputs = producer.interface.outputs if producer.interface else ()
                names = ", ".join(item.name for item in outputs)
                self.problem(
                    origin,
                    pointer(origin.at, "producer"),
                    f"an output port of {producer.node.name} ({names or 'it has none'})",
                    describe(edge.producer),
                )
                ok = False
            else:
                producer_type = port.type
        if not ok or consumer_port is None or producer_type is None:
            return None
        if producer_type != consumer_port.type and not (
            producer_type == "int32" and consumer_port.type == "float32"
        ):
            self.problem(
                origin,
                origin.at,
                f"a {consumer_port.type} producer for {edge.consumer}",
                f"{edge.producer} of type {producer_type}",
            )
            return None
        return producer_type, consumer_port

    def edge(self, edge: Edge, origin: Origin) -> None:
        checked = self._ports(edge, origin)
        if checked is None:
            return
        _, port = checked
        producer = self.resolved[edge.producer_node]
        consumer = self.resolved[edge.consumer_node]
        kinds = (producer.kind, consumer.kind)
        if "model" in kinds:
            return  # model nodes are called by code nodes, not fed by edges
        if producer.kind == "value":
            value = _typed(producer.node.value, port.type)
            if consumer.kind == "code":
                self._param(edge, origin, value)
            elif consumer.kind == "camera" and port.name == "streamUrl":
                self.stream_urls[consumer.node.name] = str(value)
            return
        if kinds == ("camera", "code"):
            cameras = self.media_inputs[consumer.node.name][port.name]
            if producer.node.name in cameras:
                self.problem(
                    origin,
                    origin.at,
                    f"each camera connected once to {edge.consumer}",
                    f"{producer.node.name} connected again",
                )
                return
            cameras.append(producer.node.name)
            if port.max_connections and len(cameras) > port.max_connections:
                self.problem(
                    origin,
                    origin.at,
                    f"at most {port.max_connections} connections to {edge.consumer} (its maxConnections)",
                    f"connection {len(cameras)} from {producer.node.name}",
                )
        elif kinds == ("code", "sink"):
            self.outputs[producer.node.name][str(edge.producer_port)].append(consumer.node.name)
        else:
            self.problem(
                origin,
                origin.at,
                "a camera feeding a code node, a code node feeding a sink, or a value feeding a parameter "
                "(the emulator connects nothing else)",
                f"{producer.kind} {edge.producer} feeding {consumer.kind} {edge.consumer}",
            )

    def _param(self, edge: Edge, origin: Origin, value: ParamValue) -> None:
        params = self.params[edge.consumer_node]
        if edge.consumer_port in params:
            self.problem(
                origin,
                pointer(origin.at, "consumer"),
                f"one value per parameter port; {edge.consumer} already gets one",
                describe(edge.producer),
            )
            return
        params[edge.consumer_port] = value

    def defaults(self) -> None:
        for name, params in self.params.items():
            interface = self.resolved[name].interface
            for port in interface.inputs if interface else ():
                if port.type != "media" and port.name not in params:
                    params[port.name] = _typed(port.default, port.type)

    def camera_url(self, entry: Resolved) -> str | None:
        if entry.node.name in self.stream_urls:
            return self.stream_urls[entry.node.name]
        port = entry.interface.input("streamUrl") if entry.interface else None
        return str(port.default) if port is not None and port.default is not None else None

    def routes(self) -> None:
        chosen: dict[tuple[str, int], tuple[RoutingRule, Origin]] = {}
        for rule, origin in self.merged.rules:
            entry = self.resolved[rule.node]
            if entry.kind != "code" or entry.interface is None:
                self.problem(
                    origin, pointer(origin.at, "node"), "a code node", f"{rule.node}: a {entry.kind} node"
                )
                continue
            if rule.container_port not in entry.interface.inbound_ports:
                declared = ", ".join(map(str, entry.interface.inbound_ports)) or "none"
                self.problem(
                    origin,
                    pointer(origin.at, "containerPort"),
                    f"an inbound port of interface {entry.interface.name} (network.inboundPorts: {declared})",
                    describe(rule.container_port),
                )
                continue
            key = (rule.node, rule.container_port)
            previous = chosen.get(key)
            if previous is not None and previous[1].file == origin.file:
                self.problem(
                    origin,
                    pointer(origin.at, "containerPort"),
                    f"a port not already routed at {previous[1].at}",
                    describe(rule.container_port),
                )
                continue
            chosen[key] = (rule, origin)  # an override's rule replaces the graph's
        host_ports: dict[int, Origin] = {}
        for rule, origin in chosen.values():
            if rule.host_port in host_ports:
                other = host_ports[rule.host_port]
                self.problem(
                    origin,
                    pointer(origin.at, "hostPort"),
                    f"a host port not already used by {other.file}: {other.at}",
                    describe(rule.host_port),
                )
                continue
            host_ports[rule.host_port] = origin
            self.routing.setdefault(rule.node, []).append(rule)


def _typed(value: object, port_type: str) -> ParamValue:
    """A value converted to the Python type the SDK hands the app for ``port_type``."""
    if port_type == "float32":
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
    if port_type == "int32":
        return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0
    if port_type == "boolean":
        return bool(value) if isinstance(value, bool) else False
    return value if isinstance(value, str) else ""


def _frozen(mapping: Mapping[str, list[str]]) -> Mapping[str, tuple[str, ...]]:
    return MappingProxyType({key: tuple(value) for key, value in mapping.items()})


def plan_application(project: Project, graph: Path | None = None, override: Path | None = None) -> AppPlan:
    """Resolve an application graph (and an optional override) into the plan the appliance runs.

    Args:
        project: the panorama-cli project.
        graph: the graph file; None takes the project's only ``graphs/*/graph.json``.
        override: an ``override.json`` to apply, if any.

    Returns:
        the plan.

    Raises:
        ManifestError: a manifest is invalid, an edge or routing rule names a missing node or port, port types
            do not match, or an override does not fit the graph (every problem listed, with file and pointer).
        ProjectError: a package, interface, asset or asset file is missing (with the node concerned).
    """
    graph_file = project.graph_path(graph)
    app = project.app_name(graph_file)
    loaded_graph = load_graph(graph_file)
    override_file = project.resolve_file(override) if override is not None else None
    loaded_override = load_override(override_file) if override_file is not None else None
    merged = merge(loaded_graph, graph_file, loaded_override, override_file)
    resolver = Resolver(project, merged)
    resolved = {name: resolver.resolve(node, origin) for name, (node, origin) in merged.nodes.items()}
    connector = _Connector(merged, resolved)
    for edge, origin in merged.edges:
        connector.edge(edge, origin)
    connector.defaults()
    connector.routes()
    if connector.problems:
        raise ManifestError(connector.problems)
    code_nodes, cameras, models, sinks = [], [], [], []
    for name, entry in resolved.items():
        if entry.kind == "camera":
            cameras.append(CameraPlan(name, entry.node.interface, connector.camera_url(entry)))
        elif entry.kind == "sink":
            sinks.append(SinkPlan(name, entry.node.interface))
        elif entry.kind == "model" and isinstance(entry.descriptor, ModelDescriptor):
            models.append(
                ModelPlan(
                    name, entry.package, entry.asset, entry.asset_uri, entry.descriptor_uri, entry.descriptor
                )
            )
        elif entry.kind == "code" and isinstance(entry.descriptor, RuntimeDescriptor) and entry.interface:
            code_nodes.append(
                CodeNodePlan(
                    name=name,
                    package=entry.package,
                    interface=entry.interface,
                    asset=entry.asset,
                    asset_uri=entry.asset_uri,
                    descriptor_uri=entry.descriptor_uri,
                    descriptor=entry.descriptor,
                    launch=entry.node.launch or "onAppStart",
                    media_inputs=_frozen(connector.media_inputs[name]),
                    params=MappingProxyType(dict(connector.params[name])),
                    outputs=_frozen(connector.outputs[name]),
                    routing=tuple(connector.routing.get(name, ())),
                )
            )
    return AppPlan(
        app, graph_file, tuple(code_nodes), tuple(cameras), tuple(models), tuple(sinks), override_file
    )
