"""The engine layer against the real Docker engine: streamed build events, failures, export streams."""

from __future__ import annotations

import io
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from emulator.builder.docker_build import BuildEvent, DockerBuilder, PullError
from emulator.errors import BuildError, EngineError

pytestmark = pytest.mark.docker


@pytest.fixture
def builder(docker_engine: Any) -> DockerBuilder:
    return DockerBuilder(docker_engine)


def context(tmp_path: Path, dockerfile: str) -> Path:
    (tmp_path / "Dockerfile").write_text(dockerfile)
    (tmp_path / "hello.txt").write_text("hello from the build context\n")
    return tmp_path


def test_build_streams_steps_and_output_and_returns_the_image(
    builder: DockerBuilder, tiny_image: str, tmp_path: Path, docker_engine: Any
) -> None:
    events: list[BuildEvent] = []
    dockerfile = f"FROM {tiny_image}\nCOPY hello.txt /hello.txt\nRUN echo line one && echo line two >&2\n"
    image_id = builder.build(
        context(tmp_path, dockerfile), "pe-build-test-events", pull=False, on_event=events.append
    )
    try:
        assert image_id == docker_engine.images.get("pe-build-test-events:latest").id
        steps = [(event.step, event.steps) for event in events if event.kind == "step"]
        assert steps == [(1, 3), (2, 3), (3, 3)]
        output = [re.sub(r"\x1b\[[0-9;]*m", "", event.text) for event in events if event.kind == "output"]
        assert "line one" in output
        assert "line two" in output  # stderr, which the engine paints red
        info = builder.image("pe-build-test-events")
        assert info is not None and info.id == image_id and info.has_command and info.size > 0
    finally:
        docker_engine.images.remove(image_id, force=True)


def test_failing_step_carries_the_step_and_the_last_lines(
    builder: DockerBuilder, tiny_image: str, tmp_path: Path
) -> None:
    dockerfile = f"FROM {tiny_image}\nRUN echo about to fail && exit 7\n"
    with pytest.raises(BuildError) as caught:
        builder.build(
            context(tmp_path, dockerfile), "pe-build-test-fail", pull=False, on_event=lambda _: None
        )
    error = caught.value
    assert not isinstance(error, PullError)
    assert error.step == "Step 2/2 : RUN echo about to fail && exit 7"
    assert "returned a non-zero code: 7" in error.message
    assert error.log_tail == ["about to fail"]


def test_a_base_image_that_cannot_be_pulled_is_a_pull_error(builder: DockerBuilder, tmp_path: Path) -> None:
    dockerfile = "FROM pe-build-test/no-such-base:1.0\nRUN true\n"
    with pytest.raises(PullError) as caught:
        builder.build(context(tmp_path, dockerfile), "pe-build-test-pull", pull=True, on_event=lambda _: None)
    assert caught.value.step == "Step 1/2 : FROM pe-build-test/no-such-base:1.0"
    assert "\n" not in caught.value.message.strip()


def test_a_dockerfile_syntax_error_is_a_build_error(builder: DockerBuilder, tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"(?i)unknown instruction"):
        builder.build(
            context(tmp_path, "FROMM scratch\n"), "pe-build-test-syntax", pull=False, on_event=print
        )


def test_export_streams_the_filesystem_and_removes_the_container(
    builder: DockerBuilder, tiny_image: str, docker_engine: Any
) -> None:
    with builder.export(tiny_image) as chunks:
        assert _containers_of(docker_engine, tiny_image) != []
        data = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        names = archive.getnames()
    assert "bin/sh" in names and ".dockerenv" in names and "etc/hostname" in names
    assert _containers_of(docker_engine, tiny_image) == []


def _containers_of(engine: Any, image: str) -> list[str]:
    """Containers made from ``image`` (a tag of this run: other users of the engine do not count)."""
    return [container.id for container in engine.containers.list(all=True, filters={"ancestor": image})]


def test_export_stopped_early_still_removes_the_container(
    builder: DockerBuilder, tiny_image: str, docker_engine: Any
) -> None:
    with pytest.raises(RuntimeError, match="consumer gave up"), builder.export(tiny_image) as chunks:
        next(iter(chunks))
        raise RuntimeError("consumer gave up")
    assert _containers_of(docker_engine, tiny_image) == []


def test_an_image_without_a_command_can_be_exported(
    builder: DockerBuilder, tmp_path: Path, docker_engine: Any
) -> None:
    image_id = builder.build(
        context(tmp_path, "FROM scratch\nCOPY hello.txt /hello.txt\n"),
        "pe-build-test-scratch",
        pull=False,
        on_event=lambda _: None,
    )
    try:
        info = builder.image(image_id)
        assert info is not None and not info.has_command
        with (
            builder.export(image_id) as chunks,
            tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as archive,
        ):
            hello = archive.extractfile("hello.txt")
            assert hello is not None and hello.read() == b"hello from the build context\n"
    finally:
        docker_engine.images.remove(image_id, force=True)


def test_unknown_images(builder: DockerBuilder) -> None:
    assert builder.image("pe-build-test/no-such-image:1.0") is None
    assert builder.image("Not A Valid Reference") is None
    with pytest.raises(EngineError, match="no image"), builder.export("pe-build-test/no-such-image:1.0"):
        pass
    with pytest.raises(EngineError, match=r"cannot pull pe-build-test/no-such-image:1\.0"):
        builder.pull("pe-build-test/no-such-image:1.0", lambda _: None)
