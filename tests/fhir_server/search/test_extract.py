"""Tests for search-index extraction.

Spec: http://hl7.org/fhir/R4/search.html#ptypes
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.extract import (
    ISO_4217,
    DateRow,
    IndexExtractor,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    ResourceIndex,
    StringRow,
    TokenRow,
    UriRow,
    patient_compartment_ids,
)
from fhir_server.search.registry import SearchParam, SearchRegistry, load_patient_compartment
from fhir_server.search.values import DATE_MAX, DATE_MIN

EXAMPLES = Path(__file__).resolve().parents[3] / ".." / "shared" / "conformance" / "sdohcc"
EXAMPLES = EXAMPLES / "examples"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load_default()


def extract(registry: SearchRegistry, resource: dict[str, Any], *codes: str) -> ResourceIndex:
    params = registry.for_type(resource["resourceType"])
    chosen = [params[code] for code in codes] if codes else list(params.values())
    return IndexExtractor(chosen).extract(resource)


def param(resource_type: str, code: str, type_: str, expression: str) -> SearchParam:
    return SearchParam(code=code, resource_type=resource_type, type=type_, expression=expression)


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


# --- hand-written resources, also used to check the fast path against fhirpathpy -------------

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {
        "lastUpdated": "2024-03-01T12:00:00.123+01:00",
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|6.1.0"],
        "tag": [{"system": "http://example.org/tags", "code": "vip", "display": "V.I.P."}],
    },
    "extension": [
        {
            "url": "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex",
            "valueCode": "F",
        }
    ],
    "identifier": [
        {
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}
                ],
                "text": "Medical Record",
            },
            "system": "urn:oid:1.2.36.146.595.217.0.1",
            "value": "12345",
        },
        {"system": "http://hl7.org/fhir/sid/us-ssn", "value": "999-99-9999"},
        {"use": "old"},
    ],
    "active": True,
    "name": [
        {
            "use": "official",
            "family": "Dupré",
            "given": ["Émilie", "Anne"],
            "_given": [None, {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}],
            "prefix": ["Dr."],
            "text": "Dr. Émilie Anne Dupré",
        },
        {"family": "Dupré", "given": ["Emmy"]},
    ],
    "telecom": [
        {"system": "phone", "value": "+1 555 0100", "use": "home"},
        {"system": "email", "value": "emilie@example.org"},
        {"system": "phone", "_value": {"extension": [{"url": "http://example.org/x"}]}},
    ],
    "gender": "female",
    "birthDate": "1987-02-20",
    "_birthDate": {
        "extension": [
            {
                "url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
                "valueDateTime": "1987-02-20T10:30:00-05:00",
            }
        ]
    },
    "deceasedDateTime": "2023-11-05",
    "address": [
        {
            "line": ["12 Rue de l'Église", "Apt 3"],
            "city": "Montréal",
            "state": "QC",
            "postalCode": "H2X 1Y4",
            "country": "CA",
            "use": "home",
        }
    ],
    "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "fr-CA"}]}}],
    "generalPractitioner": [
        {"reference": "Practitioner/dr-1/_history/4"},
        {"reference": "https://other.example.org/fhir/Organization/org-9"},
        {"identifier": {"system": "http://hl7.org/fhir/sid/us-npi", "value": "1234567890"}},
        {"reference": "#contained-1"},
    ],
    "managingOrganization": {"reference": "urn:uuid:6d1e2f1a-0000-4000-8000-000000000001"},
    "link": [{"other": {"reference": "Patient/p0"}, "type": "replaces"}],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "o1",
    "status": "final",
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "social-history",
                    "display": "Social History",
                },
                {
                    "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                    "code": "social-history",
                    "display": "Social History",
                },
            ]
        },
        {"text": "Food insecurity"},
    ],
    "code": {
        "coding": [{"system": "http://loinc.org", "code": "88124-3"}],
        "text": "Food insecurity risk [HVS]",
    },
    "subject": {"reference": "Patient/1/_history/2"},
    "focus": [{"reference": "Group/g1"}],
    "encounter": {"reference": "Encounter/e1"},
    "effectivePeriod": {"start": "2021-05-10T21:56:54Z"},
    "issued": "2021-05-10T21:56:54.671Z",
    "performer": [{"reference": "Patient/2"}, {"reference": "Practitioner/pr1"}],
    "valueQuantity": {
        "value": 7.25,
        "unit": "per week",
        "system": "http://unitsofmeasure.org",
        "code": "/wk",
    },
    "derivedFrom": [{"reference": "QuestionnaireResponse/qr1"}],
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg", "system": "http://unitsofmeasure.org"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg", "system": "http://unitsofmeasure.org"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "x"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://snomed.info/sct", "code": "1"}]},
        },
    ],
}

CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "id": "c1",
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "Z59.41"}]},
    "subject": {"reference": "Patient/1"},
    "onsetAge": {"value": 42, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"},
    "abatementPeriod": {"end": "2024-01"},
    "recordedDate": "2024-02-01",
    "evidence": [{"detail": [{"reference": "Observation/o1"}]}],
}

TASK: dict[str, Any] = {
    "resourceType": "Task",
    "id": "t1",
    "status": "requested",
    "intent": "order",
    "for": {"reference": "Group/household-1"},
    "owner": {"type": "Organization", "identifier": {"system": "urn:cbo", "value": "cbo-7"}},
    "focus": {"reference": "ServiceRequest/sr1"},
    "executionPeriod": {"start": "2024-05-01", "end": "9999-12-31"},
    "authoredOn": "2024-04-30T09:00:00-04:00",
    "lastModified": "not a date",
}

QUESTIONNAIRE_RESPONSE: dict[str, Any] = {
    "resourceType": "QuestionnaireResponse",
    "id": "qr1",
    "status": "completed",
    "questionnaire": "http://hl7.org/fhir/us/sdoh-clinicalcare/Questionnaire/hvs|2.3.0",
    "subject": {"reference": "Patient/1"},
    "authored": "2024-01",
}

MEDICATION_REQUEST: dict[str, Any] = {
    "resourceType": "MedicationRequest",
    "id": "m1",
    "status": "active",
    "intent": "order",
    "medicationCodeableConcept": {"text": "Vitamin D"},
    "subject": {"reference": "Patient/1"},
    "dosageInstruction": [
        {"timing": {"event": ["2024-01-01T08:00:00Z", "2024-01-02"]}},
        {"timing": {"repeat": {"boundsPeriod": {"start": "2024-02-01", "end": "2024-02-29"}}}},
    ],
}

INVOICE: dict[str, Any] = {
    "resourceType": "Invoice",
    "id": "i1",
    "status": "issued",
    "totalGross": {"value": 12.5, "currency": "USD"},
    "totalNet": {"value": 10},
}

RISK_ASSESSMENT: dict[str, Any] = {
    "resourceType": "RiskAssessment",
    "id": "r1",
    "status": "final",
    "subject": {"reference": "Patient/1"},
    "prediction": [{"probabilityDecimal": 0.25}, {"probabilityRange": {"low": {"value": 1}}}],
}

ODD_PATIENT: dict[str, Any] = {
    # Well-formed JSON, wrong FHIR shapes: nothing here may raise.
    "resourceType": "Patient",
    "id": "odd",
    "name": [{"family": 7, "given": [None, "", "  ", {"x": 1}]}, "text", None],
    "telecom": {"system": "email", "value": ["a"]},
    "birthDate": 19870220,
    "gender": ["female"],
    "active": "yes",
    "identifier": [{"system": 1, "value": None, "type": "MR"}],
    "generalPractitioner": [{"reference": 5}, {"reference": "Practitioner?identifier=1"}],
    "managingOrganization": {"reference": "organization/1"},
    "address": [{"line": "not a list", "city": ["x"]}],
    "deceasedBoolean": "false",
    "meta": {"lastUpdated": "2024-13-01", "profile": "x", "tag": [1, "a", {"code": True}]},
}

DECEASED_VARIANTS: list[dict[str, Any]] = [
    {"resourceType": "Patient", "id": "alive", "deceasedBoolean": False},
    {"resourceType": "Patient", "id": "dead", "deceasedBoolean": True},
    {"resourceType": "Patient", "id": "unknown"},
    {"resourceType": "Patient", "id": "ext", "_deceasedBoolean": {"extension": [{"url": "x"}]}},
]

HAND_WRITTEN = [
    PATIENT,
    *DECEASED_VARIANTS,
    OBSERVATION,
    CONDITION,
    TASK,
    QUESTIONNAIRE_RESPONSE,
    MEDICATION_REQUEST,
    INVOICE,
    RISK_ASSESSMENT,
    ODD_PATIENT,
]


# --- strings ---------------------------------------------------------------------------------


def test_name_with_accent_matches_normalized_prefix(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT, "given", "name", "family")
    given = {row.norm for row in index.strings if row.param == "given"}
    assert given == {"emilie", "anne", "emmy"}
    assert any(row.norm.startswith("emil") for row in index.strings if row.param == "name")
    assert StringRow("family", "Dupré", "dupre") in index.strings
    # one row per name part, deduplicated across the two names
    assert [row for row in index.strings if row.param == "family"] == [
        StringRow("family", "Dupré", "dupre")
    ]
    name_parts = {row.value for row in index.strings if row.param == "name"}
    assert name_parts == {"Dupré", "Émilie", "Anne", "Dr.", "Dr. Émilie Anne Dupré", "Emmy"}


def test_address_parts_are_rows(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT, "address", "address-city")
    address = {row.norm for row in index.strings if row.param == "address"}
    assert address == {"12 rue de l'eglise", "apt 3", "montreal", "qc", "h2x 1y4", "ca"}
    assert StringRow("address-city", "Montréal", "montreal") in index.strings


def test_long_strings_are_cut() -> None:
    long = "Ä" + "b" * 3000
    resource = {"resourceType": "Patient", "name": [{"family": long}]}
    extractor = IndexExtractor([param("Patient", "family", "string", "Patient.name.family")])
    (row,) = extractor.extract(resource).strings
    assert row.value == long[:2000]
    assert row.norm == ("a" + "b" * 3000)[:255]


# --- tokens ----------------------------------------------------------------------------------


def test_identifier_rows_carry_type_for_of_type(registry: SearchRegistry) -> None:
    rows = extract(registry, PATIENT, "identifier").tokens
    assert rows == (
        TokenRow(
            "identifier",
            "urn:oid:1.2.36.146.595.217.0.1",
            "12345",
            "medical record",
            "http://terminology.hl7.org/CodeSystem/v2-0203",
            "MR",
        ),
        TokenRow("identifier", "http://hl7.org/fhir/sid/us-ssn", "999-99-9999", None),
    )


def test_codeable_concept_rows(registry: SearchRegistry) -> None:
    index = extract(registry, OBSERVATION, "category", "code")
    category_system = "http://terminology.hl7.org/CodeSystem/observation-category"
    assert [row for row in index.tokens if row.param == "category"] == [
        TokenRow("category", category_system, "social-history", "social history"),
        TokenRow("category", None, None, "food insecurity"),  # text only, no coding
    ]
    # CodeableConcept.text stands in for a coding without display
    assert [row for row in index.tokens if row.param == "code"] == [
        TokenRow("code", "http://loinc.org", "88124-3", "food insecurity risk [hvs]")
    ]


def test_codeable_concept_text_kept_beside_displays() -> None:
    concept = {
        "coding": [{"system": "s", "code": "c", "display": "Display"}],
        "text": "Other words",
    }
    resource = {"resourceType": "Observation", "code": concept}
    extractor = IndexExtractor([param("Observation", "code", "token", "Observation.code")])
    assert extractor.extract(resource).tokens == (
        TokenRow("code", "s", "c", "display"),
        TokenRow("code", None, None, "other words"),
    )


def test_primitive_boolean_and_contact_point_tokens(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT, "gender", "active", "telecom", "email", "phone", "_id")
    assert TokenRow("gender", None, "female", None) in index.tokens
    assert TokenRow("active", None, "true", None) in index.tokens
    assert TokenRow("_id", None, "p1", None) in index.tokens
    assert [row.code for row in index.tokens if row.param == "email"] == ["emilie@example.org"]
    assert [row.code for row in index.tokens if row.param == "phone"] == ["+1 555 0100"]
    assert {row.code for row in index.tokens if row.param == "telecom"} == {
        "+1 555 0100",
        "emilie@example.org",
    }


def test_tag_coding_token(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT, "_tag")
    assert index.tokens == (TokenRow("_tag", "http://example.org/tags", "vip", "v.i.p."),)


def test_deceased_is_true_for_a_date_of_death_and_false_when_absent(
    registry: SearchRegistry,
) -> None:
    assert extract(registry, PATIENT, "deceased").tokens == (
        TokenRow("deceased", None, "true", None),
    )
    expected = {"alive": "false", "dead": "true", "unknown": "false", "ext": "true"}
    for resource in DECEASED_VARIANTS:
        (row,) = extract(registry, resource, "deceased").tokens
        assert row.code == expected[resource["id"]], resource


def test_only_unusual_expressions_take_the_fhirpathpy_path(registry: SearchRegistry) -> None:
    every = [
        p for t in sorted(registry.all_resource_types()) for p in registry.for_type(t).values()
    ]
    assert IndexExtractor(every).slow_params == {
        ("Bundle", "composition"),  # Bundle.entry[0].resource
        ("Bundle", "message"),
    }
    assert IndexExtractor(every, fast_path=False).slow_params >= {("Patient", "name")}


# --- dates -----------------------------------------------------------------------------------


def test_birthdate_is_the_whole_day(registry: SearchRegistry) -> None:
    assert extract(registry, PATIENT, "birthdate").dates == (
        DateRow("birthdate", utc(1987, 2, 20), utc(1987, 2, 21)),
    )


def test_period_without_end_is_open(registry: SearchRegistry) -> None:
    (row,) = extract(registry, OBSERVATION, "date").dates
    assert row == DateRow("date", utc(2021, 5, 10, 21, 56, 54), DATE_MAX)


def test_period_without_start_is_open() -> None:
    resource = {"resourceType": "Condition", "abatementPeriod": {"end": "2024-01"}}
    extractor = IndexExtractor(
        [param("Condition", "abatement-date", "date", "Condition.abatement.as(Period)")]
    )
    assert extractor.extract(resource).dates == (
        DateRow("abatement-date", DATE_MIN, utc(2024, 2, 1)),
    )


def test_period_ending_9999_12_31_is_open_and_bad_dates_are_skipped(
    registry: SearchRegistry,
) -> None:
    index = extract(registry, TASK, "period", "authored-on", "modified")
    assert index.dates == (
        DateRow("period", utc(2024, 5, 1), DATE_MAX),
        DateRow("authored-on", utc(2024, 4, 30, 13), utc(2024, 4, 30, 13, 0, 1)),
    )


def test_timing_events_and_bounds(registry: SearchRegistry) -> None:
    assert extract(registry, MEDICATION_REQUEST, "date").dates == (
        DateRow("date", utc(2024, 1, 1, 8), utc(2024, 1, 1, 8, 0, 1)),
        DateRow("date", utc(2024, 1, 2), utc(2024, 1, 3)),
    )
    timing = param("MedicationRequest", "t", "date", "MedicationRequest.dosageInstruction.timing")
    assert IndexExtractor([timing]).extract(MEDICATION_REQUEST).dates == (
        DateRow("t", utc(2024, 1, 1, 8), utc(2024, 1, 1, 8, 0, 1)),
        DateRow("t", utc(2024, 1, 2), utc(2024, 1, 3)),
        DateRow("t", utc(2024, 2, 1), utc(2024, 3, 1)),
    )


def test_last_updated_is_converted_to_utc(registry: SearchRegistry) -> None:
    assert extract(registry, PATIENT, "_lastUpdated").dates == (
        DateRow(
            "_lastUpdated", utc(2024, 3, 1, 11, 0, 0, 123000), utc(2024, 3, 1, 11, 0, 0, 124000)
        ),
    )


# --- numbers and quantities ------------------------------------------------------------------


def test_number_of_a_choice_type(registry: SearchRegistry) -> None:
    assert extract(registry, RISK_ASSESSMENT, "probability").numbers == (
        NumberRow("probability", Decimal("0.25"), Decimal("0.245"), Decimal("0.255")),
    )


def test_quantity_value_and_components(registry: SearchRegistry) -> None:
    index = extract(registry, OBSERVATION, "value-quantity", "component-value-quantity")
    ucum = "http://unitsofmeasure.org"
    assert index.quantities == (
        QuantityRow(
            "value-quantity",
            Decimal("7.25"),
            Decimal("7.245"),
            Decimal("7.255"),
            ucum,
            "/wk",
            "per week",
        ),
        # two components: FHIRPath's "as" would fail here; read as ofType
        QuantityRow(
            "component-value-quantity",
            Decimal(120),
            Decimal("119.5"),
            Decimal("120.5"),
            ucum,
            None,
            "mmHg",
        ),
        QuantityRow(
            "component-value-quantity",
            Decimal(80),
            Decimal("79.5"),
            Decimal("80.5"),
            ucum,
            None,
            "mmHg",
        ),
    )


def test_age_is_a_quantity(registry: SearchRegistry) -> None:
    ucum = "http://unitsofmeasure.org"
    assert extract(registry, CONDITION, "onset-age").quantities == (
        QuantityRow("onset-age", Decimal(42), Decimal("41.5"), Decimal("42.5"), ucum, "a", "a"),
    )


def test_money_currency_is_an_iso_4217_code(registry: SearchRegistry) -> None:
    index = extract(registry, INVOICE, "totalgross", "totalnet")
    assert index.quantities == (
        QuantityRow(
            "totalgross", Decimal("12.5"), Decimal("12.45"), Decimal("12.55"), ISO_4217, "USD", None
        ),
        QuantityRow("totalnet", Decimal(10), Decimal("9.5"), Decimal("10.5"), None, None, None),
    )


# --- uris and references ---------------------------------------------------------------------


def test_uri_keeps_the_canonical_version(registry: SearchRegistry) -> None:
    assert extract(registry, PATIENT, "_profile").uris == (
        UriRow("_profile", "http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient|6.1.0"),
    )


def test_versioned_reference_drops_the_version(registry: SearchRegistry) -> None:
    assert extract(registry, OBSERVATION, "subject").references == (
        ReferenceRow("subject", "Patient", "1", None),
    )


def test_reference_forms(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT, "general-practitioner", "organization", "link")
    assert index.references == (
        ReferenceRow("general-practitioner", "Practitioner", "dr-1", None),
        ReferenceRow(
            "general-practitioner",
            "Organization",
            "org-9",
            "https://other.example.org/fhir/Organization/org-9",
        ),
        ReferenceRow(
            "general-practitioner", None, None, None, "http://hl7.org/fhir/sid/us-npi", "1234567890"
        ),
        # "#contained-1" gives no row
        ReferenceRow("organization", None, None, "urn:uuid:6d1e2f1a-0000-4000-8000-000000000001"),
        ReferenceRow("link", "Patient", "p0", None),
    )


def test_absolute_reference_with_history_and_unknown_type() -> None:
    refs = [
        {"reference": "http://example.org/fhir/Patient/7/_history/3"},
        {"reference": "http://example.org/fhir/Widget/7"},
        {"reference": "http://example.org/some/thing"},
    ]
    resource = {"resourceType": "Observation", "performer": refs}
    extractor = IndexExtractor(
        [param("Observation", "performer", "reference", "Observation.performer")]
    )
    assert extractor.extract(resource).references == (
        ReferenceRow("performer", "Patient", "7", "http://example.org/fhir/Patient/7"),
        ReferenceRow("performer", None, None, "http://example.org/fhir/Widget/7"),
        ReferenceRow("performer", None, None, "http://example.org/some/thing"),
    )


def test_identifier_reference_takes_its_type(registry: SearchRegistry) -> None:
    assert extract(registry, TASK, "owner").references == (
        ReferenceRow("owner", "Organization", None, None, "urn:cbo", "cbo-7"),
    )


def test_canonical_reference_drops_the_version(registry: SearchRegistry) -> None:
    assert extract(registry, QUESTIONNAIRE_RESPONSE, "questionnaire").references == (
        ReferenceRow(
            "questionnaire",
            None,
            None,
            "http://hl7.org/fhir/us/sdoh-clinicalcare/Questionnaire/hvs",
        ),
    )


def test_resolve_is_patient_keeps_only_patient_references(registry: SearchRegistry) -> None:
    assert extract(registry, OBSERVATION, "patient").references == (
        ReferenceRow("patient", "Patient", "1", None),
    )
    assert extract(registry, TASK, "patient", "subject").references == (
        ReferenceRow("subject", "Group", "household-1", None),
    )


# --- whole resources -------------------------------------------------------------------------


def test_duplicate_rows_are_removed(registry: SearchRegistry) -> None:
    index = extract(registry, OBSERVATION)
    for rows in (index.strings, index.tokens, index.dates, index.references, index.quantities):
        assert len(rows) == len(set(rows))


def test_only_parameters_of_the_resource_type_apply(registry: SearchRegistry) -> None:
    extractor = IndexExtractor(registry.for_type("Observation").values())
    assert extractor.extract(PATIENT) == ResourceIndex()


def test_odd_values_are_skipped_not_raised(registry: SearchRegistry) -> None:
    index = extract(registry, ODD_PATIENT)
    assert index.dates == ()
    assert TokenRow("_id", None, "odd", None) in index.tokens
    assert index.references == ()


def test_a_failing_expression_gives_no_rows() -> None:
    broken = param("Patient", "broken", "token", "Patient.name.given.toInteger() / 0 > 'x'")
    good = param("Patient", "gender", "token", "Patient.gender")
    index = IndexExtractor([broken, good]).extract(PATIENT)
    assert index.tokens == (TokenRow("gender", None, "female", None),)


def test_an_expression_that_does_not_compile_is_refused() -> None:
    with pytest.raises(ValueError, match="Patient.bad"):
        IndexExtractor([param("Patient", "bad", "token", "'unterminated")])


def test_composite_and_special_have_no_rows(registry: SearchRegistry) -> None:
    params = [registry.for_type("Observation")[c] for c in ("code-value-quantity", "_text")]
    assert IndexExtractor(params).extract(OBSERVATION) == ResourceIndex()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(HAND_WRITTEN),
    st.lists(st.tuples(st.sampled_from(sorted({k for r in HAND_WRITTEN for k in r})), json_values)),
)
def test_arbitrary_json_never_raises(
    base: dict[str, Any], replacements: list[tuple[str, Any]]
) -> None:
    resource = copy.deepcopy(base)
    for key, value in replacements:
        if key != "resourceType":
            resource[key] = value
    index = _extractor(resource["resourceType"]).extract(resource)
    for row in index.dates:
        assert row.low < row.high


# Values shaped like FHIR: the keys and strings the extractor looks at, nested at random.
_FHIR_KEYS = [
    "system", "code", "value", "reference", "start", "end", "display", "text", "coding", "family",
    "given", "valueQuantity", "unit", "currency", "type", "identifier", "event", "repeat",
    "boundsPeriod", "url", "extension", "valueString", "valueCodeableConcept", "valueBoolean",
    "valueDateTime", "valuePeriod", "use", "line", "city", "id",
]  # fmt: skip
_FHIR_LEAVES = ["", "x", "Patient/1", "Group/1/_history/2", "http://a.org/Patient/2", "urn:uuid:1"]
_FHIR_LEAVES += ["2020", "2020-01-01T10:00:00Z", "phone", "email", "false", "#c", "Patient"]
fhir_like_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(_FHIR_LEAVES),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(_FHIR_KEYS), children, max_size=4)
    ),
    max_leaves=10,
)


def _element_paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Paths to every element; not into primitive extensions ("_x"), which a valid resource
    only holds as objects, nor resourceType (contained resources are left to fhirpathpy)."""
    if prefix:
        yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            if not key.startswith("_") and key != "resourceType":
                yield from _element_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _element_paths(value, (*prefix, i))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(HAND_WRITTEN), st.data())
