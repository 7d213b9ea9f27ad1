"""The node plan: cameras, parameters, outputs, models, overrides and routing resolved from a project."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _plan_projects import ACCOUNT, CAMERA, HDMI, ProjectBuilder, edge, media, node, value

from emulator.errors import ManifestError, ProjectError
from emulator.manifests import ModelDescriptor, RoutingRule, RuntimeDescriptor, UnknownNameError
from emulator.plan import (
    STOCK_CAMERA,
    STOCK_HDMI,
    AppPlan,
    CameraPlan,
    CodeNodePlan,
    ModelPlan,
    SinkPlan,
    plan_application,
)

CODE = f"{ACCOUNT}::SAMPLE_CODE.interface"
PARAM_INPUTS = [
    media("video_in"),
    {"name": "threshold", "type": "float32"},
    {"name": "count", "type": "int32", "default": 3},
    {"name": "enabled", "type": "boolean", "default": True},
    {"name": "label", "type": "string"},
    {"name": "scale", "type": "float32", "default": 2},
]


def single_camera_app(builder: ProjectBuilder, *, inputs: list[dict[str, object]] | None = None) -> Path:
    """Camera -> code -> HDMI with a float32 parameter node written as the integer 20."""
    builder.code_package(inputs=inputs or PARAM_INPUTS)
    return builder.graph(
        [
            node("code_node", CODE),
            node("camera_node", CAMERA, overridable=True),
            node("output_node", HDMI, overridable=True),
            value("threshold_param", "float32", 20, overridable=True),
        ],
        [
            edge("camera_node.video_out", "code_node.video_in"),
            edge("code_node.video_out", "output_node.video_in"),
            edge("threshold_param", "code_node.threshold"),
        ],
    )


def problem_pointers(error: pytest.ExceptionInfo[ManifestError]) -> list[str]:
    return [problem.pointer for problem in error.value.problems]


# --- the plans ----------------------------------------------------------------------------------------------


def test_single_camera_code_hdmi_with_parameter(project_builder: ProjectBuilder) -> None:
    graph_file = single_camera_app(project_builder)
    plan = plan_application(project_builder.project)
    assert isinstance(plan, AppPlan)
    assert plan.app == "app"
    assert plan.graph_file == graph_file.resolve()
    assert plan.override_file is None
    assert plan.cameras == (CameraPlan("camera_node", STOCK_CAMERA, None),)
    assert plan.sinks == (SinkPlan("output_node", STOCK_HDMI),)
    assert plan.models == () and plan.model_names == ()
    (code,) = plan.code_nodes
    assert isinstance(code, CodeNodePlan)
    assert code is plan.code_node("code_node")
    assert code.package == f"{ACCOUNT}::SAMPLE_CODE"
    assert code.interface.name == "interface"
    assert code.asset == "code_asset"
    assert (project_builder.root / "assets" / code.asset_uri).is_file()
    assert (project_builder.root / "assets" / code.descriptor_uri).is_file()
    assert code.descriptor == RuntimeDescriptor("python3", "/panorama/app.py")
    assert code.launch == "onAppStart" and code.starts_at_boot
    assert dict(code.media_inputs) == {"video_in": ("camera_node",)}
    assert dict(code.outputs) == {"video_out": ("output_node",)}
    assert dict(code.params) == {"threshold": 20.0, "count": 3, "enabled": True, "label": "", "scale": 2.0}
    assert type(code.params["threshold"]) is float and type(code.params["scale"]) is float
    assert type(code.params["count"]) is int and type(code.params["enabled"]) is bool
    assert code.routing == ()


def test_plan_is_immutable(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    code = plan_application(project_builder.project).code_nodes[0]
    with pytest.raises(TypeError):
        code.params["threshold"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        code.media_inputs["video_in"] = ()  # type: ignore[index]


@pytest.mark.parametrize(
    ("value_type", "raw", "port_type", "expected"),
    [
        ("int32", 7, "int32", 7),
        ("int32", 7, "float32", 7.0),  # widening an int32 node into a float32 port
        ("float32", 0.25, "float32", 0.25),
        ("boolean", False, "boolean", False),
        ("string", "person", "string", "person"),
    ],
)
def test_parameter_values_are_typed(
    project_builder: ProjectBuilder, value_type: str, raw: object, port_type: str, expected: object
) -> None:
    project_builder.code_package(inputs=[{"name": "param", "type": port_type}])
    project_builder.graph(
        [node("code_node", CODE), value("p", value_type, raw)], [edge("p", "code_node.param")]
    )
    params = plan_application(project_builder.project).code_node("code_node").params
    assert params["param"] == expected and type(params["param"]) is type(expected)


def test_code_node_alone(project_builder: ProjectBuilder) -> None:
    project_builder.code_package()
    project_builder.graph([node("code_node", CODE)], [])
    plan = plan_application(project_builder.project)
    assert plan.cameras == () and plan.sinks == () and plan.models == ()
    code = plan.code_node("code_node")
    assert dict(code.media_inputs) == {"video_in": ()}
    assert dict(code.outputs) == {"video_out": ()}
    assert dict(code.params) == {}


def test_model_node(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    model_ref = project_builder.model_package(framework="PYTORCH")
    graph_file = project_builder.root / "graphs/app/graph.json"
    doc = json.loads(graph_file.read_text())
    doc["nodeGraph"]["packages"].append({"name": model_ref, "version": "1.0"})
    doc["nodeGraph"]["nodes"].append(node("model_node", f"{model_ref}.interface"))
    # Some graphs wire model nodes; the emulator calls models from code nodes and ignores such edges.
    doc["nodeGraph"]["edges"].append(edge("camera_node.video_out", "model_node.video_in"))
    graph_file.write_text(json.dumps(doc))
    plan = plan_application(project_builder.project)
    (model,) = plan.models
    assert isinstance(model, ModelPlan)
    assert model.name == "model_node" and model.package == model_ref and model.asset == "model_asset"
    assert isinstance(model.descriptor, ModelDescriptor) and model.descriptor.framework == "PYTORCH"
    assert (project_builder.root / "assets" / model.asset_uri).is_file()
    assert plan.model_names == ("model_node",)
    assert dict(plan.code_node("code_node").media_inputs) == {"video_in": ("camera_node",)}


def test_two_camera_override(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(
        nodes=[
            node("CAMERA_A", f"{ACCOUNT}::CAMERA_A.CAMERA_A", overridable=True),
            node("CAMERA_B", f"{ACCOUNT}::CAMERA_B.CAMERA_B", overridable=True),
        ],
        replace={"camera_node": ["CAMERA_A", "CAMERA_B"]},
    )
    plan = plan_application(project_builder.project, override=override)
    assert plan.override_file == override
    # Cameras created in the console have no package in the project: the source is chosen at run time.
    assert plan.cameras == (
        CameraPlan("CAMERA_A", f"{ACCOUNT}::CAMERA_A.CAMERA_A", None),
        CameraPlan("CAMERA_B", f"{ACCOUNT}::CAMERA_B.CAMERA_B", None),
    )
    code = plan.code_node("code_node")
    assert dict(code.media_inputs) == {"video_in": ("CAMERA_A", "CAMERA_B")}
    assert code.params["threshold"] == 20.0
    assert plan.sinks == (SinkPlan("output_node", STOCK_HDMI),)


def test_override_path_relative_to_project(
    project_builder: ProjectBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    single_camera_app(project_builder)
    project_builder.override(nodes=[node("cam", f"{ACCOUNT}::cam.cam")], replace={"camera_node": ["cam"]})
    monkeypatch.chdir(project_builder.root.parent)
    plan = plan_application(project_builder.project, override=Path("graphs/app/override.json"))
    assert [camera.name for camera in plan.cameras] == ["cam"]


def test_concrete_camera_packages_give_stream_urls(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    front = project_builder.camera_package("front_door", "rtsp://10.0.0.5/front")
    back = project_builder.camera_package("back_door", stream_url=None)
    override = project_builder.override(
        nodes=[
            node("front", f"{front}.front_door", overridable=True),
            node("back", f"{back}.back_door", overridable=True),
            value("back_url", "string", "rtsp://10.0.0.6/back"),
        ],
        replace={"camera_node": ["front", "back"]},
        edges=[edge("back_url", "back.streamUrl")],
    )
    plan = plan_application(project_builder.project, override=override)
    assert plan.cameras == (
        CameraPlan("front", f"{front}.front_door", "rtsp://10.0.0.5/front"),
        CameraPlan("back", f"{back}.back_door", "rtsp://10.0.0.6/back"),
    )
    assert plan.code_node("code_node").media_inputs["video_in"] == ("front", "back")


def test_camera_package_in_graph(project_builder: ProjectBuilder) -> None:
    camera = project_builder.camera_package("RTSP_STREAM")
    project_builder.code_package()
    project_builder.graph(
        [node("code_node", CODE), node("camera_node", f"{camera}.RTSP_STREAM")],
        [edge("camera_node.video_out", "code_node.video_in")],
    )
    plan = plan_application(project_builder.project)
    assert plan.cameras == (
        CameraPlan("camera_node", f"{camera}.RTSP_STREAM", "rtsp://10.0.0.1:554/stream0"),
    )


def test_override_replaces_value_nodes_and_can_remove_cameras(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(
        nodes=[value("stricter", "float32", 75.5)],
        replace={"threshold_param": ["stricter"], "camera_node": []},
    )
    plan = plan_application(project_builder.project, override=override)
    code = plan.code_node("code_node")
    assert code.params["threshold"] == 75.5
    assert plan.cameras == ()
    assert dict(code.media_inputs) == {"video_in": ()}


def test_launch_is_kept(project_builder: ProjectBuilder) -> None:
    project_builder.code_package()
    project_builder.graph([node("code_node", CODE, launch="onDemand")], [])
    code = plan_application(project_builder.project).code_node("code_node")
    assert code.launch == "onDemand" and not code.starts_at_boot


def test_two_code_nodes_in_graph_order(project_builder: ProjectBuilder) -> None:
    project_builder.code_package()
    other = project_builder.code_package("OTHER_CODE", interface="other_interface", asset="other_asset")
    project_builder.graph(
        [
            node("second", f"{other}.other_interface"),
            node("camera_node", CAMERA),
            node("first", CODE),
            node("hdmi", HDMI),
        ],
        [
            edge("camera_node.video_out", "first.video_in"),
            edge("camera_node.video_out", "second.video_in"),
            edge("first.video_out", "hdmi.video_in"),
        ],
    )
    plan = plan_application(project_builder.project)
    assert [code.name for code in plan.code_nodes] == ["second", "first"]
    assert plan.code_node("second").media_inputs["video_in"] == ("camera_node",)
    assert plan.code_node("second").outputs["video_out"] == ()
    assert plan.code_node("first").outputs["video_out"] == ("hdmi",)


def test_unknown_code_node_is_key_error_and_project_error(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    plan = plan_application(project_builder.project)
    with pytest.raises(KeyError):
        plan.code_node("camera_node")
    with pytest.raises(UnknownNameError, match="no code node 'nope' in application app"):
        plan.code_node("nope")


# --- routing rules ------------------------------------------------------------------------------------------


def test_routing_rules_from_graph_and_override(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(inbound_ports=[8080, 9000])
    project_builder.graph(
        [node("code_node", CODE)],
        [],
        rules=[
            {"node": "code_node", "containerPort": 8080, "hostPort": 8081},
            {"node": "code_node", "containerPort": 9000},
        ],
    )
    plan = plan_application(project_builder.project)
    assert plan.code_node("code_node").routing == (
        RoutingRule("code_node", 8080, 8081),
        RoutingRule("code_node", 9000, 9000),
    )
    override = project_builder.override(
        rules=[{"node": "code_node", "containerPort": 8080, "hostPort": 18080}]
    )
    plan = plan_application(project_builder.project, override=override)
    assert plan.code_node("code_node").routing == (
        RoutingRule("code_node", 8080, 18080),
        RoutingRule("code_node", 9000, 9000),
    )


def test_routing_rule_for_undeclared_port_names_the_rule(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(inbound_ports=[8080])
    project_builder.graph([node("code_node", CODE)], [])
    override = project_builder.override(
        rules=[{"node": "code_node", "containerPort": 8888, "hostPort": 8888}]
    )
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    (problem,) = caught.value.problems
    assert problem.file == str(override)
    assert problem.pointer == "/nodeGraphOverrides/networkRoutingRules/0/containerPort"
    assert "network.inboundPorts: 8080" in problem.expected and problem.found == "the integer 8888"


def test_routing_rule_on_code_without_network(project_builder: ProjectBuilder) -> None:
    project_builder.code_package()
    project_builder.graph([node("code_node", CODE)], [], rules=[{"node": "code_node", "containerPort": 80}])
    with pytest.raises(ManifestError, match=r"network\.inboundPorts: none"):
        plan_application(project_builder.project)


def test_routing_rule_errors(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(inbound_ports=[8080, 8081])
    project_builder.graph(
        [node("code_node", CODE), node("camera_node", CAMERA)],
        [],
        rules=[
            {"node": "camera_node", "containerPort": 554},
            {"node": "code_node", "containerPort": 8080, "hostPort": 9000},
            {"node": "code_node", "containerPort": 8081, "hostPort": 9000},
            {"node": "code_node", "containerPort": 8080, "hostPort": 9001},
        ],
    )
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project)
    assert problem_pointers(caught) == [
        "/nodeGraph/networkRoutingRules/0/node",
        "/nodeGraph/networkRoutingRules/3/containerPort",
        "/nodeGraph/networkRoutingRules/2/hostPort",
    ]


def test_override_rule_for_unknown_node(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(inbound_ports=[8080])
    project_builder.graph([node("code_node", CODE)], [])
    override = project_builder.override(rules=[{"node": "web", "containerPort": 8080}])
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    assert problem_pointers(caught) == ["/nodeGraphOverrides/networkRoutingRules/0/node"]


# --- edges that do not fit ----------------------------------------------------------------------------------


def test_dangling_edge_names_the_edge(project_builder: ProjectBuilder) -> None:
    graph_file = single_camera_app(project_builder)
    doc = json.loads(graph_file.read_text())
    doc["nodeGraph"]["edges"][1]["consumer"] = "hdmi_node.video_in"
    graph_file.write_text(json.dumps(doc))
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project)
    (problem,) = caught.value.problems
    assert (problem.file, problem.pointer) == (str(graph_file.resolve()), "/nodeGraph/edges/1/consumer")
    assert "there is no node hdmi_node" in problem.found


@pytest.mark.parametrize(
    ("bad_edge", "pointer", "found"),
    [
        (edge("camera_node.video", "code_node.video_in"), "/nodeGraph/edges/3/producer", "camera_node.video"),
        (
            edge("camera_node.video_out", "code_node.frames"),
            "/nodeGraph/edges/3/consumer",
            "code_node.frames",
        ),
        (edge("output_node.video_in", "code_node.video_in"), "/nodeGraph/edges/3/producer", "output_node"),
        (edge("threshold_param", "code_node.label"), "/nodeGraph/edges/3", "threshold_param of type float32"),
        (edge("threshold_param", "code_node.video_in"), "/nodeGraph/edges/3", "of type float32"),
        (edge("camera_node.video_out", "code_node.count"), "/nodeGraph/edges/3", "of type media"),
        (
            edge("threshold_param", "code_node.threshold"),
            "/nodeGraph/edges/3",
            "threshold_param -> code_node",
        ),
        (
            edge("camera_node.video_out", "output_node.video_in"),
            "/nodeGraph/edges/3",
            "camera camera_node.video_out",
        ),
        (edge("code_node.video_out", "code_node.video_in"), "/nodeGraph/edges/3", "code code_node.video_out"),
    ],
)
def test_edge_rules(
    project_builder: ProjectBuilder, bad_edge: dict[str, str], pointer: str, found: str
) -> None:
    graph_file = single_camera_app(project_builder)
    doc = json.loads(graph_file.read_text())
    doc["nodeGraph"]["edges"].append(bad_edge)
    graph_file.write_text(json.dumps(doc))
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project)
    (problem,) = caught.value.problems
    assert problem.pointer == pointer
    assert found in problem.found


def test_max_connections(project_builder: ProjectBuilder) -> None:
    inputs: list[dict[str, object]] = [
        {"name": "video_in", "type": "media", "maxConnections": 1},
        {"name": "threshold", "type": "float32"},
    ]
    single_camera_app(project_builder, inputs=inputs)
    override = project_builder.override(
        nodes=[node("a", f"{ACCOUNT}::a.a"), node("b", f"{ACCOUNT}::b.b")],
        replace={"camera_node": ["a", "b"]},
    )
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    (problem,) = caught.value.problems
    assert problem.pointer == "/nodeGraph/edges/0"  # the graph edge that was repeated for each camera
    assert "at most 1 connections" in problem.expected


def test_two_values_for_one_parameter(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(
        nodes=[value("other", "float32", 1.5)], edges=[edge("other", "code_node.threshold")]
    )
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    (problem,) = caught.value.problems
    assert (problem.file, problem.pointer) == (str(override), "/nodeGraphOverrides/edges/0/consumer")
    assert "one value per parameter port" in problem.expected


def test_camera_connected_twice_through_an_override(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(edges=[edge("camera_node.video_out", "code_node.video_in")])
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    (problem,) = caught.value.problems
    assert (problem.file, problem.pointer) == (str(override), "/nodeGraphOverrides/edges/0")
    assert problem.found == "camera_node connected again"


# --- overrides that do not fit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nodes", "replace", "pointer"),
    [
        ([node("camera_node", CAMERA)], {}, "/nodeGraphOverrides/nodes/0/name"),
        ([], {"front_camera": []}, "/nodeGraphOverrides/nodeOverrides/0/replace"),
        ([], {"code_node": []}, "/nodeGraphOverrides/nodeOverrides/0/replace"),
        ([], {"camera_node": ["cam_x"]}, "/nodeGraphOverrides/nodeOverrides/0/with/0/name"),
        ([], {"camera_node": ["camera_node"]}, "/nodeGraphOverrides/nodeOverrides/0/with/0/name"),
        ([value("v", "int32", 1)], {"camera_node": ["v"]}, "/nodeGraphOverrides/nodeOverrides/0/with/0/name"),
        (
            [value("v", "int32", 1)],
            {"threshold_param": ["v"]},
            "/nodeGraphOverrides/nodeOverrides/0/with/0/name",
        ),
    ],
)
def test_override_rules(
    project_builder: ProjectBuilder,
    nodes: list[dict[str, object]],
    replace: dict[str, list[str]],
    pointer: str,
) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(nodes=nodes, replace=replace)
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    assert problem_pointers(caught) == [pointer]
    assert caught.value.problems[0].file == str(override)


def test_override_node_package_must_be_listed(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(
        nodes=[node("cam", f"{ACCOUNT}::cam.cam")], replace={"camera_node": ["cam"]}, packages=[]
    )
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    assert problem_pointers(caught) == ["/nodeGraphOverrides/nodes/0/interface"]


def test_override_edge_must_name_nodes(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    override = project_builder.override(edges=[edge("url", "camera_node.streamUrl")])
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project, override=override)
    assert problem_pointers(caught) == ["/nodeGraphOverrides/edges/0/producer"]


def test_invalid_override_file(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    bad = project_builder.root / "graphs/app/override.json"
    bad.write_text('{"nodeGraphOverrides": {}}')
    with pytest.raises(ManifestError, match="/nodeGraphOverrides/envelopeVersion"):
        plan_application(project_builder.project, override=bad)
    with pytest.raises(ProjectError, match="file not found"):
        plan_application(project_builder.project, override=Path("graphs/app/missing.json"))


# --- missing packages, interfaces and assets ----------------------------------------------------------------


def test_missing_package_folder_names_ref_and_node(project_builder: ProjectBuilder) -> None:
    project_builder.graph([node("code_node", CODE)], [])
    with pytest.raises(ProjectError, match=f"package {ACCOUNT}::SAMPLE_CODE not found") as caught:
        plan_application(project_builder.project)
    assert caught.value.file == str(project_builder.project.packages_dir)


def test_missing_interface_names_node(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(interface="code_interface")
    project_builder.graph([node("code_node", CODE)], [])
    with pytest.raises(ProjectError) as caught:
        plan_application(project_builder.project)
    assert caught.value.node == "code_node"
    assert "has no interface 'interface' (it has: code_interface)" in str(caught.value)


def test_asset_not_in_package_json(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(built=False)
    project_builder.graph([node("code_node", CODE)], [])
    with pytest.raises(ProjectError) as caught:
        plan_application(project_builder.project)
    assert (caught.value.node, caught.value.asset) == ("code_node", "code_asset")
    assert "build it first" in str(caught.value)


@pytest.mark.parametrize("blob", ["asset", "descriptor"])
def test_missing_asset_blob_names_the_asset(project_builder: ProjectBuilder, blob: str) -> None:
    project_builder.code_package()
    project_builder.graph([node("code_node", CODE)], [])
    code = plan_application(project_builder.project).code_node("code_node")
    uri = code.asset_uri if blob == "asset" else code.descriptor_uri
    (project_builder.root / "assets" / uri).unlink()
    with pytest.raises(ProjectError) as caught:
        plan_application(project_builder.project)
    assert (caught.value.node, caught.value.asset) == ("code_node", uri)
    assert "the container asset code_asset is not built" in str(caught.value)


def test_missing_model_blob_says_to_run_add_raw_model(project_builder: ProjectBuilder) -> None:
    single_camera_app(project_builder)
    model_ref = project_builder.model_package()
    graph_file = project_builder.root / "graphs/app/graph.json"
    doc = json.loads(graph_file.read_text())
    doc["nodeGraph"]["packages"].append({"name": model_ref, "version": "1.0"})
    doc["nodeGraph"]["nodes"].append(node("model_node", f"{model_ref}.interface"))
    graph_file.write_text(json.dumps(doc))
    (model,) = plan_application(project_builder.project).models
    (project_builder.root / "assets" / model.asset_uri).unlink()
    with pytest.raises(ProjectError) as caught:
        plan_application(project_builder.project)
    assert (caught.value.node, caught.value.asset) == ("model_node", model.asset_uri)
    message = str(caught.value)
    assert "the model asset model_asset is missing" in message and "build the package" not in message
    folder = Path("packages") / project_builder.project.package_dir(model_ref).name
    assert (
        "add it with: panorama-emulator add-raw-model --model-asset-name model_asset --model-local-path "
        f"MODEL.tar.gz --descriptor-path DESCRIPTOR.json --packages-path {folder}"
    ) in message


def test_descriptor_of_the_wrong_kind(project_builder: ProjectBuilder) -> None:
    model_descriptor = {
        "mlModelDescriptor": {"envelopeVersion": "2021-01-01", "framework": "ONNX", "inputs": []}
    }
    project_builder.code_package(descriptor=model_descriptor)
    project_builder.graph([node("code_node", CODE)], [])
    with pytest.raises(
        ManifestError, match="expected a runtimeDescriptor for the container asset code_asset"
    ):
        plan_application(project_builder.project)


def test_invalid_descriptor_blob(project_builder: ProjectBuilder) -> None:
    project_builder.code_package(descriptor={"runtimeDescriptor": {"envelopeVersion": "2021-01-01"}})
    project_builder.graph([node("code_node", CODE)], [])
    with pytest.raises(ManifestError, match="/runtimeDescriptor/entry: expected the required key 'entry'"):
        plan_application(project_builder.project)


def test_unknown_stock_interface(project_builder: ProjectBuilder) -> None:
    project_builder.graph([node("speaker", "panorama::audio_sink.speaker0")], [])
    expected = r"unknown stock interface panorama::audio_sink\.speaker0"
    with pytest.raises(ProjectError, match=expected) as caught:
        plan_application(project_builder.project)
    assert caught.value.node == "speaker"


def test_invalid_graph_is_manifest_error(project_builder: ProjectBuilder) -> None:
    graph_file = single_camera_app(project_builder)
    graph_file.write_text("{not json")
    with pytest.raises(ManifestError) as caught:
        plan_application(project_builder.project)
    assert problem_pointers(caught) == [""]


def test_account_camera_without_package_only_replacing_the_abstract_camera(
    project_builder: ProjectBuilder,
) -> None:
    single_camera_app(project_builder)
    graph_file = project_builder.root / "graphs/app/graph.json"
    doc = json.loads(graph_file.read_text())
    doc["nodeGraph"]["packages"].append({"name": f"{ACCOUNT}::lobby", "version": "1.0"})
    doc["nodeGraph"]["nodes"].append(node("lobby", f"{ACCOUNT}::lobby.lobby"))
    graph_file.write_text(json.dumps(doc))
    with pytest.raises(ProjectError, match=f"package {ACCOUNT}::lobby not found"):
        plan_application(project_builder.project)
