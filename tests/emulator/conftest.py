"""Fixtures for the manifest and project tests: valid manifests shaped like panorama-cli's, fresh per test."""

from __future__ import annotations

from typing import Any

import pytest

Doc = dict[str, Any]


def graph_doc() -> Doc:
    """A valid graph: abstract camera -> code node -> HDMI, a float32 parameter, a routing rule."""
    return {
        "nodeGraph": {
            "envelopeVersion": "2021-01-01",
            "packages": [
                {"name": "123456789012::SAMPLE_CODE", "version": "1.0"},
                {"name": "panorama::abstract_rtsp_media_source", "version": "1.0"},
                {"name": "panorama::hdmi_data_sink", "version": "1.0"},
            ],
            "nodes": [
                {
                    "name": "code_node",
                    "interface": "123456789012::SAMPLE_CODE.interface",
                    "overridable": False,
                    "launch": "onAppStart",
                },
                {
                    "name": "camera_node",
                    "interface": "panorama::abstract_rtsp_media_source.rtsp_v1_interface",
                    "overridable": True,
                    "launch": "onAppStart",
                    "decorator": {"title": "Camera", "description": "The camera"},
                },
                {"name": "output_node", "interface": "panorama::hdmi_data_sink.hdmi0", "overridable": True},
                {
                    "name": "threshold",
                    "interface": "float32",
                    "value": 60,
                    "overridable": True,
                    "decorator": {"title": "Threshold", "description": "Minimum confidence."},
                },
            ],
            "edges": [
                {"producer": "camera_node.video_out", "consumer": "code_node.video_in"},
                {"producer": "code_node.video_out", "consumer": "output_node.video_in"},
                {"producer": "threshold", "consumer": "code_node.threshold"},
            ],
            "networkRoutingRules": [{"node": "code_node", "containerPort": 8080, "hostPort": 8081}],
        }
    }


def package_doc() -> Doc:
    """A valid code package with a built container asset and a network port."""
    return {
        "nodePackage": {
            "envelopeVersion": "2021-01-01",
            "name": "SAMPLE_CODE",
            "version": "1.0",
            "description": "Default description for package SAMPLE_CODE",
            "assets": [
                {
                    "name": "code_asset",
                    "implementations": [
                        {
                            "type": "container",
                            "assetUri": "a" * 64 + ".tar.gz",
                            "descriptorUri": "b" * 64 + ".json",
                            "requirements": [
                                {
                                    "type": "hardware_access",
                                    "inferenceAccelerators": [
                                        {
                                            "deviceType": "nvhost_gpu",
                                            "sharedResourcePolicy": {"policy": "allow_all"},
                                        }
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ],
            "interfaces": [
                {
                    "name": "interface",
                    "category": "business_logic",
                    "asset": "code_asset",
                    "inputs": [
                        {"name": "video_in", "type": "media"},
                        {"name": "threshold", "type": "float32", "default": 50},
                        {
                            "name": "label",
                            "type": "string",
                            "default": "person",
                            "description": "What to count",
                        },
                        {"name": "enabled", "type": "boolean", "default": True},
                        {"name": "count", "type": "int32", "default": 3, "maxConnections": 1},
                    ],
                    "outputs": [{"description": "Video stream output", "name": "video_out", "type": "media"}],
                    "network": {"inboundPorts": [{"port": 8080, "description": "web"}]},
                }
            ],
        }
    }


def runtime_descriptor_doc() -> Doc:
    """A valid code descriptor."""
    return {
        "runtimeDescriptor": {
            "envelopeVersion": "2021-01-01",
            "entry": {
                "path": "python3",
                "name": "/panorama/app.py",
                "arguments": ["--verbose"],
                "environment": [{"name": "MODE", "value": "test"}],
            },
        }
    }


def model_descriptor_doc() -> Doc:
    """A valid model descriptor."""
    return {
        "mlModelDescriptor": {
            "envelopeVersion": "2021-01-01",
            "framework": "PYTORCH",
            "frameworkVersion": "1.8",
            "precisionMode": "FP16",
            "inputs": [{"name": "data", "shape": [1, 3, 224, 224]}],
        }
    }


def override_doc() -> Doc:
    """A valid override replacing the abstract camera by two cameras and routing a port."""
    return {
        "nodeGraphOverrides": {
            "envelopeVersion": "2021-01-01",
            "packages": [
                {"name": "123456789012::CAMERA_A", "version": "1.0"},
                {"name": "123456789012::CAMERA_B", "version": "1.0"},
            ],
            "nodes": [
                {"name": "CAMERA_A", "interface": "123456789012::CAMERA_A.CAMERA_A", "overridable": True},
                {"name": "CAMERA_B", "interface": "123456789012::CAMERA_B.CAMERA_B", "overridable": True},
            ],
            "nodeOverrides": [
                {"replace": "camera_node", "with": [{"name": "CAMERA_A"}, {"name": "CAMERA_B"}]}
            ],
            "networkRoutingRules": [{"node": "code_node", "containerPort": 8080, "hostPort": 9090}],
        }
    }


@pytest.fixture
def graph_data() -> Doc:
    """A fresh valid graph document."""
    return graph_doc()


@pytest.fixture
def package_data() -> Doc:
    """A fresh valid package document."""
    return package_doc()


@pytest.fixture
def runtime_descriptor_data() -> Doc:
    """A fresh valid runtime descriptor document."""
    return runtime_descriptor_doc()


@pytest.fixture
def model_descriptor_data() -> Doc:
    """A fresh valid model descriptor document."""
    return model_descriptor_doc()


@pytest.fixture
def override_data() -> Doc:
    """A fresh valid override document."""
    return override_doc()


@pytest.fixture(scope="session")
def manifest_builders() -> dict[str, Any]:
    """Builders of fresh valid documents, by kind (graph, package, runtime, model, override)."""
    return {
        "graph": graph_doc,
        "package": package_doc,
        "runtime": runtime_descriptor_doc,
        "model": model_descriptor_doc,
        "override": override_doc,
    }
