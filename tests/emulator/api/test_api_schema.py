"""Property-based tests of the device API from its own OpenAPI description (schemathesis), against a live
server over a real device: no request, however odd, gets a server error or an undocumented answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from _api_helpers import ensure_deployed
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from emulator.api import BackgroundServer

pytestmark = [pytest.mark.docker, pytest.mark.sandbox, pytest.mark.slow]

EXAMPLES = 15
"""Examples generated per operation (bounded: every lifecycle call boots real sandboxes)."""
STREAMS = r"(hdmi\.mjpeg|/logs/stream)$"
"""Endless responses, exercised by their own tests."""

# Bundles are raw bytes, like any binary upload.
schemathesis.serializer.alias("application/gzip", "application/octet-stream")


def test_generated_requests_get_documented_answers_and_never_5xx(
    people: httpx.Client, real_server: BackgroundServer, people_counter_project: Path
) -> None:
    schema = schemathesis.openapi.from_url(f"{real_server.url}/openapi.json").exclude(path_regex=STREAMS)
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()
        tested.append(operation.label)

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: schemathesis.Case) -> None:
            case.call_and_validate(base_url=real_server.url, checks=checks, timeout=120)

        call()
        # Each operation starts from a running app, whatever the previous one did to the device.
        ensure_deployed(people, people_counter_project)
    assert "POST /api/app/bundle" in tested and "GET /api/storage/file" in tested and len(tested) >= 16
