"""The build stage: panorama-cli compatible container and model assets, built with a real Docker engine.

    from emulator.builder import build_container
    from emulator.project import Project

    asset = build_container(Project(Path(".")), "code", Path("packages/123456789012-APP-1.0"))
    asset.asset_path   # assets/<sha256>.tar.gz

The engine sits behind ``ImageBuilder`` (``DockerBuilder`` by default; ``emulator.builder.fake.FakeBuilder``
for tests without an engine).
"""

from emulator.builder.assets import (
    BUILT_MESSAGE,
    BuiltAsset,
    build_container,
    check_asset_name,
    export_container,
)
from emulator.builder.base_image import BASE_IMAGE_REPOSITORY, BASE_IMAGE_TAGS, ensure_base_image
from emulator.builder.docker_build import BuildEvent, DockerBuilder, ImageBuilder, ImageInfo, PullError
from emulator.builder.raw_model import MODEL_MESSAGE, add_raw_model, verify_model_archive

__all__ = [
    "BASE_IMAGE_REPOSITORY",
    "BASE_IMAGE_TAGS",
    "BUILT_MESSAGE",
    "MODEL_MESSAGE",
    "BuildEvent",
    "BuiltAsset",
    "DockerBuilder",
    "ImageBuilder",
    "ImageInfo",
    "PullError",
    "add_raw_model",
    "build_container",
    "check_asset_name",
    "ensure_base_image",
    "export_container",
    "verify_model_archive",
]
