"""The options that several commands share: the limit flags show Limits's own defaults and make Limits."""

from __future__ import annotations

import dataclasses

import pytest

from emulator.cli_options import LIMIT_FLAGS, limits_of
from emulator.device.limits import Limits
from emulator.errors import DeviceError


def test_the_defaults_shown_are_those_of_limits() -> None:
    defaults = {field.name: field.default for field in dataclasses.fields(Limits)}
    assert {field: shown for _, field, _, _, shown in LIMIT_FLAGS} == defaults


def test_limits_of_keeps_the_defaults_of_flags_not_given() -> None:
    assert limits_of(memory_limit=None, pids_limit=None, storage_limit=None) == Limits()
    given = limits_of(memory_limit=64, pids_limit=None, storage_limit=0)
    assert given == Limits(memory_mib=64, storage_mib=0)
    with pytest.raises(DeviceError, match="pids must be 0"):
        limits_of(pids_limit=-1)
