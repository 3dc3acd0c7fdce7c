"""Profile rules on authored variations of an IEES message (no shared files needed): event
aliases, header refusals, escaping in ACKs, merges, and the ERR locations."""

from __future__ import annotations

import datetime as dt

import hl7
import pytest

from mappers.iees import (
    InvalidMessage,
    ack,
    check_structure,
    map_message,
    merge_noop_warning,
    parse,
    patient_id,
)
from mappers.iees._er7 import escape, split_message, unescape
from mappers.iees.fhir import fhir_id
from profiles.models import validate_resource

NOW = dt.datetime(2025, 9, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))

MSH = (
    "MSH|^~\\&|IEES|KY_CHFS|SDOH_FHIR|KYNECT_RESOURCES|20250901120000-0400||ADT^{event}^{struct}|"
    "CTRL{event}|P|2.5.1|||||USA|UNICODE UTF-8|||KY-IEES-PERSON-ELIG^KYSDOH"
)


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with ``fields[n]`` at field n (so the positions read as in the spec)."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values])


BODY = [
    "EVN|{event}|20250901120000-0400||||20250901115500-0400",
    segment(
        "PID",
        {
            1: "1",
            3: "900000301^^^KYIEES^PI",
            5: "TESTER^ANA^^^^^L",
            7: "19900101",
            8: "F",
            11: "1 SAMPLE ST^^FRANKFORT^KY^40601^USA^H^^21073",
        },
    ),
    segment(
        "NK1",
        {
            1: "1",
            2: "TESTER^BEN^^^^^L",
            3: "SPO^Spouse^HL70063",
            8: "20240101",
            15: "M",
            16: "19890101",
            33: "900000302^^^KYIEES^PI",
        },
    ),
    "PV1|1|N",
    segment(
        "IN1",
        {
            1: "1",
            2: "SNAP^Supplemental Nutrition Assistance Program^KYPROG",
            3: "KYDCBS^^^KYCHFS^XX",
            8: "1200000301",
            12: "20250101",
            13: "20251231",
            15: "FOOD",
            17: "SEL^Self^HL70063",
            49: "900000301^^^KYIEES^PI",
        },
    ),
]


def message(event: str = "A31", struct: str = "ADT_A05", body: list[str] | None = None) -> bytes:
    lines = [MSH.format(event=event, struct=struct), *(body if body is not None else BODY)]
    return "\r".join(line.format(event=event) for line in lines).encode()


def replace_segment(name: str, text: str) -> list[str]:
    return [text if line.startswith(name) else line for line in BODY]


def refusal(data: bytes, **kwargs: bool) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse(data, **kwargs)
    return caught.value


def test_a_plain_message_maps() -> None:
    mapped = map_message(parse(message()))
    assert mapped.patient_id == patient_id("900000301")
    assert mapped.current_related_person_ids == {
        f"RelatedPerson/{fhir_id('iees-rp', '900000301', '900000302')}"
    }


@pytest.mark.parametrize(("alias", "event"), [("A04", "A28"), ("A08", "A31")])
def test_a04_and_a08_are_aliases(alias: str, event: str) -> None:
    parsed = parse(message(alias, "ADT_A01"))
    assert parsed.event == event
    assert b"ACK^" + alias.encode() + b"^ACK" in ack(parsed, "AA", now=NOW)
    refused = refusal(message(alias, "ADT_A01"), accept_aliases=False)
    assert (refused.ack_code, refused.errors[0].code) == ("AR", 201)


