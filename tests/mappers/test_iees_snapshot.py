"""The IEES snapshot files: NDJSON and CSV give the same persons, the same persons as the HL7
messages where they overlap, and a file that cannot be trusted entire is refused."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mappers.iees import (
    InvalidSnapshot,
    MappedMessage,
    Snapshot,
    group_id,
    map_message,
    map_snapshot,
    parse,
    parse_csv,
    parse_ndjson,
    patient_id,
)
from mappers.iees.fhir import fhir_id
from profiles.models import validate_resource
from profiles.registry import ProfileRegistry
from profiles.validator import Validator
from terminology import Terminology

SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "feeds" / "iees" / "samples"
BATCH = SAMPLES / "batch"
NDJSON = BATCH / "iees_snapshot_2025-07-01.ndjson"
NO_SAMPLES = "the IEES samples (../shared/feeds/iees/samples) are not checked out"
SNAPSHOT_DATE = dt.date(2025, 7, 1)


@pytest.fixture(scope="module")
def ndjson() -> Snapshot:
    if not NDJSON.is_file():
        pytest.skip(NO_SAMPLES)
    return map_snapshot(parse_ndjson(NDJSON.read_bytes()))


@pytest.fixture(scope="module")
def from_csv() -> Snapshot:
    if not BATCH.is_dir():
        pytest.skip(NO_SAMPLES)
    return map_snapshot(parse_csv(BATCH, snapshot_date=SNAPSHOT_DATE))


def by_id(message: MappedMessage) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in message.resources}


def test_the_ndjson_snapshot(ndjson: Snapshot) -> None:
    assert (ndjson.file_id, ndjson.snapshot_date, ndjson.mode) == (
        "IEES-SNAP-20250701-0001", SNAPSHOT_DATE, "full")  # fmt: skip
    assert ndjson.absent_end_date == dt.date(2025, 6, 30)
    assert [p.individual_id for p in ndjson.persons] == [
        "900000101", "900000102", "900000103", "900000104", "900000201"]  # fmt: skip
    assert [(m.surviving_id, m.retired_id) for m in ndjson.merges] == [("900000104", "900000199")]
    # Snapshot files state no NK1: RelatedPersons must not be ended for their absence.
    assert all(p.current_related_person_ids is None for p in ndjson.persons)


def test_csv_and_ndjson_give_the_same_persons(ndjson: Snapshot, from_csv: Snapshot) -> None:
    assert from_csv.persons == ndjson.persons
    assert from_csv.merges == ndjson.merges


def test_snapshot_and_hl7_agree_on_the_head_of_household(ndjson: Snapshot) -> None:
    hl7 = map_message(parse((SAMPLES / "hl7v2" / "01_ADT_A28_add_head_of_household.hl7")
                            .read_bytes()))  # fmt: skip
    (snapshot,) = [p for p in ndjson.persons if p.individual_id == "900000101"]
    ours, theirs = by_id(hl7), by_id(snapshot)
    shared = set(ours) & set(theirs)
    assert shared >= {
        f"Patient/{patient_id('900000101')}",
        f"Coverage/{fhir_id('iees-cov', '900000101', 'medicaid', '1200345678')}",
        f"Observation/{fhir_id('iees-enr', '900000101', 'snap', '1200345678')}",
        f"Observation/{fhir_id('iees-enr', '900000101', 'ktap', '1200345678')}",
        f"Group/{group_id('1200345678')}",
        "Organization/iees-org-kydms",
    }
    for key in shared:
        assert ours[key] == theirs[key], key
    assert hl7.current_program_ids == snapshot.current_program_ids
    assert hl7.memberships == snapshot.memberships


def test_snapshot_and_hl7_agree_on_the_child(ndjson: Snapshot) -> None:
    hl7 = map_message(parse((SAMPLES / "hl7v2" / "02_ADT_A28_add_child_member.hl7").read_bytes()))
    (snapshot,) = [p for p in ndjson.persons if p.individual_id == "900000103"]
    ours, theirs = by_id(hl7), by_id(snapshot)
    key = f"Coverage/{fhir_id('iees-cov', '900000103', 'kchip', '1200345678')}"
    assert ours[key] == theirs[key]
    patient_keys = ("identifier", "name", "birthDate", "gender", "address", "extension")
    mine, other = (
        ours[f"Patient/{patient_id('900000103')}"],
        theirs[f"Patient/{patient_id('900000103')}"],
    )
    assert {k: mine[k] for k in patient_keys} == {k: other[k] for k in patient_keys}


def test_ended_programs_are_judged_at_the_snapshot_date(ndjson: Snapshot) -> None:
    (robert,) = [p for p in ndjson.persons if p.individual_id == "900000201"]
    resources = by_id(robert)
    assert (
        resources[f"Coverage/{fhir_id('iees-cov', '900000201', 'medicaid', '1200999001')}"][
            "status"
        ]
        == "cancelled"
    )
    snap = resources[f"Observation/{fhir_id('iees-enr', '900000201', 'snap', '1200999001')}"]
    assert snap["valueCodeableConcept"]["coding"][0]["code"] == "not-enrolled"
    (membership,) = robert.memberships
    assert (membership.active, membership.end) == (False, dt.date(2025, 6, 30))


def test_snapshot_resources_are_valid(ndjson: Snapshot) -> None:
    validator = Validator(ProfileRegistry.bundled(), Terminology.bundled())
    for person in ndjson.persons:
        for item in person.resources:
            validate_resource(item)
            for profile in item.get("meta", {}).get("profile", []):
                errors = [i for i in validator.validate(item, profile)
                          if i.severity in ("error", "fatal")]  # fmt: skip
                assert errors == []


def lines() -> list[str]:
    if not NDJSON.is_file():
        pytest.skip(NO_SAMPLES)
    return NDJSON.read_text("utf-8").splitlines()


def refused(text: str) -> str:
    with pytest.raises(InvalidSnapshot) as caught:
        parse_ndjson(text.encode())
    return str(caught.value)


def test_a_truncated_file_is_refused() -> None:
    assert "trailer" in refused("\n".join(lines()[:-1]))
    assert "trailer" in refused("\n".join(lines()[:3] + lines()[-1:]))  # counts differ


def test_a_trailer_count_mismatch_is_refused() -> None:
    trailer = json.loads(lines()[-1])
    trailer["merge_count"] = 2
    assert "merge_count" in refused("\n".join([*lines()[:-1], json.dumps(trailer)]))


def test_a_file_without_header_is_refused() -> None:
    assert "header" in refused("\n".join(lines()[1:]))


def test_a_bad_record_is_refused_without_echoing_it() -> None:
    bad = lines()
    person = json.loads(bad[1])
    person["birth_date"] = "1988-13-14"
    bad[1] = json.dumps(person)
    message = refused("\n".join(bad))
    assert "line 2" in message and "birth_date" in message
    assert "1988" not in message


def test_a_csv_case_missing_a_person_is_refused(tmp_path: Path) -> None:
    if not BATCH.is_dir():
        pytest.skip(NO_SAMPLES)
    for name in ("cases.csv", "persons.csv", "eligibility.csv", "merges.csv"):
        shutil.copy(BATCH / name, tmp_path / name)
    persons = (tmp_path / "persons.csv").read_text("utf-8").splitlines()
    (tmp_path / "persons.csv").write_text("\n".join(persons[:-2] + persons[-1:]) + "\n")
    with pytest.raises(InvalidSnapshot, match="household_size"):
        parse_csv(tmp_path, snapshot_date=SNAPSHOT_DATE)
