"""Validation of ``graph.json`` and ``override.json``, building their models in the same pass.

The rules follow the device's manifest schemas (envelope ``2021-01-01``): required keys, name patterns, value
types, launch values, edge forms, and no unknown key where the schema is closed.
"""

from __future__ import annotations

from typing import Any

from emulator.errors import Problem
from emulator.manifests._checker import Checker, describe, pointer
from emulator.manifests._models import (
    ENVELOPE_VERSION,
    LAUNCH_VALUES,
    VALUE_TYPES,
    Edge,
    Graph,
    Node,
    NodeOverride,
    Override,
    PackageRef,
    RoutingRule,
)

__all__ = [
    "EDGE_CONSUMER",
    "EDGE_PRODUCER",
    "NODE_INTERFACE",
    "NODE_NAME",
    "PACKAGE_REF",
    "PORT_NAME",
    "VERSION",
    "check_edge_ends",
    "check_rule_nodes",
    "parse_edges",
    "parse_graph",
    "parse_node",
    "parse_nodes",
    "parse_override",
    "parse_package_refs",
    "parse_routing_rules",
    "validate_graph",
    "validate_override",
]

PACKAGE_REF = r"^[$A-Z_a-z0-9]+::[a-zA-Z_0-9\-]+$"
NODE_NAME = r"^[$A-Z_a-z0-9\-]+$"
NODE_INTERFACE = r"^[$A-Z_a-z0-9\-]+::[A-Z_a-z0-9\-]+\.[A-Z_a-z0-9\-]+$"
PORT_NAME = r"^[$A-Z_a-z0-9]+$"
VERSION = r"^[0-9]+\.[0-9]+$"
EDGE_PRODUCER = r"^[$A-Z_a-z0-9\-]+(\.[$A-Z_a-z0-9]+)?$"
EDGE_CONSUMER = r"^[$A-Z_a-z0-9\-]+\.[$A-Z_a-z0-9]+$"

_VALUE_ZERO: dict[str, bool | int | float | str] = {
    "boolean": False,
    "int32": 0,
    "float32": 0.0,
    "string": "",
}
_DECORATOR_KEYS = ("title", "description", "constraintText", "constraintRegex")


def _decorator(c: Checker, raw: object, at: str) -> tuple[str | None, str | None]:
    decorator = c.obj(raw, at, optional=_DECORATOR_KEYS, what="a decorator object")
    if decorator is None:
        return None, None
    texts: dict[str, str | None] = {}
    for key in _DECORATOR_KEYS:
        if key in decorator:
            texts[key] = c.string(decorator[key], pointer(at, key), min_length=1, max_length=255)
    return texts.get("title"), texts.get("description")


def parse_package_refs(c: Checker, raw: object, at: str, *, min_items: int) -> list[PackageRef]:
    """Check a ``packages`` array and return the well-formed references."""
    refs = []
    seen: list[tuple[str | None, str]] = []
    for index, item in enumerate(c.array(raw, at, min_items=min_items)):
        item_at = pointer(at, index)
        entry = c.obj(
            item,
            item_at,
            required=("name", "version"),
            optional=("patchVersion", "generatedPatchVersion", "uri"),
            what="a package object with name and version",
        )
        if entry is None:
            continue
        name = version = None
        if "name" in entry:
            name = c.string(
                entry["name"],
                pointer(item_at, "name"),
                pattern=PACKAGE_REF,
                max_length=255,
                what="a package name",
            )
            seen.append((name, pointer(item_at, "name")))
        if "version" in entry:
            version = c.string(entry["version"], pointer(item_at, "version"), pattern=VERSION, max_length=255)
        for key in ("patchVersion", "generatedPatchVersion", "uri"):
            if key in entry:
                c.string(entry[key], pointer(item_at, key))
        if name is not None and version is not None:
            refs.append(PackageRef(name, version))
    c.unique(seen, "package name")
    return refs