@pytest.mark.parametrize(
    ("edit", "location", "code"),
    [
        (lambda m: m.replace(b"ADT^A31", b"ORU^A31"), "MSH^1^9^1^1", 200),
        (lambda m: m.replace(b"|P|2.5.1", b"|D|2.5.1"), "MSH^1^11", 202),
        (lambda m: m.replace(b"|P|2.5.1", b"|P|2.3"), "MSH^1^12", 203),
        (lambda m: m.replace(b"CTRLA31", b""), "MSH^1^10", 101),
    ],
)
def test_header_refusals_are_ar(edit, location: str, code: int) -> None:  # type: ignore[no-untyped-def]
    refused = refusal(edit(message()))
    assert refused.ack_code == "AR"
    assert [(e.location, e.code) for e in refused.errors] == [(location, code)]
    assert b"MSA|AR|" in ack(refused, now=NOW)


@pytest.mark.parametrize("data", [b"", b"hello", b"PID|1||x", b"\x0b\x1c\r", b"MSX|^~\\&|"])
def test_no_msh_is_ar_without_a_header(data: bytes) -> None:
    refused = refusal(data)
    assert (refused.ack_code, refused.header) == ("AR", None)
    reply = ack(refused, now=NOW).decode()
    assert reply.startswith("MSH|^~\\&|SDOH_FHIR|KYNECT_RESOURCES|||")
    assert "\rMSA|AR|\r" in reply


def test_undecodable_bytes_are_ar_naming_the_message() -> None:
    refused = refusal(message().replace(b"ANA", b"AN\xff"))
    assert refused.ack_code == "AR"
    assert refused.header is not None and refused.header.control_id == "CTRLA31"


def test_mllp_framing_is_tolerated() -> None:
    assert parse(b"\x0b" + message() + b"\x1c\r") == parse(message())


@pytest.mark.parametrize(
    ("segment", "text", "location", "code"),
    [
        ("NK1", "NK1|1|TESTER^BEN|SPO", "NK1^1^33^1", 101),
        ("NK1", BODY[2].replace("SPO^", "XXX^"), "NK1^1^3^1^1", 103),
        ("NK1", BODY[2].replace("20240101", "20241301"), "NK1^1^8^1^1", 102),
        ("PID", BODY[1].replace("|F|", "|Q|"), "PID^1^8", 103),
        ("PID", BODY[1].replace("900000301^^^KYIEES", "9 0^^^KYIEES"), "PID^1^3^1^1", 102),
        ("IN1", BODY[4].replace("1200000301", ""), "IN1^1^8", 101),
        ("IN1", BODY[4].replace("20251231", "2025123"), "IN1^1^13^1^1", 102),
        ("IN1", BODY[4].replace("|FOOD|", "|HEALTH|"), "IN1^1^15", 103),
        ("IN1", BODY[4].replace("20250101", "20260101"), "IN1^1^13^1^1", 102),
        ("EVN", "EVN|A31|2025-09-01", "EVN^1^2", 102),
        ("EVN", "EVN|A31", "EVN^1^2", 101),
    ],
)
def test_field_errors_are_ae_at_the_field(segment: str, text: str, location: str, code: int
                                          ) -> None:  # fmt: skip
    refused = refusal(message(body=replace_segment(segment, text)))
    assert refused.ack_code == "AE"
    assert [(e.location, e.code) for e in refused.errors] == [(location, code)]


def test_every_bad_field_gets_its_own_err_in_segment_order() -> None:
    body = replace_segment("PID", BODY[1].replace("19900101", "19901399"))
    body = [line.replace("SNAP^", "NOPE^") for line in body]
    refused = refusal(message(body=body))
    assert [e.location for e in refused.errors] == ["PID^1^7^1^1", "IN1^1^2^1^1"]
    assert ack(refused, now=NOW).count(b"\rERR|") == 2


def test_echoed_text_is_escaped_in_the_ack() -> None:
    # The program code arrives escaped (W\F\X means "W|X"); the ACK must escape it again.
    body = [line.replace("SNAP^", "W\\F\\X\\S\\Y&Z~Q^") for line in BODY]
    refused = refusal(message(body=body))
    reply = ack(refused, now=NOW).decode()
    err = reply.split("\r")[2]
    assert "IN1-2.1 W\\F\\X\\S\\Y\\T\\Z" in err
    assert err.count("|") == 7  # no field boundary injected
    parsed = hl7.parse(reply)
    assert len(parsed) == 3


