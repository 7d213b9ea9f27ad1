"""Validation of ``package.json`` and asset descriptors, building their models in the same pass."""

from __future__ import annotations

from typing import Any

from emulator.errors import Problem
from emulator.manifests._checker import Checker, describe, pointer
from emulator.manifests._models import (
    CATEGORIES,
    ENVELOPE_VERSION,
    FRAMEWORKS,
    IMPLEMENTATION_TYPES,
    PORT_TYPES,
    Asset,
    Descriptor,
    EnvVar,
    Implementation,
    Interface,
    ModelDescriptor,
    ModelInput,
    Package,
    Port,
    RuntimeDescriptor,
)
from emulator.manifests._validate import PORT_NAME, VERSION

__all__ = [
    "ASSET_NAME",
    "DEFAULT_ENTRY_PATH",
    "INTERFACE_NAME",
    "PACKAGE_NAME",
    "parse_descriptor",
    "parse_package",
    "validate_descriptor",
    "validate_package",
]

PACKAGE_NAME = r"^[a-z_A-Z0-9\-]+$"
INTERFACE_NAME = r"^[a-z_A-Z0-9\-]+$"
ASSET_NAME = r"^[$A-Z_a-z0-9\-]+$"
FRAMEWORK_VERSION = r"^[0-9]+\.[A-Za-z0-9.]+$"
TENSOR_TYPES = ("int8", "uint8", "int16", "uint16", "int32", "uint32", "float16", "float32", "float64")
EVENT_TYPES = ("onExit", "onPartialInput", "onCompleteInput")
# The schema's default entry path is "$default"; the device runs Python apps with python3.
DEFAULT_ENTRY_PATH = "python3"

_INPUT_KEYS = {
    "media": ("description", "maxConnections"),
    "boolean": ("description", "default", "maxConnections", "reference", "referenceSource"),
}
_VALUE_INPUT_KEYS = (
    "description",
    "default",
    "constraintRegex",
    "maxConnections",
    "reference",
    "referenceSource",
)


def _port(c: Checker, raw: object, at: str, *, is_input: bool) -> Port | None:
    if not isinstance(raw, dict):
        c.add(at, "a port object", describe(raw))
        return None
    port_type = raw.get("type") if isinstance(raw.get("type"), str) else None
    if not is_input:
        optional: tuple[str, ...] = ("description",)
    elif port_type in _INPUT_KEYS:
        optional = _INPUT_KEYS[str(port_type)]
    else:
        optional = _VALUE_INPUT_KEYS
    # The device's schema leaves string input ports open to extra keys.
    c.obj(
        raw, at, required=("name", "type"), optional=optional, closed=not (is_input and port_type == "string")
    )
    name = (
        c.string(raw["name"], pointer(at, "name"), pattern=PORT_NAME, max_length=50, what="a port name")
        if "name" in raw
        else None
    )
    checked_type = c.enum(raw["type"], pointer(at, "type"), PORT_TYPES) if "type" in raw else None
    if "description" in raw:
        c.string(raw["description"], pointer(at, "description"), max_length=255 if is_input else None)
    max_connections = 0
    if "maxConnections" in raw:
        max_connections = c.integer(raw["maxConnections"], pointer(at, "maxConnections"), minimum=0) or 0
    if "reference" in raw:
        c.boolean(raw["reference"], pointer(at, "reference"))
    for key in ("referenceSource", "constraintRegex"):
        if key in raw:
            c.string(raw[key], pointer(at, key))
    default = None
    if "default" in raw and checked_type is not None and checked_type != "media":
        default = c.typed_value(raw["default"], pointer(at, "default"), checked_type)
    if name is None or checked_type is None:
        return None
    return Port(name, checked_type, default, max_connections)


def _ports(c: Checker, raw: object, at: str, *, is_input: bool) -> list[Port]:
    ports = []
    names: list[tuple[str | None, str]] = []
    for index, item in enumerate(c.array(raw, at)):
        port = _port(c, item, pointer(at, index), is_input=is_input)
        if port is not None:
            ports.append(port)
            names.append((port.name, pointer(at, index, "name")))
    c.unique(names, "port name")
    return ports


def _inbound_ports(c: Checker, raw: object, at: str) -> list[int]:
    network = c.obj(raw, at, optional=("inboundPorts",), what="a network object")
    if network is None or "inboundPorts" not in network:
        return []
    ports = []
    ports_at = pointer(at, "inboundPorts")
    for index, item in enumerate(c.array(network["inboundPorts"], ports_at, max_items=10)):
        item_at = pointer(ports_at, index)
        entry = c.obj(
            item, item_at, required=("port",), optional=("description",), what="an inbound port object"
        )
        if entry is None:
            continue
        if "description" in entry:
            c.string(entry["description"], pointer(item_at, "description"), max_length=255)
        if "port" in entry:
            port = c.integer(
                entry["port"], pointer(item_at, "port"), minimum=1, maximum=65535, what="a port number"
            )
            if port is not None:
                ports.append(port)
    return ports


