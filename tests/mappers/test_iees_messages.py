"""The IEES HL7 v2 samples: parse, map and ACK each one as feeds/iees/README.md expects.

The ACK comparison: each expected ``ACK_NN.hl7`` (LF line endings, as stored) is normalised
to CR and compared with ours as text, segment by segment, with ``now`` set to the expected
MSH-7 so the whole ACK is compared, control id included (ours is ``ACK-<MSH-10>`` as the
samples'). Two samples echo a person's values in ERR-7 (07 the SSN-type identifier, 09 the
bad birth date); ours omit the value (no PII in ACKs): ``_REDACTED`` states exactly that
difference, and nothing else may differ.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import hl7
import pytest

from mappers.iees import (
    PROGRAM_ENROLLMENT_PROFILE,
    InvalidMessage,
    MappedMessage,
    ParsedMessage,
    ack,
    duplicate_notice,
    group_id,
    map_message,
    parse,
    patient_id,
    stale_warning,
)
from mappers.iees.fhir import fhir_id
from mappers.iees.message import parse_timestamp
from profiles.models import validate_resource
from profiles.registry import ProfileRegistry
from profiles.validator import Validator
from terminology import Terminology

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds" / "iees" / "samples"
HL7_DIR = SAMPLES / "hl7v2"
NO_SAMPLES = "the IEES samples (../shared/feeds/iees/samples) are not checked out"
NUMBERS = [f"{n:02d}" for n in range(1, 11)]
IID = "https://kynect.example.org/fhir/sid/iees-individual-id"

# (expected text, our text) in the ERR-7 of the ACKs that echo a person's value.
_REDACTED = {
    "07": ("PID-3 held only 999999999\\S\\", "PID-3 held only \\S\\"),
    "09": ("PID-7 20201341: month", "PID-7: month"),
}


def sample(number: str) -> bytes:
    if not HL7_DIR.is_dir():
        pytest.skip(NO_SAMPLES)
    (path,) = HL7_DIR.glob(f"{number}_*.hl7")
    return path.read_bytes()


def expected_ack(number: str) -> str:
    text = (HL7_DIR / "acks" / f"ACK_{number}.hl7").read_text("utf-8")
    return text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")


def receive(number: str, stored: dict[str, str] | None = None) -> bytes:
    """What the server will do with one sample, minus storage: parse, map, ACK; the
    duplicate (04) and stale (05) notices stand for the server's own checks."""
    expected_time = expected_ack(number).split("|")[6]
    now = parse_timestamp(expected_time)
    try:
        parsed = parse(sample(number))
    except InvalidMessage as exc:
        return ack(exc, now=now)
    map_message(parsed)
    notices = []
    if number == "04":
        notices.append(duplicate_notice())
    if number == "05":
        notices.append(stale_warning(parsed, (stored or {})["EVN-6"]))
    return ack(parsed, "AA", notices, now=now)


def mapped(number: str) -> MappedMessage:
    return map_message(parse(sample(number)))


def resource(message: MappedMessage, type_: str, id_: str) -> dict[str, Any]:
    (found,) = [r for r in message.resources if r["resourceType"] == type_ and r["id"] == id_]
    return found


@pytest.mark.parametrize("number", NUMBERS)
def test_ack_matches_the_expected_ack(number: str) -> None:
    stored = {"EVN-6": parse(sample("03")).event_time_text}
    ours = receive(number, stored).decode("utf-8")
    expected = expected_ack(number)
    if number in _REDACTED:
        theirs, mine = _REDACTED[number]
        assert theirs in expected
        expected = expected.replace(theirs, mine)
    assert ours.rstrip("\r").split("\r") == expected.split("\r")


@pytest.mark.parametrize("number", NUMBERS)
def test_ack_parses_as_hl7_with_python_hl7(number: str) -> None:
    message = hl7.parse(receive(number, {"EVN-6": "20250815135500-0400"}).decode("utf-8"))
    assert str(message.segment("MSA")[1]) in {"AA", "AE", "AR"}
    assert str(message.segment("MSA")[2]) == str(
        hl7.parse(sample(number).decode().replace("\n", "\r")).segment("MSH")[10]
    )


@pytest.mark.parametrize("number", ["07", "09"])
def test_ack_carries_no_person_values(number: str) -> None:
    text = receive(number).decode("utf-8")
    assert "999999999" not in text
    assert "20201341" not in text
    assert "EXAMPLEMAN" not in text


@pytest.mark.parametrize("number", NUMBERS)
def test_line_endings_do_not_change_the_result(number: str) -> None:
    lf = sample(number).replace(b"\r\n", b"\n")
    variants = [lf, lf.replace(b"\n", b"\r"), lf.replace(b"\n", b"\r\n"), lf + b"\r\r\n"]
    results: list[object] = []
    for data in variants:
        try:
            results.append(parse(data))
        except InvalidMessage as exc:
            results.append((exc.ack_code, exc.errors))
    assert all(r == results[0] for r in results)
    if isinstance(results[0], ParsedMessage):
        assert results[0].segments == lf.strip().count(b"\n") + 1  # every segment was read


