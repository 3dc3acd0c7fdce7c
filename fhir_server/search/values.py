"""Parse and normalize search values, shared by index extraction and the search parser.

Spec: http://hl7.org/fhir/R4/search.html (string, date and number sections).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta
from decimal import Context, Decimal, localcontext
from functools import lru_cache

__all__ = [
    "DATE_MAX",
    "DATE_MIN",
    "InvalidValue",
    "date_bounds",
    "normalize_string",
    "number_range_of",
    "parse_date_range",
    "parse_number_range",
]

# A day inside Python's datetime limits, so a consumer that shifts these to a local time zone
# (psycopg in a non-UTC session) cannot overflow.
DATE_MIN = datetime(1, 1, 2, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, tzinfo=UTC)


class InvalidValue(ValueError):
    """A search or index value that does not parse as its FHIR type."""


def normalize_string(s: str) -> str:
    """Fold case and accents and collapse whitespace, for string search (starts-with)."""
    # Names are indexed by several parameters (name, given, family, phonetic) and repeat
    # across resources; long texts are not worth keeping.
    return _normalize_short(s) if len(s) <= 256 else _normalize(s)


def _normalize(s: str) -> str:
    if s.isascii():
        return " ".join(s.lower().split())
    # casefold on both sides of NFKD: compatibility forms can decompose to upper case
    # (U+3386 SQUARE MB -> "MB"), and casefold can produce decomposable characters. NFKC at
    # the end recomposes what has no accent to drop (Hangul syllables), so the 255-character
    # index form holds as much text as it can.
    decomposed = unicodedata.normalize("NFKD", s.casefold())
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(unicodedata.normalize("NFKC", stripped.casefold()).split())


_normalize_short = lru_cache(maxsize=8192)(_normalize)


# http://hl7.org/fhir/R4/datatypes.html#dateTime, with seconds optional (search.html#date),
# and no time zone read as UTC. [0-9] not \d: \d also matches non-ASCII digits.
_DATE = re.compile(
    r"(?P<year>[0-9]{4})"
    r"(?:-(?P<month>[0-9]{2})"
    r"(?:-(?P<day>[0-9]{2})"
    r"(?:T(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2})"
    r"(?::(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?"
    r")?)?)?"
)


def parse_date_range(text: str) -> tuple[datetime, datetime]:
    """Parse a FHIR date, dateTime or instant into the half-open UTC range its precision covers.

    "2013" covers the whole year, "2013-01-14T10:00" the whole minute. Ranges are clamped to
    [DATE_MIN, DATE_MAX]; a value whose range falls entirely outside is invalid.
    """
    low, high = date_bounds(text)
    if low >= high:
        raise InvalidValue(f"date outside the supported range: {text!r}")
    return low, high


def date_bounds(text: str) -> tuple[datetime, datetime]:
    """Like parse_date_range, but may return an empty range; Period ends need the clamped edge.

    A Period ending "9999-12-31" is open-ended in practice: its end's range lies past DATE_MAX,
    and the Period's high is DATE_MAX rather than the Period being dropped.
    """
    m = _DATE.fullmatch(text)
    if m is None:
        raise InvalidValue(f"not a FHIR date/dateTime: {text!r}")
    year, month, day = m["year"], m["month"], m["day"]
    hour, minute, second, fraction = m["hour"], m["minute"], m["second"], m["fraction"]
    try:
        start = datetime(
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0")[:6].ljust(6, "0")),
        )
    except ValueError as exc:
        raise InvalidValue(f"not a valid date: {text!r}") from exc
    offset = _offset(m["tz"], text)
    low = _shift(start, offset)
    if fraction is not None:
        step = timedelta(microseconds=10 ** (6 - min(len(fraction), 6)))
        high = _shift(start, offset, step)
    elif second is not None:
        high = _shift(start, offset, timedelta(seconds=1))
    elif minute is not None:
        high = _shift(start, offset, timedelta(minutes=1))
    elif day is not None:
        high = _shift(start, offset, timedelta(days=1))
    elif month is not None:
        after = (start.year + start.month // 12, start.month % 12 + 1)
        high = _shift(datetime(*after, 1), offset) if after[0] <= 9999 else DATE_MAX
    else:
        high = _shift(datetime(start.year + 1, 1, 1), offset) if year != "9999" else DATE_MAX
    return low, high


def _offset(tz: str | None, text: str) -> timedelta:
    if tz is None or tz == "Z":
        return timedelta(0)
    hours, minutes = int(tz[1:3]), int(tz[4:6])
    if hours > 14 or minutes > 59:
        raise InvalidValue(f"not a valid time zone offset: {text!r}")
    delta = timedelta(hours=hours, minutes=minutes)
    return delta if tz[0] == "+" else -delta


def _shift(local: datetime, offset: timedelta, step: timedelta = timedelta(0)) -> datetime:
    """Convert local wall time (+ step) to aware UTC, clamped to [DATE_MIN, DATE_MAX]."""
    delta = step - offset
    try:
        utc = local + delta
    except OverflowError:
        return DATE_MAX if delta > timedelta(0) else DATE_MIN
    aware = utc.replace(tzinfo=UTC)
    return min(max(aware, DATE_MIN), DATE_MAX)


# http://hl7.org/fhir/R4/datatypes.html#decimal, also allowing a leading "+" and leading zeros
# in search values. Checked before Decimal(), which would accept "NaN", "1_0" and non-ASCII
# digits.
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
# Bounds that keep arithmetic exact (no rounding) and far inside PostgreSQL numeric.
_MAX_DIGITS = 1000
_MAX_EXPONENT = 1000
_EXACT = Context(prec=_MAX_DIGITS + 10, Emax=10 * _MAX_EXPONENT, Emin=-10 * _MAX_EXPONENT)


def parse_number_range(text: str) -> tuple[Decimal, Decimal, Decimal]:
    """Parse a search number into (value, low, high): the implicit range of its precision.

    Plain notation is precise to its last written digit: "100" is [99.5, 100.5), "100.00"
    is [99.995, 100.005). Exponent notation follows the spec's own example, "1e2" is
    [95, 105): half a unit one place past the mantissa's last digit.
    """
    if _NUMBER.fullmatch(text) is None:
        raise InvalidValue(f"not a number: {text!r}")
    try:
        value = Decimal(text)
    except ArithmeticError as exc:  # an exponent beyond what decimal represents
        raise InvalidValue(f"number outside the supported range: {text[:40]!r}") from exc
    exponent = _checked_exponent(value)
    if "e" in text or "E" in text:
        exponent -= 1
    low, high = _half_unit_range(value, exponent)
    return value, low, high


def number_range_of(value: Decimal) -> tuple[Decimal, Decimal]:
    """The implicit range [low, high) of a stored decimal: half a unit of its last digit."""
    return _half_unit_range(value, _checked_exponent(value))


def _checked_exponent(value: Decimal) -> int:
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):  # "n", "N" or "F": NaN, sNaN, Infinity
        raise InvalidValue(f"not a finite number: {value!r}")
    if len(value.as_tuple().digits) > _MAX_DIGITS or abs(value.adjusted()) > _MAX_EXPONENT:
        raise InvalidValue(f"number outside the supported range: {str(value)[:40]!r}")
    return exponent


def _half_unit_range(value: Decimal, exponent: int) -> tuple[Decimal, Decimal]:
    half = Decimal((0, (5,), exponent - 1))
    with localcontext(_EXACT):
        return value - half, value + half
