from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mlink.messages import format_stamp
from transforms.timestamps import DateTimeParser

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ns_of(moment: datetime) -> int:
    """Exact ns since the epoch via integer timedelta arithmetic (no float rounding)."""
    return (moment - EPOCH) // timedelta(microseconds=1) * 1000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("1970-01-01 00:00:00.000000", 0),
        ("1970-01-01 00:00:00.000001", 1_000),
        ("2024-09-10 20:26:35.556337", 1_725_999_995_556_337_000),
        ("2024-09-10 20:26:35", 1_725_999_995_000_000_000),
        ("2024-09-10T20:26:35.5", 1_725_999_995_500_000_000),
        ("2024-09-10 20:26:35.556337Z", 1_725_999_995_556_337_000),
        ("2024-09-10 20:26:35.123456789", 1_725_999_995_123_456_789),
        ("2024-02-29 23:59:59.999999", 1_709_251_199_999_999_000),
        ("1969-12-31 23:59:59.999999", -1_000),
        ("1900-01-01 00:00:00.000000", -2_208_988_800_000_000_000),
    ],
)
def test_known_values(text: str, ns: int) -> None:
    assert DateTimeParser()(text) == ns


def test_agrees_with_the_header_stamp_formatter() -> None:
    parse = DateTimeParser()
    for ns in (0, 1_725_999_995_556_337_000, 4_102_444_799_999_999_000):
        assert parse(format_stamp(ns)) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "2024-09-10",
        "2024-09-10 20:26",
        "2024/09/10 20:26:35.556337",
        "2024-09-10 20:26:35,556337",
        "2024-09-10 20:26:35.",
        "2024-09-10 20:26:35.1234567890",
        "2024-09-10 20:26:35.55633a",
        "2024-09-10 20:26:35.+55633",
        "2024-09-10 20:26:35." + "\uff15" * 6,  # full-width digits: str.isdigit() says yes
        "2024-02-30 20:26:35.000000",
        "2024-13-01 00:00:00.000000",
        "2024-09-10 24:00:00.000000",
        "2024-09-10 23:60:00.000000",
        "2024-09-10 23:59:60.000000",
        "2024-09-10 2x:00:00.000000",
        "+024-09-10 20:26:35.556337",
    ],
)
def test_malformed_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not an MLink DateTime"):
        DateTimeParser()(text)


def test_a_cached_second_still_checks_the_fraction() -> None:
    parse = DateTimeParser()
    assert parse("2024-09-10 20:26:35.000001") == 1_725_999_995_000_001_000
    with pytest.raises(ValueError, match="fraction"):
        parse("2024-09-10 20:26:35.0000x1")


def test_cache_is_bounded_and_answers_stay_right() -> None:
    parse = DateTimeParser(max_cached=4)
    base = datetime(2024, 9, 10, 20, 26, 35, tzinfo=UTC)
    for seconds in range(50):
        moment = base + timedelta(seconds=seconds, microseconds=seconds)
        assert parse(moment.strftime("%Y-%m-%d %H:%M:%S.%f")) == ns_of(moment)
    assert len(parse._seconds) <= 4
    assert len(parse._days) <= 4


@given(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)))
def test_matches_datetime_for_any_moment(naive: datetime) -> None:
    moment = naive.replace(tzinfo=UTC)
    text = moment.strftime("%Y-%m-%d %H:%M:%S.%f").rjust(26, "0")
    assert DateTimeParser()(text) == ns_of(moment)


@given(
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(min_value=0, max_value=999_999_999),
    st.integers(min_value=1, max_value=9),
)
def test_any_fraction_length(naive: datetime, nanos: int, digits: int) -> None:
    moment = naive.replace(microsecond=0, tzinfo=UTC)
    fraction = f"{nanos:09d}"[:digits]
    text = moment.strftime("%Y-%m-%d %H:%M:%S") + "." + fraction
    expected = ns_of(moment) + int(fraction) * 10 ** (9 - digits)
    parse = DateTimeParser()
    assert parse(text) == expected
    assert parse(text) == expected  # and again from the cache
