"""The bundled SDOHCC 3.0.0 and US Core 7.0.0 profiles, against the IG's examples and against
instances that each break one rule.

Three things a server relying on ``profiles/definitions`` depends on:

1. every IG example passes the profiles it claims (the examples are IG 2.3.0; where one
   deviates from 3.0.0 on purpose, ``DEVIATIONS`` names the exact error it must produce), and a
   claimed profile we do not bundle is reported as unknown, the example still passing the base
   R4 checks;
2. each profile rejects what it forbids: per profile at least three mutations of a valid
   instance (a missing required element, a code outside a required binding where the profile
   has a binding we can check, a broken invariant, fixed value or forbidden element), each
   failing with the expected severity, issue code and FHIRPath expression;
3. a small valid instance of every profile, written here, passes, so every bundled definition
   is exercised even without the examples.

The examples are read from ``../shared/conformance/sdohcc/examples``; when that directory is
absent the tests that need it skip (the rest do not need it).
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from profiles.models import ResourceInvalid, validate_resource
from profiles.registry import DEFINITIONS, ProfileRegistry
from profiles.validator import UnknownProfile, ValidationIssue, Validator
from terminology import Terminology

EXAMPLES = (
    Path(__file__).resolve().parents[2] / ".." / "shared" / "conformance" / "sdohcc" / "examples"
)
NO_EXAMPLES = f"SDOHCC examples not found at {EXAMPLES} (the shared data is not checked out)"

SD = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
UC = "http://hl7.org/fhir/us/core/StructureDefinition/"
TEMP = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
CONDITION_CATEGORY = "http://terminology.hl7.org/CodeSystem/condition-category"
CDC_RACE = "urn:oid:2.16.840.1.113883.6.238"

# Examples that deviate from SDOHCC 3.0.0, with the one error each must produce and why. The
# error is asserted exactly, so a validator change cannot hide or widen the deviation.
DEVIATIONS: dict[str, tuple[str, str]] = {
    "Group-SDOHCC-GroupSDOHPatientsForPayerExample.json": (
        "Group.characteristic[0].value",
        "IG 2.3.0 example: HasSDOHCondition uses valueReference to the SDOHCC category value set;"
        " 3.0.0 requires valueCodeableConcept (FHIR-52375, research note §8 item 14)",
    ),
}


def url_of(profile_id: str) -> str:
    """The canonical of a bundled profile from its id."""
    return (SD if profile_id.startswith("SDOHCC-") else UC) + profile_id


@functools.cache
def validator() -> Validator:
    return Validator(ProfileRegistry.bundled(), Terminology.bundled())


def errors(issues: list[ValidationIssue]) -> list[ValidationIssue]:
    return [i for i in issues if i.severity == "error"]


def triples(issues: list[ValidationIssue]) -> set[tuple[str, str, str]]:
    return {(i.severity, i.code, i.expression) for i in issues}


@functools.cache
def _example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def example(name: str) -> dict[str, Any]:
    """A copy of one IG example; skips the test when the examples are not checked out."""
    if not EXAMPLES.is_dir():
        pytest.skip(NO_EXAMPLES)
    return copy.deepcopy(_example(name))


# --- small instances -----------------------------------------------------------------------


def concept(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def ref(target: str) -> dict[str, Any]:
    return {"reference": target}


PATIENT_REF = ref("Patient/p1")
ORG_REF = ref("Organization/o1")
SDOH = concept(US_CORE_CATEGORY, "sdoh")
SELF_REPORTED = concept(TEMP, "self-reported")
PERSONAL_CHARACTERISTIC = concept(TEMP, "personal-characteristic")
APPOINTMENT = SD + "SDOHCC-ExtensionHealthcareServiceTelecomAppointment"
CAPACITY = SD + "SDOHCC-ExtensionHealthcareServiceCapacityStatus"
ASSERTER = SD + "SDOHCC-ExtensionConditionAsserter"


def race_extension() -> dict[str, Any]:
    return {
        "url": UC + "us-core-race",
        "extension": [
            {"url": "ombCategory", "valueCoding": {"system": CDC_RACE, "code": "2106-3"}},
            {"url": "text", "valueString": "White"},
        ],
    }


def patient(*extensions: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:2.16.840.1.113883.3.7", "value": "12345"}],
        "name": [{"family": "Doe", "given": ["Ann"]}],
        "gender": "female",
    }
    if extensions:
        resource["extension"] = list(extensions)
    return resource


def healthcare_service(*extensions: dict[str, Any]) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "HealthcareService",
        "active": True,
        "telecom": [
            {
                "extension": [{"url": APPOINTMENT, "valueBoolean": True}],
                "system": "phone",
                "value": "555-0100",
            }
        ],
    }
    if extensions:
        resource["extension"] = list(extensions)
    return resource


def personal_characteristic(loinc: str, **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [PERSONAL_CHARACTERISTIC],
        "code": concept(LOINC, loinc),
        "subject": PATIENT_REF,
        "effectiveDateTime": "2024-03-01",
        "performer": [PATIENT_REF],
        "method": SELF_REPORTED,
        **elements,
    }


CAPACITY_HOST = "http://sdoh-fhir.test/StructureDefinition/HealthcareServiceWithCapacity"
# A HealthcareService profile requiring the capacity status extension, as the IG's (draft,
# not bundled) SDOHCC-HealthcareServiceForReferralManagement does: the extension definition is
# checked through a slice that names it.
CAPACITY_HOST_DEFINITION = {
    "resourceType": "StructureDefinition",
    "url": CAPACITY_HOST,
    "name": "TestHealthcareServiceWithCapacity",
    "status": "draft",
    "fhirVersion": "4.0.1",
    "kind": "resource",
    "abstract": False,
    "type": "HealthcareService",
    "baseDefinition": SD + "SDOHCC-HealthcareService",
    "derivation": "constraint",
    "differential": {
        "element": [
            {
                "id": "HealthcareService.extension",
                "path": "HealthcareService.extension",
                "slicing": {"discriminator": [{"type": "value", "path": "url"}], "rules": "open"},
            },
            {
                "id": "HealthcareService.extension:capacity",
                "path": "HealthcareService.extension",
                "sliceName": "capacity",
                "min": 1,
                "max": "1",
                "type": [{"code": "Extension", "profile": [CAPACITY]}],
            },
        ]
    },
}


def capacity_extension() -> dict[str, Any]:
    return {
        "url": CAPACITY,
        "extension": [
            {"url": "capacityStatus", "valueCodeableConcept": concept(TEMP, "waitlist")},
            {"url": "capacityNotes", "valueString": "about two weeks"},
        ],
    }


# A valid instance of every bundled definition, by id. An extension's instance is a resource
# that carries it, validated against HOSTS[id] (the profile whose slice names the extension).
MINIMAL: dict[str, dict[str, Any]] = {
    "SDOHCC-TaskForReferralManagement": {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill"),
        "focus": ref("ServiceRequest/sr1"),
        "for": PATIENT_REF,
        "authoredOn": "2024-03-01T10:00:00Z",
        "requester": ORG_REF,
        "owner": ref("Organization/cbo1"),
    },
    "SDOHCC-TaskForPatient": {
        "resourceType": "Task",
        "status": "ready",
        "intent": "order",
        "priority": "routine",
        "code": concept(TEMP, "general-information"),
        "description": "Bring a photo ID to your appointment.",
        "for": PATIENT_REF,
        "authoredOn": "2024-03-01T10:00:00Z",
        "requester": ORG_REF,
        "owner": PATIENT_REF,
    },
    "SDOHCC-ServiceRequest": {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "category": [concept(TEMP, "food-insecurity")],
        "code": concept(SNOMED, "467771000124109"),
        "subject": PATIENT_REF,
    },
    "SDOHCC-Procedure": {
        "resourceType": "Procedure",
        "status": "completed",
        "code": concept(SNOMED, "467771000124109"),
        "subject": PATIENT_REF,
        "performedDateTime": "2024-03-05",
    },
    "SDOHCC-Condition": {
        "resourceType": "Condition",
        "clinicalStatus": concept(
            "http://terminology.hl7.org/CodeSystem/condition-clinical", "active"
        ),
        "category": [concept(CONDITION_CATEGORY, "problem-list-item"), SDOH],
        "code": concept(SNOMED, "733423003"),
        "subject": PATIENT_REF,
    },
    "SDOHCC-ObservationScreeningResponse": {
        "resourceType": "Observation",
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, "survey"), SDOH],
        "code": concept(LOINC, "88122-7"),
        "subject": PATIENT_REF,
        "effectiveDateTime": "2024-03-01",
        "valueCodeableConcept": concept(LOINC, "LA28397-0"),
    },
    "SDOHCC-ObservationAssessment": {
        "resourceType": "Observation",
        "status": "final",
        "category": [SDOH],
        "code": concept(SNOMED, "160695008"),
        "subject": PATIENT_REF,
        "valueBoolean": True,
    },
    "SDOHCC-ObservationProgramEnrollmentStatus": {
        "resourceType": "Observation",
        "status": "final",
        "category": [SDOH, concept(TEMP, "program-enrollment")],
        "code": {"text": "Supplemental Nutrition Assistance Program"},
        "subject": PATIENT_REF,
        "focus": [ref("HealthcareService/snap")],
        "valueCodeableConcept": concept(TEMP, "enrolled"),
    },
    "SDOHCC-Goal": {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": concept(SNOMED, "1078229009"),
        "subject": PATIENT_REF,
    },
    "SDOHCC-Consent": {
        "resourceType": "Consent",
        "status": "active",
        "scope": concept("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy"),
        "category": [concept("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IDSCL")],
        "patient": PATIENT_REF,
        "dateTime": "2024-03-01",
        "organization": [ORG_REF],
        "sourceAttachment": {"contentType": "application/pdf", "url": "https://example.org/c.pdf"},
        "policyRule": concept(
            "http://terminology.hl7.org/CodeSystem/consentpolicycodes", "hipaa-auth"
        ),
    },
    "SDOHCC-Group": {
        "resourceType": "Group",
        "active": True,
        "type": "person",
        "actual": True,
        "characteristic": [
            {
                "code": concept(TEMP, "sdoh-condition-category"),
                "valueCodeableConcept": concept(TEMP, "food-insecurity"),
                "exclude": False,
            },
            {
                "code": concept(TEMP, "payer-coverage"),
                "valueReference": ref("Organization/payer"),
                "exclude": False,
            },
        ],
    },
    "SDOHCC-HealthcareService": healthcare_service(),
    "SDOHCC-Location": {
        "resourceType": "Location",
        "name": "Family Resource Center",
        "address": {"city": "Frankfort", "state": "KY"},
    },
    "SDOHCC-practitionerrole": {
        "resourceType": "PractitionerRole",
        "practitioner": ref("Practitioner/pr1"),
        "organization": ORG_REF,
    },
    "SDOHCC-ObservationPersonalCharacteristic": personal_characteristic(
        "72826-1", component=[{"code": concept(LOINC, "72826-1"), "valueString": "White"}]
    ),
    "SDOHCC-ObservationRaceOMB": personal_characteristic(
        "72826-1",
        component=[
            {
                "code": concept(LOINC, "72826-1"),
                "valueCodeableConcept": concept(CDC_RACE, "2106-3"),
            },
            {"code": concept(LOINC, "72826-1"), "valueString": "White"},
        ],
    ),
    "SDOHCC-ObservationEthnicityOMB": personal_characteristic(
        "69490-1",
        component=[
            {"code": concept(LOINC, "69490-1"), "valueCodeableConcept": concept(CDC_RACE, "2186-5")}
        ],
    ),
    "SDOHCC-ObservationGenderIdentity": personal_characteristic(
        "76691-5", valueCodeableConcept=concept(SNOMED, "446151000124109")
    ),
    "SDOHCC-ObservationPersonalPronouns": personal_characteristic(
        "90778-2", valueCodeableConcept=concept(LOINC, "LA29519-8")
    ),
    "SDOHCC-ObservationRecordedSexGender": personal_characteristic(
        "99502-7",
        valueCodeableConcept=concept(LOINC, "LA3-6"),
        derivedFrom=[
            {"identifier": {"type": concept("http://terminology.hl7.org/CodeSystem/v2-0203", "DL")}}
        ],
    ),
    "SDOHCC-ObservationSexualOrientation": {
        "resourceType": "Observation",
        "status": "final",
        "code": concept(LOINC, "76690-7"),
        "subject": PATIENT_REF,
        "valueCodeableConcept": concept(SNOMED, "20430005"),
        "method": SELF_REPORTED,
    },
    "SDOHCC-ExtensionConditionAsserter": {
        "resourceType": "Condition",
        "extension": [{"url": ASSERTER, "valueReference": ref("Device/hvs-calculator")}],
        "category": [
            concept("http://hl7.org/fhir/us/core/CodeSystem/condition-category", "health-concern"),
            SDOH,
        ],
        "code": concept(SNOMED, "733423003"),
        "subject": PATIENT_REF,
    },
    "SDOHCC-ExtensionHealthcareServiceTelecomAppointment": healthcare_service(),
    "SDOHCC-ExtensionHealthcareServiceCapacityStatus": healthcare_service(capacity_extension()),
    "us-core-patient": patient(),
    "us-core-race": patient(race_extension()),
    "us-core-ethnicity": patient(
        {
            "url": UC + "us-core-ethnicity",
            "extension": [
                {"url": "ombCategory", "valueCoding": {"system": CDC_RACE, "code": "2186-5"}},
                {"url": "text", "valueString": "Not Hispanic or Latino"},
            ],
        }
    ),
    "us-core-tribal-affiliation": patient(
        {
            "url": UC + "us-core-tribal-affiliation",
            "extension": [
                {
                    "url": "tribalAffiliation",
                    "valueCodeableConcept": concept(
                        "http://terminology.hl7.org/CodeSystem/v3-TribalEntityUS", "40"
                    ),
                },
                {"url": "isEnrolled", "valueBoolean": True},
            ],
        }
    ),
    "us-core-birthsex": patient({"url": UC + "us-core-birthsex", "valueCode": "F"}),
    "us-core-sex": patient({"url": UC + "us-core-sex", "valueCode": "248152002"}),
    "us-core-genderIdentity": patient(
        {
            "url": UC + "us-core-genderIdentity",
            "valueCodeableConcept": concept(SNOMED, "446151000124109"),
        }
    ),
    "us-core-organization": {"resourceType": "Organization", "active": True, "name": "Food Bank"},
    "us-core-practitioner": {
        "resourceType": "Practitioner",
        "identifier": [{"system": "http://hl7.org/fhir/sid/us-npi", "value": "9941339100"}],
        "name": [{"family": "Water"}],
    },
    "us-core-practitionerrole": {
        "resourceType": "PractitionerRole",
        "practitioner": ref("Practitioner/pr1"),
        "telecom": [{"system": "phone", "value": "555-0101"}],
    },
    "us-core-relatedperson": {
        "resourceType": "RelatedPerson",
        "active": True,
        "patient": PATIENT_REF,
        "name": [{"family": "Doe"}],
    },
    "us-core-location": {"resourceType": "Location", "name": "Family Resource Center"},
    "us-core-servicerequest": {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "code": concept(SNOMED, "467771000124109"),
        "subject": PATIENT_REF,
    },
    "us-core-simple-observation": {
        "resourceType": "Observation",
        "status": "final",
        "category": [SDOH],
        "code": concept(SNOMED, "160695008"),
        "subject": PATIENT_REF,
        "valueBoolean": True,
    },
    "us-core-observation-screening-assessment": {
        "resourceType": "Observation",
        "status": "final",
        "category": [concept(OBSERVATION_CATEGORY, "survey")],
        "code": concept(LOINC, "88122-7"),
        "subject": PATIENT_REF,
        "valueCodeableConcept": concept(LOINC, "LA28397-0"),
    },
    "us-core-observation-sexual-orientation": {
        "resourceType": "Observation",
        "status": "final",
        "code": concept(LOINC, "76690-7"),
        "subject": PATIENT_REF,
        "valueCodeableConcept": concept(SNOMED, "20430005"),
    },
    "us-core-goal": {
        "resourceType": "Goal",
        "lifecycleStatus": "active",
        "description": {"text": "Stable housing"},
        "subject": PATIENT_REF,
    },
    "us-core-condition-problems-health-concerns": {
        "resourceType": "Condition",
        "category": [concept(CONDITION_CATEGORY, "problem-list-item")],
        "code": concept(SNOMED, "32911000"),
        "subject": PATIENT_REF,
    },
    "us-core-condition-encounter-diagnosis": {
        "resourceType": "Condition",
        "category": [concept(CONDITION_CATEGORY, "encounter-diagnosis")],
        "code": concept(SNOMED, "32911000"),
        "subject": PATIENT_REF,
        "encounter": ref("Encounter/e1"),
    },
    "us-core-documentreference": {
        "resourceType": "DocumentReference",
        "status": "current",
        "type": concept(LOINC, "34133-9"),
        "category": [
            concept(
                "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "clinical-note",
            )
        ],
        "subject": PATIENT_REF,
        "content": [
            {"attachment": {"contentType": "application/pdf", "url": "https://example.org/d.pdf"}}
        ],
    },
    "us-core-questionnaireresponse": {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://example.org/Questionnaire/hvs",
        "status": "completed",
        "subject": PATIENT_REF,
        "authored": "2024-03-01",
    },
    "us-core-encounter": {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [concept(SNOMED, "185349003")],
        "subject": PATIENT_REF,
    },
    "us-core-careteam": {
        "resourceType": "CareTeam",
        "status": "active",
        "subject": PATIENT_REF,
        "participant": [
            {"role": [concept(SNOMED, "223366009")], "member": ref("Practitioner/pr1")}
        ],
    },
    "us-core-careplan": {
        "resourceType": "CarePlan",
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml">Plan</div>',
        },
        "status": "active",
        "intent": "plan",
        "category": [
            concept("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan")
        ],
        "subject": PATIENT_REF,
    },
}

# The profile an extension's instance is validated against.
HOSTS: dict[str, str] = {
    "SDOHCC-ExtensionConditionAsserter": SD + "SDOHCC-Condition",
    "SDOHCC-ExtensionHealthcareServiceTelecomAppointment": SD + "SDOHCC-HealthcareService",
    "SDOHCC-ExtensionHealthcareServiceCapacityStatus": CAPACITY_HOST,
    "us-core-race": UC + "us-core-patient",
    "us-core-ethnicity": UC + "us-core-patient",
    "us-core-tribal-affiliation": UC + "us-core-patient",
    "us-core-birthsex": UC + "us-core-patient",
    "us-core-sex": UC + "us-core-patient",
    "us-core-genderIdentity": UC + "us-core-patient",
}


@functools.cache
def validator_with_capacity_host() -> Validator:
    registry = ProfileRegistry.bundled().extended([CAPACITY_HOST_DEFINITION])
    return Validator(registry, Terminology.bundled())


def validate(resource: dict[str, Any], profile_url: str) -> list[ValidationIssue]:
    checker = validator_with_capacity_host() if profile_url == CAPACITY_HOST else validator()
    return checker.validate(resource, profile_url)


# --- 0. the definitions themselves --------------------------------------------------------


def _definitions() -> list[dict[str, Any]]:
    return [
        json.loads(path.read_text(encoding="utf-8")) for path in sorted(DEFINITIONS.glob("*.json"))
    ]


@pytest.mark.parametrize("definition", _definitions(), ids=lambda d: d.get("id", "?"))
def test_definition_is_a_differential_with_the_real_canonical(definition: dict[str, Any]) -> None:
    validate_resource(definition)
    sd_id = definition["id"]
    assert definition["url"] == url_of(sd_id)
    assert definition["version"] == ("3.0.0" if sd_id.startswith("SDOHCC-") else "7.0.0")
    assert (definition["fhirVersion"], definition["derivation"]) == ("4.0.1", "constraint")
    assert "snapshot" not in definition
    elements = definition["differential"]["element"]
    assert all(e.get("id") and e.get("path") for e in elements)
    sources = {c["source"] for e in elements for c in e.get("constraint", [])}
    assert sources <= {definition["url"]}


# --- 1. the IG's examples --------------------------------------------------------------------


def _claims() -> list[Any]:
    """(example file, claimed profile) for every example and every profile it claims."""
    if not EXAMPLES.is_dir():
        return [pytest.param("", "", marks=pytest.mark.skip(reason=NO_EXAMPLES), id="no-examples")]
    claims = []
    for path in sorted(EXAMPLES.glob("*.json")):
        for url in _example(path.name).get("meta", {}).get("profile", []):
            claims.append(pytest.param(path.name, url, id=f"{path.stem}|{url.rsplit('/', 1)[-1]}"))
    return claims


@pytest.mark.parametrize(("name", "profile_url"), _claims())
def test_example_conforms_to_the_profiles_it_claims(name: str, profile_url: str) -> None:
    resource = example(name)
    if not ProfileRegistry.bundled().known(profile_url):
        # Not bundled (SDC Questionnaire/QuestionnaireResponse): the server reports the
        # profile as unknown (an information issue), and the base R4 checks still hold.
        with pytest.raises(UnknownProfile) as raised:
            validator().validate(resource, profile_url)
        assert raised.value.url == profile_url
        validate_resource(resource)
        return
    found = [(i.expression, i.message) for i in errors(validator().validate(resource, profile_url))]
    if name in DEVIATIONS:
        expression, reason = DEVIATIONS[name]
        assert [e for e, _ in found] == [expression], reason
    else:
        assert found == []


def test_every_deviation_names_an_example_that_exists() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(NO_EXAMPLES)
    assert all((EXAMPLES / name).is_file() for name in DEVIATIONS)


def test_examples_claim_the_lower_case_practitionerrole_profile() -> None:
    """meta.profile must match the canonical exactly: the IG's id is SDOHCC-practitionerrole."""
    role = example("PractitionerRole-SDOHCC-PractitionerRoleDrJanWaterExample.json")
    assert ProfileRegistry.bundled().known(role["meta"]["profile"][0])
    assert not ProfileRegistry.bundled().known(SD + "SDOHCC-PractitionerRole")


