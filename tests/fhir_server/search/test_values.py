"""Tests for search-value parsing and normalization.

Spec: http://hl7.org/fhir/R4/search.html (string, date and number sections).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.search.values import (
    DATE_MAX,
    DATE_MIN,
    InvalidValue,
    date_bounds,
    normalize_string,
    number_range_of,
    parse_date_range,
    parse_number_range,
)


def utc(
    year: int,
    month: int = 1,
    day: int = 1,
    hour: int = 0,
    minute: int = 0,
    second: int = 0,
    us: int = 0,
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


# --- normalize_string ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Émilie", "emilie"),
        ("  Jean-Luc\t PICARD \n", "jean-luc picard"),
        ("Straße", "strasse"),
        ("İstanbul", "istanbul"),
        ("Ångström", "angstrom"),
        ("ＦＵＬＬ", "full"),  # full-width compatibility forms
        ("\u3386", "mb"),  # SQUARE MB decomposes to upper case
        ("Nguyễn", "nguyen"),
        ("", ""),
    ],
)
def test_normalize_string(text: str, expected: str) -> None:
    assert normalize_string(text) == expected


def test_normalized_prefix_matches_accented_name() -> None:
    assert normalize_string("Émilie").startswith(normalize_string("EMIL"))
    assert normalize_string("Zoë Saldaña").startswith(normalize_string("zoe salda"))


def test_long_strings_are_normalized_too() -> None:
    text = "Ä" * 300
    assert normalize_string(text) == "a" * 300


@given(st.text())
def test_normalize_string_is_idempotent(text: str) -> None:
    once = normalize_string(text)
    assert normalize_string(once) == once
    assert once == once.strip()
    assert "  " not in once


@given(st.text(alphabet=st.characters(max_codepoint=127)))
def test_normalize_ascii_is_lowercase_with_single_spaces(text: str) -> None:
    assert normalize_string(text) == " ".join(text.lower().split())
    assert normalize_string(text.upper()) == normalize_string(text.lower())


# --- parse_date_range ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high"),
    [
        ("2013", utc(2013, 1, 1), utc(2014, 1, 1)),
        ("2013-02", utc(2013, 2, 1), utc(2013, 3, 1)),
        ("2013-12", utc(2013, 12, 1), utc(2014, 1, 1)),
        ("2012-02-29", utc(2012, 2, 29), utc(2012, 3, 1)),
        ("2013-01-14T10:00", utc(2013, 1, 14, 10, 0), utc(2013, 1, 14, 10, 1)),
        ("2013-01-14T10:00Z", utc(2013, 1, 14, 10, 0), utc(2013, 1, 14, 10, 1)),
        ("2013-01-14T10:00:05", utc(2013, 1, 14, 10, 0, 5), utc(2013, 1, 14, 10, 0, 6)),
        ("2013-01-14T10:00:00+05:00", utc(2013, 1, 14, 5), utc(2013, 1, 14, 5, 0, 1)),
        ("2013-01-14T23:30:00-02:00", utc(2013, 1, 15, 1, 30), utc(2013, 1, 15, 1, 30, 1)),
        (
            "2013-01-14T10:00:00.5Z",
            utc(2013, 1, 14, 10, 0, 0, 500000),
            utc(2013, 1, 14, 10, 0, 0, 600000),
        ),
        (
            "2013-01-14T10:00:00.123Z",
            utc(2013, 1, 14, 10, 0, 0, 123000),
            utc(2013, 1, 14, 10, 0, 0, 124000),
        ),
        (  # more digits than a datetime holds: microsecond precision
            "2013-01-14T10:00:00.1234567Z",
            utc(2013, 1, 14, 10, 0, 0, 123456),
            utc(2013, 1, 14, 10, 0, 0, 123457),
        ),
        ("9999", utc(9999, 1, 1), DATE_MAX),  # clamped to the supported end
        ("0001", DATE_MIN, utc(2, 1, 1)),
    ],
)
def test_parse_date_range(text: str, low: datetime, high: datetime) -> None:
    assert parse_date_range(text) == (low, high)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "13",
        "20130114",
        "2013-1-14",
        "2013-13",
        "2013-02-30",
        "2013-01-14T",
        "2013-01-14T10",
        "2013-01-14T25:00",
        "2013-01-14T10:00:60",
        "2013-01-14Z",
        "2013-01-14T10:00:00+15:00",
        "2013-01-14T10:00:00+05",
        "2013-01-14T10:00:00 05:00",
        " 2013",
        "2013\n",
        "0000",
        "\u0662\u0660\u0661\u0663",  # Arabic-Indic digits
        "9999-12-31",  # its whole day lies past DATE_MAX
        "0001-01-01T00:00:00+05:00",  # before DATE_MIN once in UTC
    ],
)
def test_parse_date_range_rejects(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_date_range(text)


def test_date_bounds_keeps_the_clamped_edge_for_period_ends() -> None:
    assert date_bounds("9999-12-31")[1] == DATE_MAX
    assert date_bounds("9999-12-31T23:00:00-05:00") == (DATE_MAX, DATE_MAX)


def test_date_constants_are_aware_and_ordered() -> None:
    assert DATE_MIN.tzinfo is UTC and DATE_MAX.tzinfo is UTC
    assert DATE_MIN < DATE_MAX


@given(st.text())
def test_parse_date_range_never_raises_anything_else(text: str) -> None:
    try:
        low, high = parse_date_range(text)
    except InvalidValue:
        return
    assert low < high
    assert DATE_MIN <= low and high <= DATE_MAX
    assert low.utcoffset() == timedelta(0)


@given(st.dates(min_value=date(1, 1, 2), max_value=date(9999, 12, 30)))
def test_day_precision_is_one_day(day: date) -> None:
    low, high = parse_date_range(day.isoformat())
    assert low == datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert high - low == timedelta(days=1)


# From February of year 1: January of year 1 starts before DATE_MIN and is clamped to it.
@given(st.dates(min_value=date(1, 2, 1), max_value=date(9999, 11, 30)))
def test_month_precision_ends_on_the_first_of_the_next_month(day: date) -> None:
    low, high = parse_date_range(day.isoformat()[:7])
    assert (low.day, high.day) == (1, 1)
    assert low.month == day.month
    assert 28 <= (high - low).days <= 31


@given(
    st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_seconds_precision_with_offset_is_the_utc_instant(moment: datetime, minutes: int) -> None:
    zone = timezone(timedelta(minutes=minutes))
    text = moment.replace(microsecond=0, tzinfo=zone).isoformat()
    low, high = parse_date_range(text)
    assert low == moment.replace(microsecond=0, tzinfo=zone)
    assert high - low == timedelta(seconds=1)


@given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31)))
def test_no_time_zone_reads_as_utc(moment: datetime) -> None:
    text = moment.isoformat()[:16]  # YYYY-MM-DDThh:mm
    assert parse_date_range(text) == parse_date_range(text + "Z")
    assert parse_date_range(text) == parse_date_range(text + "+00:00")


# --- parse_number_range ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value", "low", "high"),
    [
        # the examples of http://hl7.org/fhir/R4/search.html#number
        ("100", "100", "99.5", "100.5"),
        ("100.00", "100.00", "99.995", "100.005"),
        ("1e2", "100", "95", "105"),
        ("0.1", "0.1", "0.05", "0.15"),
        ("-5.5", "-5.5", "-5.55", "-5.45"),
        ("+7", "7", "6.5", "7.5"),
        ("1.5E-3", "0.0015", "0.001495", "0.001505"),  # one place past the mantissa
        ("007", "7", "6.5", "7.5"),
    ],
)
def test_parse_number_range(text: str, value: str, low: str, high: str) -> None:
    assert parse_number_range(text) == (Decimal(value), Decimal(low), Decimal(high))


def test_parse_number_range_keeps_precision_of_long_values() -> None:
    text = "123456789012345678901234567890.123"
    value, low, high = parse_number_range(text)
    assert str(value) == text
    assert high - low == Decimal("0.001")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "sNaN",
        "1_000",
        "1,5",
        "1.",
        ".5",
        " 1",
        "1 ",
        "0x10",
        "1e",
        "1e999999999999999999999",
        "1e-5000",
        "\u0661",  # Arabic-Indic one
        "1" * 1001,
    ],
)
def test_parse_number_range_rejects(text: str) -> None:
    with pytest.raises(InvalidValue):
        parse_number_range(text)


@given(st.text())
def test_parse_number_range_never_raises_anything_else(text: str) -> None:
    try:
        value, low, high = parse_number_range(text)
    except InvalidValue:
        return
    assert low < value < high


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_parse_number_range_round_trips_decimals(number: Decimal) -> None:
    text = format(number, "f")
    value, low, high = parse_number_range(text)
    assert value == number
    assert low < value < high
    assert (value - low) == (high - value)


def test_number_range_of_stored_values() -> None:
    assert number_range_of(Decimal("1.5")) == (Decimal("1.45"), Decimal("1.55"))
    assert number_range_of(Decimal("100")) == (Decimal("99.5"), Decimal("100.5"))
    assert number_range_of(Decimal("-2")) == (Decimal("-2.5"), Decimal("-1.5"))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "sNaN", "1e5000"])
def test_number_range_of_rejects_non_finite(value: str) -> None:
    with pytest.raises(InvalidValue):
        number_range_of(Decimal(value))
