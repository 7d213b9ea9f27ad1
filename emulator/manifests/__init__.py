"""Panorama manifests: typed models of graph, package, descriptor and override files, and their validation.

Loaders raise ``ManifestError`` listing every problem as ``file: /json/pointer: expected X, found Y``; a file
that is not JSON is one problem at pointer ``""``; a missing file is a ``ProjectError``. Anything that is not
of the right type anywhere becomes a problem, never another exception.

    >>> graph = load_graph(Path("graphs/my_app/graph.json"))
    >>> [node.name for node in graph.nodes]

``Checker`` (with ``pointer`` and ``describe``) and ``check_edge_ends`` / ``check_rule_nodes`` are the checker
that the loaders use, public for code that checks more of a graph the same way (the node plan merges an
override with them).
"""

from emulator.manifests._checker import Checker, describe, pointer
from emulator.manifests._io import (
    MAX_MANIFEST_BYTES,
    load_descriptor,
    load_graph,
    load_override,
    load_package,
    package_folder_parts,
    read_json,
    write_json,
)
from emulator.manifests._models import (
    CATEGORIES,
    ENVELOPE_VERSION,
    FRAMEWORKS,
    IMPLEMENTATION_TYPES,
    LAUNCH_VALUES,
    PORT_TYPES,
    VALUE_TYPES,
    Asset,
    Descriptor,
    Edge,
    EnvVar,
    Graph,
    Implementation,
    Interface,
    ModelDescriptor,
    ModelInput,
    Node,
    NodeOverride,
    Override,
    Package,
    PackageRef,
    Port,
    RoutingRule,
    RuntimeDescriptor,
    UnknownNameError,
)
from emulator.manifests._validate import (
    NODE_NAME,
    PACKAGE_REF,
    PORT_NAME,
    check_edge_ends,
    check_rule_nodes,
    parse_graph,
    parse_override,
    validate_graph,
    validate_override,
)
from emulator.manifests._validate_package import (
    DEFAULT_ENTRY_PATH,
    parse_descriptor,
    parse_package,
    validate_descriptor,
    validate_package,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_ENTRY_PATH",
    "ENVELOPE_VERSION",
    "FRAMEWORKS",
    "IMPLEMENTATION_TYPES",
    "LAUNCH_VALUES",
    "MAX_MANIFEST_BYTES",
    "NODE_NAME",
    "PACKAGE_REF",
    "PORT_NAME",
    "PORT_TYPES",
    "VALUE_TYPES",
    "Asset",
    "Checker",
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
    "check_edge_ends",
    "check_rule_nodes",
    "describe",
    "load_descriptor",
    "load_graph",
    "load_override",
    "load_package",
    "package_folder_parts",
    "parse_descriptor",
    "parse_graph",
    "parse_override",
    "parse_package",
    "pointer",
    "read_json",
    "validate_descriptor",
    "validate_graph",
    "validate_override",
    "validate_package",
    "write_json",
]