def test_a40_merge_and_self_merge() -> None:
    body = [
        "EVN|A40|20250901120000-0400||||20250901115500-0400",
        "PID|1||900000301^^^KYIEES^PI||TESTER^ANA",
        "MRG|900000399^^^KYIEES^PI",
    ]
    mapped = map_message(parse(message("A40", "ADT_A39", body)))
    assert mapped.merge is not None and mapped.merge.retired_id == "900000399"
    self_merge = [*body[:2], "MRG|900000301^^^KYIEES^PI"]
    refused = refusal(message("A40", "ADT_A39", self_merge))
    assert (refused.ack_code, refused.errors[0].code) == ("AE", 204)
    refused = refusal(message("A40", "ADT_A39", body[:2]))
    assert refused.errors[0].location == "MRG^1^1"
    warned = ack(parse(message("A40", "ADT_A39", body)), "AA", [merge_noop_warning()], now=NOW)
    assert b"ERR||MRG^1^1^1|0^Message accepted^HL70357|W|MERGE-NOOP^" in warned


def test_custom_delimiters_are_honoured() -> None:
    data = message().decode().replace("|", "#").replace("^", "!").replace("MSH#!~\\&", "MSH#!~\\&")
    parsed = parse(data.encode())
    assert parsed.person.individual_id == "900000301"
    assert parsed.person.name is not None and parsed.person.name.family == "TESTER"


@pytest.mark.parametrize("text", ["", "plain", "a|b^c~d\\e&f", "\\F\\", "x\ry\nz"])
def test_escape_round_trip(text: str) -> None:
    escaped = escape(text)
    assert not any(c in escaped for c in "|^~&\r\n")
    if not any(c < " " and c not in "\t\r\n" for c in text):
        assert unescape(escaped) == text


def test_split_message_reads_every_segment() -> None:
    assert [s.name for s in split_message(message().decode())] == [
        "MSH", "EVN", "PID", "NK1", "PV1", "IN1"]  # fmt: skip


@pytest.mark.parametrize(("sent", "stored"), [("\\X0A\\", "\n"), ("\\X00\\", "\\X00\\")])
def test_hex_escapes_decode_only_to_storable_text(sent: str, stored: str) -> None:
    body = replace_segment("PID", BODY[1].replace("1 SAMPLE ST", f"1{sent}SAMPLE ST"))
    mapped = map_message(parse(message(body=body)))
    (patient,) = [r for r in mapped.resources if r["resourceType"] == "Patient"]
    assert patient["address"][0]["line"] == [f"1{stored}SAMPLE ST"]
    validate_resource(patient)


def test_in2_case_number_must_match_its_in1() -> None:
    in2 = segment("IN2", {8: "1200000301"})
    assert parse(message(body=[*BODY, in2])).person.programs[0].case_number == "1200000301"
    refused = refusal(message(body=[*BODY, in2.replace("1200000301", "1299999999")]))
    assert [(e.location, e.code) for e in refused.errors] == [("IN2^1^8", 102)]


def test_structure_check_passes_a_complete_message() -> None:
    assert check_structure(message()) == ()


def test_structure_check_finds_a_missing_pv1_that_parse_accepts() -> None:
    without_pv1 = message(body=[line for line in BODY if not line.startswith("PV1")])
    parse(without_pv1)  # the profile's own fields are all there
    (error,) = check_structure(without_pv1)
    assert (error.code, error.diagnostic) == (100, "structure: ValidationError")


def test_structure_check_reports_a_bad_datatype_without_its_value() -> None:
    bad = message(body=replace_segment("PID", BODY[1].replace("19900101", "19901399")))
    (error,) = check_structure(bad)
    assert error.code == 102
    assert "19901399" not in error.diagnostic
