"""Tests for the synthetic population generator."""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cache
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.ingest.synthetic import (
    DEMO_PATIENTS,
    INDIVIDUAL_ID_SYSTEM,
    count_by_type,
    demo_population,
    generate_population,
)

SHARED_TYPES = {"Organization", "Location", "HealthcareService", "Practitioner", "PractitionerRole"}
PATIENT_TYPES = {
    "Patient",
    "Observation",
    "Condition",
    "Goal",
    "Consent",
    "ServiceRequest",
    "Procedure",
    "Task",
}
SDOHCC_CS = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2}))?$")


@cache
def population_200() -> tuple[dict[str, Any], ...]:
    return tuple(generate_population(200, seed=1))


def references(node: Any) -> Iterator[str]:
    """Every Reference.reference string anywhere inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from references(value)
    elif isinstance(node, list):
        for item in node:
            yield from references(item)


def assert_dependency_order(resources: Iterator[dict[str, Any]] | tuple[dict[str, Any], ...]):
    seen: set[str] = set()
    for resource in resources:
        key = f"{resource['resourceType']}/{resource['id']}"
        assert key not in seen, f"duplicate {key}"
        for ref in references(resource):
            assert ref in seen, f"{key} references {ref} before it was yielded"
        seen.add(key)


def by_id(resources: tuple[dict[str, Any], ...]) -> dict[str, dict[str, Any]]:
    return {f"{r['resourceType']}/{r['id']}": r for r in resources}


def test_every_resource_validates_with_the_r4b_models() -> None:
    for resource in population_200():
        model = get_fhir_model_class(resource["resourceType"])
        model.model_validate(resource)


def test_same_seed_gives_identical_output() -> None:
    assert list(generate_population(40, seed=7)) == list(generate_population(40, seed=7))
    assert list(generate_population(200, seed=1)) == list(population_200())


def test_different_seeds_give_different_output() -> None:
    assert list(generate_population(20, seed=1)) != list(generate_population(20, seed=2))


def test_references_point_to_resources_yielded_earlier() -> None:
    assert_dependency_order(population_200())


@settings(max_examples=20, deadline=None)
@given(n_patients=st.integers(min_value=0, max_value=12), seed=st.integers(0, 2**32))
def test_dependency_order_holds_for_any_seed_and_size(n_patients: int, seed: int) -> None:
    assert_dependency_order(generate_population(n_patients, seed=seed))


def test_ids_are_deterministic_and_patterned() -> None:
    resources = population_200()
    patients = [r["id"] for r in resources if r["resourceType"] == "Patient"]
    assert patients == [f"pat-{n:06d}" for n in range(1, 201)]
    for r in resources:
        if r["resourceType"] == "Observation":
            assert re.fullmatch(r"obs-\d{6}-\d{2}", r["id"])
        assert re.fullmatch(r"[A-Za-z0-9\-.]{1,64}", r["id"])


def test_shared_network_comes_first_then_one_patient_at_a_time() -> None:
    resources = population_200()
    first_patient = next(i for i, r in enumerate(resources) if r["resourceType"] == "Patient")
    assert {r["resourceType"] for r in resources[:first_patient]} == SHARED_TYPES
    assert {r["resourceType"] for r in resources[first_patient:]} == PATIENT_TYPES
    current = None
    for r in resources[first_patient:]:
        if r["resourceType"] == "Patient":
            current = r["id"]
        else:
            assert current is not None and current[4:] in r["id"]


def test_resources_per_patient_in_expected_range() -> None:
    counts = count_by_type(generate_population(1000, seed=3))
    per_patient = sum(counts.values()) / counts["Patient"]
    assert 10 <= per_patient <= 15
    assert counts["Patient"] == 1000
    assert counts["Observation"] > 4 * counts["Patient"]
    assert counts["Task"] == counts["ServiceRequest"]
    assert 0 < counts["Consent"] < counts["Patient"]
    assert 0 < counts["Goal"] < counts["Condition"]


def test_count_by_type() -> None:
    resources = [
        {"resourceType": "Task", "id": "a"},
        {"resourceType": "Patient", "id": "b"},
        {"resourceType": "Task", "id": "c"},
    ]
    assert count_by_type(resources) == {"Patient": 1, "Task": 2}
    assert list(count_by_type(resources)) == ["Patient", "Task"]
    assert count_by_type([]) == {}


def test_demo_population_is_small_and_covers_every_type() -> None:
    demo = demo_population()
    counts = count_by_type(demo)
    assert counts["Patient"] == DEMO_PATIENTS
    assert 300 < len(demo) < 1500
    assert set(counts) == SHARED_TYPES | PATIENT_TYPES
    statuses = {r["status"] for r in demo if r["resourceType"] == "Task"}
    assert {"requested", "completed"} <= statuses
    assert demo == demo_population()


def test_zero_patients_and_bad_arguments() -> None:
    only_shared = list(generate_population(0))
    assert only_shared and {r["resourceType"] for r in only_shared} == SHARED_TYPES
    with pytest.raises(ValueError):
        generate_population(-1)


def test_generation_is_lazy() -> None:
    stream = generate_population(10_000_000)
    first = [next(stream) for _ in range(5)]
    assert first[0]["resourceType"] == "Organization"


def test_locations_are_in_kentucky() -> None:
    locations = [r for r in population_200() if r["resourceType"] == "Location"]
    assert locations
    for loc in locations:
        assert 36.5 <= loc["position"]["latitude"] <= 39.1
        assert -89.5 <= loc["position"]["longitude"] <= -81.9
        assert loc["address"]["state"] == "KY"
        assert loc["managingOrganization"]["reference"].startswith("Organization/")


def test_patients_have_us_core_shape_and_kynect_ids() -> None:
    patients = [r for r in population_200() if r["resourceType"] == "Patient"]
    individual_ids = set()
    medicaid = 0
    for p in patients:
        systems = [i["system"] for i in p["identifier"]]
        assert systems[0] == INDIVIDUAL_ID_SYSTEM
        individual_ids.add(p["identifier"][0]["value"])
        medicaid += len(systems) > 1
        assert p["name"][0]["family"] and p["name"][0]["given"]
        assert p["gender"] in {"male", "female"}
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", p["birthDate"])
        address = p["address"][0]
        assert address["state"] == "KY" and re.fullmatch(r"4[0-2]\d{3}", address["postalCode"])
        assert p["telecom"]
    assert len(individual_ids) == len(patients)
    assert 0.25 * len(patients) < medicaid < 0.65 * len(patients)
    names = [n for p in patients for n in [p["name"][0]["family"], *p["name"][0]["given"]]]
    assert any(not n.isascii() for n in names), "expected some accented names"


def test_screening_observations() -> None:
    resources = population_200()
    index = by_id(resources)
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    codes = {o["code"]["coding"][0]["code"] for o in observations}
    assert {"88121-9", "88122-7", "88123-5", "88124-3", "71802-3", "93030-5"} <= codes
    for o in observations:
        assert o["status"] == "final"
        assert DATE_TIME.match(o["effectiveDateTime"])
        assert "2023-01-01" <= o["effectiveDateTime"][:10] <= "2026-12-31"
        categories = {c["coding"][0]["code"] for c in o["category"]}
        assert {"social-history", "survey", "sdoh"} <= categories
        assert any(c["coding"][0]["system"] == SDOHCC_CS for c in o["category"])
        if o["code"]["coding"][0]["code"] == "88121-9":
            assert "valueCodeableConcept" not in o and len(o["hasMember"]) == 3
        else:
            assert o["valueCodeableConcept"]["coding"][0]["system"] == "http://loinc.org"
        if o["code"]["coding"][0]["code"] == "88124-3":
            answers = {
                index[d["reference"]]["valueCodeableConcept"]["coding"][0]["code"]
                for d in o["derivedFrom"]
            }
            at_risk = bool(answers & {"LA28397-0", "LA6729-3"})
            expected = "LA19952-3" if at_risk else "LA19983-8"
            assert o["valueCodeableConcept"]["coding"][0]["code"] == expected
            assert ("interpretation" in o) == at_risk


def test_conditions_goals_and_consents() -> None:
    resources = population_200()
    conditions = [r for r in resources if r["resourceType"] == "Condition"]
    assert conditions
    for c in conditions:
        categories = {cat["coding"][0]["code"] for cat in c["category"]}
        assert "health-concern" in categories
        icd = [x["code"] for x in c["code"]["coding"] if x["system"].endswith("icd-10-cm")]
        assert icd and all(code.startswith("Z59.") for code in icd)
        status = c["clinicalStatus"]["coding"][0]["code"]
        assert status in {"active", "resolved"}
        assert ("abatementDateTime" in c) == (status == "resolved")
        assert "onsetDateTime" in c or "onsetPeriod" in c
    for g in (r for r in resources if r["resourceType"] == "Goal"):
        assert g["addresses"][0]["reference"].startswith("Condition/")
    for consent in (r for r in resources if r["resourceType"] == "Consent"):
        assert consent["status"] == "active"
        assert consent["scope"]["coding"][0]["code"] == "patient-privacy"
        assert consent["provision"]["type"] == "permit"


def test_referrals_close_the_loop() -> None:
    resources = population_200()
    index = by_id(resources)
    tasks = [r for r in resources if r["resourceType"] == "Task"]
    assert tasks
    allowed = {"requested", "accepted", "in-progress", "completed", "rejected", "cancelled"}
    for task in tasks:
        assert task["status"] in allowed
        assert task["intent"] == "order"
        assert task["code"]["coding"][0] == {
            "system": "http://hl7.org/fhir/CodeSystem/task-code",
            "code": "fulfill",
            "display": "Fulfill the focal request",
        }
        sr = index[task["focus"]["reference"]]
        assert sr["resourceType"] == "ServiceRequest" and sr["intent"] == "order"
        assert task["for"] == sr["subject"]
        assert task["owner"]["reference"] == sr["performer"][0]["reference"]
        assert task["authoredOn"] == sr["authoredOn"]
        assert index[sr["requester"]["reference"]]["resourceType"] == "PractitionerRole"
        assert index[sr["reasonReference"][0]["reference"]]["resourceType"] == "Condition"
        owner = index[task["owner"]["reference"]]
        assert owner["resourceType"] == "Organization"
        domain = next(
            c["coding"][0]["code"] for c in sr["category"] if c["coding"][0]["system"] == SDOHCC_CS
        )
        services = [
            r
            for r in resources
            if r["resourceType"] == "HealthcareService"
            and r["providedBy"]["reference"] == f"Organization/{owner['id']}"
        ]
        assert domain in {s["category"][0]["coding"][0]["code"] for s in services}
        if task["status"] == "completed":
            assert sr["status"] == "completed"
            procedure = index[task["output"][0]["valueReference"]["reference"]]
            assert procedure["resourceType"] == "Procedure"
            assert procedure["basedOn"][0]["reference"] == f"ServiceRequest/{sr['id']}"
            assert task["executionPeriod"]["end"] == procedure["performedDateTime"]
        if task["status"] in {"rejected", "cancelled"}:
            assert task["statusReason"]["text"]
        assert task["authoredOn"] <= task["lastModified"]
    assert {t["status"] for t in tasks} == allowed


def test_all_dates_are_fhir_strings() -> None:
    keys = {
        "effectiveDateTime",
        "issued",
        "authoredOn",
        "lastModified",
        "recordedDate",
        "onsetDateTime",
        "abatementDateTime",
        "performedDateTime",
        "dateTime",
        "birthDate",
        "startDate",
        "statusDate",
        "dueDate",
        "start",
        "end",
    }

    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in keys:
                    assert isinstance(value, str), key
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    found = 0
    for resource in population_200():
        for value in walk(resource):
            assert DATE_TIME.match(value), value
            found += 1
    assert found > 1000