def _interface(c: Checker, raw: object, at: str) -> Interface | None:
    entry = c.obj(
        raw,
        at,
        required=("name", "category"),
        optional=("description", "asset", "inputs", "outputs", "network"),
        what="an interface object",
    )
    if entry is None:
        return None
    name = (
        c.string(
            entry["name"],
            pointer(at, "name"),
            pattern=INTERFACE_NAME,
            max_length=128,
            what="an interface name",
        )
        if "name" in entry
        else None
    )
    category = c.enum(entry["category"], pointer(at, "category"), CATEGORIES) if "category" in entry else None
    asset = c.string(entry["asset"], pointer(at, "asset"), what="an asset name") if "asset" in entry else None
    if "description" in entry:
        c.string(entry["description"], pointer(at, "description"))
    inputs = _ports(c, entry["inputs"], pointer(at, "inputs"), is_input=True) if "inputs" in entry else []
    outputs = (
        _ports(c, entry["outputs"], pointer(at, "outputs"), is_input=False) if "outputs" in entry else []
    )
    inbound = _inbound_ports(c, entry["network"], pointer(at, "network")) if "network" in entry else []
    if name is None or category is None:
        return None
    return Interface(name, category, asset, tuple(inputs), tuple(outputs), tuple(inbound))


def _implementation(c: Checker, raw: object, at: str) -> Implementation | None:
    entry = c.obj(
        raw,
        at,
        required=("type", "assetUri"),
        optional=("description", "descriptorUri", "requirements"),
        what="an implementation object",
    )
    if entry is None:
        return None
    impl_type = c.enum(entry["type"], pointer(at, "type"), IMPLEMENTATION_TYPES) if "type" in entry else None
    asset_uri = (
        c.string(entry["assetUri"], pointer(at, "assetUri"), min_length=1, max_length=255)
        if "assetUri" in entry
        else None
    )
    descriptor_uri = (
        c.string(entry["descriptorUri"], pointer(at, "descriptorUri")) if "descriptorUri" in entry else None
    )
    if "description" in entry:
        c.string(entry["description"], pointer(at, "description"), max_length=255)
    requirements: list[dict[str, Any]] = []
    if "requirements" in entry:
        req_at = pointer(at, "requirements")
        for index, item in enumerate(c.array(entry["requirements"], req_at)):
            # Requirement objects are kept as they are; only their shape and type are checked.
            requirement = c.obj(
                item, pointer(req_at, index), required=("type",), closed=False, what="a requirement object"
            )
            if requirement is not None:
                if "type" in requirement:
                    c.string(requirement["type"], pointer(req_at, index, "type"), min_length=1)
                requirements.append(requirement)
    if impl_type is None or asset_uri is None:
        return None
    return Implementation(impl_type, asset_uri, descriptor_uri, tuple(requirements))


def _asset(c: Checker, raw: object, at: str) -> Asset | None:
    entry = c.obj(
        raw, at, required=("name",), optional=("description", "implementations"), what="an asset object"
    )
    if entry is None:
        return None
    name = (
        c.string(entry["name"], pointer(at, "name"), pattern=ASSET_NAME, max_length=255, what="an asset name")
        if "name" in entry
        else None
    )
    if "description" in entry:
        c.string(entry["description"], pointer(at, "description"))
    implementations = []
    if "implementations" in entry:
        impl_at = pointer(at, "implementations")
        for index, item in enumerate(c.array(entry["implementations"], impl_at)):
            implementation = _implementation(c, item, pointer(impl_at, index))
            if implementation is not None:
                implementations.append(implementation)
    if name is None:
        return None
    return Asset(name, tuple(implementations))


