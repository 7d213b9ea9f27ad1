"""Property tests: whatever is done to a valid manifest, loaders return a model or raise an EmulatorError.

Mutations: deleting keys and items, swapping a value for one of another JSON type, junk values, unknown keys,
and very deep nesting, applied anywhere in graph, package, descriptor and override documents.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emulator.errors import EmulatorError, ManifestError
from emulator.manifests import (
    load_descriptor,
    load_graph,
    load_override,
    load_package,
    parse_descriptor,
    parse_graph,
    parse_override,
    parse_package,
)

Doc = dict[str, Any]
Path_ = tuple[Any, ...]

PARSERS: dict[str, Callable[[object, str], tuple[object | None, list[Any]]]] = {
    "graph": parse_graph,
    "package": parse_package,
    "runtime": parse_descriptor,
    "model": parse_descriptor,
    "override": parse_override,
}
LOADERS: dict[str, Callable[[Path], object]] = {
    "graph": load_graph,
    "package": load_package,
    "runtime": load_descriptor,
    "model": load_descriptor,
    "override": load_override,
}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
    st.sampled_from(
        ["", "2021-01-01", "media", "float32", "int32", "a::b", "a::b.c", "x.y", "onAppStart", "ONNX"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def deep(depth: int, leaf: object) -> object:
    value = leaf
    for index in range(depth):
        value = [value] if index % 2 else {"k": value}
    return value


def locations(doc: object, path: Path_ = ()) -> list[Path_]:
    """Every path to a value inside ``doc`` (the root excluded)."""
    found: list[Path_] = []
    if len(path) > 12:  # values nested deeper than any manifest field are left alone
        return found
    if isinstance(doc, dict):
        for key, value in doc.items():
            found.append((*path, key))
            found.extend(locations(value, (*path, key)))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found.append((*path, index))
            found.extend(locations(value, (*path, index)))
    return found


def parent_of(doc: Any, path: Path_) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def swap_type(value: object) -> object:
    swaps: dict[type, object] = {str: 7, int: "7", float: True, bool: 1, list: {}, dict: [], type(None): 0.5}
    return swaps.get(type(value))


@st.composite
def mutated(draw: st.DrawFn, kind: str, builders: dict[str, Callable[[], Doc]]) -> object:
    doc: Any = copy.deepcopy(builders[kind]())
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        spots = locations(doc)
        operation = draw(st.sampled_from(["delete", "swap", "junk", "unknown", "deep", "wrap", "root"]))
        if operation == "root":
            doc = draw(json_values)
            continue
        if not spots:
            break
        path = draw(st.sampled_from(spots))
        parent = parent_of(doc, path)
        key = path[-1]
        if operation == "delete":
            del parent[key]
        elif operation == "swap":
            parent[key] = swap_type(parent[key])
        elif operation == "junk":
            parent[key] = draw(json_values)
        elif operation == "unknown" and isinstance(parent[key], dict):
            parent[key][draw(st.text(min_size=1, max_size=8))] = draw(json_values)
        elif operation == "deep":
            parent[key] = deep(draw(st.integers(min_value=50, max_value=3000)), draw(scalars))
        elif operation == "wrap":
            parent[key] = [parent[key]]
    return doc


def check_parse(kind: str, data: object) -> None:
    model, problems = PARSERS[kind](data, f"{kind}.json")
    assert (model is None) == bool(problems), (model, problems)
    for problem in problems:
        assert problem.file == f"{kind}.json"
        assert problem.pointer == "" or problem.pointer.startswith("/")
        assert len(str(problem).splitlines()) == 1, problem


KINDS = ["graph", "package", "runtime", "model", "override"]


@pytest.mark.parametrize("kind", KINDS)
def test_mutated_manifests_give_model_or_problems(kind: str, manifest_builders: dict[str, Any]) -> None:
    @settings(max_examples=300, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(data=mutated(kind, manifest_builders))
    def run(data: object) -> None:
        check_parse(kind, data)

    run()


@pytest.mark.parametrize("kind", KINDS)
def test_arbitrary_json_gives_model_or_problems(kind: str) -> None:
    @settings(max_examples=200, database=None, deadline=None)
    @given(data=json_values)
    def run(data: object) -> None:
        check_parse(kind, data)

    run()


@pytest.mark.parametrize("kind", KINDS)
def test_loaders_only_raise_emulator_errors(
    kind: str, manifest_builders: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "packages" / "123456789012-SAMPLE_CODE-1.0"
    folder.mkdir(parents=True)
    path = folder / ("package.json" if kind == "package" else f"{kind}.json")

    @settings(
        max_examples=100,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        data=mutated(kind, manifest_builders), raw=st.booleans(), cut=st.integers(min_value=0, max_value=400)
    )
    def run(data: object, raw: bool, cut: int) -> None:
        try:
            text = json.dumps(data)
        except RecursionError:
            text = "[" * 100_000
        if raw:
            text = text[:cut]  # truncated, usually not JSON at all
        path.write_text(text)
        try:
            model = LOADERS[kind](path)
        except EmulatorError as error:
            assert str(error)
            if isinstance(error, ManifestError):
                assert all(problem.file == str(path) for problem in error.problems)
        else:
            assert model is not None

    run()


@pytest.mark.parametrize("kind", KINDS)
def test_deeply_nested_values_anywhere(kind: str, manifest_builders: dict[str, Any]) -> None:
    doc = manifest_builders[kind]()
    for path in locations(doc):
        mutated_doc = copy.deepcopy(doc)
        parent_of(mutated_doc, path)[path[-1]] = deep(20_000, "x")
        model, problems = PARSERS[kind](mutated_doc, "x.json")
        assert model is None or not problems
