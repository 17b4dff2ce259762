"""The facility clock (emr.core.clock): one home for local time, driven by FILMLESS_TIMEZONE."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime

import pytest

from emr.core import clock
from filmless.settings import SettingsError, load


@pytest.fixture(autouse=True)
def _default_zone() -> Iterator[None]:
    yield
    clock.use_timezone(clock.DEFAULT_TIMEZONE)


def test_default_is_vietnam_time() -> None:
    stored = datetime(2026, 11, 23, 17, 30)  # naive UTC
    assert clock.to_local(stored) == datetime(2026, 11, 24, 0, 30)
    assert clock.to_utc(datetime(2026, 11, 24, 0, 30)) == stored
    assert clock.local_day(stored) == date(2026, 11, 24)
    assert clock.local_isoformat(stored) == "2026-11-24T00:30:00+07:00"
    assert clock.local_day_bounds(date(2026, 11, 24)) == (datetime(2026, 11, 23, 17, 0), datetime(2026, 11, 24, 17, 0))
    assert clock.local_today(datetime(2026, 12, 31, 16, 59)) == date(2026, 12, 31)
    assert clock.local_today(datetime(2026, 12, 31, 17, 0)) == date(2027, 1, 1)


def test_a_zone_with_daylight_saving_gets_the_offset_of_each_instant() -> None:
    clock.use_timezone("Europe/Berlin")
    assert clock.to_local(datetime(2026, 1, 15, 12, 0)) == datetime(2026, 1, 15, 13, 0)  # CET, UTC+1
    assert clock.to_local(datetime(2026, 7, 15, 12, 0)) == datetime(2026, 7, 15, 14, 0)  # CEST, UTC+2
    # the day of the spring change is 23 hours long
    start, end = clock.local_day_bounds(date(2026, 3, 29))
    assert (end - start).total_seconds() == 23 * 3600


def test_aware_values_are_converted_not_reinterpreted() -> None:
    aware = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
    assert clock.to_local(aware) == datetime(2026, 11, 23, 17, 0)


def test_unknown_zone_is_refused_by_the_clock_and_by_the_settings() -> None:
    with pytest.raises(ValueError, match="time zone"):
        clock.use_timezone("Asia/Saigonn")
    with pytest.raises(SettingsError, match="FILMLESS_TIMEZONE"):
        load({"FILMLESS_TIMEZONE": "Mars/Olympus"})
    assert load({}).emr.timezone == "Asia/Ho_Chi_Minh"
    assert load({"FILMLESS_TIMEZONE": "Asia/Bangkok"}).emr.timezone == "Asia/Bangkok"


def test_the_servers_own_zone_does_not_matter() -> None:
    code = ("from datetime import datetime; from emr.core import clock; "
            "t = datetime(2026, 11, 23, 17, 30); print(clock.to_local(t).isoformat(), clock.local_today(t))")
    for tz in ("UTC", "America/New_York", "Asia/Tokyo"):
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TZ": tz}, capture_output=True, text=True,
                             check=True, timeout=60).stdout.split()
        assert out == ["2026-11-24T00:30:00", "2026-11-24"], tz


def test_times_at_the_ends_of_the_calendar_clamp_instead_of_overflowing() -> None:
    """Year 1 typed in a form or a query (or 9999 in a zone west of UTC) is a zone shift away from what
    Python can hold: the earliest or latest time, refused or matching nothing, not an OverflowError."""
    assert clock.to_utc(datetime(1, 1, 1, 0, 0)) == datetime.min
    assert clock.local_day_bounds(date(1, 1, 1))[0] == datetime.min
    assert clock.local_day_bounds(date.max)[1] == datetime.max
    assert clock.to_local(datetime(9999, 12, 31, 23, 0)) == datetime.max
    clock.use_timezone("America/New_York")
    assert clock.to_utc(datetime(9999, 12, 31, 23, 0)) == datetime.max
    assert clock.to_local(datetime(1, 1, 1, 1, 0)) == datetime.min
    # Ordinary times are untouched.
    assert clock.to_utc(datetime(2026, 12, 8, 7, 0)) == datetime(2026, 12, 8, 12, 0)