def parse_package(
    data: object, file: str, *, default_name: str = "", default_version: str = ""
) -> tuple[Package | None, list[Problem]]:
    """Validate a parsed ``package.json`` (``nodePackage``) and build its model.

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.
        default_name: the package name when the file has none (panorama-cli takes it from the folder).
        default_version: the version when the file has none.

    Returns:
        (package, []) when valid, else (None, every problem found).
    """
    c = Checker(file)
    top = c.obj(data, "", required=("nodePackage",), what="an object with the key nodePackage")
    if top is None or not isinstance(top.get("nodePackage"), dict):
        if top is not None and "nodePackage" in top:
            c.add("/nodePackage", "an object", describe(top["nodePackage"]))
        return None, c.problems
    at = "/nodePackage"
    body: dict[str, Any] = top["nodePackage"]
    c.obj(
        body,
        at,
        required=("envelopeVersion", "interfaces"),
        optional=("name", "version", "description", "assets"),
    )
    if "envelopeVersion" in body:
        c.enum(body["envelopeVersion"], pointer(at, "envelopeVersion"), (ENVELOPE_VERSION,))
    name: str | None = default_name
    if "name" in body:
        name = c.string(
            body["name"], pointer(at, "name"), pattern=PACKAGE_NAME, max_length=128, what="a package name"
        )
    version: str | None = default_version
    if "version" in body:
        version = c.string(body["version"], pointer(at, "version"), pattern=VERSION, max_length=255)
    description: str | None = ""
    if "description" in body:
        description = c.string(body["description"], pointer(at, "description"), max_length=255)
    assets: list[Asset] = []
    asset_names: list[tuple[str | None, str]] = []
    if "assets" in body:
        for index, item in enumerate(c.array(body["assets"], pointer(at, "assets"))):
            asset = _asset(c, item, pointer(at, "assets", index))
            if asset is not None:
                assets.append(asset)
                asset_names.append((asset.name, pointer(at, "assets", index, "name")))
    interfaces: list[Interface] = []
    interface_names: list[tuple[str | None, str]] = []
    if "interfaces" in body:
        for index, item in enumerate(c.array(body["interfaces"], pointer(at, "interfaces"), min_items=1)):
            interface = _interface(c, item, pointer(at, "interfaces", index))
            if interface is not None:
                interfaces.append(interface)
                interface_names.append((interface.name, pointer(at, "interfaces", index, "name")))
    c.unique(asset_names, "asset name")
    c.unique(interface_names, "interface name")
    if c.problems or name is None or version is None or description is None:
        return None, c.problems
    return Package(name, version, description, tuple(assets), tuple(interfaces)), []


def _no_nul(c: Checker, value: str | None, at: str) -> str | None:
    if value is not None and "\0" in value:
        c.add(at, "a string without NUL characters", describe(value))
        return None
    return value


def _runtime(c: Checker, body: dict[str, Any], at: str) -> RuntimeDescriptor | None:
    # The schema leaves "entry" optional, but without it there is nothing to run.
    c.obj(body, at, required=("envelopeVersion", "entry"), optional=("events",))
    if "envelopeVersion" in body:
        c.enum(body["envelopeVersion"], pointer(at, "envelopeVersion"), (ENVELOPE_VERSION,))
    if "events" in body:
        for index, item in enumerate(c.array(body["events"], pointer(at, "events"))):
            item_at = pointer(at, "events", index)
            event = c.obj(
                item,
                item_at,
                required=("type", "handler"),
                optional=("description", "inputs"),
                what="an event handler object",
            )
            if event is not None:
                if "type" in event:
                    c.enum(event["type"], pointer(item_at, "type"), EVENT_TYPES)
                if "handler" in event:
                    c.string(event["handler"], pointer(item_at, "handler"), min_length=1)
    entry_at = pointer(at, "entry")
    entry = (
        c.obj(
            body.get("entry"),
            entry_at,
            required=("name",),
            optional=("path", "arguments", "environment"),
            what="an entry object",
        )
        if "entry" in body
        else None
    )
    if entry is None:
        return None
    name = (
        _no_nul(
            c, c.string(entry["name"], pointer(entry_at, "name"), min_length=1), pointer(entry_at, "name")
        )
        if "name" in entry
        else None
    )
    path: str | None = DEFAULT_ENTRY_PATH
    if "path" in entry:
        path = _no_nul(
            c, c.string(entry["path"], pointer(entry_at, "path"), min_length=1), pointer(entry_at, "path")
        )
    arguments: list[str] = []
    if "arguments" in entry:
        for index, item in enumerate(c.array(entry["arguments"], pointer(entry_at, "arguments"))):
            item_at = pointer(entry_at, "arguments", index)
            argument = _no_nul(c, c.string(item, item_at), item_at)
            if argument is not None:
                arguments.append(argument)
    environment: list[EnvVar] = []
    if "environment" in entry:
        env_at = pointer(entry_at, "environment")
        for index, item in enumerate(c.array(entry["environment"], env_at)):
            item_at = pointer(env_at, index)
            variable = c.obj(item, item_at, required=("name", "value"), what="an object with name and value")
            if variable is None:
                continue
            var_name = (
                c.string(
                    variable["name"], pointer(item_at, "name"), pattern=r"^[^=\x00]+$", what="a variable name"
                )
                if "name" in variable
                else None
            )
            value = (
                _no_nul(c, c.string(variable["value"], pointer(item_at, "value")), pointer(item_at, "value"))
                if "value" in variable
                else None
            )
            if var_name is not None and value is not None:
                environment.append(EnvVar(var_name, value))
    if name is None or path is None:
        return None
    return RuntimeDescriptor(path, name, tuple(arguments), tuple(environment))