def parse_node(c: Checker, raw: object, at: str) -> Node | None:
    """Check one node (an interface node or a value node) and return it typed."""
    if not isinstance(raw, dict):
        c.add(at, "a node object", describe(raw))
        return None
    interface_raw = raw.get("interface")
    is_value = isinstance(interface_raw, str) and interface_raw in VALUE_TYPES
    if is_value:
        optional: tuple[str, ...] = ("value", "overridable", "overrideMandatory", "decorator")
    else:
        optional = ("overridable", "overrideMandatory", "launch", "decorator")
    c.obj(raw, at, required=("name", "interface"), optional=optional)
    name = interface = None
    if "name" in raw:
        name = c.string(
            raw["name"], pointer(at, "name"), pattern=NODE_NAME, max_length=128, what="a node name"
        )
    if is_value:
        interface = str(interface_raw)
    elif "interface" in raw:
        interface = c.string(
            interface_raw,
            pointer(at, "interface"),
            pattern=NODE_INTERFACE,
            what="a value type (boolean, int32, float32, string) or an interface account::package.interface",
        )
    flags = {}
    for key in ("overridable", "overrideMandatory"):
        flags[key] = c.boolean(raw[key], pointer(at, key)) if key in raw else False
    launch = None
    value: object = None
    if is_value:
        value = _VALUE_ZERO[str(interface_raw)]
        if "value" in raw:
            value = c.typed_value(raw["value"], pointer(at, "value"), str(interface_raw))
    else:
        launch = "onAppStart"
        if "launch" in raw:
            launch = c.enum(raw["launch"], pointer(at, "launch"), LAUNCH_VALUES)
    title = description = None
    if "decorator" in raw:
        title, description = _decorator(c, raw["decorator"], pointer(at, "decorator"))
    if name is None or interface is None:
        return None
    return Node(
        name=name,
        interface=interface,
        launch=launch,
        overridable=bool(flags["overridable"]),
        override_mandatory=bool(flags["overrideMandatory"]),
        value=value,
        title=title,
        description=description,
    )


def parse_nodes(c: Checker, raw: object, at: str, *, min_items: int) -> list[tuple[Node, str]]:
    """Check a ``nodes`` array; returns (node, pointer) pairs and reports repeated names."""
    nodes = []
    names: list[tuple[str | None, str]] = []
    for index, item in enumerate(c.array(raw, at, min_items=min_items)):
        node = parse_node(c, item, pointer(at, index))
        if node is not None:
            nodes.append((node, pointer(at, index)))
            names.append((node.name, pointer(at, index, "name")))
    c.unique(names, "node name")
    return nodes


def parse_edges(c: Checker, raw: object, at: str) -> list[tuple[Edge, str]]:
    """Check an ``edges`` array (form only); returns (edge, pointer) pairs."""
    edges = []
    for index, item in enumerate(c.array(raw, at)):
        item_at = pointer(at, index)
        entry = c.obj(item, item_at, required=("producer", "consumer"), what="an edge object")
        if entry is None:
            continue
        producer = consumer = None
        if "producer" in entry:
            producer = c.string(
                entry["producer"],
                pointer(item_at, "producer"),
                pattern=EDGE_PRODUCER,
                what="a producer node.port or value node name",
            )
        if "consumer" in entry:
            consumer = c.string(
                entry["consumer"],
                pointer(item_at, "consumer"),
                pattern=EDGE_CONSUMER,
                what="a consumer node.port",
            )
        if producer is not None and consumer is not None:
            edges.append((Edge(producer, consumer), item_at))
    return edges


def parse_routing_rules(c: Checker, raw: object, at: str) -> list[tuple[RoutingRule, str]]:
    """Check a ``networkRoutingRules`` array; returns (rule, pointer) pairs."""
    rules = []
    for index, item in enumerate(c.array(raw, at)):
        item_at = pointer(at, index)
        entry = c.obj(
            item,
            item_at,
            required=("node", "containerPort"),
            optional=("hostPort", "decorator"),
            what="a routing rule object",
        )
        if entry is None:
            continue
        node = container = host = None
        if "node" in entry:
            node = c.string(
                entry["node"], pointer(item_at, "node"), pattern=NODE_NAME, max_length=128, what="a node name"
            )
        if "containerPort" in entry:
            container = c.integer(
                entry["containerPort"],
                pointer(item_at, "containerPort"),
                minimum=1,
                maximum=65535,
                what="a port number",
            )
        host = container
        if "hostPort" in entry:
            host = c.integer(
                entry["hostPort"],
                pointer(item_at, "hostPort"),
                minimum=1,
                maximum=65535,
                what="a port number",
            )
        if "decorator" in entry:
            _decorator(c, entry["decorator"], pointer(item_at, "decorator"))
        if node is not None and container is not None and host is not None:
            rules.append((RoutingRule(node, container, host), item_at))
    return rules


