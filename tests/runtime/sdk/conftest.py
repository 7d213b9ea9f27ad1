"""Fixtures: a lab that starts bridge runtimes and app processes and cleans them up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.bridge.testing import BridgeLab


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[BridgeLab]:
    """Runtimes and app processes in ``tmp_path``; every app killed and runtime stopped afterwards."""
    with BridgeLab(tmp_path) as bridge_lab:
        yield bridge_lab