# --- 3. a valid instance of every bundled definition ------------------------------------------


def test_every_bundled_definition_has_a_valid_instance_here() -> None:
    bundled = set(ProfileRegistry.bundled().urls())
    assert bundled == {url_of(profile_id) for profile_id in MINIMAL}


@pytest.mark.parametrize("profile_id", sorted(MINIMAL))
def test_minimal_instance_is_valid(profile_id: str) -> None:
    profile_url = HOSTS.get(profile_id, url_of(profile_id))
    issues = validate(copy.deepcopy(MINIMAL[profile_id]), profile_url)
    assert errors(issues) == []
    assert [i for i in issues if i.severity == "warning"] == []


def test_the_abstract_personal_characteristic_profile_asks_for_a_concrete_one() -> None:
    resource = copy.deepcopy(MINIMAL["SDOHCC-ObservationPersonalCharacteristic"])
    issues = validator().validate(resource, SD + "SDOHCC-ObservationPersonalCharacteristic")
    assert ("information", "informational", "Observation") in triples(issues)
    assert errors(issues) == []


# --- 2. each profile rejects what it forbids ---------------------------------------------------


Change = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Expected:
    """The issue a mutation must produce; ``detail`` is text its message must contain (an
    invariant's key, a slice's name), so that a neighbouring rule cannot stand in for it."""

    severity: str
    code: str
    expression: str
    detail: str = ""

    def found_in(self, issues: list[ValidationIssue]) -> bool:
        return any(
            (i.severity, i.code, i.expression) == (self.severity, self.code, self.expression)
            and self.detail in i.message
            for i in issues
        )