def test_fast_path_matches_fhirpathpy_on_mutated_resources(
    base: dict[str, Any], data: st.DataObject
) -> None:
    resource = copy.deepcopy(base)
    paths = list(_element_paths(resource))
    for _ in range(data.draw(st.integers(1, 3))):
        *parents, last = data.draw(st.sampled_from(paths))
        node = resource
        try:
            for key in parents:
                node = node[key]
            node[last] = data.draw(fhir_like_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier replacement removed this path
    _assert_fast_equals_fhirpathpy(resource)


# --- the fast path gives what fhirpathpy gives -----------------------------------------------


def _example_resources() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        return []
    return [orjson.loads(path.read_bytes()) for path in sorted(EXAMPLES.glob("*.json"))]


@functools.cache
def _extractor(resource_type: str, fast_path: bool = True) -> IndexExtractor:
    """All R4 parameters of the type, compiled once for the whole module."""
    params = SearchRegistry.load_default().for_type(resource_type).values()
    return IndexExtractor(params, fast_path=fast_path)


def _rows_by_param(index: ResourceIndex) -> Iterator[tuple[str, str, frozenset[Any]]]:
    for kind in ResourceIndex.__slots__:
        rows: tuple[Any, ...] = getattr(index, kind)
        for code in sorted({row.param for row in rows}):
            yield kind, code, frozenset(row for row in rows if row.param == code)


def _assert_fast_equals_fhirpathpy(resource: dict[str, Any]) -> None:
    fast = _extractor(resource["resourceType"]).extract(resource)
    slow = _extractor(resource["resourceType"], fast_path=False).extract(resource)
    assert list(_rows_by_param(fast)) == list(_rows_by_param(slow)), resource.get("id")


@pytest.mark.parametrize("resource", HAND_WRITTEN, ids=lambda r: f"{r['resourceType']}-{r['id']}")
def test_fast_path_matches_fhirpathpy_on_hand_written(resource: dict[str, Any]) -> None:
    _assert_fast_equals_fhirpathpy(resource)


@pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"SDOHCC conformance examples not found at {EXAMPLES}"
)
def test_fast_path_matches_fhirpathpy_on_sdohcc_examples() -> None:
    resources = _example_resources()
    assert len(resources) >= 50
    rows = 0
    for resource in resources:
        _assert_fast_equals_fhirpathpy(resource)
        index = _extractor(resource["resourceType"]).extract(resource)
        rows += sum(len(getattr(index, kind)) for kind in ResourceIndex.__slots__)
    assert rows > 500  # the comparison is not vacuous


