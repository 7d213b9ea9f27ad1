"""Validation rules of graph.json and override.json, each with a failing example and the pointer it names."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from emulator.errors import ManifestError, Problem
from emulator.manifests import (
    Edge,
    Node,
    NodeOverride,
    PackageRef,
    RoutingRule,
    parse_graph,
    parse_override,
    validate_graph,
    validate_override,
)

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]


def pointers(problems: list[Problem]) -> list[str]:
    return [problem.pointer for problem in problems]


def graph_body(doc: Doc) -> Doc:
    body: Doc = doc["nodeGraph"]
    return body


# --- graph.json: the valid document -------------------------------------------------------------------------


def test_valid_graph_builds_typed_model(graph_data: Doc) -> None:
    graph, problems = parse_graph(graph_data, "graph.json")
    assert problems == []
    assert graph is not None
    assert graph.packages[0] == PackageRef("123456789012::SAMPLE_CODE", "1.0")
    assert graph.packages[0].account == "123456789012"
    assert graph.packages[0].package == "SAMPLE_CODE"
    code = graph.node("code_node")
    assert code == Node("code_node", "123456789012::SAMPLE_CODE.interface", launch="onAppStart")
    assert code.package_name == "123456789012::SAMPLE_CODE"
    assert code.interface_name == "interface"
    camera = graph.node("camera_node")
    assert camera is not None and camera.overridable and camera.title == "Camera"
    assert camera.description == "The camera"
    assert graph.edges[2] == Edge("threshold", "code_node.threshold")
    assert graph.edges[2].producer_port is None and graph.edges[0].producer_port == "video_out"
    assert graph.routing_rules == (RoutingRule("code_node", 8080, 8081),)


def test_integer_on_float32_node_is_valid_and_becomes_float(graph_data: Doc) -> None:
    graph, problems = parse_graph(graph_data, "graph.json")
    assert problems == []
    assert graph is not None
    threshold = graph.node("threshold")
    assert threshold is not None and threshold.is_value
    assert threshold.value == 60.0 and isinstance(threshold.value, float)
    assert threshold.launch is None


def test_launch_defaults_to_on_app_start(graph_data: Doc) -> None:
    del graph_body(graph_data)["nodes"][0]["launch"]
    graph, problems = parse_graph(graph_data, "graph.json")
    assert problems == [] and graph is not None
    assert graph.nodes[0].launch == "onAppStart"


@pytest.mark.parametrize(
    ("value_type", "value", "expected"),
    [
        ("int32", 7, 7),
        ("int32", 20.0, 20),  # draft-07 counts 20.0 as an integer
        ("int32", -(2**31), -(2**31)),
        ("int32", 2**31 - 1, 2**31 - 1),
        ("float32", 0.5, 0.5),
        ("boolean", False, False),
        ("string", "", ""),
    ],
)
def test_value_nodes_accept_their_type(
    graph_data: Doc, value_type: str, value: object, expected: object
) -> None:
    graph_body(graph_data)["nodes"][3].update(interface=value_type, value=value)
    graph_body(graph_data)["edges"].pop()
    graph, problems = parse_graph(graph_data, "graph.json")
    assert problems == [] and graph is not None
    node = graph.node("threshold")
    assert node is not None and node.value == expected and type(node.value) is type(expected)


@pytest.mark.parametrize(
    ("value_type", "zero"), [("int32", 0), ("float32", 0.0), ("boolean", False), ("string", "")]
)
def test_value_node_without_value_gets_schema_default(graph_data: Doc, value_type: str, zero: object) -> None:
    node = graph_body(graph_data)["nodes"][3]
    node["interface"] = value_type
    del node["value"]
    graph, problems = parse_graph(graph_data, "graph.json")
    assert problems == [] and graph is not None
    value = graph.nodes[3].value
    assert value == zero and type(value) is type(zero)


# --- graph.json: every rule with a failing example ----------------------------------------------------------


def _set(path: tuple[Any, ...], value: object) -> Mutation:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Mutation:
    def mutate(doc: Doc) -> None:
        target: Any = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


G = "nodeGraph"
GRAPH_CASES: list[tuple[str, Mutation, str, str]] = [
    ("top-level key", _set(("extra",), 1), "/extra", "unknown key"),
    ("nodeGraph not object", _set((G,), []), "/nodeGraph", "an empty array"),
    ("nodeGraph missing", _delete((G,)), "/nodeGraph", "nothing"),
    ("envelope", _set((G, "envelopeVersion"), "2020-01-01"), "/nodeGraph/envelopeVersion", '"2020-01-01"'),
    ("envelope missing", _delete((G, "envelopeVersion")), "/nodeGraph/envelopeVersion", "nothing"),
    ("unknown nodeGraph key", _set((G, "nodez"), []), "/nodeGraph/nodez", "unknown key"),
    ("packages missing", _delete((G, "packages")), "/nodeGraph/packages", "nothing"),
    ("packages empty", _set((G, "packages"), []), "/nodeGraph/packages", "an empty array"),
    ("packages not array", _set((G, "packages"), {}), "/nodeGraph/packages", "an empty object"),
    ("package entry not object", _set((G, "packages", 0), "x"), "/nodeGraph/packages/0", '"x"'),
    (
        "package name pattern",
        _set((G, "packages", 0, "name"), "SAMPLE_CODE"),
        "/nodeGraph/packages/0/name",
        "",
    ),
    (
        "package name hyphen account",
        _set((G, "packages", 0, "name"), "1-2::X"),
        "/nodeGraph/packages/0/name",
        "",
    ),
    ("package version", _set((G, "packages", 0, "version"), "1"), "/nodeGraph/packages/0/version", '"1"'),
    (
        "package version type",
        _set((G, "packages", 0, "version"), 1.0),
        "/nodeGraph/packages/0/version",
        "1.0",
    ),
    ("package unknown key", _set((G, "packages", 0, "sha"), "x"), "/nodeGraph/packages/0/sha", "unknown key"),
    ("nodes missing", _delete((G, "nodes")), "/nodeGraph/nodes", "nothing"),
    ("nodes empty", _set((G, "nodes"), []), "/nodeGraph/nodes", "an empty array"),
    ("node not object", _set((G, "nodes", 2), 5), "/nodeGraph/nodes/2", "the integer 5"),
    ("node name missing", _delete((G, "nodes", 2, "name")), "/nodeGraph/nodes/2/name", "nothing"),
    (
        "node name space",
        _set((G, "nodes", 2, "name"), "output node"),
        "/nodeGraph/nodes/2/name",
        "output node",
    ),
    ("node name dot", _set((G, "nodes", 2, "name"), "output.node"), "/nodeGraph/nodes/2/name", ""),
    ("node name long", _set((G, "nodes", 2, "name"), "n" * 129), "/nodeGraph/nodes/2/name", ""),
    ("node name empty", _set((G, "nodes", 2, "name"), ""), "/nodeGraph/nodes/2/name", "empty string"),
    (
        "node interface missing",
        _delete((G, "nodes", 2, "interface")),
        "/nodeGraph/nodes/2/interface",
        "nothing",
    ),
    (
        "node interface form",
        _set((G, "nodes", 2, "interface"), "hdmi0"),
        "/nodeGraph/nodes/2/interface",
        "hdmi0",
    ),
    ("node interface type", _set((G, "nodes", 2, "interface"), None), "/nodeGraph/nodes/2/interface", "null"),
    ("value type unknown", _set((G, "nodes", 3, "interface"), "float64"), "/nodeGraph/nodes/3/interface", ""),
    ("launch value", _set((G, "nodes", 0, "launch"), "onBoot"), "/nodeGraph/nodes/0/launch", '"onBoot"'),
    (
        "launch on value node",
        _set((G, "nodes", 3, "launch"), "onAppStart"),
        "/nodeGraph/nodes/3/launch",
        "unknown",
    ),
    (
        "overridable type",
        _set((G, "nodes", 1, "overridable"), "yes"),
        "/nodeGraph/nodes/1/overridable",
        '"yes"',
    ),
    (
        "overrideMandatory",
        _set((G, "nodes", 1, "overrideMandatory"), 1),
        "/nodeGraph/nodes/1/overrideMandatory",
        "",
    ),
    ("node unknown key", _set((G, "nodes", 0, "title"), "x"), "/nodeGraph/nodes/0/title", "unknown key"),
    ("value on interface node", _set((G, "nodes", 0, "value"), 1), "/nodeGraph/nodes/0/value", "unknown key"),
    ("decorator type", _set((G, "nodes", 1, "decorator"), "x"), "/nodeGraph/nodes/1/decorator", '"x"'),
    (
        "decorator key",
        _set((G, "nodes", 1, "decorator", "color"), "x"),
        "/nodeGraph/nodes/1/decorator/color",
        "",
    ),
    (
        "decorator empty title",
        _set((G, "nodes", 1, "decorator", "title"), ""),
        "/nodeGraph/nodes/1/decorator/title",
        "",
    ),
    ("float32 string value", _set((G, "nodes", 3, "value"), "60"), "/nodeGraph/nodes/3/value", '"60"'),
    ("float32 bool value", _set((G, "nodes", 3, "value"), True), "/nodeGraph/nodes/3/value", "true"),
    ("float32 out of range", _set((G, "nodes", 3, "value"), 1e39), "/nodeGraph/nodes/3/value", "1e+39"),
    ("description long", _set((G, "description"), "d" * 256), "/nodeGraph/description", ""),
    ("edges not array", _set((G, "edges"), {"producer": "a"}), "/nodeGraph/edges", "an object"),
    ("edge missing consumer", _delete((G, "edges", 0, "consumer")), "/nodeGraph/edges/0/consumer", "nothing"),
    ("edge unknown key", _set((G, "edges", 0, "kind"), "media"), "/nodeGraph/edges/0/kind", "unknown key"),
    (
        "edge producer type",
        _set((G, "edges", 0, "producer"), 3),
        "/nodeGraph/edges/0/producer",
        "the integer 3",
    ),
    (
        "edge consumer no port",
        _set((G, "edges", 0, "consumer"), "code_node"),
        "/nodeGraph/edges/0/consumer",
        "",
    ),
    (
        "edge port hyphen",
        _set((G, "edges", 0, "consumer"), "code_node.video-in"),
        "/nodeGraph/edges/0/consumer",
        "",
    ),
    (
        "dangling producer",
        _set((G, "edges", 0, "producer"), "cam.video_out"),
        "/nodeGraph/edges/0/producer",
        "there is no node cam",
    ),
    (
        "dangling consumer",
        _set((G, "edges", 1, "consumer"), "hdmi.video_in"),
        "/nodeGraph/edges/1/consumer",
        "there is no node hdmi",
    ),
    (
        "interface producer without port",
        _set((G, "edges", 0, "producer"), "camera_node"),
        "/nodeGraph/edges/0/producer",
        "",
    ),
    (
        "value producer with port",
        _set((G, "edges", 2, "producer"), "threshold.value"),
        "/nodeGraph/edges/2/producer",
        "",
    ),
    (
        "consumer is value node",
        _set((G, "edges", 2, "consumer"), "threshold.x"),
        "/nodeGraph/edges/2/consumer",
        "value node",
    ),
    (
        "package not listed",
        _set((G, "nodes", 0, "interface"), "123456789012::OTHER.interface"),
        "/nodeGraph/nodes/0/interface",
        "OTHER is not listed",
    ),
    ("rules not array", _set((G, "networkRoutingRules"), 8080), "/nodeGraph/networkRoutingRules", ""),
    (
        "rule port missing",
        _delete((G, "networkRoutingRules", 0, "containerPort")),
        "/nodeGraph/networkRoutingRules/0/containerPort",
        "nothing",
    ),
    (
        "rule port zero",
        _set((G, "networkRoutingRules", 0, "containerPort"), 0),
        "/nodeGraph/networkRoutingRules/0/containerPort",
        "0",
    ),
    (
        "rule port high",
        _set((G, "networkRoutingRules", 0, "hostPort"), 70000),
        "/nodeGraph/networkRoutingRules/0/hostPort",
        "",
    ),
    (
        "rule port bool",
        _set((G, "networkRoutingRules", 0, "hostPort"), True),
        "/nodeGraph/networkRoutingRules/0/hostPort",
        "true",
    ),
    (
        "rule dangling node",
        _set((G, "networkRoutingRules", 0, "node"), "web"),
        "/nodeGraph/networkRoutingRules/0/node",
        "web",
    ),
    (
        "rule names value node",
        _set((G, "networkRoutingRules", 0, "node"), "threshold"),
        "/nodeGraph/networkRoutingRules/0/node",
        "",
    ),
    (
        "rule unknown key",
        _set((G, "networkRoutingRules", 0, "protocol"), "tcp"),
        "/nodeGraph/networkRoutingRules/0/protocol",
        "",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "at", "found"), GRAPH_CASES, ids=[case[0] for case in GRAPH_CASES]
)
def test_graph_rule(graph_data: Doc, case: str, mutate: Mutation, at: str, found: str) -> None:
    mutate(graph_data)
    graph, problems = parse_graph(graph_data, "graphs/app/graph.json")
    assert graph is None
    assert at in pointers(problems), problems
    problem = next(problem for problem in problems if problem.pointer == at)
    assert found in problem.found
    assert problem.file == "graphs/app/graph.json"


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("int32", 1.5),
        ("int32", True),
        ("int32", 2**31),
        ("int32", -(2**31) - 1),
        ("int32", "3"),
        ("boolean", 1),
        ("boolean", "true"),
        ("string", 5),
        ("string", None),
        ("float32", [1.0]),
    ],
)
def test_value_node_rejects_wrong_json_type(graph_data: Doc, value_type: str, value: object) -> None:
    graph_body(graph_data)["nodes"][3].update(interface=value_type, value=value)
    assert pointers(validate_graph(graph_data, "graph.json")) == ["/nodeGraph/nodes/3/value"]


def test_node_name_of_128_characters_is_valid(graph_data: Doc) -> None:
    name = "n" * 128
    graph_body(graph_data)["nodes"][2]["name"] = name
    graph_body(graph_data)["edges"][1]["consumer"] = f"{name}.video_in"
    assert validate_graph(graph_data, "graph.json") == []


def test_duplicate_node_names_name_the_second(graph_data: Doc) -> None:
    graph_body(graph_data)["nodes"].append({"name": "camera_node", "interface": "string", "value": "x"})
    problems = validate_graph(graph_data, "graph.json")
    assert pointers(problems) == ["/nodeGraph/nodes/4/name"]
    assert "/nodeGraph/nodes/1/name" in problems[0].expected


def test_duplicate_package_names(graph_data: Doc) -> None:
    graph_body(graph_data)["packages"].append({"name": "panorama::hdmi_data_sink", "version": "1.0"})
    assert pointers(validate_graph(graph_data, "graph.json")) == ["/nodeGraph/packages/3/name"]


def test_duplicate_edges(graph_data: Doc) -> None:
    graph_body(graph_data)["edges"].append({"producer": "threshold", "consumer": "code_node.threshold"})
    (problem,) = validate_graph(graph_data, "graph.json")
    assert problem.pointer == "/nodeGraph/edges/3"
    assert problem.expected == "an edge not already used at /nodeGraph/edges/2"


def test_every_problem_in_one_pass(graph_data: Doc) -> None:
    body = graph_body(graph_data)
    body["envelopeVersion"] = "1"
    body["nodes"][0]["launch"] = "later"
    body["nodes"][2]["name"] = "bad name"
    body["nodes"][3]["value"] = "high"
    body["edges"][0]["producer"] = "nowhere.video_out"
    body["networkRoutingRules"][0]["containerPort"] = "8080"
    body["extra"] = True
    problems = validate_graph(graph_data, "graph.json")
    assert set(pointers(problems)) >= {
        "/nodeGraph/envelopeVersion",
        "/nodeGraph/nodes/0/launch",
        "/nodeGraph/nodes/2/name",
        "/nodeGraph/nodes/3/value",
        "/nodeGraph/edges/0/producer",
        "/nodeGraph/networkRoutingRules/0/containerPort",
        "/nodeGraph/extra",
    }
    error = ManifestError(problems)
    assert len(str(error).splitlines()) == len(problems)


def test_problem_line_format(graph_data: Doc) -> None:
    graph_body(graph_data)["nodes"][0]["launch"] = "onBoot"
    (problem,) = validate_graph(graph_data, "graphs/app/graph.json")
    assert str(problem) == (
        "graphs/app/graph.json: /nodeGraph/nodes/0/launch: expected one of onAppStart, onDemand, onSignal, "
        'found "onBoot"'
    )


def test_pointer_escapes_slash_and_tilde(graph_data: Doc) -> None:
    graph_body(graph_data)["a/b~c"] = 1
    assert pointers(validate_graph(graph_data, "graph.json")) == ["/nodeGraph/a~1b~0c"]


def test_lenient_keys_real_files_carry(graph_data: Doc) -> None:
    body = graph_body(graph_data)
    body["description"] = "An application"
    body["packages"][0].update(patchVersion="abc", generatedPatchVersion="def", uri="s3://bucket")
    body["networkRoutingRules"][0]["decorator"] = {"title": "web", "description": "the web page"}
    body["nodes"][3]["decorator"]["constraintText"] = "0 to 100"
    body["nodes"][3]["decorator"]["constraintRegex"] = "^[0-9]+$"
    assert validate_graph(graph_data, "graph.json") == []


def test_host_port_defaults_to_container_port(graph_data: Doc) -> None:
    del graph_body(graph_data)["networkRoutingRules"][0]["hostPort"]
    graph, _ = parse_graph(graph_data, "graph.json")
    assert graph is not None and graph.routing_rules == (RoutingRule("code_node", 8080, 8080),)


def test_graph_that_is_not_an_object() -> None:
    assert pointers(validate_graph([1, 2], "graph.json")) == [""]
    assert (
        str(validate_graph(None, "graph.json")[0])
        == "graph.json: /: expected an object with the key nodeGraph, found null"
    )


# --- override.json ------------------------------------------------------------------------------------------


def test_valid_override(override_data: Doc) -> None:
    override, problems = parse_override(override_data, "override.json")
    assert problems == [] and override is not None
    assert override.node_overrides == (NodeOverride("camera_node", ("CAMERA_A", "CAMERA_B")),)
    assert [node.name for node in override.nodes] == ["CAMERA_A", "CAMERA_B"]
    assert override.routing_rules == (RoutingRule("code_node", 8080, 9090),)
    assert override.edges == ()


def test_minimal_override_and_empty_replacement() -> None:
    doc = {
        "nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01",
            "nodeOverrides": [{"replace": "camera_node", "with": []}],
            "edges": [{"producer": "a.b", "consumer": "c.d"}],
        }
    }
    override, problems = parse_override(doc, "override.json")
    assert problems == [] and override is not None
    assert override.node_overrides == (NodeOverride("camera_node", ()),)
    assert override.edges == (Edge("a.b", "c.d"),)


OV = "nodeGraphOverrides"
OVERRIDE_CASES: list[tuple[str, Mutation, str]] = [
    ("wrapper missing", _delete((OV,)), "/nodeGraphOverrides"),
    ("top-level key", _set(("nodeGraph",), {}), "/nodeGraph"),
    ("envelope missing", _delete((OV, "envelopeVersion")), "/nodeGraphOverrides/envelopeVersion"),
    ("unknown key", _set((OV, "overrides"), []), "/nodeGraphOverrides/overrides"),
    ("package name", _set((OV, "packages", 0, "name"), "CAMERA_A"), "/nodeGraphOverrides/packages/0/name"),
    ("node name", _set((OV, "nodes", 1, "name"), "camera b"), "/nodeGraphOverrides/nodes/1/name"),
    ("duplicate node", _set((OV, "nodes", 1, "name"), "CAMERA_A"), "/nodeGraphOverrides/nodes/1/name"),
    (
        "replace missing",
        _delete((OV, "nodeOverrides", 0, "replace")),
        "/nodeGraphOverrides/nodeOverrides/0/replace",
    ),
    ("with missing", _delete((OV, "nodeOverrides", 0, "with")), "/nodeGraphOverrides/nodeOverrides/0/with"),
    (
        "with not array",
        _set((OV, "nodeOverrides", 0, "with"), "CAMERA_A"),
        "/nodeGraphOverrides/nodeOverrides/0/with",
    ),
    (
        "with item string",
        _set((OV, "nodeOverrides", 0, "with", 0), "CAMERA_A"),
        "/nodeGraphOverrides/nodeOverrides/0/with/0",
    ),
    (
        "with item key",
        _set((OV, "nodeOverrides", 0, "with", 0, "node"), "x"),
        "/nodeGraphOverrides/nodeOverrides/0/with/0/node",
    ),
    (
        "with item name",
        _set((OV, "nodeOverrides", 0, "with", 1, "name"), "b/c"),
        "/nodeGraphOverrides/nodeOverrides/0/with/1/name",
    ),
    (
        "replace pattern",
        _set((OV, "nodeOverrides", 0, "replace"), "a b"),
        "/nodeGraphOverrides/nodeOverrides/0/replace",
    ),
    (
        "rule port",
        _set((OV, "networkRoutingRules", 0, "containerPort"), -1),
        "/nodeGraphOverrides/networkRoutingRules/0/containerPort",
    ),
    ("edges type", _set((OV, "edges"), "x"), "/nodeGraphOverrides/edges"),
]


@pytest.mark.parametrize(("case", "mutate", "at"), OVERRIDE_CASES, ids=[case[0] for case in OVERRIDE_CASES])
def test_override_rule(override_data: Doc, case: str, mutate: Mutation, at: str) -> None:
    mutate(override_data)
    override, problems = parse_override(override_data, "override.json")
    assert override is None
    assert at in pointers(problems), problems


def test_override_repeated_replace(override_data: Doc) -> None:
    body = override_data["nodeGraphOverrides"]
    body["nodeOverrides"].append(copy.deepcopy(body["nodeOverrides"][0]))
    assert pointers(validate_override(override_data, "override.json")) == [
        "/nodeGraphOverrides/nodeOverrides/1/replace"
    ]


def test_validation_does_not_modify_the_document(graph_data: Doc, override_data: Doc) -> None:
    before = copy.deepcopy((graph_data, override_data))
    validate_graph(graph_data, "graph.json")
    validate_override(override_data, "override.json")
    assert (graph_data, override_data) == before