@dataclass(frozen=True)
class Mutation:
    """One rule broken in a valid instance, and the issue it must produce."""

    profile: str  # bundled definition id; an extension's mutations use its host profile
    broken: str  # what is broken, for the test id
    change: Change
    expected: Expected
    base: str | None = None  # an IG example file; None: MINIMAL[profile]


def drop(*keys: str) -> Change:
    def change(resource: dict[str, Any]) -> None:
        for key in keys:
            resource.pop(key)

    return change


def put(key: str, value: Any) -> Change:
    def change(resource: dict[str, Any]) -> None:
        resource[key] = copy.deepcopy(value)

    return change


def both(*changes: Change) -> Change:
    def change(resource: dict[str, Any]) -> None:
        for each in changes:
            each(resource)

    return change


def edit(function: Callable[[dict[str, Any]], Any]) -> Change:
    """A change written as an expression on the resource (its result is ignored)."""

    def change(resource: dict[str, Any]) -> None:
        function(resource)

    return change


def assign(locate: Callable[[dict[str, Any]], Any], key: str | int, value: Any) -> Change:
    """Set ``key`` (a name or a list index) of the element ``locate`` finds."""

    def change(resource: dict[str, Any]) -> None:
        locate(resource)[key] = copy.deepcopy(value)

    return change