@pytest.mark.skipif(
    not EXAMPLES.is_dir(), reason=f"SDOHCC conformance examples not found at {EXAMPLES}"
)
def test_sdohcc_patient_rows(registry: SearchRegistry) -> None:
    patient = orjson.loads((EXAMPLES / "Patient-pat-53234.json").read_bytes())
    index = extract(registry, patient)
    assert StringRow("family", "ABBAS", "abbas") in index.strings
    assert DateRow("birthdate", utc(1987, 2, 20), utc(1987, 2, 21)) in index.dates


# --- compartments ----------------------------------------------------------------------------


def test_patient_compartment_of_an_observation(registry: SearchRegistry) -> None:
    index = extract(registry, OBSERVATION)
    ids = patient_compartment_ids(
        "Observation", "o1", index.references, load_patient_compartment()["Observation"]
    )
    assert ids == frozenset({"1", "2"})  # subject and performer; not focus (Group)


def test_patient_is_in_its_own_compartment_and_linked_ones(registry: SearchRegistry) -> None:
    index = extract(registry, PATIENT)
    compartment = load_patient_compartment()["Patient"]
    assert patient_compartment_ids("Patient", "p1", index.references, compartment) == frozenset(
        {"p1", "p0"}
    )


def test_absolute_and_non_compartment_references_do_not_count() -> None:
    refs = [
        ReferenceRow("subject", "Patient", "9", "http://elsewhere.example.org/Patient/9"),
        ReferenceRow("focus", "Patient", "8", None),
        ReferenceRow("subject", "Group", "g", None),
        ReferenceRow("subject", "Patient", None, None, "urn:mrn", "1"),
    ]
    assert patient_compartment_ids("Observation", "o", refs, ("subject",)) == frozenset()
