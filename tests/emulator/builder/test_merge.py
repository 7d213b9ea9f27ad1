"""panorama-cli's rules for adding an asset to package.json and graph.json."""

from __future__ import annotations

from typing import Any

from emulator.builder.merge import add_graph_node, merge_asset, referenced_uris

A, B = "a" * 64, "b" * 64


def package(assets: list[Any], interfaces: list[Any]) -> dict[str, Any]:
    return {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "name": "SAMPLE_CODE",
            "version": "1.0",
            "description": "",
            "assets": assets,
            "interfaces": interfaces,
        }
    }


def container(name: str, sha: str, descriptor: str, **extra: Any) -> dict[str, Any]:
    implementation = {"type": "container", "assetUri": f"{sha}.tar.gz", "descriptorUri": f"{descriptor}.json"}
    implementation.update(extra)
    return {"name": name, "implementations": [implementation]}


def merge(document: dict[str, Any], name: str = "code", kind: str = "container", sha: str = B) -> Any:
    return merge_asset(
        document,
        name=name,
        kind=kind,
        asset_uri=f"{sha}.tar.gz",
        descriptor_uri=f"{sha}.json",
        account="123456789012",
        package_name="SAMPLE_CODE",
    )


def test_a_new_container_asset_brings_an_interface_and_a_graph_node() -> None:
    result = merge(package([], []))
    body = result.package["nodePackage"]
    assert body["assets"] == [container("code", B, B)]
    assert body["interfaces"] == [
        {
            "name": "code_interface",
            "category": "business_logic",
            "asset": "code",
            "inputs": [{"name": "video_in", "type": "media"}],
            "outputs": [{"name": "video_out", "type": "media"}],
        }
    ]
    assert result.node == {
        "name": "code_node",
        "interface": "123456789012::SAMPLE_CODE.code_interface",
        "overridable": False,
        "launch": "onAppStart",
    }
    assert not result.replaced and result.stale == ()
    assert list(result.asset) == ["name", "implementations"]
    assert list(result.asset["implementations"][0]) == ["type", "assetUri", "descriptorUri"]


def test_an_interface_that_already_names_the_asset_means_no_new_interface_or_node() -> None:
    interface = {
        "name": "code_interface",
        "category": "business_logic",
        "asset": "code",
        "inputs": [],
        "outputs": [],
    }
    result = merge(package([], [interface]))
    assert result.package["nodePackage"]["interfaces"] == [interface]
    assert result.node is None and result.interface is None


def test_replacing_an_asset_moves_it_last_keeps_requirements_and_lists_stale_blobs() -> None:
    requirements = [{"type": "hardware_access", "inferenceAccelerators": [{"deviceType": "nvhost_gpu"}]}]
    other = container("other", "c" * 64, "d" * 64)
    document = package([container("code", A, B, requirements=requirements), other], [])
    result = merge(document)
    assert result.replaced and result.node is None  # a replaced asset never adds an interface
    assert result.package["nodePackage"]["assets"] == [
        other,
        container("code", B, B, requirements=requirements),
    ]
    assert result.stale == (f"{A}.tar.gz",)  # the descriptor name did not change
    assert document["nodePackage"]["assets"][0]["name"] == "code"  # the input is left alone


def test_a_model_asset_goes_first_with_an_ml_model_interface_and_a_node_named_after_it() -> None:
    code = container("code", A, A)
    result = merge(package([code], []), name="model", kind="model")
    assert result.package["nodePackage"]["assets"][0] == {
        "name": "model",
        "implementations": [{"type": "model", "assetUri": f"{B}.tar.gz", "descriptorUri": f"{B}.json"}],
    }
    assert result.package["nodePackage"]["assets"][1] == code
    assert result.interface is not None and result.interface["category"] == "ml_model"
    assert result.interface["name"] == "model_interface"
    assert result.node is not None and result.node["name"] == "model"


def test_a_replaced_model_does_not_keep_requirements() -> None:
    old = {
        "name": "model",
        "implementations": [{"type": "model", "assetUri": "x.tar.gz", "requirements": []}],
    }
    result = merge(package([old], []), name="model", kind="model")
    assert "requirements" not in result.package["nodePackage"]["assets"][0]["implementations"][0]
    assert result.stale == ("x.tar.gz",)


def test_graph_node_is_appended_once() -> None:
    graph = {
        "nodeGraph": {"envelopeVersion": "2021-01-01", "packages": [], "nodes": [{"name": "x"}], "edges": []}
    }
    node = {
        "name": "code_node",
        "interface": "1::P.code_interface",
        "overridable": False,
        "launch": "onAppStart",
    }
    added, changed = add_graph_node(graph, node)
    assert changed and added["nodeGraph"]["nodes"] == [{"name": "x"}, node]
    again, changed = add_graph_node(added, node)
    assert not changed and again == added
    assert graph["nodeGraph"]["nodes"] == [{"name": "x"}]


def test_referenced_uris_ignore_malformed_parts() -> None:
    document = package([container("code", A, B), {"name": "broken", "implementations": "nope"}, 7], [])
    assert referenced_uris(document) == {f"{A}.tar.gz", f"{B}.json"}
    assert referenced_uris({"nodePackage": []}) == set()
