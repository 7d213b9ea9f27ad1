"""What a build says about the offline stand-in: the references it serves, Python names, missing bases.

The in-package fake engine plays the Docker engine; the real engine's side is in test_base_image.py and the
published-app end-to-end tests.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from _build_helpers import write_package
from rich.console import Console

from emulator.builder import build_container
from emulator.builder.base_image import (
    LABEL_PYTHON,
    LABEL_PYTHON_NAMES,
    LABEL_STAND_IN,
    STAND_IN_REFERENCES,
    BaseImageError,
    normalise_reference,
)
from emulator.builder.dockerfile import parse_dockerfile
from emulator.builder.fake import FakeBuilder
from emulator.builder.stand_in import python_name_note, python_names_used
from emulator.errors import BuildError
from emulator.project import Project

STAND_IN_LABELS = {LABEL_STAND_IN: "true", LABEL_PYTHON: "3.11.2", LABEL_PYTHON_NAMES: "python3.8 python3.7"}
LATEST = "public.ecr.aws/panorama/panorama-application:latest"
NO_REGISTRY = 'Get "https://public.ecr.aws/v2/": dial tcp: lookup public.ecr.aws: no such host'
# Every FROM line published Dockerfiles use, as written there.
PUBLISHED_FROMS = (
    "public.ecr.aws/panorama/panorama-application",
    "public.ecr.aws/panorama/panorama-application:latest",
    "public.ecr.aws/panorama/panorama-application:1.1.0-arm64v8",
    "public.ecr.aws/panorama/panorama-application:1.2.0-py3.8",
    "public.ecr.aws/panorama/panorama-application:1.2.1-arm64v8",
    "public.ecr.aws/panorama/panorama-application/sdkv1/python3.8/aarch64:latest",
)


def stand_in_engine(
    *, pull_failure: str | None = NO_REGISTRY, labels: dict[str, str] | None = None
) -> FakeBuilder:
    """A fake engine holding the stand-in under every reference, with no registry in reach."""
    stand_in = labels if labels is not None else STAND_IN_LABELS
    return FakeBuilder(
        local_images=set(STAND_IN_REFERENCES),
        labels={ref: stand_in for ref in STAND_IN_REFERENCES},
        pull_failure=pull_failure,
    )


def package(root: Path, dockerfile: str, entry_path: str = "python3") -> Path:
    folder = write_package(root, dockerfile=dockerfile)
    descriptor = json.loads((folder / "descriptor.json").read_text())
    descriptor["runtimeDescriptor"]["entry"]["path"] = entry_path
    (folder / "descriptor.json").write_text(json.dumps(descriptor, indent=4))
    return folder


def build(root: Path, folder: Path, builder: FakeBuilder, **options: bool) -> str:
    out = io.StringIO()
    build_container(
        Project(root),
        "code",
        folder,
        builder=builder,
        console=Console(file=out, width=400, highlight=False),
        **options,
    )
    return out.getvalue()


@pytest.mark.parametrize("reference", PUBLISHED_FROMS)
@pytest.mark.parametrize("local_image", [False, True], ids=["pull", "local-image"])
def test_every_published_base_builds_offline_and_says_once_that_the_stand_in_serves_it(
    project: Path, reference: str, local_image: bool
) -> None:
    folder = package(project, f"FROM {reference}\nCOPY src /panorama\n")
    builder = stand_in_engine()
    text = build(project, folder, builder, local_image=local_image)
    lines = [line for line in text.splitlines() if "offline stand-in" in line]
    assert len(lines) == 1, text
    assert f"the offline stand-in serves {reference} (Debian, Python 3.11.2, amd64" in lines[0]
    if local_image:
        assert [pull for _, _, pull in builder.builds] == [False]
    else:
        assert "no such host" in lines[0] and "building with the local image" in lines[0]
        assert [pull for _, _, pull in builder.builds] == [True, False]


def test_an_own_base_built_on_the_stand_in_is_named_as_such(project: Path) -> None:
    builder = stand_in_engine()
    own = {**STAND_IN_LABELS, "org.example.app": "base"}  # labels are inherited, with the app's own added
    builder.local_images.add("my-panorama-base:2")
    builder.labels["my-panorama-base:2"] = own
    folder = package(project, "FROM my-panorama-base:2\nCOPY src /panorama\n")
    text = build(project, folder, builder, local_image=True)
    assert "the offline stand-in serves my-panorama-base:2 (built on it)" in text


def test_a_base_of_another_kind_gets_no_stand_in_line(project: Path) -> None:
    builder = FakeBuilder(local_images={"debian:12"}, pull_failure=NO_REGISTRY)
    folder = package(project, "FROM debian:12\nCOPY src /panorama\n")
    text = build(project, folder, builder)
    assert "offline stand-in" not in text and text.count("building with the local image") == 1


def test_a_reference_the_stand_in_lacks_names_the_base_image_tag_command(project: Path) -> None:
    ref = "public.ecr.aws/panorama/panorama-application:1.0.0-gpu"
    folder = package(project, f"FROM {ref}\nCOPY src /panorama\n")
    for local_image in (False, True):
        with pytest.raises(BuildError) as caught:
            build(project, folder, stand_in_engine(), local_image=local_image)
        message = str(caught.value)
        assert "\n" not in message
        assert message.endswith(
            f"to build FROM the offline stand-in instead: panorama-emulator base-image --tag {ref}"
        )
        assert f"the engine has no local {ref} either" in message


def test_a_published_reference_without_the_stand_in_names_the_base_image_command(project: Path) -> None:
    ref = "public.ecr.aws/panorama/panorama-application/sdkv1/python3.8/aarch64:latest"
    folder = package(project, f"FROM {ref}\nCOPY src /panorama\n")
    with pytest.raises(BuildError) as caught:
        build(project, folder, FakeBuilder(pull_failure=NO_REGISTRY))
    assert str(caught.value).endswith("build the offline stand-in with: panorama-emulator base-image")


def test_a_digest_reference_says_no_tag_can_stand_in_for_it(project: Path) -> None:
    ref = "public.ecr.aws/panorama/panorama-application@sha256:" + "a" * 64
    folder = package(project, f"FROM {ref}\nCOPY src /panorama\n")
    with pytest.raises(BuildError) as caught:
        build(project, folder, stand_in_engine())
    message = str(caught.value)
    assert "names an image by digest, which no local tag can stand in for" in message and "\n" not in message


def test_python_names_of_the_real_images_get_one_note(project: Path) -> None:
    folder = package(
        project,
        f"FROM {LATEST}\nCOPY src /panorama\nRUN python3.8 -m pip install -r /panorama/requirements.txt\n"
        "RUN pip3 install six && python3.8 -c 'import six'\n",
        entry_path="python3.7",
    )
    text = build(project, folder, stand_in_engine(), local_image=True)
    notes = [line for line in text.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: Dockerfile:3 (python3.8), Dockerfile:4 (python3.8) and descriptor.json entry.path (python3.7) "
        "rely on python3.7 / python3.8, which the offline stand-in serves with its own Python 3.11.2; "
        "the real image has Python 3.8 (see docs/base-image.md)"
    ]


def test_plain_python3_and_pip3_get_no_note(project: Path) -> None:
    folder = package(project, f"FROM {LATEST}\nCOPY src /panorama\nRUN pip3 install six && python3 -V\n")
    assert "note:" not in build(project, folder, stand_in_engine(), local_image=True)


def test_no_note_on_a_real_base_image(project: Path) -> None:
    builder = FakeBuilder(local_images={LATEST})  # no stand-in label: the real image, pulled earlier
    folder = package(project, f"FROM {LATEST}\nRUN python3.8 -V\n", entry_path="python3.8")
    assert "note:" not in build(project, folder, builder, local_image=True)


def test_python_names_are_read_from_run_steps_and_the_entry_path() -> None:
    instructions = parse_dockerfile(
        "FROM x\nRUN apt-get install -y python3.8-dev python3-pip\nRUN /usr/bin/python3.7 -m pip -V\n"
        "CMD python3.6 app.py\nRUN pip3.8 install a && pip3 install b\n"
    )
    assert python_names_used(instructions, "/usr/local/bin/python3.8") == [
        ("Dockerfile:3", "python3.7"),
        ("Dockerfile:5", "pip3.8"),
        ("descriptor.json entry.path", "python3.8"),
    ]
    assert python_name_note([("Dockerfile:3", "python3.11")], "3.11.2") is None
    assert python_name_note([("Dockerfile:3", "python3.8")], None) is None


def test_a_stand_in_older_than_its_python_names_says_how_to_update_it(project: Path) -> None:
    old = {LABEL_STAND_IN: "true", LABEL_PYTHON: "3.11.2"}
    builder = stand_in_engine(labels=old)
    builder.failure = BuildError(
        "The command '/bin/sh -c python3.8 -m pip list' returned a non-zero code: 127",
        step="Step 2/2 : RUN python3.8 -m pip list",
        log_tail=["/bin/sh: 1: python3.8: not found"],
    )
    folder = package(project, f"FROM {LATEST}\nRUN python3.8 -m pip list\n")
    with pytest.raises(BuildError) as caught:
        build(project, folder, builder, local_image=True)
    assert str(caught.value).endswith(
        "this stand-in predates its python3.8 name: "
        "update it with panorama-emulator base-image, then build again"
    )


def test_references_are_normalised_and_digests_refused() -> None:
    assert normalise_reference("my-base") == "my-base:latest"
    assert normalise_reference("localhost:5000/team/base") == "localhost:5000/team/base:latest"
    assert normalise_reference("localhost:5000/team/base:2.1") == "localhost:5000/team/base:2.1"
    with pytest.raises(BaseImageError, match="by digest"):
        normalise_reference("base@sha256:" + "0" * 64)
    with pytest.raises(BaseImageError, match="not a Docker image reference"):
        normalise_reference("My Base")
