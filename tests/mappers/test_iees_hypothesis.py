"""Arbitrary input to the IEES parser yields a ParsedMessage or InvalidMessage, never anything
else, and every outcome gets an ACK that is itself well-formed HL7 (STYLE.md: every parser
gets a hypothesis test). The same for the snapshot reader and InvalidSnapshot."""

from __future__ import annotations

import datetime as dt
import json

import hl7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mappers.iees import (
    InvalidMessage,
    InvalidSnapshot,
    ack,
    check_structure,
    map_message,
    parse,
    parse_ndjson,
)
from mappers.iees._er7 import escape, unescape
from profiles.models import validate_resource

NOW = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.UTC)
SETTINGS = settings(max_examples=300, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

# A valid message (authored like the samples, so the test needs no shared files).
VALID = "\r".join(
    [
        "MSH|^~\\&|IEES|KY_CHFS|SDOH_FHIR|KYNECT_RESOURCES|20250701093000-0400||ADT^A28^ADT_A05|"
        "IEES1|P|2.5.1|||||USA|UNICODE UTF-8",
        "EVN|A28|20250701093000-0400||||20250701092955-0400",
        "PID|1||900000101^^^KYIEES^PI~98000000101^^^KYMEDICAID^MA||EXAMPLEMAN^MARIA^L^^^^L||"
        "19880314|F||2106-3^White^CDCREC|123 EXAMPLE RD^APT 4^HAZARD^KY^41701^USA^H^^21193||"
        "^PRN^PH^^1^606^5550142~^NET^Internet^maria@example.com||spa^Spanish^ISO6392|M||||||"
        "|2135-2^Hispanic or Latino^CDCREC",
        "NK1|1|EXAMPLEMAN^JAMES^R^^^^L|SPO^Spouse^HL70063||||||||||||M|19861102|||||||||||||||||"
        "900000102^^^KYIEES^PI",
        "PV1|1|N",
        "IN1|1|MEDICAID^Kentucky Medicaid^KYPROG|KYDMS^^^KYCHFS^XX|DMS||||1200345678|CASE|||"
        "20250101|20251231||HEALTH|EXAMPLEMAN^MARIA|SEL^Self^HL70063|19880314||||||||||||||||"
        "|MAGI-ADULT|98000000101|||||||||||||900000101^^^KYIEES^PI",
    ]
).encode()


def outcome(data: bytes) -> bytes:
    """parse -> map -> ack, as the server will run it; only InvalidMessage may surface."""
    try:
        parsed = parse(data)
    except InvalidMessage as exc:
        assert exc.ack_code in ("AE", "AR")
        assert exc.errors
        return ack(exc, now=NOW)
    mapped = map_message(parsed)
    for resource in mapped.resources:
        validate_resource(resource)
    return ack(parsed, "AA", now=NOW)


def assert_well_formed_ack(reply: bytes) -> None:
    text = reply.decode("utf-8")
    segments = text.rstrip("\r").split("\r")
    assert segments[0].startswith("MSH|^~\\&|")
    assert segments[1].split("|")[1] in ("AA", "AE", "AR")
    assert all(s.startswith("ERR|") for s in segments[2:])
    assert [str(s[0]) for s in hl7.parse(text)] == [s[:3] for s in segments]


def test_the_valid_message_is_accepted() -> None:
    assert parse(VALID).person.individual_id == "900000101"
    assert b"MSA|AA|IEES1" in outcome(VALID)


@SETTINGS
@given(st.binary(max_size=2000))
def test_random_bytes(data: bytes) -> None:
    assert_well_formed_ack(outcome(data))


@SETTINGS
@given(st.binary(max_size=500))
def test_random_bytes_after_msh(data: bytes) -> None:
    assert_well_formed_ack(outcome(VALID[:120] + data))


@SETTINGS
@given(st.integers(min_value=0, max_value=len(VALID)))
def test_truncated_messages(cut: int) -> None:
    assert_well_formed_ack(outcome(VALID[:cut]))


@SETTINGS
@given(
    st.integers(min_value=0, max_value=len(VALID)),
    st.text(alphabet=st.sampled_from("|^~\\&\r\n0123456789AXZaz -.+\x00é"), max_size=40),
)
def test_inserted_delimiters_and_junk(at: int, junk: str) -> None:
    assert_well_formed_ack(outcome(VALID[:at] + junk.encode() + VALID[at:]))


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID)), st.sampled_from([1_000, 100_000]))
def test_huge_fields(at: int, size: int) -> None:
    assert_well_formed_ack(outcome(VALID[:at] + b"9" * size + VALID[at:]))


@SETTINGS
@given(st.text(max_size=200))
def test_escape_never_leaves_a_delimiter(text: str) -> None:
    escaped = escape(text)
    assert not any(c in escaped for c in "|^~&\r\n")
    if not any(c < " " and c not in "\t\r\n" for c in text):
        assert unescape(escaped) == text


@SETTINGS
@given(st.binary(max_size=1000))
def test_snapshot_random_bytes(data: bytes) -> None:
    try:
        parse_ndjson(data)
    except InvalidSnapshot:
        pass


@SETTINGS
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "record_type",
                    "individual_id",
                    "case_number",
                    "programs",
                    "birth_date",
                    "given",
                    "address",
                    "person_count",
                    "mode",
                    "snapshot_date",
                    "file_id",
                    "last_updated",
                ]
            ),
            st.one_of(
                st.none(),
                st.integers(),
                st.text(max_size=12),
                st.lists(st.text(max_size=5), max_size=3),
                st.sampled_from(["header", "person", "merge", "trailer", "full"]),
            ),
        ),
        max_size=6,
    )
)
def test_snapshot_random_records(records: list[dict[str, object]]) -> None:
    data = "\n".join(json.dumps(r) for r in records).encode()
    try:
        parse_ndjson(data)
    except InvalidSnapshot:
        pass


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=0, max_value=len(VALID)), st.binary(max_size=60))
def test_structure_check_only_reports(at: int, junk: bytes) -> None:
    errors = check_structure(VALID[:at] + junk + VALID[at:])
    assert all(e.code in (100, 102) for e in errors)
