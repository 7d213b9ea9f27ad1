"""Validation rules of package.json and descriptors, each with a failing example and the pointer it names."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from emulator.errors import Problem
from emulator.manifests import (
    DEFAULT_ENTRY_PATH,
    EnvVar,
    Implementation,
    ModelDescriptor,
    ModelInput,
    Port,
    RuntimeDescriptor,
    UnknownNameError,
    parse_descriptor,
    parse_package,
    validate_descriptor,
    validate_package,
)

Doc = dict[str, Any]
Mutation = Callable[[Doc], None]
P = "/nodePackage"


def pointers(problems: list[Problem]) -> list[str]:
    return [problem.pointer for problem in problems]


def body(doc: Doc) -> Doc:
    inner: Doc = doc["nodePackage"]
    return inner


def interface(doc: Doc) -> Doc:
    first: Doc = body(doc)["interfaces"][0]
    return first


# --- package.json -------------------------------------------------------------------------------------------


def test_valid_package_builds_typed_model(package_data: Doc) -> None:
    package, problems = parse_package(package_data, "package.json")
    assert problems == [] and package is not None
    assert (package.name, package.version) == ("SAMPLE_CODE", "1.0")
    code = package.interface("interface")
    assert code.category == "business_logic" and code.asset == "code_asset"
    assert code.inputs[0] == Port("video_in", "media")
    assert code.input("threshold") == Port("threshold", "float32", 50.0)
    assert isinstance(code.inputs[1].default, float)
    assert code.input("enabled") == Port("enabled", "boolean", True)
    assert code.input("count") == Port("count", "int32", 3, max_connections=1)
    assert code.output("video_out") == Port("video_out", "media")
    assert code.input("nothing") is None
    assert code.inbound_ports == (8080,)
    asset = package.asset("code_asset")
    implementation = asset.implementations[0]
    assert implementation.type == "container"
    assert implementation.asset_uri == "a" * 64 + ".tar.gz"
    assert implementation.descriptor_uri == "b" * 64 + ".json"
    assert implementation.requirements[0]["type"] == "hardware_access"
    hash(implementation)  # requirements (plain dicts) do not make the model unhashable


def test_unknown_interface_and_asset_name_the_package(package_data: Doc) -> None:
    package, _ = parse_package(package_data, "package.json")
    assert package is not None
    with pytest.raises(UnknownNameError, match="package SAMPLE_CODE has no interface 'other'"):
        package.interface("other")
    with pytest.raises(KeyError):
        package.asset("model")
    with pytest.raises(UnknownNameError) as caught:
        package.asset("model")
    assert caught.value.asset == "model"
    assert "build it first" in str(caught.value)


def test_package_without_name_takes_folder_values(package_data: Doc) -> None:
    del body(package_data)["name"], body(package_data)["version"], body(package_data)["description"]
    package, problems = parse_package(package_data, "package.json", default_name="CAM", default_version="2.0")
    assert problems == [] and package is not None
    assert (package.name, package.version, package.description) == ("CAM", "2.0", "")


def test_package_without_assets_is_valid(package_data: Doc) -> None:
    body(package_data)["assets"] = []
    package, problems = parse_package(package_data, "package.json")
    assert problems == [] and package is not None and package.assets == ()


def test_system_asset_and_string_port_extra_keys(package_data: Doc) -> None:
    body(package_data)["assets"].append(
        {
            "name": "rtsp_camera",
            "implementations": [{"type": "system", "assetUri": "source/video/camera/rtsp/x"}],
        }
    )
    interface(package_data)["inputs"][2]["uiHint"] = "text"
    package, problems = parse_package(package_data, "package.json")
    assert problems == [] and package is not None
    assert package.asset("rtsp_camera").implementations == (
        Implementation("system", "source/video/camera/rtsp/x", None),
    )


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


N = "nodePackage"
I0 = (N, "interfaces", 0)
A0 = (N, "assets", 0)
IMPL = (*A0, "implementations", 0)
PACKAGE_CASES: list[tuple[str, Mutation, str]] = [
    ("wrapper missing", _delete((N,)), P),
    ("wrapper type", _set((N,), "x"), P),
    ("top-level key", _set(("nodeGraph",), {}), "/nodeGraph"),
    ("envelope", _set((N, "envelopeVersion"), "2021-01-02"), f"{P}/envelopeVersion"),
    ("unknown key", _set((N, "license"), "MIT"), f"{P}/license"),
    ("name pattern", _set((N, "name"), "SAMPLE CODE"), f"{P}/name"),
    ("name colon", _set((N, "name"), "a::b"), f"{P}/name"),
    ("version", _set((N, "version"), "v1"), f"{P}/version"),
    ("description type", _set((N, "description"), 1), f"{P}/description"),
    ("description long", _set((N, "description"), "d" * 256), f"{P}/description"),
    ("interfaces missing", _delete((N, "interfaces")), f"{P}/interfaces"),
    ("interfaces empty", _set((N, "interfaces"), []), f"{P}/interfaces"),
    ("interface not object", _set(I0, []), f"{P}/interfaces/0"),
    ("interface name", _set((*I0, "name"), "my interface"), f"{P}/interfaces/0/name"),
    ("interface category missing", _delete((*I0, "category")), f"{P}/interfaces/0/category"),
    ("interface category", _set((*I0, "category"), "logic"), f"{P}/interfaces/0/category"),
    ("interface asset type", _set((*I0, "asset"), 1), f"{P}/interfaces/0/asset"),
    ("interface unknown key", _set((*I0, "decorator"), {}), f"{P}/interfaces/0/decorator"),
    ("inputs type", _set((*I0, "inputs"), {}), f"{P}/interfaces/0/inputs"),
    ("port not object", _set((*I0, "inputs", 0), "video_in"), f"{P}/interfaces/0/inputs/0"),
    ("port name hyphen", _set((*I0, "inputs", 0, "name"), "video-in"), f"{P}/interfaces/0/inputs/0/name"),
    ("port name long", _set((*I0, "inputs", 0, "name"), "p" * 51), f"{P}/interfaces/0/inputs/0/name"),
    ("port name missing", _delete((*I0, "inputs", 0, "name")), f"{P}/interfaces/0/inputs/0/name"),
    ("port type", _set((*I0, "inputs", 0, "type"), "video"), f"{P}/interfaces/0/inputs/0/type"),
    ("port type missing", _delete((*I0, "inputs", 0, "type")), f"{P}/interfaces/0/inputs/0/type"),
    ("media default", _set((*I0, "inputs", 0, "default"), "x"), f"{P}/interfaces/0/inputs/0/default"),
    ("float default", _set((*I0, "inputs", 1, "default"), "50"), f"{P}/interfaces/0/inputs/1/default"),
    ("string default", _set((*I0, "inputs", 2, "default"), 5), f"{P}/interfaces/0/inputs/2/default"),
    ("boolean default", _set((*I0, "inputs", 3, "default"), "true"), f"{P}/interfaces/0/inputs/3/default"),
    ("int default", _set((*I0, "inputs", 4, "default"), 2.5), f"{P}/interfaces/0/inputs/4/default"),
    ("int default range", _set((*I0, "inputs", 4, "default"), 2**40), f"{P}/interfaces/0/inputs/4/default"),
    (
        "max connections",
        _set((*I0, "inputs", 4, "maxConnections"), -1),
        f"{P}/interfaces/0/inputs/4/maxConnections",
    ),
    (
        "boolean regex",
        _set((*I0, "inputs", 3, "constraintRegex"), "x"),
        f"{P}/interfaces/0/inputs/3/constraintRegex",
    ),
    ("port unknown key", _set((*I0, "inputs", 1, "unit"), "%"), f"{P}/interfaces/0/inputs/1/unit"),
    ("output default", _set((*I0, "outputs", 0, "default"), 1), f"{P}/interfaces/0/outputs/0/default"),
    ("output port name", _set((*I0, "outputs", 0, "name"), "video out"), f"{P}/interfaces/0/outputs/0/name"),
    ("network type", _set((*I0, "network"), []), f"{P}/interfaces/0/network"),
    ("network key", _set((*I0, "network", "outboundPorts"), []), f"{P}/interfaces/0/network/outboundPorts"),
    (
        "inbound port",
        _set((*I0, "network", "inboundPorts", 0, "port"), 0),
        f"{P}/interfaces/0/network/inboundPorts/0/port",
    ),
    (
        "inbound port missing",
        _delete((*I0, "network", "inboundPorts", 0, "port")),
        f"{P}/interfaces/0/network/inboundPorts/0/port",
    ),
    (
        "too many inbound ports",
        _set((*I0, "network", "inboundPorts"), [{"port": 8000 + i} for i in range(11)]),
        f"{P}/interfaces/0/network/inboundPorts",
    ),
    ("assets type", _set((N, "assets"), {}), f"{P}/assets"),
    ("asset name missing", _delete((*A0, "name")), f"{P}/assets/0/name"),
    ("asset name pattern", _set((*A0, "name"), "code asset"), f"{P}/assets/0/name"),
    ("asset unknown key", _set((*A0, "type"), "container"), f"{P}/assets/0/type"),
    ("implementations type", _set((*A0, "implementations"), {}), f"{P}/assets/0/implementations"),
    ("implementation type", _set((*IMPL, "type"), "docker"), f"{P}/assets/0/implementations/0/type"),
    ("implementation uri missing", _delete((*IMPL, "assetUri")), f"{P}/assets/0/implementations/0/assetUri"),
    ("implementation uri empty", _set((*IMPL, "assetUri"), ""), f"{P}/assets/0/implementations/0/assetUri"),
    (
        "descriptor uri type",
        _set((*IMPL, "descriptorUri"), 5),
        f"{P}/assets/0/implementations/0/descriptorUri",
    ),
    ("implementation key", _set((*IMPL, "sha256"), "x"), f"{P}/assets/0/implementations/0/sha256"),
    ("requirements type", _set((*IMPL, "requirements"), {}), f"{P}/assets/0/implementations/0/requirements"),
    (
        "requirement item",
        _set((*IMPL, "requirements", 0), "gpu"),
        f"{P}/assets/0/implementations/0/requirements/0",
    ),
    (
        "requirement type missing",
        _delete((*IMPL, "requirements", 0, "type")),
        f"{P}/assets/0/implementations/0/requirements/0/type",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "at"), PACKAGE_CASES, ids=[case[0] for case in PACKAGE_CASES])
def test_package_rule(package_data: Doc, case: str, mutate: Mutation, at: str) -> None:
    mutate(package_data)
    package, problems = parse_package(package_data, "package.json")
    assert package is None
    assert at in pointers(problems), problems


def test_duplicate_interface_asset_and_port_names(package_data: Doc) -> None:
    inner = body(package_data)
    inner["interfaces"].append(copy.deepcopy(inner["interfaces"][0]))
    inner["assets"].append({"name": "code_asset", "implementations": []})
    inner["interfaces"][0]["inputs"].append({"name": "video_in", "type": "media"})
    inner["interfaces"][0]["outputs"].append(
        {"name": "video_in", "type": "media"}
    )  # outputs are their own space
    assert sorted(pointers(validate_package(package_data, "package.json"))) == [
        f"{P}/assets/1/name",
        f"{P}/interfaces/0/inputs/5/name",
        f"{P}/interfaces/1/name",
    ]


def test_package_problems_all_at_once(package_data: Doc) -> None:
    inner = body(package_data)
    inner["version"] = 1
    inner["interfaces"][0]["category"] = "code"
    inner["interfaces"][0]["inputs"][0]["name"] = "video-in"
    inner["assets"][0]["implementations"][0]["type"] = "zip"
    assert len(validate_package(package_data, "package.json")) == 4


# --- descriptors --------------------------------------------------------------------------------------------


def test_valid_runtime_descriptor(runtime_descriptor_data: Doc) -> None:
    descriptor, problems = parse_descriptor(runtime_descriptor_data, "d.json")
    assert problems == []
    assert descriptor == RuntimeDescriptor(
        "python3", "/panorama/app.py", ("--verbose",), (EnvVar("MODE", "test"),)
    )
    assert isinstance(descriptor, RuntimeDescriptor)
    assert descriptor.argv == ("python3", "/panorama/app.py", "--verbose")


def test_runtime_descriptor_defaults(runtime_descriptor_data: Doc) -> None:
    entry = runtime_descriptor_data["runtimeDescriptor"]["entry"]
    del entry["path"], entry["arguments"], entry["environment"]
    descriptor, problems = parse_descriptor(runtime_descriptor_data, "d.json")
    assert problems == []
    assert descriptor == RuntimeDescriptor(DEFAULT_ENTRY_PATH, "/panorama/app.py")


def test_valid_model_descriptor(model_descriptor_data: Doc) -> None:
    descriptor, problems = parse_descriptor(model_descriptor_data, "d.json")
    assert problems == []
    assert descriptor == ModelDescriptor("PYTORCH", "1.8", "FP16", (ModelInput("data", (1, 3, 224, 224)),))


@pytest.mark.parametrize("framework", ["PYTORCH", "TENSORFLOW", "MXNET", "ONNX"])
def test_model_frameworks(model_descriptor_data: Doc, framework: str) -> None:
    inner = model_descriptor_data["mlModelDescriptor"]
    inner["framework"] = framework
    del inner["frameworkVersion"], inner["precisionMode"]
    descriptor, problems = parse_descriptor(model_descriptor_data, "d.json")
    assert problems == []
    assert isinstance(descriptor, ModelDescriptor)
    assert (descriptor.framework, descriptor.framework_version, descriptor.precision_mode) == (
        framework,
        None,
        None,
    )


R = "runtimeDescriptor"
E = (R, "entry")
RUNTIME_CASES: list[tuple[str, Mutation, str]] = [
    ("envelope", _set((R, "envelopeVersion"), "2021"), "/runtimeDescriptor/envelopeVersion"),
    ("envelope missing", _delete((R, "envelopeVersion")), "/runtimeDescriptor/envelopeVersion"),
    ("entry missing", _delete(E), "/runtimeDescriptor/entry"),
    ("entry type", _set(E, "python3 app.py"), "/runtimeDescriptor/entry"),
    ("unknown key", _set((R, "cmd"), []), "/runtimeDescriptor/cmd"),
    ("name missing", _delete((*E, "name")), "/runtimeDescriptor/entry/name"),
    ("name empty", _set((*E, "name"), ""), "/runtimeDescriptor/entry/name"),
    ("name nul", _set((*E, "name"), "/app\0.py"), "/runtimeDescriptor/entry/name"),
    ("path type", _set((*E, "path"), ["python3"]), "/runtimeDescriptor/entry/path"),
    ("arguments type", _set((*E, "arguments"), "--verbose"), "/runtimeDescriptor/entry/arguments"),
    ("argument item", _set((*E, "arguments", 0), 5), "/runtimeDescriptor/entry/arguments/0"),
    ("environment type", _set((*E, "environment"), {"MODE": "x"}), "/runtimeDescriptor/entry/environment"),
    (
        "env value missing",
        _delete((*E, "environment", 0, "value")),
        "/runtimeDescriptor/entry/environment/0/value",
    ),
    (
        "env value type",
        _set((*E, "environment", 0, "value"), 1),
        "/runtimeDescriptor/entry/environment/0/value",
    ),
    (
        "env name equals",
        _set((*E, "environment", 0, "name"), "A=B"),
        "/runtimeDescriptor/entry/environment/0/name",
    ),
    (
        "env key",
        _set((*E, "environment", 0, "secret"), True),
        "/runtimeDescriptor/entry/environment/0/secret",
    ),
    ("entry key", _set((*E, "workdir"), "/"), "/runtimeDescriptor/entry/workdir"),
    (
        "events item",
        _set((R, "events"), [{"type": "onBoot", "handler": "f"}]),
        "/runtimeDescriptor/events/0/type",
    ),
]


@pytest.mark.parametrize(("case", "mutate", "at"), RUNTIME_CASES, ids=[case[0] for case in RUNTIME_CASES])
def test_runtime_descriptor_rule(runtime_descriptor_data: Doc, case: str, mutate: Mutation, at: str) -> None:
    mutate(runtime_descriptor_data)
    descriptor, problems = parse_descriptor(runtime_descriptor_data, "d.json")
    assert descriptor is None
    assert at in pointers(problems), problems


M = "mlModelDescriptor"
MODEL_CASES: list[tuple[str, Mutation, str]] = [
    ("framework", _set((M, "framework"), "CAFFE"), "/mlModelDescriptor/framework"),
    ("framework case", _set((M, "framework"), "pytorch"), "/mlModelDescriptor/framework"),
    ("framework missing", _delete((M, "framework")), "/mlModelDescriptor/framework"),
    ("inputs missing", _delete((M, "inputs")), "/mlModelDescriptor/inputs"),
    ("framework version", _set((M, "frameworkVersion"), "latest"), "/mlModelDescriptor/frameworkVersion"),
    ("precision", _set((M, "precisionMode"), "INT8"), "/mlModelDescriptor/precisionMode"),
    ("unknown key", _set((M, "outputs"), []), "/mlModelDescriptor/outputs"),
    ("input name missing", _delete((M, "inputs", 0, "name")), "/mlModelDescriptor/inputs/0/name"),
    ("input shape missing", _delete((M, "inputs", 0, "shape")), "/mlModelDescriptor/inputs/0/shape"),
    ("shape type", _set((M, "inputs", 0, "shape"), "1,3,224,224"), "/mlModelDescriptor/inputs/0/shape"),
    ("shape empty", _set((M, "inputs", 0, "shape"), []), "/mlModelDescriptor/inputs/0/shape"),
    ("shape zero", _set((M, "inputs", 0, "shape", 0), 0), "/mlModelDescriptor/inputs/0/shape/0"),
    ("shape negative", _set((M, "inputs", 0, "shape", 2), -1), "/mlModelDescriptor/inputs/0/shape/2"),
    ("shape float", _set((M, "inputs", 0, "shape", 1), 3.5), "/mlModelDescriptor/inputs/0/shape/1"),
    ("shape bool", _set((M, "inputs", 0, "shape", 1), True), "/mlModelDescriptor/inputs/0/shape/1"),
    ("tensor type", _set((M, "inputs", 0, "type"), "float128"), "/mlModelDescriptor/inputs/0/type"),
    ("tensor key", _set((M, "inputs", 0, "layout"), "NCHW"), "/mlModelDescriptor/inputs/0/layout"),
]


@pytest.mark.parametrize(("case", "mutate", "at"), MODEL_CASES, ids=[case[0] for case in MODEL_CASES])
def test_model_descriptor_rule(model_descriptor_data: Doc, case: str, mutate: Mutation, at: str) -> None:
    mutate(model_descriptor_data)
    descriptor, problems = parse_descriptor(model_descriptor_data, "d.json")
    assert descriptor is None
    assert at in pointers(problems), problems


def test_descriptor_needs_exactly_one_kind(runtime_descriptor_data: Doc, model_descriptor_data: Doc) -> None:
    both = {**runtime_descriptor_data, **model_descriptor_data}
    assert [str(p) for p in validate_descriptor(both, "d.json")] == [
        "d.json: /: expected exactly one of the keys runtimeDescriptor, mlModelDescriptor, found both"
    ]
    assert pointers(validate_descriptor({}, "d.json")) == [""]
    assert pointers(validate_descriptor({"runtimeDescriptor": []}, "d.json")) == ["/runtimeDescriptor"]
    assert set(pointers(validate_descriptor({"descriptor": {}}, "d.json"))) == {"", "/descriptor"}


def test_duplicate_tensor_names(model_descriptor_data: Doc) -> None:
    inputs = model_descriptor_data["mlModelDescriptor"]["inputs"]
    inputs.append({"name": "data", "shape": [1]})
    assert pointers(validate_descriptor(model_descriptor_data, "d.json")) == [
        "/mlModelDescriptor/inputs/1/name"
    ]