def test_duplicate_key_of_04_equals_03s() -> None:
    first, resend = parse(sample("03")), parse(sample("04"))
    assert resend.header.duplicate_key == first.header.duplicate_key
    assert first.header.duplicate_key == ("IEES", "KY_CHFS", "IEES20250815140000017")
    assert map_message(resend) == map_message(first)  # a resend maps to no change


def test_05_is_older_than_03() -> None:
    assert parse(sample("05")).event_time < parse(sample("03")).event_time
    assert parse(sample("05")).event_time_text == "20250801075900-0400"


def test_06_names_the_surviving_and_retired_ids() -> None:
    merge = mapped("06")
    assert merge.event == "A40"
    assert merge.merge is not None
    assert (merge.merge.surviving_id, merge.merge.retired_id) == ("900000104", "900000199")
    assert merge.patient_id == patient_id("900000104")
    assert merge.retired_patient_id == patient_id("900000199")
    # An A40 states no programs or household: nothing may be ended because of it.
    assert merge.current_program_ids is None and merge.current_related_person_ids is None
    assert [r["resourceType"] for r in merge.resources] == ["Patient"]


@pytest.mark.parametrize(
    ("number", "code", "errors"),
    [
        ("07", "AE", [("PID^1^3^1", 101)]),
        ("08", "AR", [("MSH^1^9^1^2", 201)]),
        ("09", "AE", [("PID^1^7^1^1", 102), ("IN1^2^2^1^1", 103)]),
    ],
)
def test_refusals(number: str, code: str, errors: list[tuple[str, int]]) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse(sample(number))
    assert caught.value.ack_code == code
    assert [(e.location, e.code) for e in caught.value.errors] == errors
    assert caught.value.header is not None
    assert caught.value.header.control_id in ack(caught.value).decode()


def test_01_patient() -> None:
    patient = resource(mapped("01"), "Patient", patient_id("900000101"))
    assert patient["identifier"] == [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}
                ]
            },
            "system": IID,
            "value": "900000101",
        },
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MA"}
                ]
            },
            "system": "https://kynect.example.org/fhir/sid/ky-medicaid-id",
            "value": "98000000101",
        },
    ]
    assert patient["name"] == [{"use": "official", "family": "EXAMPLEMAN", "given": ["MARIA", "L"]}]
    assert (patient["birthDate"], patient["gender"]) == ("1988-03-14", "female")
    assert patient["address"] == [{
        "use": "home", "line": ["123 EXAMPLE RD", "APT 4"], "city": "HAZARD",
        "district": "21193", "state": "KY", "postalCode": "41701", "country": "US",
    }]  # fmt: skip
    assert patient["telecom"] == [
        {"system": "phone", "value": "606-555-0142", "use": "home"},
        {"system": "email", "value": "maria.exampleman@example.com"},
    ]
    assert patient["communication"][0]["language"]["coding"][0]["code"] == "es"
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    race, ethnicity = patient["extension"]
    assert race["url"].endswith("us-core-race")
    assert race["extension"][0] == {
        "url": "ombCategory",
        "valueCoding": {
            "system": "urn:oid:2.16.840.1.113883.6.238",
            "code": "2106-3",
            "display": "White",
        },
    }
    assert ethnicity["extension"][0]["valueCoding"]["code"] == "2135-2"


def test_01_programs_household_and_related_people() -> None:
    message = mapped("01")
    medicaid = resource(
        message, "Coverage", fhir_id("iees-cov", "900000101", "medicaid", "1200345678")
    )
    assert medicaid["status"] == "active"
    assert medicaid["period"] == {"start": "2025-01-01", "end": "2025-12-31"}
    assert (
        medicaid["beneficiary"]
        == medicaid["subscriber"]
        == {"reference": f"Patient/{patient_id('900000101')}"}
    )
    assert medicaid["relationship"]["coding"][0]["code"] == "self"
    assert medicaid["payor"] == [{"reference": "Organization/iees-org-kydms"}]
    assert {c["type"]["coding"][0]["code"]: c["value"] for c in medicaid["class"]} == {
        "group": "1200345678",
        "plan": "MEDICAID",
        "subgroup": "MAGI-ADULT",
    }
    for program, end in (("snap", "2026-01-31"), ("ktap", "2025-07-31")):
        observation = resource(
            message, "Observation", fhir_id("iees-enr", "900000101", program, "1200345678")
        )
        assert observation["valueCodeableConcept"]["coding"][0]["code"] == "enrolled"
        assert observation["effectivePeriod"]["end"] == end
    assert message.current_program_ids == {
        f"Coverage/{fhir_id('iees-cov', '900000101', 'medicaid', '1200345678')}",
        f"Observation/{fhir_id('iees-enr', '900000101', 'snap', '1200345678')}",
        f"Observation/{fhir_id('iees-enr', '900000101', 'ktap', '1200345678')}",
    }
    group = resource(message, "Group", group_id("1200345678"))
    assert (group["type"], group["actual"]) == ("person", True)
    assert group["identifier"][0]["value"] == "1200345678"
    assert group["member"] == [
        {
            "entity": {"reference": f"Patient/{patient_id('900000101')}"},
            "period": {"start": "2025-01-01"},
            "inactive": False,
        }
    ]
    related = [r for r in message.resources if r["resourceType"] == "RelatedPerson"]
    assert [(r["identifier"][0]["value"], r["relationship"][0]["coding"][0]["code"])
            for r in related] == [("900000102", "SPS"), ("900000103", "CHILD"),
                                  ("900000104", "CHILD")]  # fmt: skip
    assert all(r["active"] and r["patient"]["reference"] == f"Patient/{patient_id('900000101')}"
               for r in related)  # fmt: skip