def set_value(
    locate: Callable[[dict[str, Any]], dict[str, Any]], key: str | None, value: Any = None
) -> Change:
    """Replace the ``value[x]`` of the element ``locate`` finds; ``key`` None removes it."""

    def change(resource: dict[str, Any]) -> None:
        element = locate(resource)
        for old in [k for k in element if k.startswith("value")]:
            del element[old]
        if key is not None:
            element[key] = copy.deepcopy(value)

    return change


def missing(path: str, slice_name: str = "") -> Expected:
    """Fewer occurrences than required (of a slice, when named)."""
    return Expected("error", "required", path, f"slice '{slice_name}'" if slice_name else "")


def not_in_value_set(path: str) -> Expected:
    return Expected("error", "code-invalid", path)


def broken_invariant(path: str, key: str) -> Expected:
    return Expected("error", "invariant", path, f"{key}:")


def wrong_value(path: str) -> Expected:
    return Expected("error", "value", path)


def not_allowed(path: str, slice_name: str = "") -> Expected:
    """A forbidden element, too many occurrences (of a slice, when named), a type or a
    reference target not allowed."""
    return Expected("error", "structure", path, f"slice '{slice_name}'" if slice_name else "")


REFERRAL_TASK = "Task-SDOHCC-TaskReferralManagementOrderFulfillmentAcceptedExample.json"
PATIENT_TASK_CONTACT = "Task-SDOHCC-TaskPatientMakeAppointmentCompletedExample.json"
PATIENT_TASK_QUESTIONNAIRE = "Task-SDOHCC-TaskPatientRiskQuestionnaireCompletedExample.json"
PATIENT_TASK_REVIEW = "Task-SDOHCC-TaskPatientReviewInformationCompletedExample.json"
SERVICE_REQUEST = (
    "ServiceRequest-SDOHCC-ServiceRequestActiveFoodPantryApplicationAssistExample.json"
)
PROCEDURE = "Procedure-SDOHCC-ProcedureFoodPantryApplicationAssistanceExample.json"
CONDITION = "Condition-SDOHCC-ConditionHomelessExample.json"
CONDITION_DEVICE = "Condition-SDOHCC-ConditionAsserterDeviceExample.json"
SCREENING = "Observation-SDOHCC-ObservationResponseHungerVitalSignQuestion3Example.json"
ASSESSMENT = "Observation-SDOHCC-ObservationAssessmentTransportTooExpensiveExample.json"
GOAL = "Goal-SDOHCC-GoalFoodSecurityExample.json"
CONSENT = "Consent-SDOHCC-ConsentInformationDisclosureExample.json"
SERVICE = "HealthcareService-SDOHCC-HealthcareServiceTelecomAppointmentExample.json"
LOCATION = "Location-SDOHCC-LocationExample.json"
ROLE = "PractitionerRole-SDOHCC-PractitionerRoleDrJanWaterExample.json"
RACE = "Observation-SDOHCC-ObservationRaceOMBExample.json"
ETHNICITY = "Observation-SDOHCC-ObservationEthnicityOMBExample.json"
GENDER = "Observation-SDOHCC-ObservationGenderIdentityExample.json"
PRONOUNS = "Observation-SDOHCC-ObservationPersonalPronounsExample.json"
RECORDED_SEX = "Observation-SDOHCC-ObservationRecordedSexGenderExample.json"
ORIENTATION = "Observation-SDOHCC-ObservationSexualOrientationExample.json"
PATIENT = "Patient-pat-53234.json"
ORGANIZATION = "Organization-SDOHCC-OrganizationPayerExample.json"
PRACTITIONER = "Practitioner-SDOHCC-PractitionerDrJanWaterExample.json"


def _capacity_without_status(resource: dict[str, Any]) -> None:
    resource["extension"][0]["extension"] = [{"url": "capacityNotes", "valueString": "full"}]


def cases(profile: str, base: str | None, *rows: tuple[str, Change, Expected]) -> list[Mutation]:
    """The mutations of one profile, all made to the same base instance."""
    return [Mutation(profile, broken, change, expected, base) for broken, change, expected in rows]