def _model(c: Checker, body: dict[str, Any], at: str) -> ModelDescriptor | None:
    c.obj(
        body,
        at,
        required=("envelopeVersion", "framework", "inputs"),
        optional=("frameworkVersion", "precisionMode"),
    )
    if "envelopeVersion" in body:
        c.enum(body["envelopeVersion"], pointer(at, "envelopeVersion"), (ENVELOPE_VERSION,))
    framework = (
        c.enum(body["framework"], pointer(at, "framework"), FRAMEWORKS) if "framework" in body else None
    )
    version = (
        c.string(
            body["frameworkVersion"],
            pointer(at, "frameworkVersion"),
            pattern=FRAMEWORK_VERSION,
            min_length=3,
            max_length=10,
        )
        if "frameworkVersion" in body
        else None
    )
    precision = (
        c.enum(body["precisionMode"], pointer(at, "precisionMode"), ("FP32", "FP16"))
        if "precisionMode" in body
        else None
    )
    inputs: list[ModelInput] = []
    names: list[tuple[str | None, str]] = []
    if "inputs" in body:
        for index, item in enumerate(c.array(body["inputs"], pointer(at, "inputs"))):
            item_at = pointer(at, "inputs", index)
            tensor = c.obj(
                item, item_at, required=("name", "shape"), optional=("type",), what="an input tensor object"
            )
            if tensor is None:
                continue
            name = (
                c.string(tensor["name"], pointer(item_at, "name"), min_length=1, what="a tensor name")
                if "name" in tensor
                else None
            )
            if "type" in tensor:
                c.enum(tensor["type"], pointer(item_at, "type"), TENSOR_TYPES)
            shape: list[int] | None = None
            if "shape" in tensor:
                shape = []
                shape_at = pointer(item_at, "shape")
                for dim_index, dim in enumerate(c.array(tensor["shape"], shape_at, min_items=1)):
                    size = c.integer(dim, pointer(shape_at, dim_index), minimum=1, what="a positive integer")
                    if size is None:
                        shape = None
                        break
                    shape.append(size)
            names.append((name, pointer(item_at, "name")))
            if name is not None and shape:
                inputs.append(ModelInput(name, tuple(shape)))
    c.unique(names, "tensor name")
    if framework is None:
        return None
    return ModelDescriptor(framework, version, precision, tuple(inputs))


def parse_descriptor(data: object, file: str) -> tuple[Descriptor | None, list[Problem]]:
    """Validate a parsed descriptor (``runtimeDescriptor`` or ``mlModelDescriptor``) and build its model.

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        (descriptor, []) when valid, else (None, every problem found).
    """
    c = Checker(file)
    kinds = ("runtimeDescriptor", "mlModelDescriptor")
    top = c.obj(
        data, "", optional=kinds, what="an object with the key runtimeDescriptor or mlModelDescriptor"
    )
    if top is None:
        return None, c.problems
    present = [kind for kind in kinds if kind in top]
    if len(present) != 1:
        found = (
            "both"
            if len(present) == 2
            else f"neither (keys: {', '.join(describe(str(key)) for key in list(top)[:10]) or 'none'})"
        )
        c.add("", "exactly one of the keys runtimeDescriptor, mlModelDescriptor", found)
        return None, c.problems
    kind = present[0]
    body = top[kind]
    if not isinstance(body, dict):
        c.add(pointer("", kind), "an object", describe(body))
        return None, c.problems
    descriptor: Descriptor | None
    if kind == "runtimeDescriptor":
        descriptor = _runtime(c, body, pointer("", kind))
    else:
        descriptor = _model(c, body, pointer("", kind))
    if c.problems or descriptor is None:
        return None, c.problems
    return descriptor, []


def validate_package(data: object, file: str) -> list[Problem]:
    """Return every problem of a parsed ``package.json`` (empty when valid).

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        the problems found.
    """
    return parse_package(data, file)[1]


def validate_descriptor(data: object, file: str) -> list[Problem]:
    """Return every problem of a parsed descriptor (empty when valid).

    Args:
        data: the parsed JSON.
        file: the file name shown in problems.

    Returns:
        the problems found.
    """
    return parse_descriptor(data, file)[1]
