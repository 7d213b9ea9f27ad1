"""Unit tests of the project commands' pieces: where the account id comes from, times for export-logs."""

from __future__ import annotations

import datetime as dt

import pytest

from emulator.errors import DeviceError, ProjectError
from emulator.export_logs import parse_time
from emulator.project_tools import DEFAULT_ACCOUNT_ID, resolve_account_id


def test_account_id_given_wins_over_the_environment_and_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANORAMA_EMULATOR_ACCOUNT_ID", "111")
    found = resolve_account_id("222", aws=lambda: "333")
    assert (found.value, found.source) == ("222", "given")


def test_account_id_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANORAMA_EMULATOR_ACCOUNT_ID", "111")
    found = resolve_account_id(aws=lambda: "333")
    assert (found.value, found.source) == ("111", "environment")
    monkeypatch.delenv("PANORAMA_EMULATOR_ACCOUNT_ID")
    found = resolve_account_id(aws=lambda: "333")
    assert (found.value, found.source) == ("333", "aws")
    found = resolve_account_id(aws=lambda: None)
    assert (found.value, found.source) == (DEFAULT_ACCOUNT_ID, "default")


def test_a_bad_account_id_is_refused() -> None:
    with pytest.raises(ProjectError, match="letters and digits"):
        resolve_account_id("12/34")


def test_times_for_export_logs() -> None:
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("30m", now=10_000.0) == 10_000.0 - 1800
    assert parse_time("1700000000") == 1_700_000_000.0
    stamp = dt.datetime(2026, 12, 3, 10, 0, tzinfo=dt.timezone.utc).timestamp()
    assert parse_time("2026-12-03T10:00:00+00:00") == stamp
    with pytest.raises(DeviceError, match="ISO 8601"):
        parse_time("yesterday")