MUTATIONS = [
    *cases(
        "SDOHCC-TaskForReferralManagement",
        REFERRAL_TASK,
        ("authoredOn missing", drop("authoredOn"), missing("Task.authoredOn")),
        ("status ready", put("status", "ready"), not_in_value_set("Task.status")),
        (
            "statusReason without text",
            put("statusReason", concept(TEMP, "no-capacity")),
            missing("Task.statusReason.text"),
        ),
        ("intent plan", put("intent", "plan"), wrong_value("Task.intent")),
        (
            "code not fulfill",
            put("code", concept("http://hl7.org/fhir/CodeSystem/task-code", "approve")),
            wrong_value("Task.code"),
        ),
        ("focus a Condition", put("focus", ref("Condition/c1")), not_allowed("Task.focus")),
    ),
    *cases(
        "SDOHCC-TaskForPatient",
        PATIENT_TASK_CONTACT,
        ("owner missing", drop("owner"), missing("Task.owner")),
        ("status requested", put("status", "requested"), not_in_value_set("Task.status")),
        ("priority asap", put("priority", "asap"), not_in_value_set("Task.priority")),
        (
            "SDOH-Task-4 make-contact without contact-entity",
            drop("input"),
            broken_invariant("Task", "SDOH-Task-4"),
        ),
        (
            "SDOH-Task-7 make-contact without description",
            drop("description"),
            broken_invariant("Task", "SDOH-Task-7"),
        ),
    ),
    *cases(
        "SDOHCC-TaskForPatient",
        PATIENT_TASK_QUESTIONNAIRE,
        (
            "SDOH-Task-1 questionnaire without category",
            edit(lambda r: r["input"].pop(1)),
            broken_invariant("Task", "SDOH-Task-1"),
        ),
    ),
    *cases(
        "SDOHCC-TaskForPatient",
        PATIENT_TASK_REVIEW,
        (
            "SDOH-Task-3 review-material focus not a document",
            put("focus", ref("Observation/o1")),
            broken_invariant("Task", "SDOH-Task-3"),
        ),
    ),
    *cases(
        "SDOHCC-TaskForPatient",
        None,
        (
            "SDOH-Task-2 general-information without description",
            drop("description"),
            broken_invariant("Task", "SDOH-Task-2"),
        ),
    ),
    *cases(
        "SDOHCC-ServiceRequest",
        SERVICE_REQUEST,
        ("code missing", drop("code"), missing("ServiceRequest.code")),
        (
            "status not a request status",
            put("status", "ready"),
            not_in_value_set("ServiceRequest.status"),
        ),
        (
            "bodySite present",
            put("bodySite", [concept(SNOMED, "368209003")]),
            not_allowed("ServiceRequest.bodySite"),
        ),
        (
            "subject a Practitioner",
            put("subject", ref("Practitioner/pr1")),
            not_allowed("ServiceRequest.subject"),
        ),
    ),
    *cases(
        "SDOHCC-Procedure",
        PROCEDURE,
        ("code missing", drop("code"), missing("Procedure.code")),
        (
            "status not an event status",
            put("status", "finished"),
            not_in_value_set("Procedure.status"),
        ),
        (
            "us-core-7 completed without performed",
            drop("performedDateTime"),
            broken_invariant("Procedure", "us-core-7"),
        ),
        ("subject a Group", put("subject", ref("Group/g1")), not_allowed("Procedure.subject")),
    ),
    *cases(
        "SDOHCC-Condition",
        CONDITION,
        ("code missing", drop("code"), missing("Condition.code")),
        (
            "clinicalStatus not a clinical status",
            put(
                "clinicalStatus",
                concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "cured"),
            ),
            not_in_value_set("Condition.clinicalStatus"),
        ),
        (
            "SDOH-Con-3 no sdoh category",
            assign(lambda r: r["category"], 1, concept(US_CORE_CATEGORY, "functional-status")),
            broken_invariant("Condition", "SDOH-Con-3"),
        ),
        (
            "SDOH-Con-2 no problem or health concern category",
            assign(lambda r: r["category"], 0, concept(SNOMED, "55607006")),
            broken_invariant("Condition", "SDOH-Con-2"),
        ),
    ),
    *cases(
        "SDOHCC-Condition",
        CONDITION_DEVICE,
        (
            "SDOH-Con-1 asserter and asserter device",
            put("asserter", ref("Patient/pat-53234")),
            broken_invariant("Condition", "SDOH-Con-1"),
        ),
    ),
    *cases(
        "SDOHCC-Condition",
        CONDITION,
        (
            "only one category",
            edit(lambda r: r.update(category=r["category"][1:2])),
            missing("Condition.category"),
        ),
        (
            "bodySite present",
            put("bodySite", [concept(SNOMED, "368209003")]),
            not_allowed("Condition.bodySite"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationScreeningResponse",
        SCREENING,
        ("effective missing", drop("effectiveDateTime"), missing("Observation.effective")),
        (
            "status preliminary",
            put("status", "preliminary"),
            not_in_value_set("Observation.status"),
        ),
        (
            "SDOH-Obs-4 no sdoh category",
            assign(lambda r: r["category"], 1, concept(US_CORE_CATEGORY, "functional-status")),
            broken_invariant("Observation", "SDOH-Obs-4"),
        ),
        (
            "specimen present",
            put("specimen", ref("Specimen/s1")),
            not_allowed("Observation.specimen"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationAssessment",
        ASSESSMENT,
        ("subject missing", drop("subject"), missing("Observation.subject")),
        (
            "status not an observation status",
            put("status", "draft"),
            not_in_value_set("Observation.status"),
        ),
        ("us-core-2 no value", drop("valueBoolean"), broken_invariant("Observation", "us-core-2")),
        (
            "SDOH-Obs-4 no sdoh category",
            edit(lambda r: r["category"].pop(0)),
            broken_invariant("Observation", "SDOH-Obs-4"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationProgramEnrollmentStatus",
        None,
        ("value missing", drop("valueCodeableConcept"), missing("Observation.value")),
        (
            "status not an observation status",
            put("status", "enrolled"),
            not_in_value_set("Observation.status"),
        ),
        (
            "focus not a HealthcareService",
            put("focus", [ref("Organization/o1")]),
            not_allowed("Observation.focus[0]"),
        ),
        (
            "two enrollment categories",
            edit(lambda r: r["category"].append(concept(TEMP, "program-enrollment"))),
            not_allowed("Observation.category", "enrollment"),
        ),
    ),
    *cases(
        "SDOHCC-Goal",
        GOAL,
        (
            "subject an absolute Practitioner url",
            put("subject", ref("https://ehr.example.org/fhir/Practitioner/pr1")),
            not_allowed("Goal.subject"),
        ),
        ("subject a Group", put("subject", ref("Group/g1")), not_allowed("Goal.subject")),
        (
            "addresses a Procedure",
            put("addresses", [ref("Procedure/p1")]),
            not_allowed("Goal.addresses[0]"),
        ),
    ),
    *cases(
        "SDOHCC-Consent",
        CONSENT,
        ("organization missing", drop("organization"), missing("Consent.organization")),
        (
            "two organizations",
            edit(lambda r: r["organization"].append(ref("Organization/o2"))),
            not_allowed("Consent.organization"),
        ),
        (
            "category not IDSCL",
            put("category", [concept("http://loinc.org", "59284-0")]),
            missing("Consent.category", "IDSCL"),
        ),
        ("source missing", drop("sourceAttachment"), missing("Consent.source")),
    ),
    *cases(
        "SDOHCC-Group",
        None,
        ("actual false", put("actual", False), wrong_value("Group.actual")),
        (
            "no payer characteristic",
            edit(lambda r: r["characteristic"].pop(1)),
            missing("Group.characteristic", "HasPayer"),
        ),
        (
            "exclude true",
            assign(lambda r: r["characteristic"][0], "exclude", True),
            wrong_value("Group.characteristic[0].exclude"),
        ),
        (
            "characteristic period present",
            assign(lambda r: r["characteristic"][1], "period", {"start": "2024-01-01"}),
            not_allowed("Group.characteristic[1].period"),
        ),
    ),
    *cases(
        "SDOHCC-HealthcareService",
        SERVICE,
        ("active false", put("active", False), wrong_value("HealthcareService.active")),
        (
            "no appointment telecom",
            edit(lambda r: r.update(telecom=r["telecom"][2:])),
            missing("HealthcareService.telecom", "AppointmentContact"),
        ),
        (
            "appointment telecom without value",
            edit(lambda r: r["telecom"][0].pop("value")),
            missing("HealthcareService.telecom[0].value"),
        ),
        (
            "location not a Location",
            put("location", [ref("Organization/o1")]),
            not_allowed("HealthcareService.location[0]"),
        ),
    ),
    *cases(
        "SDOHCC-Location",
        LOCATION,
        ("address missing", drop("address"), missing("Location.address")),
        ("name missing", drop("name"), missing("Location.name")),
        (
            "managingOrganization a Patient",
            put("managingOrganization", PATIENT_REF),
            not_allowed("Location.managingOrganization"),
        ),
    ),
    *cases(
        "SDOHCC-practitionerrole",
        ROLE,
        ("practitioner missing", drop("practitioner"), missing("PractitionerRole.practitioner")),
        ("organization missing", drop("organization"), missing("PractitionerRole.organization")),
        (
            "telecom without value",
            edit(lambda r: r["telecom"][0].pop("value")),
            missing("PractitionerRole.telecom[0].value"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationPersonalCharacteristic",
        None,
        (
            "status preliminary",
            put("status", "preliminary"),
            not_in_value_set("Observation.status"),
        ),
        (
            "no personal-characteristic category",
            put("category", [SDOH]),
            missing("Observation.category", "PersonalCharacteristic"),
        ),
        (
            "SDOH-Obs-3 no performer nor derivedFrom",
            drop("performer"),
            broken_invariant("Observation", "SDOH-Obs-3"),
        ),
        (
            "SDOH-Obs-2 focus without subject",
            both(drop("subject"), put("focus", [ref("RelatedPerson/mother")])),
            broken_invariant("Observation", "SDOH-Obs-2"),
        ),
        (
            "SDOH-Obs-1 subject reference and alternate reference",
            assign(
                lambda r: r["subject"],
                "extension",
                [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/alternate-reference",
                        "valueReference": ref("Practitioner/pr1"),
                    }
                ],
            ),
            broken_invariant("Observation.subject", "SDOH-Obs-1"),
        ),
        (
            "interpretation present",
            put(
                "interpretation",
                [
                    concept(
                        "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation", "POS"
                    )
                ],
            ),
            not_allowed("Observation.interpretation"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationRaceOMB",
        RACE,
        ("method missing", drop("method"), missing("Observation.method")),
        (
            "dataAbsentReason not in the SDOHCC value set",
            both(
                drop("component"),
                put(
                    "dataAbsentReason",
                    concept(
                        "http://terminology.hl7.org/CodeSystem/data-absent-reason", "not-performed"
                    ),
                ),
            ),
            not_in_value_set("Observation.dataAbsentReason"),
        ),
        (
            "SDOH-Race-1 both components and dataAbsentReason",
            put(
                "dataAbsentReason",
                concept(
                    "http://terminology.hl7.org/CodeSystem/data-absent-reason", "asked-declined"
                ),
            ),
            broken_invariant("Observation", "SDOH-Race-1"),
        ),
        (
            "value present",
            put("valueCodeableConcept", concept(CDC_RACE, "2106-3")),
            not_allowed("Observation.value"),
        ),
        (
            "code not 72826-1",
            put("code", concept(LOINC, "32624-9")),
            wrong_value("Observation.code"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationEthnicityOMB",
        ETHNICITY,
        ("method missing", drop("method"), missing("Observation.method")),
        (
            "status preliminary",
            put("status", "preliminary"),
            not_in_value_set("Observation.status"),
        ),
        (
            "SDOH-Ethnicity-1 neither components nor reason",
            drop("component"),
            broken_invariant("Observation", "SDOH-Ethnicity-1"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationGenderIdentity",
        GENDER,
        ("value missing", drop("valueCodeableConcept"), missing("Observation.value")),
        (
            "status preliminary",
            put("status", "preliminary"),
            not_in_value_set("Observation.status"),
        ),
        (
            "code not 76691-5",
            put("code", concept(LOINC, "76690-7")),
            wrong_value("Observation.code"),
        ),
        (
            "dataAbsentReason present",
            put(
                "dataAbsentReason",
                concept(
                    "http://terminology.hl7.org/CodeSystem/data-absent-reason", "asked-declined"
                ),
            ),
            not_allowed("Observation.dataAbsentReason"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationPersonalPronouns",
        PRONOUNS,
        ("method missing", drop("method"), missing("Observation.method")),
        ("status amended", put("status", "amended"), not_in_value_set("Observation.status")),
        (
            "value a string",
            both(drop("valueCodeableConcept"), put("valueString", "she/her")),
            not_allowed("Observation.value"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationRecordedSexGender",
        RECORDED_SEX,
        ("derivedFrom missing", drop("derivedFrom"), missing("Observation.derivedFrom")),
        ("status registered", put("status", "registered"), not_in_value_set("Observation.status")),
        (
            "two derivedFrom",
            edit(lambda r: r["derivedFrom"].append(ref("DocumentReference/birth-certificate"))),
            not_allowed("Observation.derivedFrom"),
        ),
        (
            "specimen present",
            put("specimen", ref("Specimen/s1")),
            not_allowed("Observation.specimen"),
        ),
    ),
    *cases(
        "SDOHCC-ObservationSexualOrientation",
        ORIENTATION,
        ("method missing", drop("method"), missing("Observation.method")),
        (
            "status not an observation status",
            put("status", "draft"),
            not_in_value_set("Observation.status"),
        ),
        (
            "code not 76690-7",
            put("code", concept(LOINC, "76691-5")),
            wrong_value("Observation.code"),
        ),
        ("subject a Group", put("subject", ref("Group/g1")), not_allowed("Observation.subject")),
    ),
    *cases(
        "SDOHCC-ExtensionConditionAsserter",
        CONDITION_DEVICE,
        (
            "asserter not a Device",
            assign(lambda r: r["extension"][0], "valueReference", ref("Patient/pat-53234")),
            not_allowed("Condition.extension[0].value"),
        ),
        (
            "asserter value missing",
            set_value(lambda r: r["extension"][0], None),
            missing("Condition.extension[0].value"),
        ),
        (
            "asserter value a string",
            set_value(lambda r: r["extension"][0], "valueString", "HVS"),
            not_allowed("Condition.extension[0].value"),
        ),
    ),
    *cases(
        "SDOHCC-ExtensionHealthcareServiceTelecomAppointment",
        SERVICE,
        (
            "valueBoolean false",
            set_value(lambda r: r["telecom"][0]["extension"][0], "valueBoolean", False),
            wrong_value("HealthcareService.telecom[0].extension[0].value"),
        ),
        (
            "value missing",
            set_value(lambda r: r["telecom"][0]["extension"][0], None),
            missing("HealthcareService.telecom[0].extension[0].value"),
        ),
        (
            "value a string",
            set_value(lambda r: r["telecom"][0]["extension"][0], "valueString", "yes"),
            not_allowed("HealthcareService.telecom[0].extension[0].value"),
        ),
    ),
    *cases(
        "SDOHCC-ExtensionHealthcareServiceCapacityStatus",
        None,
        (
            "capacityStatus missing",
            edit(_capacity_without_status),
            missing("HealthcareService.extension[0].extension", "capacityStatus"),
        ),
        (
            "value[x] present",
            set_value(lambda r: r["extension"][0], "valueString", "full"),
            not_allowed("HealthcareService.extension[0].value"),
        ),
        (
            "capacityNotes not a string",
            set_value(lambda r: r["extension"][0]["extension"][1], "valueBoolean", True),
            not_allowed("HealthcareService.extension[0].extension[1].value"),
        ),
    ),
    *cases(
        "us-core-patient",
        PATIENT,
        ("identifier missing", drop("identifier"), missing("Patient.identifier")),
        ("gender not administrative", put("gender", "f"), not_in_value_set("Patient.gender")),
        (
            "us-core-6 name without family or given",
            assign(lambda r: r["name"], 0, {"text": "Colin Abbas"}),
            broken_invariant("Patient.name[0]", "us-core-6"),
        ),
        (
            "identifier without system",
            edit(lambda r: r["identifier"][0].pop("system")),
            missing("Patient.identifier[0].system"),
        ),
    ),
    *cases(
        "us-core-race",
        PATIENT,
        (
            "text missing",
            edit(lambda r: r["extension"][0]["extension"].pop()),
            missing("Patient.extension[0].extension", "text"),
        ),
        (
            "six OMB categories",
            edit(
                lambda r: r["extension"][0]["extension"].extend(
                    {"url": "ombCategory", "valueCoding": {"system": CDC_RACE, "code": code}}
                    for code in ("2054-5", "2076-8", "2131-1")
                )
            ),
            not_allowed("Patient.extension[0].extension", "ombCategory"),
        ),
        (
            "value[x] present",
            set_value(lambda r: r["extension"][0], "valueString", "x"),
            not_allowed("Patient.extension[0].value"),
        ),
    ),
    *cases(
        "us-core-ethnicity",
        PATIENT,
        (
            "text missing",
            edit(lambda r: r["extension"][1]["extension"].pop()),
            missing("Patient.extension[1].extension", "text"),
        ),
        (
            "two OMB categories",
            edit(
                lambda r: r["extension"][1]["extension"].append(
                    {"url": "ombCategory", "valueCoding": {"system": CDC_RACE, "code": "2186-5"}}
                )
            ),
            not_allowed("Patient.extension[1].extension", "ombCategory"),
        ),
        (
            "detailed not a Coding",
            set_value(lambda r: r["extension"][1]["extension"][1], "valueString", "Dominican"),
            not_allowed("Patient.extension[1].extension[1].value"),
        ),
    ),
    *cases(
        "us-core-birthsex",
        PATIENT,
        (
            "value a Coding",
            set_value(lambda r: r["extension"][2], "valueCoding", {"code": "M"}),
            not_allowed("Patient.extension[2].value"),
        ),
        (
            "value missing",
            set_value(lambda r: r["extension"][2], None),
            missing("Patient.extension[2].value"),
        ),
        (
            "two birthsex extensions",
            edit(
                lambda r: r["extension"].append({"url": UC + "us-core-birthsex", "valueCode": "M"})
            ),
            not_allowed("Patient.extension", "birthsex"),
        ),
    ),
    *cases(
        "us-core-tribal-affiliation",
        None,
        (
            "tribalAffiliation missing",
            edit(lambda r: r["extension"][0]["extension"].pop(0)),
            missing("Patient.extension[0].extension", "tribalAffiliation"),
        ),
        (
            "isEnrolled not a boolean",
            set_value(lambda r: r["extension"][0]["extension"][1], "valueString", "yes"),
            not_allowed("Patient.extension[0].extension[1].value"),
        ),
        (
            "value[x] present",
            set_value(lambda r: r["extension"][0], "valueBoolean", True),
            not_allowed("Patient.extension[0].value"),
        ),
    ),
    *cases(
        "us-core-sex",
        None,
        (
            "value missing",
            set_value(lambda r: r["extension"][0], None),
            missing("Patient.extension[0].value"),
        ),
        (
            "value a string",
            set_value(lambda r: r["extension"][0], "valueString", "female"),
            not_allowed("Patient.extension[0].value"),
        ),
        (
            "two sex extensions",
            edit(
                lambda r: r["extension"].append(
                    {"url": UC + "us-core-sex", "valueCode": "248153007"}
                )
            ),
            not_allowed("Patient.extension", "sex"),
        ),
    ),
    *cases(
        "us-core-genderIdentity",
        None,
        (
            "value missing",
            set_value(lambda r: r["extension"][0], None),
            missing("Patient.extension[0].value"),
        ),
        (
            "value a code",
            set_value(lambda r: r["extension"][0], "valueCode", "female"),
            not_allowed("Patient.extension[0].value"),
        ),
        (
            "sub-extension present",
            assign(lambda r: r["extension"][0], "extension", [{"url": "x", "valueString": "y"}]),
            not_allowed("Patient.extension[0].extension"),
        ),
    ),
    *cases(
        "us-core-organization",
        ORGANIZATION,
        ("name missing", drop("name"), missing("Organization.name")),
        ("active missing", drop("active"), missing("Organization.active")),
        (
            "two NPIs",
            put(
                "identifier",
                [
                    {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1"},
                    {"system": "http://hl7.org/fhir/sid/us-npi", "value": "2"},
                ],
            ),
            not_allowed("Organization.identifier", "NPI"),
        ),
    ),
    *cases(
        "us-core-practitioner",
        PRACTITIONER,
        ("identifier missing", drop("identifier"), missing("Practitioner.identifier")),
        (
            "name without family",
            edit(lambda r: r["name"][0].pop("family")),
            missing("Practitioner.name[0].family"),
        ),
        (
            "identifier without value",
            edit(lambda r: r["identifier"][1].pop("value")),
            missing("Practitioner.identifier[1].value"),
        ),
    ),
    *cases(
        "us-core-practitionerrole",
        None,
        (
            "telecom without system",
            edit(lambda r: r["telecom"][0].pop("system")),
            missing("PractitionerRole.telecom[0].system"),
        ),
        (
            "practitioner a Patient",
            put("practitioner", PATIENT_REF),
            not_allowed("PractitionerRole.practitioner"),
        ),
        (
            "location an Organization",
            put("location", [ORG_REF]),
            not_allowed("PractitionerRole.location[0]"),
        ),
    ),
    *cases(
        "us-core-relatedperson",
        None,
        ("active missing", drop("active"), missing("RelatedPerson.active")),
        (
            "us-core-14 neither name nor relationship",
            drop("name"),
            broken_invariant("RelatedPerson", "us-core-14"),
        ),
        (
            "patient a Practitioner",
            put("patient", ref("Practitioner/pr1")),
            not_allowed("RelatedPerson.patient"),
        ),
    ),
    *cases(
        "us-core-location",
        None,
        ("name missing", drop("name"), missing("Location.name")),
        (
            "managingOrganization a Patient",
            put("managingOrganization", PATIENT_REF),
            not_allowed("Location.managingOrganization"),
        ),
        (
            "managingOrganization an absolute Patient url",
            put("managingOrganization", ref("https://ehr.example.org/fhir/Patient/p1")),
            not_allowed("Location.managingOrganization"),
        ),
    ),
    *cases(
        "us-core-servicerequest",
        None,
        ("code missing", drop("code"), missing("ServiceRequest.code")),
        (
            "intent not a request intent",
            put("intent", "goal"),
            not_in_value_set("ServiceRequest.intent"),
        ),
        (
            "requester a HealthcareService",
            put("requester", ref("HealthcareService/h1")),
            not_allowed("ServiceRequest.requester"),
        ),
    ),
    *cases(
        "us-core-simple-observation",
        None,
        ("category missing", drop("category"), missing("Observation.category")),
        (
            "status not an observation status",
            put("status", "done"),
            not_in_value_set("Observation.status"),
        ),
        (
            "subject a Practitioner",
            put("subject", ref("Practitioner/pr1")),
            not_allowed("Observation.subject"),
        ),
    ),
    *cases(
        "us-core-observation-screening-assessment",
        None,
        ("subject missing", drop("subject"), missing("Observation.subject")),
        (
            "status not an observation status",
            put("status", "done"),
            not_in_value_set("Observation.status"),
        ),
        (
            "two survey categories",
            edit(lambda r: r["category"].append(concept(OBSERVATION_CATEGORY, "survey"))),
            not_allowed("Observation.category", "survey"),
        ),
    ),
    *cases(
        "us-core-observation-sexual-orientation",
        None,
        ("subject missing", drop("subject"), missing("Observation.subject")),
        (
            "status not an observation status",
            put("status", "done"),
            not_in_value_set("Observation.status"),
        ),
        (
            "code not 76690-7",
            put("code", concept(LOINC, "76691-5")),
            wrong_value("Observation.code"),
        ),
    ),
    *cases(
        "us-core-goal",
        None,
        (
            "subject a Practitioner",
            put("subject", ref("Practitioner/pr1")),
            not_allowed("Goal.subject"),
        ),
        (
            "subject an absolute Practitioner url",
            put("subject", ref("https://ehr.example.org/fhir/Practitioner/pr1")),
            not_allowed("Goal.subject"),
        ),
    ),
    *cases(
        "us-core-condition-problems-health-concerns",
        None,
        (
            "category encounter-diagnosis",
            put("category", [concept(CONDITION_CATEGORY, "encounter-diagnosis")]),
            missing("Condition.category", "us-core"),
        ),
        (
            "verificationStatus not a status",
            put(
                "verificationStatus",
                concept("http://terminology.hl7.org/CodeSystem/condition-ver-status", "maybe"),
            ),
            not_in_value_set("Condition.verificationStatus"),
        ),
        (
            "subject a Practitioner",
            put("subject", ref("Practitioner/pr1")),
            not_allowed("Condition.subject"),
        ),
    ),
    *cases(
        "us-core-condition-encounter-diagnosis",
        None,
        (
            "category problem-list-item",
            put("category", [concept(CONDITION_CATEGORY, "problem-list-item")]),
            missing("Condition.category", "us-core"),
        ),
        (
            "clinicalStatus not a status",
            put(
                "clinicalStatus",
                concept("http://terminology.hl7.org/CodeSystem/condition-clinical", "cured"),
            ),
            not_in_value_set("Condition.clinicalStatus"),
        ),
        (
            "encounter an Observation",
            put("encounter", ref("Observation/o1")),
            not_allowed("Condition.encounter"),
        ),
    ),
    *cases(
        "us-core-documentreference",
        None,
        ("type missing", drop("type"), missing("DocumentReference.type")),
        (
            "us-core-6 attachment without url or data",
            edit(lambda r: r["content"][0]["attachment"].pop("url")),
            broken_invariant("DocumentReference.content[0].attachment", "us-core-6"),
        ),
        (
            "subject an Organization",
            put("subject", ORG_REF),
            not_allowed("DocumentReference.subject"),
        ),
    ),
    *cases(
        "us-core-questionnaireresponse",
        None,
        ("authored missing", drop("authored"), missing("QuestionnaireResponse.authored")),
        (
            "questionnaire missing",
            drop("questionnaire"),
            missing("QuestionnaireResponse.questionnaire"),
        ),
        (
            "author a HealthcareService",
            put("author", ref("HealthcareService/h1")),
            not_allowed("QuestionnaireResponse.author"),
        ),
    ),
    *cases(
        "us-core-encounter",
        None,
        ("type missing", drop("type"), missing("Encounter.type")),
        (
            "subject a Practitioner",
            put("subject", ref("Practitioner/pr1")),
            not_allowed("Encounter.subject"),
        ),
        (
            "identifier without system",
            put("identifier", [{"value": "visit-1"}]),
            missing("Encounter.identifier[0].system"),
        ),
    ),
    *cases(
        "us-core-careteam",
        None,
        ("participant missing", drop("participant"), missing("CareTeam.participant")),
        (
            "participant without role",
            edit(lambda r: r["participant"][0].pop("role")),
            missing("CareTeam.participant[0].role"),
        ),
        (
            "member a Location",
            assign(lambda r: r["participant"][0], "member", ref("Location/l1")),
            not_allowed("CareTeam.participant[0].member"),
        ),
    ),
    *cases(
        "us-core-careplan",
        None,
        ("text missing", drop("text"), missing("CarePlan.text")),
        ("category missing", drop("category"), missing("CarePlan.category")),
        (
            "status not a request status",
            put("status", "finished"),
            not_in_value_set("CarePlan.status"),
        ),
    ),
]


@pytest.mark.parametrize(
    "mutation", [pytest.param(m, id=f"{m.profile}|{m.broken}") for m in MUTATIONS]
)
def test_mutation_is_reported(mutation: Mutation) -> None:
    profile_url = HOSTS.get(mutation.profile, url_of(mutation.profile))
    if mutation.base is None:
        resource = copy.deepcopy(MINIMAL[mutation.profile])
    else:
        resource = example(mutation.base)
    assert errors(validate(resource, profile_url)) == [], "the unbroken instance must be valid"
    mutation.change(resource)
    issues = validate(resource, profile_url)
    assert mutation.expected.found_in(issues), [
        (i.severity, i.code, i.expression, i.message) for i in issues
    ]


# Elements a profile requires that the base resource already requires: the models reject a
# resource without them before any profile is checked (profiles/models.py), so the profile
# validator does not repeat the check. (profile, base example or None, element)
BASE_REQUIRED = [
    ("SDOHCC-Goal", GOAL, "description"),
    ("us-core-goal", None, "description"),
    ("us-core-servicerequest", None, "subject"),
]


@pytest.mark.parametrize(
    ("profile_id", "base", "element"),
    [pytest.param(*row, id=f"{row[0]}|{row[2]} missing") for row in BASE_REQUIRED],
)
def test_base_required_element_missing_is_rejected_by_the_models(
    profile_id: str, base: str | None, element: str
) -> None:
    resource = copy.deepcopy(MINIMAL[profile_id]) if base is None else example(base)
    del resource[element]
    with pytest.raises(ResourceInvalid) as raised:
        validate_resource(resource)
    assert f"{resource['resourceType']}.{element}" in {i.expression for i in raised.value.issues}


def test_every_bundled_definition_has_three_mutations() -> None:
    counts = {profile_id: 0 for profile_id in MINIMAL}
    for mutation in MUTATIONS:
        counts[mutation.profile] += 1
    for profile_id, _, _ in BASE_REQUIRED:
        counts[profile_id] += 1
    assert {p: n for p, n in counts.items() if n < 3} == {}


def test_sdoh_task_2_and_7_check_descriptions_not_output_types() -> None:
    """The IG's SDOH-Task-2 and -7 end in ``output.type.coding.all(...).exists()``: ``all``
    returns a boolean, which always exists, so an output of another type passes. The bundled
    expressions are the IG's, unchanged; this pins that (a "fixed" expression would reject
    resources the IG accepts)."""
    resource = copy.deepcopy(MINIMAL["SDOHCC-TaskForPatient"])
    resource["output"] = [{"type": concept(TEMP, "chosen-contact"), "valueMarkdown": "Safeway"}]
    assert errors(validator().validate(resource, SD + "SDOHCC-TaskForPatient")) == []
