"""The one time/version module: timestamps parsed to aware UTC, versions whose string order is their order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.versions import (
    customerp_version,
    is_older,
    normalise_timestamp,
    parse_timestamp,
    record_version,
    utcnow,
)

NOON = datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-01T12:00:00.250Z",
        "2026-03-01T12:00:00.250+00:00",
        "2026-03-01T14:00:00.250+02:00",
        "2026-03-01T07:00:00.250-05:00",
        "2026-03-01T12:00:00.250",  # naive: taken as UTC
    ],
)
def test_parse_timestamp_reads_z_offsets_and_naive_text_as_the_same_utc_instant(text: str) -> None:
    parsed = parse_timestamp(text)
    assert parsed == NOON
    assert parsed.tzinfo is UTC


def test_parse_timestamp_takes_a_naive_datetime_as_utc_and_converts_an_aware_one() -> None:
    assert parse_timestamp(datetime(2026, 3, 1, 12, 0, 0, 250000)) == NOON
    assert parse_timestamp(datetime(2026, 3, 1, 12, 0, 0, 250000)).tzinfo is UTC
    paris = NOON.astimezone(timezone(timedelta(hours=1)))
    assert parse_timestamp(paris) == NOON
    assert parse_timestamp(paris).tzinfo is UTC


def test_parse_timestamp_refuses_text_that_is_not_a_timestamp() -> None:
    with pytest.raises(ValueError, match="isoformat"):
        parse_timestamp("yesterday")


def test_utcnow_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = utcnow()
    assert now.tzinfo is UTC
    assert before <= now <= datetime.now(UTC)


def test_customerp_versions_order_as_strings_like_the_integers() -> None:
    numbers = [1, 2, 9, 10, 11, 99, 100, 1000, 123456789]
    assert sorted(customerp_version(n) for n in reversed(numbers)) == [customerp_version(n) for n in numbers]
    assert customerp_version("10") == customerp_version(10) == "000000000010"
    assert is_older(customerp_version(9), customerp_version(10))
    assert record_version("customerp", {"version": 10}) == customerp_version(10)


def test_normalise_timestamp_round_trips_and_orders_as_time() -> None:
    text = normalise_timestamp("2026-03-01T14:00:00.25+02:00")
    assert text == "2026-03-01T12:00:00.250000Z"
    assert normalise_timestamp(text) == text
    assert parse_timestamp(text) == NOON
    assert normalise_timestamp(NOON) == text
    assert normalise_timestamp(datetime(2026, 3, 1, 12, 0, 0, 250000)) == text  # naive: UTC
    later = normalise_timestamp("2026-03-01T12:00:01Z")
    assert is_older(text, later)
    assert record_version("wave", {"modifiedAt": "2026-03-01T12:00:00.25Z"}) == text
