"""Fixtures for the node plan tests: small panorama-cli style projects built in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from _plan_projects import ProjectBuilder


@pytest.fixture
def project_builder(tmp_path: Path) -> ProjectBuilder:
    """An empty panorama-cli project in a temporary directory."""
    return ProjectBuilder(tmp_path / "project")
