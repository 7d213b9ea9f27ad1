"""Reading Dockerfiles: steps and their lines, base images, instructions the device ignores."""

from __future__ import annotations

from emulator.builder.dockerfile import (
    IGNORED_ON_DEVICE,
    base_images,
    ignored_instruction_warnings,
    parse_dockerfile,
    platform_of,
)

DOCKERFILE = """\
# syntax comment
FROM public.ecr.aws/panorama/panorama-application:1.2.0-py3.8

WORKDIR /panorama
ENV PIP_NO_CACHE_DIR=1
RUN apt-get update && \\
    # a comment inside a continuation is dropped
    apt-get install -y curl
COPY . .
cmd ["python3", "/panorama/app.py"]
EXPOSE 8080
"""


def test_steps_keep_the_line_they_start_on() -> None:
    steps = parse_dockerfile(DOCKERFILE)
    assert [(step.keyword, step.line) for step in steps] == [
        ("FROM", 2),
        ("WORKDIR", 4),
        ("ENV", 5),
        ("RUN", 6),
        ("COPY", 9),
        ("CMD", 10),
        ("EXPOSE", 11),
    ]
    assert steps[3].arguments == "apt-get update && apt-get install -y curl"
    assert str(steps[4]) == "COPY . ."


def test_escape_directive_changes_the_continuation_character() -> None:
    steps = parse_dockerfile("# escape=`\nFROM scratch\nRUN echo a `\n    b\nCOPY c:\\dir d\n")
    assert [(step.keyword, step.arguments, step.line) for step in steps] == [
        ("FROM", "scratch", 2),
        ("RUN", "echo a b", 3),
        ("COPY", "c:\\dir d", 5),
    ]


def test_each_ignored_instruction_gets_one_line_naming_its_place() -> None:
    warnings = ignored_instruction_warnings(parse_dockerfile(DOCKERFILE), "pkg/Dockerfile")
    assert [warning.split(": ")[0] for warning in warnings] == [
        "pkg/Dockerfile:5",
        "pkg/Dockerfile:10",
        "pkg/Dockerfile:11",
    ]
    assert "ENV is ignored on the device" in warnings[0] and "descriptor.json" in warnings[0]
    assert all("\n" not in warning for warning in warnings)
    assert set(IGNORED_ON_DEVICE) == {"ENV", "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "USER", "HEALTHCHECK"}


def test_base_images_skip_stages_scratch_and_resolve_args() -> None:
    text = (
        "ARG BASE=public.ecr.aws/panorama/panorama-application\n"
        "ARG TAG=1.2.0-py3.8\n"
        "FROM ${BASE}:$TAG AS builder\n"
        "FROM scratch AS empty\n"
        "FROM builder\n"
        "FROM --platform=linux/arm64 python:3.8 AS final\n"
        "FROM $UNKNOWN\n"
    )
    steps = parse_dockerfile(text)
    assert base_images(steps) == ["public.ecr.aws/panorama/panorama-application:1.2.0-py3.8", "python:3.8"]
    assert platform_of(parse_dockerfile("FROM a\nFROM --platform=linux/arm64/v8 b\n")) == "linux/arm64/v8"
    assert platform_of(steps) is None


def test_variables_are_scoped_and_substituted_as_the_builder_does() -> None:
    from emulator.builder.dockerfile import substitute, variables_in_force

    steps = parse_dockerfile(
        "ARG TOP=top\nARG BARE\nFROM base\nARG TOP\nARG DIR=/opt/$TOP\nENV DIR=/env\nENV HOME2 /home two\n"
        'ENV QUOTED="a b" NEXT=${DIR}/x\nCOPY a b\nFROM other\nCOPY c d\n'
    )
    found = variables_in_force(steps)
    assert found[0] == {} and found[2] == {"TOP": "top"}, "FROM lines see the ARGs before the first FROM"
    assert found[3] == {} and found[5] == {"TOP": "top", "DIR": "/opt/top"}
    assert found[8] == {"TOP": "top", "DIR": "/env", "HOME2": "/home two", "QUOTED": "a b", "NEXT": "/env/x"}
    assert found[10] == {}, "a new stage starts with no ARG or ENV of its own"
    variables = {"SET": "s", "EMPTY": ""}
    assert substitute("$SET/${SET}/${EMPTY:-d}/${SET:-d}/${SET:+w}/${EMPTY:+w}|", variables) == "s/s/d/s/w/|"
    assert substitute("${UNKNOWN}/$UNKNOWN/\\$SET", variables) == "${UNKNOWN}/$UNKNOWN/$SET"
