"""Merging an override into a graph: added nodes, node replacements, extra edges and routing rules.

A node override replaces one node by several (or none): every edge and routing rule that names the replaced
node is repeated for each replacement, in order, so one ``video_in`` can get several cameras.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from emulator.errors import ManifestError
from emulator.manifests import (
    Checker,
    Edge,
    Graph,
    Node,
    Override,
    RoutingRule,
    check_edge_ends,
    check_rule_nodes,
    describe,
    pointer,
)

__all__ = ["Merged", "Origin", "merge"]


@dataclass(frozen=True)
class Origin:
    """Where an entry comes from: its file and the JSON pointer of the entry."""

    file: str
    at: str


@dataclass
class Merged:
    """A graph with its override applied.

    Args:
        nodes: live node name -> (node, origin), in graph order (replacements where the replaced node
            stood), then the override's other nodes.
        edges: (edge, origin) after replacements; a repeated edge keeps the origin of the edge it came from.
        rules: (routing rule, origin), graph rules first.
        packages: package name -> version, from the graph and the override.
        replaced: replaced node name -> (the node, the names that replaced it).
    """

    nodes: dict[str, tuple[Node, Origin]] = field(default_factory=dict)
    edges: list[tuple[Edge, Origin]] = field(default_factory=list)
    rules: list[tuple[RoutingRule, Origin]] = field(default_factory=list)
    packages: dict[str, str] = field(default_factory=dict)
    replaced: dict[str, tuple[Node, tuple[str, ...]]] = field(default_factory=dict)

    def replacement_of(self, name: str) -> Node | None:
        """The node that ``name`` replaced (directly or through a chain of overrides), if any."""
        for node, names in self.replaced.values():
            if name in names:
                return self.replacement_of(node.name) or node
        return None


def _rename_edge(edge: Edge, old: str, new: str) -> Edge:
    producer, consumer = edge.producer, edge.consumer
    if edge.producer_node == old:
        producer = new + edge.producer[len(old) :]
    if edge.consumer_node == old:
        consumer = new + edge.consumer[len(old) :]
    return Edge(producer, consumer)


def _graph_entries(graph: Graph, file: str) -> Merged:
    merged = Merged()
    for index, node in enumerate(graph.nodes):
        merged.nodes[node.name] = (node, Origin(file, f"/nodeGraph/nodes/{index}"))
    merged.edges = [
        (edge, Origin(file, f"/nodeGraph/edges/{index}")) for index, edge in enumerate(graph.edges)
    ]
    merged.rules = [
        (rule, Origin(file, f"/nodeGraph/networkRoutingRules/{index}"))
        for index, rule in enumerate(graph.routing_rules)
    ]
    merged.packages = {ref.name: ref.version for ref in graph.packages}
    return merged


def _replace(
    c: Checker, merged: Merged, defined: dict[str, tuple[Node, Origin]], override: Override, graph_file: str
) -> None:
    removed: set[str] = set()
    for index, replacement in enumerate(override.node_overrides):
        at = f"/nodeGraphOverrides/nodeOverrides/{index}"
        target = merged.nodes.get(replacement.replace)
        if target is None:
            c.add(
                pointer(at, "replace"),
                f"the name of a node of {graph_file}",
                f"{describe(replacement.replace)}: there is no such node"
                + (" (it was already replaced)" if replacement.replace in removed else ""),
            )
            continue
        target_node = target[0]
        fits = True
        if not target_node.overridable:
            c.add(
                pointer(at, "replace"),
                "a node marked overridable",
                f"{target_node.name}: overridable is false",
            )
            fits = False
        for with_index, name in enumerate(replacement.with_):
            name_at = pointer(at, "with", with_index, "name")
            candidate = defined.get(name)
            if candidate is None:
                c.add(
                    name_at,
                    "the name of a node of the override or the graph",
                    f"{describe(name)}: no such node",
                )
                fits = False
            elif name in removed:
                c.add(name_at, "a node that no earlier override replaced", describe(name))
                fits = False
            elif name == target_node.name:
                c.add(name_at, f"a node other than {target_node.name} itself", describe(name))
                fits = False
            elif candidate[0].is_value != target_node.is_value or (
                target_node.is_value and candidate[0].interface != target_node.interface
            ):
                c.add(
                    name_at,
                    f"a node of the same kind as {target_node.name} ({target_node.interface})",
                    f"{name} ({candidate[0].interface})",
                )
                fits = False
        if not fits:
            continue
        names = replacement.with_
        order = list(merged.nodes)
        position = order.index(target_node.name)
        new_order = order[:position] + [n for n in names if n not in merged.nodes] + order[position + 1 :]
        live = {**merged.nodes, **{name: defined[name] for name in names}}
        merged.nodes = {name: live[name] for name in new_order}
        removed.add(target_node.name)
        merged.replaced[target_node.name] = (target_node, names)
        edges: list[tuple[Edge, Origin]] = []
        for edge, origin in merged.edges:
            if target_node.name in (edge.producer_node, edge.consumer_node):
                edges.extend((_rename_edge(edge, target_node.name, name), origin) for name in names)
            else:
                edges.append((edge, origin))
        merged.edges = edges
        rules: list[tuple[RoutingRule, Origin]] = []
        for rule, origin in merged.rules:
            if rule.node == target_node.name:
                rules.extend(
                    (RoutingRule(name, rule.container_port, rule.host_port), origin) for name in names
                )
            else:
                rules.append((rule, origin))
        merged.rules = rules
    for node in override.nodes:
        if node.name not in merged.nodes and node.name not in removed:
            merged.nodes[node.name] = defined[node.name]


def merge(graph: Graph, graph_file: Path, override: Override | None, override_file: Path | None) -> Merged:
    """Apply ``override`` to ``graph``.

    Args:
        graph: the loaded graph.
        graph_file: its file (for problems).
        override: the loaded override, or None.
        override_file: its file (for problems).

    Returns:
        the merged graph.

    Raises:
        ManifestError: the override adds a node whose name is taken, uses a package neither file lists, or
            names nodes that do not exist (every problem listed).
    """
    merged = _graph_entries(graph, str(graph_file))
    if override is None:
        return merged
    file = str(override_file)
    c = Checker(file)
    for ref in override.packages:
        merged.packages[ref.name] = ref.version
    defined = dict(merged.nodes)
    for index, node in enumerate(override.nodes):
        at = f"/nodeGraphOverrides/nodes/{index}"
        if node.name in defined:
            c.add(pointer(at, "name"), f"a node name not already used in {graph_file}", describe(node.name))
            continue
        if node.package_name is not None and node.package_name not in merged.packages:
            c.add(
                pointer(at, "interface"),
                "an interface of a package listed in the override's or the graph's packages",
                f"{describe(node.interface)}: {node.package_name} is not listed",
            )
        defined[node.name] = (node, Origin(file, at))
    nodes_by_name = {name: entry[0] for name, entry in defined.items()}
    extra_edges = [(edge, f"/nodeGraphOverrides/edges/{index}") for index, edge in enumerate(override.edges)]
    check_edge_ends(c, extra_edges, nodes_by_name, "the graph or the override")
    extra_rules = [
        (rule, f"/nodeGraphOverrides/networkRoutingRules/{index}")
        for index, rule in enumerate(override.routing_rules)
    ]
    check_rule_nodes(c, extra_rules, nodes_by_name, "the graph or the override")
    merged.edges.extend((edge, Origin(file, at)) for edge, at in extra_edges)
    merged.rules.extend((rule, Origin(file, at)) for rule, at in extra_rules)
    if not c.problems:
        _replace(c, merged, defined, override, str(graph_file))
    if c.problems:
        raise ManifestError(c.problems)
    return merged