def check_edge_ends(c: Checker, edges: list[tuple[Edge, str]], nodes: dict[str, Node], where: str) -> None:
    """Report edges whose producer or consumer does not name a node of ``nodes`` in the right form.

    Args:
        c: the checker that collects the problems.
        edges: each edge with its JSON pointer.
        nodes: the nodes an edge may name, by name.
        where: what holds ``nodes``, for the problem text (e.g. ``"the graph"``).
    """
    for edge, at in edges:
        producer = nodes.get(edge.producer_node)
        if producer is None:
            c.add(
                pointer(at, "producer"),
                f"a producer naming a node of {where}",
                f"{describe(edge.producer)}: there is no node {edge.producer_node}",
            )
        elif producer.is_value and edge.producer_port is not None:
            c.add(
                pointer(at, "producer"),
                f"the bare name {edge.producer_node} for the value node",
                describe(edge.producer),
            )
        elif not producer.is_value and edge.producer_port is None:
            c.add(
                pointer(at, "producer"),
                f"node.port for the interface node {edge.producer_node}",
                describe(edge.producer),
            )
        consumer = nodes.get(edge.consumer_node)
        if consumer is None:
            c.add(
                pointer(at, "consumer"),
                f"a consumer naming a node of {where}",
                f"{describe(edge.consumer)}: there is no node {edge.consumer_node}",
            )
        elif consumer.is_value:
            c.add(
                pointer(at, "consumer"),
                "an input port of an interface node",
                f"{describe(edge.consumer)}: {edge.consumer_node} is a value node",
            )


def check_rule_nodes(
    c: Checker, rules: list[tuple[RoutingRule, str]], nodes: dict[str, Node], where: str
) -> None:
    """Report routing rules naming no interface node of ``nodes``.

    Args:
        c: the checker that collects the problems.
        rules: each routing rule with its JSON pointer.
        nodes: the nodes a rule may name, by name.
        where: what holds ``nodes``, for the problem text.
    """
    for rule, at in rules:
        node = nodes.get(rule.node)
        if node is None or node.is_value:
            c.add(pointer(at, "node"), f"the name of an interface node of {where}", describe(rule.node))


def _envelope(c: Checker, body: dict[str, Any], at: str) -> None:
    if "envelopeVersion" in body:
        c.enum(body["envelopeVersion"], pointer(at, "envelopeVersion"), (ENVELOPE_VERSION,))


def _listed_names(raw: object) -> set[str]:
    """Names in a raw ``packages`` array, even of entries with other problems (to avoid cascades)."""
    if not isinstance(raw, list):
        return set()
    return {item["name"] for item in raw if isinstance(item, dict) and isinstance(item.get("name"), str)}


def parse_graph(data: object, file: str) -> tuple[Graph | None, list[Problem]]:
    """Validate a parsed ``graph.json`` and build its model.

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        (graph, []) when valid, else (None, every problem found).
    """
    c = Checker(file)
    top = c.obj(data, "", required=("nodeGraph",), what="an object with the key nodeGraph")
    if top is None or not isinstance(top.get("nodeGraph"), dict):
        if top is not None and "nodeGraph" in top:
            c.add("/nodeGraph", "an object", describe(top["nodeGraph"]))
        return None, c.problems
    at = "/nodeGraph"
    body: dict[str, Any] = top["nodeGraph"]
    c.obj(
        body,
        at,
        required=("envelopeVersion", "packages", "nodes"),
        optional=("edges", "networkRoutingRules", "description"),
    )
    _envelope(c, body, at)
    if "description" in body:
        c.string(body["description"], pointer(at, "description"), max_length=255)
    packages = (
        parse_package_refs(c, body["packages"], pointer(at, "packages"), min_items=1)
        if "packages" in body
        else []
    )
    nodes = parse_nodes(c, body["nodes"], pointer(at, "nodes"), min_items=1) if "nodes" in body else []
    edges = parse_edges(c, body["edges"], pointer(at, "edges")) if "edges" in body else []
    rules = (
        parse_routing_rules(c, body["networkRoutingRules"], pointer(at, "networkRoutingRules"))
        if "networkRoutingRules" in body
        else []
    )
    by_name: dict[str, Node] = {}
    for node, _ in nodes:
        by_name.setdefault(node.name, node)  # a repeated name is reported once, not again on every edge
    listed = _listed_names(body.get("packages"))
    if isinstance(body.get("packages"), list):
        for node, node_at in nodes:
            if node.package_name is not None and node.package_name not in listed:
                c.add(
                    pointer(node_at, "interface"),
                    "an interface of a package listed in /nodeGraph/packages",
                    f"{describe(node.interface)}: {node.package_name} is not listed",
                )
    check_edge_ends(c, edges, by_name, "/nodeGraph/nodes")
    c.unique(((f"{edge.producer} -> {edge.consumer}", at) for edge, at in edges), "edge")
    check_rule_nodes(c, rules, by_name, "/nodeGraph/nodes")
    if c.problems:
        return None, c.problems
    graph = Graph(
        packages=tuple(packages),
        nodes=tuple(node for node, _ in nodes),
        edges=tuple(edge for edge, _ in edges),
        routing_rules=tuple(rule for rule, _ in rules),
    )
    return graph, []