def test_02_child_coverage_names_the_head_as_subscriber() -> None:
    kchip = resource(
        mapped("02"), "Coverage", fhir_id("iees-cov", "900000103", "kchip", "1200345678")
    )
    assert kchip["subscriber"] == {"reference": f"Patient/{patient_id('900000101')}"}
    assert kchip["subscriberId"] == "900000101"
    assert kchip["relationship"]["coding"][0]["code"] == "child"  # IN1-17 MTH, inverted
    assert kchip["type"]["coding"][0] == {
        "system": "https://nahdo.org/sopt",
        "code": "23",
        "display": "Medicaid/SCHIP",
    }


def test_03_move_closed_and_added_programs() -> None:
    message = mapped("03")
    patient = resource(message, "Patient", patient_id("900000101"))
    assert patient["address"][0]["city"] == "LEXINGTON"
    assert patient["telecom"][0]["value"] == "859-555-0142"
    ktap = resource(message, "Observation", fhir_id("iees-enr", "900000101", "ktap", "1200345678"))
    assert ktap["effectivePeriod"]["end"] == "2025-08-14"
    assert ktap["valueCodeableConcept"]["coding"][0]["code"] == "not-enrolled"
    ccap = resource(message, "Observation", fhir_id("iees-enr", "900000101", "ccap", "1200345678"))
    assert ccap["effectivePeriod"] == {"start": "2025-09-01", "end": "2026-08-31"}
    assert ccap["valueCodeableConcept"]["coding"][0]["code"] == "enrolled"
    assert len(message.current_program_ids or ()) == 4
    assert message.end_date == dt.date(2025, 8, 15)


def test_10_member_leaves_the_household() -> None:
    message = mapped("10")
    (membership,) = message.memberships
    assert (membership.group_id, membership.end, membership.active) == (
        group_id("1200345678"),
        dt.date(2025, 9, 30),
        False,
    )
    group = resource(message, "Group", group_id("1200345678"))
    assert group["member"][0]["inactive"] is True
    assert group["member"][0]["period"]["end"] == "2025-09-30"
    spouse = resource(message, "RelatedPerson", fhir_id("iees-rp", "900000102", "900000101"))
    assert spouse["active"] is False
    assert spouse["period"] == {"end": "2025-09-30"}
    assert spouse["relationship"][0]["coding"][0]["code"] == "SPS"  # the kinship stays
    snap = resource(message, "Observation", fhir_id("iees-enr", "900000102", "snap", "1200345678"))
    assert snap["effectivePeriod"]["end"] == "2025-09-30"
    assert snap["valueCodeableConcept"]["coding"][0]["code"] == "not-enrolled"
    assert resource(message, "Patient", patient_id("900000102"))["address"][0]["city"] == "RICHMOND"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator(ProfileRegistry.bundled(), Terminology.bundled())


@pytest.mark.parametrize("number", ["01", "02", "03", "05", "06", "10"])
def test_resources_are_valid_and_meet_the_profiles_they_claim(
    number: str, validator: Validator
) -> None:
    for item in mapped(number).resources:
        validate_resource(item)
        for profile in item.get("meta", {}).get("profile", []):
            errors = [i for i in validator.validate(item, profile)
                      if i.severity in ("error", "fatal")]  # fmt: skip
            assert errors == [], (item["id"], profile)
        if item["resourceType"] == "Observation":
            assert item["meta"]["profile"] == [PROGRAM_ENROLLMENT_PROFILE]


def test_enrollment_observations_exist_for_non_health_programs() -> None:
    types = {r["code"]["coding"][0]["code"] for r in mapped("03").resources
             if r["resourceType"] == "Observation"}  # fmt: skip
    assert types == {"SNAP", "KTAP", "CCAP"}


def test_ids_are_valid_fhir_ids() -> None:
    for number in ("01", "02", "03", "10"):
        for item in mapped(number).resources:
            assert len(item["id"]) <= 64
            assert item["id"].replace("-", "").replace(".", "").isalnum()