def parse_override(data: object, file: str) -> tuple[Override | None, list[Problem]]:
    """Validate a parsed ``override.json`` (``nodeGraphOverrides``) and build its model.

    Only what the file alone can tell is checked here; names that refer to the graph are checked when the
    application is planned.

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        (override, []) when valid, else (None, every problem found).
    """
    c = Checker(file)
    top = c.obj(data, "", required=("nodeGraphOverrides",), what="an object with the key nodeGraphOverrides")
    if top is None or not isinstance(top.get("nodeGraphOverrides"), dict):
        if top is not None and "nodeGraphOverrides" in top:
            c.add("/nodeGraphOverrides", "an object", describe(top["nodeGraphOverrides"]))
        return None, c.problems
    at = "/nodeGraphOverrides"
    body: dict[str, Any] = top["nodeGraphOverrides"]
    c.obj(
        body,
        at,
        required=("envelopeVersion",),
        optional=("description", "packages", "nodes", "edges", "networkRoutingRules", "nodeOverrides"),
    )
    _envelope(c, body, at)
    if "description" in body:
        c.string(body["description"], pointer(at, "description"), max_length=255)
    packages = (
        parse_package_refs(c, body["packages"], pointer(at, "packages"), min_items=0)
        if "packages" in body
        else []
    )
    nodes = parse_nodes(c, body["nodes"], pointer(at, "nodes"), min_items=0) if "nodes" in body else []
    edges = parse_edges(c, body["edges"], pointer(at, "edges")) if "edges" in body else []
    rules = (
        parse_routing_rules(c, body["networkRoutingRules"], pointer(at, "networkRoutingRules"))
        if "networkRoutingRules" in body
        else []
    )
    replacements = (
        _parse_node_overrides(c, body["nodeOverrides"], pointer(at, "nodeOverrides"))
        if "nodeOverrides" in body
        else []
    )
    if c.problems:
        return None, c.problems
    override = Override(
        packages=tuple(packages),
        nodes=tuple(node for node, _ in nodes),
        node_overrides=tuple(replacements),
        routing_rules=tuple(rule for rule, _ in rules),
        edges=tuple(edge for edge, _ in edges),
    )
    return override, []


def _parse_node_overrides(c: Checker, raw: object, at: str) -> list[NodeOverride]:
    result = []
    replaced: list[tuple[str | None, str]] = []
    for index, item in enumerate(c.array(raw, at)):
        item_at = pointer(at, index)
        entry = c.obj(
            item,
            item_at,
            required=("replace", "with"),
            optional=("envelopeVersion",),
            what="a node override object",
        )
        if entry is None:
            continue
        _envelope(c, entry, item_at)
        replace = None
        if "replace" in entry:
            replace = c.string(
                entry["replace"], pointer(item_at, "replace"), pattern=NODE_NAME, what="a node name"
            )
            replaced.append((replace, pointer(item_at, "replace")))
        names: list[str] = []
        complete = "with" in entry
        for with_index, choice in enumerate(
            c.array(entry.get("with"), pointer(item_at, "with")) if complete else []
        ):
            choice_at = pointer(item_at, "with", with_index)
            choice_obj = c.obj(choice, choice_at, required=("name",), what="an object with a node name")
            name = None
            if choice_obj is not None and "name" in choice_obj:
                name = c.string(
                    choice_obj["name"], pointer(choice_at, "name"), pattern=NODE_NAME, what="a node name"
                )
            if name is None:
                complete = False
            else:
                names.append(name)
        if replace is not None and complete:
            result.append(NodeOverride(replace, tuple(names)))
    c.unique(replaced, "replaced node")
    return result


def validate_graph(data: object, file: str) -> list[Problem]:
    """Return every problem of a parsed ``graph.json`` (empty when valid).

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        the problems, in document order per check.
    """
    return parse_graph(data, file)[1]


def validate_override(data: object, file: str) -> list[Problem]:
    """Return every problem of a parsed ``override.json`` (empty when valid).

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        the problems found.
    """
    return parse_override(data, file)[1]
