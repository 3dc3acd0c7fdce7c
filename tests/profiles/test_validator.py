"""The StructureDefinition-driven validator: each profiling feature on small inline profiles.

Every failing case asserts the issue's severity, code and expression (the FHIRPath the HTTP
API reports). The terminology is a double of the validator's own Protocol (``Codes``): value
sets as sets of codes, so these tests do not depend on the bundled content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import pytest

from profiles.registry import ProfileRegistry
from profiles.validator import (
    InvalidDefinition,
    UnknownProfile,
    ValidationIssue,
    Validator,
)

BASE = "http://hl7.org/fhir/StructureDefinition/"
EX = "http://example.org/fhir/StructureDefinition/"
VS = "http://example.org/fhir/ValueSet/"
TEMP = "http://example.org/fhir/CodeSystem/temp"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
US_CORE_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
UCUM = "http://unitsofmeasure.org"
LOINC = "http://loinc.org"


class Codes:
    """A terminology double: each value set a set of (system, code); a "whole system" value set
    says yes to its system's codes and cannot tell for others (a fragment it holds)."""

    def __init__(
        self,
        value_sets: Mapping[str, Iterable[tuple[str | None, str]]],
        whole_systems: Mapping[str, str] | None = None,
    ) -> None:
        self.value_sets = {url: set(codes) for url, codes in value_sets.items()}
        self.whole_systems = dict(whole_systems or {})
        self.asked: list[tuple[str, str | None, str]] = []

    def member_of(self, value_set: str, system: str | None, code: str) -> bool | None:
        self.asked.append((value_set, system, code))
        if value_set in self.whole_systems:
            return True if system == self.whole_systems[value_set] else None
        codes = self.value_sets.get(value_set)
        if codes is None:
            return None
        if system is None:
            return any(c == code for _, c in codes)
        return (system, code) in codes

    def value_set(self, url: str, version: str | None = None) -> Mapping[str, Any] | None:
        if url in self.value_sets or url in self.whole_systems:
            return {"resourceType": "ValueSet", "url": url, "status": "active"}
        return None


CODES = Codes(
    {
        VS + "status": {("http://hl7.org/fhir/observation-status", "final"), (None, "preliminary")},
        VS + "code": {(LOINC, "88122-7"), (LOINC, "88123-5")},
        VS + "category": {(OBS_CAT, "survey"), (OBS_CAT, "social-history")},
        VS + "units": {(UCUM, "kg"), (UCUM, "a")},
        VS + "domain": {(TEMP, "food-insecurity"), (TEMP, "housing-instability")},
        VS + "task-code": {(TEMP, "make-contact"), (TEMP, "review-material")},
        VS + "capacity": {(TEMP, "capacity"), (TEMP, "no-capacity")},
    },
    whole_systems={VS + "all-loinc": LOINC},
)


def element(element_id: str, **properties: Any) -> dict[str, Any]:
    """An ElementDefinition; the path is the id without its slice names."""
    path = re.sub(r":[^.]+", "", element_id)
    return {"id": element_id, "path": path, **properties}


def profile(
    name: str,
    type_name: str,
    *elements: dict[str, Any],
    base: str | None = None,
    root: Mapping[str, Any] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A differential-only StructureDefinition at EX + name."""
    return {
        "resourceType": "StructureDefinition",
        "url": EX + name,
        "name": name.replace("-", ""),
        "status": "active",
        "kind": "complex-type" if type_name == "Extension" else "resource",
        "abstract": False,
        "type": type_name,
        "derivation": "constraint",
        "baseDefinition": base or BASE + type_name,
        "differential": {
            "element": [{"id": type_name, "path": type_name, **(root or {})}, *elements]
        },
        **fields,
    }


def validate(
    resource: Mapping[str, Any],
    *definitions: Mapping[str, Any],
    url: str | None = None,
    terminology: Codes = CODES,
    must_support: bool = False,
) -> list[ValidationIssue]:
    registry = ProfileRegistry(definitions)
    validator = Validator(registry, terminology)
    return validator.validate(
        resource, url or str(definitions[-1]["url"]), must_support=must_support
    )


def found(issues: list[ValidationIssue]) -> list[tuple[str, str, str]]:
    return [(i.severity, i.code, i.expression) for i in issues]


def errors(issues: list[ValidationIssue]) -> list[tuple[str, str, str]]:
    return [(i.severity, i.code, i.expression) for i in issues if i.severity != "information"]


def task(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **elements}


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


def concept(system: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}], **extra}


# --- cardinality ------------------------------------------------------------------------------

CARDINALITY = profile(
    "task-cardinality",
    "Task",
    element("Task.authoredOn", min=1),
    element("Task.input", max="2"),
    element("Task.note", max="0"),
)
INPUT = {"type": {"text": "t"}, "valueString": "v"}


def test_a_missing_required_element_is_reported_at_the_path_it_would_have() -> None:
    issues = validate(task(), CARDINALITY)
    assert found(issues) == [("error", "required", "Task.authoredOn")]
    assert issues[0].message == "Task.authoredOn: minimum required = 1, found 0"


def test_a_required_primitive_may_be_present_as_its_extension_alone() -> None:
    absent = {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason"}]}
    assert validate(task(_authoredOn=absent), CARDINALITY) == []


def test_too_many_occurrences_are_reported_on_the_element() -> None:
    issues = validate(task(authoredOn="2024-01-01", input=[INPUT] * 3), CARDINALITY)
    assert found(issues) == [("error", "structure", "Task.input")]
    assert issues[0].message == "Task.input: maximum allowed = 2, found 3"


def test_max_zero_forbids_the_element() -> None:
    issues = validate(task(authoredOn="2024-01-01", note=[{"text": "n"}]), CARDINALITY)
    assert found(issues) == [("error", "structure", "Task.note")]


def test_a_null_or_empty_value_does_not_count_as_present() -> None:
    issues = validate(task(authoredOn=None), CARDINALITY)
    assert found(issues) == [("error", "required", "Task.authoredOn")]


# --- types --------------------------------------------------------------------------------------

TYPES = profile(
    "obs-types",
    "Observation",
    element("Observation.value[x]", type=[{"code": "CodeableConcept"}]),
    element("Observation.effective[x]", type=[{"code": "dateTime"}, {"code": "Period"}]),
)


def test_a_choice_restricted_to_one_type_refuses_the_others_by_fhirpath_name() -> None:
    issues = validate(observation(valueString="x"), TYPES)
    assert found(issues) == [("error", "structure", "Observation.value")]
    assert "string" in issues[0].message and "CodeableConcept" in issues[0].message


def test_a_choice_type_list_allows_each_listed_type_only() -> None:
    assert validate(observation(effectivePeriod={"start": "2024"}), TYPES) == []
    assert validate(observation(effectiveDateTime="2024"), TYPES) == []
    issues = validate(observation(effectiveInstant="2024-01-01T00:00:00Z"), TYPES)
    assert found(issues) == [("error", "structure", "Observation.effective")]


@pytest.mark.parametrize(
    "element_id", ["Observation.value[x]:valueQuantity.system", "Observation.valueQuantity.system"]
)
def test_a_type_slice_constrains_the_value_of_that_type_only(element_id: str) -> None:
    definition = profile("obs-quantity", "Observation", element(element_id, fixedUri=UCUM))
    good = {"value": 1, "system": UCUM, "code": "kg"}
    assert validate(observation(valueQuantity=good), definition) == []
    assert validate(observation(valueString="x"), definition) == []
    issues = validate(observation(valueQuantity={**good, "system": "urn:x"}), definition)
    assert found(issues) == [("error", "value", "Observation.value.system")]


# --- references ---------------------------------------------------------------------------------

PATIENT_PROFILE = profile("patient-named", "Patient", element("Patient.name", min=1))
REFERENCES = profile(
    "task-references",
    "Task",
    element("Task.focus", type=[{"code": "Reference", "targetProfile": [BASE + "ServiceRequest"]}]),
    element("Task.for", type=[{"code": "Reference", "targetProfile": [EX + "patient-named"]}]),
    element("Task.owner", type=[{"code": "Reference", "targetProfile": [EX + "not-known"]}]),
)


@pytest.mark.parametrize(
    ("focus", "problem"),
    [
        ({"reference": "ServiceRequest/1"}, False),
        ({"reference": "https://other.example/fhir/ServiceRequest/1/_history/2"}, False),
        ({"reference": "Patient/1"}, True),
        ({"reference": "https://other.example/fhir/Patient/1"}, True),
        ({"reference": "#contained"}, False),  # contained: not checked for type
        ({"reference": "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0"}, False),
        ({"identifier": {"system": "urn:x", "value": "1"}}, False),
        ({"display": "a request"}, False),
        ({"type": "Patient", "identifier": {"value": "1"}}, True),
    ],
)
def test_reference_targets_are_checked_by_the_type_in_the_reference(
    focus: dict[str, Any], problem: bool
) -> None:
    issues = validate(task(focus=focus), PATIENT_PROFILE, REFERENCES)
    assert found(issues) == ([("error", "structure", "Task.focus")] if problem else [])


def test_a_target_profile_known_here_is_checked_by_its_type_only() -> None:
    # The target itself is not read: a Patient without a name still passes.
    assert validate(task(**{"for": {"reference": "Patient/1"}}), PATIENT_PROFILE, REFERENCES) == []
    issues = validate(task(**{"for": {"reference": "Group/1"}}), PATIENT_PROFILE, REFERENCES)
    assert found(issues) == [("error", "structure", "Task.for")]
    assert "Group" in issues[0].message and "Patient" in issues[0].message


def test_a_target_profile_not_known_here_is_not_checked() -> None:
    assert validate(task(owner={"reference": "Group/1"}), PATIENT_PROFILE, REFERENCES) == []


# --- fixed values and patterns --------------------------------------------------------------

VALUES = profile(
    "task-values",
    "Task",
    element("Task.intent", fixedCode="order"),
    element("Task.code", patternCodeableConcept=concept(TASK_CODE, "fulfill")),
    element("Task.executionPeriod", fixedPeriod={"start": "2024-01-01"}),
    element(
        "Task.businessStatus",
        patternCodeableConcept={
            "coding": [{"system": TEMP, "code": "a"}, {"system": TEMP, "code": "b"}]
        },
    ),
)


def test_a_fixed_primitive_must_be_equal() -> None:
    issues = validate(task(intent="plan"), VALUES)
    assert found(issues) == [("error", "value", "Task.intent")]
    assert issues[0].message == "Task.intent: must be exactly 'order'"


def test_a_pattern_is_a_partial_match() -> None:
    code = {
        "coding": [{"system": "urn:other", "code": "x"}, {"system": TASK_CODE, "code": "fulfill"}],
        "text": "Fulfil",
    }
    assert validate(task(code=code), VALUES) == []
    issues = validate(task(code=concept(TASK_CODE, "approve")), VALUES)
    assert found(issues) == [("error", "value", "Task.code")]
    assert f"{TASK_CODE}#fulfill" in issues[0].message


def test_a_fixed_complex_value_must_be_exactly_equal() -> None:
    assert validate(task(executionPeriod={"start": "2024-01-01"}), VALUES) == []
    issues = validate(task(executionPeriod={"start": "2024-01-01", "end": "2024-02-01"}), VALUES)
    assert found(issues) == [("error", "value", "Task.executionPeriod")]


def test_each_item_of_a_pattern_array_must_match_some_item() -> None:
    both = {
        "coding": [{"system": TEMP, "code": "b", "display": "B"}, {"system": TEMP, "code": "a"}]
    }
    assert validate(task(businessStatus=both), VALUES) == []
    issues = validate(task(businessStatus=concept(TEMP, "a")), VALUES)
    assert found(issues) == [("error", "value", "Task.businessStatus")]


# --- bindings ------------------------------------------------------------------------------------


def binding(strength: str, value_set: str) -> dict[str, Any]:
    return {"binding": {"strength": strength, "valueSet": value_set}}


BINDINGS = profile(
    "obs-bindings",
    "Observation",
    element("Observation.status", **binding("required", VS + "status")),
    element("Observation.category", **binding("extensible", VS + "category")),
    element("Observation.code", **binding("required", VS + "code|1.0.0")),
    element("Observation.method", **binding("preferred", VS + "category")),
    element("Observation.interpretation", **binding("example", VS + "category")),
    element("Observation.bodySite", **binding("required", VS + "not-known")),
    element("Observation.dataAbsentReason", **binding("required", VS + "all-loinc")),
    element("Observation.valueQuantity", **binding("required", VS + "units")),
)


def coded(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", **elements}


def test_a_required_binding_accepts_a_concept_with_one_coding_in_the_value_set() -> None:
    code = {"coding": [{"system": "urn:local", "code": "q1"}, {"system": LOINC, "code": "88122-7"}]}
    assert validate(coded(code=code), BINDINGS) == []


def test_a_required_binding_refuses_codes_outside_the_value_set() -> None:
    issues = validate(coded(status="amended", code=concept(LOINC, "1-8")), BINDINGS)
    assert found(issues) == [
        ("error", "code-invalid", "Observation.status"),
        ("error", "code-invalid", "Observation.code"),
    ]
    assert "'amended'" in issues[0].message and VS + "status" in issues[0].message
    assert f"{LOINC}#1-8" in issues[1].message


def test_a_required_binding_on_a_concept_needs_a_code() -> None:
    issues = validate(coded(code={"text": "hungry"}), BINDINGS)
    assert found(issues) == [("error", "code-invalid", "Observation.code")]


def test_an_extensible_binding_warns_at_the_coding_outside_the_value_set() -> None:
    category = [concept(OBS_CAT, "survey"), concept("urn:local", "mine")]
    issues = validate(coded(code=concept(LOINC, "88122-7"), category=category), BINDINGS)
    assert found(issues) == [("warning", "code-invalid", "Observation.category[1].coding[0]")]


def test_preferred_and_example_bindings_are_not_checked() -> None:
    resource = coded(
        code=concept(LOINC, "88122-7"),
        method=concept("urn:local", "mine"),
        interpretation=[concept("urn:local", "mine")],
    )
    assert validate(resource, BINDINGS) == []


def test_an_unknown_value_set_is_reported_as_not_checked() -> None:
    resource = coded(code=concept(LOINC, "88122-7"), bodySite=concept("urn:local", "arm"))
    issues = validate(resource, BINDINGS)
    assert found(issues) == [("information", "not-found", "Observation.bodySite")]
    assert VS + "not-known" in issues[0].message


def test_a_known_value_set_that_cannot_tell_is_quiet() -> None:
    # A whole-system value set over a system held in part: "cannot tell" for other systems.
    resource = coded(code=concept(LOINC, "88122-7"), dataAbsentReason=concept("urn:x", "u"))
    assert validate(resource, BINDINGS) == []


def test_a_quantity_is_bound_by_its_unit_code() -> None:
    resource = coded(code=concept(LOINC, "88122-7"), valueQuantity={"value": 3, "system": UCUM})
    assert validate(resource, BINDINGS) == []  # no code, nothing to check
    resource["valueQuantity"]["code"] = "lb"
    issues = validate(resource, BINDINGS)
    assert found(issues) == [("error", "code-invalid", "Observation.value")]


def test_a_binding_on_coding_is_checked_per_coding() -> None:
    definition = profile(
        "obs-coding-binding",
        "Observation",
        element("Observation.code.coding", **binding("required", VS + "code")),
    )
    code = {"coding": [{"system": LOINC, "code": "88122-7"}, {"system": LOINC, "code": "1-8"}]}
    issues = validate(observation(code=code), definition)
    assert found(issues) == [("error", "code-invalid", "Observation.code.coding[1]")]


# --- slicing -----------------------------------------------------------------------------------

SURVEY = concept(OBS_CAT, "survey")
SDOH = concept(US_CORE_CAT, "sdoh")
FOOD = concept(TEMP, "food-insecurity")
OTHER = concept("urn:local", "other")


def sliced_categories(rules: str = "closed", ordered: bool = False) -> dict[str, Any]:
    return profile(
        f"obs-slices-{rules}-{ordered}".lower(),
        "Observation",
        element(
            "Observation.category",
            min=1,
            slicing={
                "discriminator": [{"type": "pattern", "path": "$this"}],
                "rules": rules,
                "ordered": ordered,
            },
        ),
        element(
            "Observation.category:survey",
            sliceName="survey",
            min=1,
            max="1",
            patternCodeableConcept=SURVEY,
        ),
        element(
            "Observation.category:sdoh", sliceName="sdoh", max="*", patternCodeableConcept=SDOH
        ),
        element(
            "Observation.category:domain",
            sliceName="domain",
            max="*",
            **binding("required", VS + "domain"),
        ),
    )


def test_items_matching_their_slices_pass() -> None:
    assert validate(observation(category=[SURVEY, SDOH, FOOD]), sliced_categories()) == []


def test_a_slice_below_its_minimum_is_named_in_the_message() -> None:
    issues = validate(observation(category=[SDOH]), sliced_categories())
    assert found(issues) == [("error", "required", "Observation.category")]
    assert (
        issues[0].message == "Observation.category: slice 'survey': minimum required = 1, found 0"
    )


def test_a_missing_sliced_element_reports_the_element_and_its_required_slices() -> None:
    issues = validate(observation(), sliced_categories())
    assert found(issues) == [
        ("error", "required", "Observation.category"),
        ("error", "required", "Observation.category"),
    ]
    assert "slice 'survey'" in issues[1].message


def test_a_slice_above_its_maximum_is_an_error() -> None:
    issues = validate(observation(category=[SURVEY, SURVEY]), sliced_categories())
    assert found(issues) == [("error", "structure", "Observation.category")]
    assert "slice 'survey': maximum allowed = 1, found 2" in issues[0].message


def test_closed_slicing_refuses_an_item_that_matches_no_slice() -> None:
    issues = validate(observation(category=[SURVEY, OTHER]), sliced_categories("closed"))
    assert found(issues) == [("error", "structure", "Observation.category[1]")]


def test_open_slicing_accepts_other_items_anywhere() -> None:
    resource = observation(category=[OTHER, SURVEY, OTHER])
    assert validate(resource, sliced_categories("open")) == []


def test_open_at_end_slicing_wants_other_items_last() -> None:
    assert validate(observation(category=[SURVEY, OTHER]), sliced_categories("openAtEnd")) == []
    issues = validate(observation(category=[OTHER, SURVEY]), sliced_categories("openAtEnd"))
    assert found(issues) == [("error", "structure", "Observation.category[1]")]


def test_ordered_slicing_wants_slices_in_the_profile_order() -> None:
    assert validate(observation(category=[SURVEY, SDOH]), sliced_categories("open", True)) == []
    issues = validate(observation(category=[SDOH, SURVEY]), sliced_categories("open", True))
    assert found(issues) == [("error", "structure", "Observation.category[1]")]


def test_a_slice_bound_to_a_value_set_the_terminology_cannot_answer_may_match() -> None:
    definition = sliced_categories("closed")
    unsure = Codes({})  # knows no value set: the domain slice cannot be told
    issues = validate(observation(category=[SURVEY, OTHER]), definition, terminology=unsure)
    assert found(issues) == [("information", "not-found", "Observation.category[1]")]


TASK_OUTPUTS = profile(
    "task-outputs",
    "Task",
    element(
        "Task.output",
        slicing={
            "discriminator": [
                {"type": "pattern", "path": "type"},
                {"type": "type", "path": "value"},
            ],
            "rules": "open",
        },
    ),
    element("Task.output:reference", sliceName="reference", max="*"),
    element(
        "Task.output:reference.type", patternCodeableConcept=concept(TEMP, "resulting-activity")
    ),
    element(
        "Task.output:reference.value[x]",
        type=[{"code": "Reference", "targetProfile": [BASE + "Procedure"]}],
    ),
    element("Task.output:code", sliceName="code", max="1"),
    element("Task.output:code.type", patternCodeableConcept=concept(TEMP, "resulting-activity")),
    element(
        "Task.output:code.value[x]",
        type=[{"code": "CodeableConcept"}],
        **binding("required", VS + "task-code"),
    ),
)
RESULT = concept(TEMP, "resulting-activity")


def test_type_discriminators_tell_slices_apart_by_the_choice_type() -> None:
    outputs = [
        {"type": RESULT, "valueReference": {"reference": "Procedure/1"}},
        {"type": RESULT, "valueCodeableConcept": concept(TEMP, "make-contact")},
        {"type": RESULT, "valueString": "anything"},  # open slicing: no slice, no rule
    ]
    assert validate(task(output=outputs), TASK_OUTPUTS) == []


def test_each_slice_applies_its_own_rules_to_its_items() -> None:
    outputs = [
        {"type": RESULT, "valueReference": {"reference": "Patient/1"}},
        {"type": RESULT, "valueCodeableConcept": concept(TEMP, "other")},
        {"type": RESULT, "valueCodeableConcept": concept(TEMP, "make-contact")},
    ]
    issues = validate(task(output=outputs), TASK_OUTPUTS)
    assert found(issues) == [
        ("error", "structure", "Task.output"),  # two items in the 0..1 slice 'code'
        ("error", "structure", "Task.output[0].value"),
        ("error", "code-invalid", "Task.output[1].value"),
    ]


CONSENT = profile("consent-min", "Consent", element("Consent.patient", min=1))
REQUEST_SUPPORT = profile(
    "request-support",
    "ServiceRequest",
    element(
        "ServiceRequest.supportingInfo",
        slicing={"discriminator": [{"type": "profile", "path": "resolve()"}], "rules": "open"},
    ),
    element(
        "ServiceRequest.supportingInfo:consent",
        sliceName="consent",
        min=1,
        max="1",
        type=[{"code": "Reference", "targetProfile": [EX + "consent-min"]}],
    ),
)


def request(**elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/1"},
        **elements,
    }


def test_a_profile_discriminator_on_resolve_matches_references_by_target_type() -> None:
    good = request(supportingInfo=[{"reference": "Observation/2"}, {"reference": "Consent/1"}])
    assert validate(good, CONSENT, REQUEST_SUPPORT) == []
    issues = validate(
        request(supportingInfo=[{"reference": "Observation/2"}]), CONSENT, REQUEST_SUPPORT
    )
    assert found(issues) == [("error", "required", "ServiceRequest.supportingInfo")]
    assert "slice 'consent'" in issues[0].message


APPOINTMENT = profile(
    "appointment-flag",
    "Extension",
    element("Extension.url", fixedUri=EX + "appointment-flag"),
    element("Extension.value[x]", type=[{"code": "boolean"}], fixedBoolean=True),
)
SERVICE = profile(
    "service-telecom",
    "HealthcareService",
    element(
        "HealthcareService.telecom",
        slicing={
            "discriminator": [{"type": "exists", "path": f"extension('{EX}appointment-flag')"}],
            "rules": "open",
        },
    ),
    element("HealthcareService.telecom:appointment", sliceName="appointment", min=1),
    element(
        "HealthcareService.telecom:appointment.extension:flag",
        sliceName="flag",
        min=1,
        max="1",
        type=[{"code": "Extension", "profile": [EX + "appointment-flag"]}],
    ),
    element("HealthcareService.telecom:appointment.value", min=1),
)


def test_an_exists_discriminator_matches_by_presence() -> None:
    flag = {"url": EX + "appointment-flag", "valueBoolean": True}
    phone = {"system": "phone", "value": "555"}
    good = {"resourceType": "HealthcareService", "telecom": [phone, {**phone, "extension": [flag]}]}
    assert validate(good, APPOINTMENT, SERVICE) == []
    issues = validate(
        {"resourceType": "HealthcareService", "telecom": [phone]}, APPOINTMENT, SERVICE
    )
    assert found(issues) == [("error", "required", "HealthcareService.telecom")]
    wrong = {"url": EX + "appointment-flag", "valueBoolean": False}
    no_value = {"resourceType": "HealthcareService", "telecom": [{"extension": [wrong]}]}
    assert found(validate(no_value, APPOINTMENT, SERVICE)) == [
        ("error", "value", "HealthcareService.telecom[0].extension[0].value"),
        ("error", "required", "HealthcareService.telecom[0].value"),
    ]


def test_slices_without_slicing_on_a_choice_are_type_slices() -> None:
    definition = profile(
        "obs-string-length",
        "Observation",
        element("Observation.value[x]:valueString", sliceName="valueString", max="0"),
    )
    assert validate(observation(valueBoolean=True), definition) == []
    issues = validate(observation(valueString="x"), definition)
    assert found(issues) == [("error", "structure", "Observation.value")]


# --- invariants ---------------------------------------------------------------------------------


def constraint(key: str, expression: str, severity: str = "error") -> dict[str, Any]:
    return {"key": key, "severity": severity, "human": f"rule {key}", "expression": expression}


INVARIANTS = profile(
    "task-invariants",
    "Task",
    element(
        "Task.input",
        constraint=[constraint("in-1", "type.coding.exists()")],
    ),
    root={
        "constraint": [
            constraint(
                "tsk-1",
                f"code.coding.where(system = '{TEMP}' and code = 'make-contact').exists()"
                " implies description.exists()",
            ),
            constraint("tsk-2", "note.exists()", "warning"),
            constraint("tsk-3", f"code.memberOf('{VS}task-code')"),
            constraint(
                "tsk-4",
                "code.coding.where(code = 'review-material').exists()"
                " implies focus.resolve().all($this is DocumentReference)",
            ),
        ]
    },
)
NOTE = [{"text": "n"}]


def test_an_invariant_that_holds_gives_no_issue() -> None:
    resource = task(code=concept(TEMP, "make-contact"), description="call", note=NOTE)
    assert validate(resource, INVARIANTS) == []


def test_a_broken_invariant_reports_its_key_human_text_and_severity() -> None:
    issues = validate(task(code=concept(TEMP, "make-contact")), INVARIANTS)
    assert found(issues) == [("error", "invariant", "Task"), ("warning", "invariant", "Task")]
    assert [i.message for i in issues] == ["tsk-1: rule tsk-1", "tsk-2: rule tsk-2"]


def test_an_invariant_is_evaluated_on_each_occurrence_of_its_element() -> None:
    inputs = [INPUT | {"type": concept(TEMP, "a")}, INPUT, INPUT | {"type": concept(TEMP, "b")}]
    resource = task(code=concept(TEMP, "review-material"), note=NOTE, input=inputs)
    issues = validate(resource, INVARIANTS)
    assert found(issues) == [("error", "invariant", "Task.input[1]")]
    assert issues[0].message == "in-1: rule in-1"


def test_member_of_in_an_invariant_asks_the_terminology() -> None:
    asked = Codes(CODES.value_sets)
    issues = validate(task(code=concept(TEMP, "other"), note=NOTE), INVARIANTS, terminology=asked)
    assert found(issues) == [("error", "invariant", "Task")]
    assert issues[0].message.startswith("tsk-3:")
    assert (VS + "task-code", TEMP, "other") in asked.asked


@pytest.mark.parametrize(
    ("focus", "holds"),
    [
        ({"reference": "DocumentReference/1"}, True),
        ({"reference": "https://other.example/fhir/DocumentReference/1"}, True),
        ({"reference": "Patient/1"}, False),
        ({"reference": "#doc"}, True),
        ({"reference": "#pat"}, False),
    ],
)
def test_resolve_reads_the_type_from_the_reference_or_the_contained_resource(
    focus: dict[str, Any], holds: bool
) -> None:
    contained = [
        {"resourceType": "DocumentReference", "id": "doc", "status": "current", "content": []},
        {"resourceType": "Patient", "id": "pat"},
    ]
    resource = task(
        code=concept(TEMP, "review-material"), note=NOTE, focus=focus, contained=contained
    )
    issues = validate(resource, INVARIANTS)
    assert found(issues) == ([] if holds else [("error", "invariant", "Task")])


def test_an_invariant_that_cannot_be_evaluated_is_a_warning_naming_its_key() -> None:
    definition = profile(
        "task-bad-invariants",
        "Task",
        root={"constraint": [constraint("bad-1", "'a' and true"), constraint("ok-1", "true")]},
    )
    issues = validate(task(), definition)
    assert found(issues) == [("warning", "processing", "Task")]
    assert issues[0].message.startswith("bad-1:")


def test_conforms_to_asks_the_registry() -> None:
    definition = profile(
        "task-conforms",
        "Task",
        root={"constraint": [constraint("conf-1", f"conformsTo('{EX}task-cardinality')")]},
    )
    assert validate(task(authoredOn="2024-01-01"), CARDINALITY, definition) == []
    issues = validate(task(), CARDINALITY, definition)
    assert found(issues) == [("error", "invariant", "Task")]


# --- extensions ------------------------------------------------------------------------------

ASSERTER = profile(
    "asserter",
    "Extension",
    element("Extension.extension", max="0"),
    element("Extension.url", fixedUri=EX + "asserter"),
    element(
        "Extension.value[x]",
        min=1,
        type=[{"code": "Reference", "targetProfile": [BASE + "Device"]}],
    ),
)
CAPACITY = profile(
    "capacity",
    "Extension",
    element("Extension.extension:status", sliceName="status", min=1, max="1"),
    element("Extension.extension:status.url", fixedUri="status"),
    element(
        "Extension.extension:status.value[x]",
        min=1,
        type=[{"code": "CodeableConcept"}],
        **binding("required", VS + "capacity"),
    ),
    element("Extension.extension:notes", sliceName="notes", max="1"),
    element("Extension.extension:notes.url", fixedUri="notes"),
    element("Extension.extension:notes.value[x]", type=[{"code": "string"}]),
    element("Extension.url", fixedUri=EX + "capacity"),
    element("Extension.value[x]", max="0"),
)
CONDITION = profile(
    "condition-extensions",
    "Condition",
    # No slicing written on Condition.extension: extensions are sliced by url.
    element(
        "Condition.extension:asserter",
        sliceName="asserter",
        max="1",
        type=[{"code": "Extension", "profile": [EX + "asserter"]}],
    ),
    element(
        "Condition.extension:capacity",
        sliceName="capacity",
        max="1",
        type=[{"code": "Extension", "profile": [EX + "capacity"]}],
    ),
    element(
        "Condition.extension:mystery",
        sliceName="mystery",
        type=[{"code": "Extension", "profile": [EX + "mystery"]}],
    ),
)


def condition(*extensions: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/1"},
        "extension": list(extensions),
    }


def check_condition(*extensions: dict[str, Any]) -> list[ValidationIssue]:
    return validate(condition(*extensions), ASSERTER, CAPACITY, CONDITION)


def test_an_extension_is_validated_against_its_definition() -> None:
    device = {"url": EX + "asserter", "valueReference": {"reference": "Device/1"}}
    assert check_condition(device) == []
    patient = {"url": EX + "asserter", "valueReference": {"reference": "Patient/1"}}
    assert found(check_condition(patient)) == [
        ("error", "structure", "Condition.extension[0].value")
    ]
    text = {"url": EX + "asserter", "valueString": "me"}
    assert found(check_condition(text)) == [("error", "structure", "Condition.extension[0].value")]


def test_an_extension_slice_has_a_cardinality() -> None:
    device = {"url": EX + "asserter", "valueReference": {"reference": "Device/1"}}
    issues = check_condition(device, device)
    assert found(issues) == [("error", "structure", "Condition.extension")]
    assert "slice 'asserter'" in issues[0].message


def test_a_complex_extension_checks_its_sub_extensions() -> None:
    status = {"url": "status", "valueCodeableConcept": concept(TEMP, "capacity")}
    assert check_condition({"url": EX + "capacity", "extension": [status]}) == []
    notes = {"url": "notes", "valueString": "call first"}
    issues = check_condition({"url": EX + "capacity", "extension": [notes]})
    assert found(issues) == [("error", "required", "Condition.extension[0].extension")]
    assert "slice 'status'" in issues[0].message
    wrong = {"url": "status", "valueCodeableConcept": concept(TEMP, "busy")}
    issues = check_condition({"url": EX + "capacity", "extension": [notes, wrong]})
    assert found(issues) == [("error", "code-invalid", "Condition.extension[0].extension[1].value")]
    issues = check_condition({"url": EX + "capacity", "extension": [status], "valueString": "x"})
    assert found(issues) == [("error", "structure", "Condition.extension[0].value")]


def test_an_extension_whose_definition_is_not_known_is_information() -> None:
    issues = check_condition({"url": EX + "mystery", "valueString": "?"})
    assert found(issues) == [("information", "informational", "Condition.extension[0]")]
    assert EX + "mystery" in issues[0].message


# --- inheritance ----------------------------------------------------------------------------

LEVEL_A = profile(
    "obs-a",
    "Observation",
    element(
        "Observation.category",
        min=1,
        slicing={"discriminator": [{"type": "pattern", "path": "$this"}], "rules": "open"},
    ),
    element(
        "Observation.category:us-core", sliceName="us-core", max="*", patternCodeableConcept=SURVEY
    ),
    element("Observation.subject", min=1),
    element("Observation.status", **binding("required", VS + "status")),
)
LEVEL_B = profile(
    "obs-b",
    "Observation",
    element("Observation.category", min=2),
    element("Observation.category:us-core", sliceName="us-core", min=1),
    element(
        "Observation.category:sdoh", sliceName="sdoh", min=1, max="1", patternCodeableConcept=SDOH
    ),
    element("Observation.effective[x]", min=1),
    base=EX + "obs-a",
)
LEVEL_C = profile(
    "obs-c",
    "Observation",
    element("Observation.category:us-core", sliceName="us-core", max="1"),
    element("Observation.category:sdoh.text", min=1),
    element("Observation.value[x]", type=[{"code": "string"}]),
    base=EX + "obs-b",
)
LEVELS = (LEVEL_A, LEVEL_B, LEVEL_C)


def layered(**elements: Any) -> dict[str, Any]:
    return observation(
        subject={"reference": "Patient/1"},
        effectiveDateTime="2024-01-01",
        category=[SURVEY, {**SDOH, "text": "SDOH"}],
        **elements,
    )


def test_three_levels_of_profiles_apply_together() -> None:
    assert validate(layered(valueString="yes"), *LEVELS) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # level A: required subject, required binding
        ({"subject": None}, [("error", "required", "Observation.subject")]),
        ({"status": "amended"}, [("error", "code-invalid", "Observation.status")]),
        # level B: category 2.., a new slice, its own rule
        ({"category": [SURVEY]}, [("error", "required", "Observation.category")] * 2),
        ({"effectiveDateTime": None}, [("error", "required", "Observation.effective")]),
        # level C: a tighter max on A's slice, a rule inside B's slice, a type restriction
        (
            {"category": [SURVEY, SURVEY, {**SDOH, "text": "SDOH"}]},
            [("error", "structure", "Observation.category")],
        ),
        ({"category": [SURVEY, SDOH]}, [("error", "required", "Observation.category[1].text")]),
        ({"valueBoolean": True}, [("error", "structure", "Observation.value")]),
    ],
)
def test_each_level_contributes_its_rules(
    change: dict[str, Any], expected: list[tuple[str, str, str]]
) -> None:
    resource = {k: v for k, v in {**layered(), **change}.items() if v is not None}
    assert found(validate(resource, *LEVELS)) == expected


def test_a_child_profile_does_not_change_its_parent() -> None:
    registry = ProfileRegistry(LEVELS)
    validator = Validator(registry, CODES)
    one_category = observation(subject={"reference": "Patient/1"}, category=[SURVEY])
    assert validator.validate(one_category, EX + "obs-a") == []
    assert validator.validate(one_category, EX + "obs-c") != []


# --- the registry ----------------------------------------------------------------------------


def test_extended_replaces_a_definition_with_the_same_url_and_version() -> None:
    first = profile("task-v", "Task", element("Task.authoredOn", min=1), version="1.0.0")
    second = profile("task-v", "Task", element("Task.description", min=1), version="1.0.0")
    registry = ProfileRegistry([first])
    newer = registry.extended([second])
    resource = task(authoredOn="2024-01-01")
    assert found(Validator(newer, CODES).validate(resource, EX + "task-v")) == [
        ("error", "required", "Task.description")
    ]
    assert Validator(registry, CODES).validate(resource, EX + "task-v") == []


def test_extended_recompiles_the_profiles_built_on_a_replaced_parent() -> None:
    registry = ProfileRegistry([LEVEL_A, LEVEL_B])
    validator = Validator(registry, CODES)
    resource = layered()
    assert validator.validate(resource, EX + "obs-b") == []
    stricter = {
        **LEVEL_A,
        "differential": {
            "element": [*LEVEL_A["differential"]["element"], element("Observation.issued", min=1)]
        },
    }
    newer = registry.extended([stricter])
    assert found(Validator(newer, CODES).validate(resource, EX + "obs-b")) == [
        ("error", "required", "Observation.issued")
    ]


def test_extended_refuses_a_parent_that_would_break_its_children() -> None:
    registry = ProfileRegistry([LEVEL_A, LEVEL_B])
    unsliced = profile("obs-a", "Observation", element("Observation.issued", min=1))
    with pytest.raises(InvalidDefinition) as caught:
        registry.extended([unsliced])
    assert f"{EX}obs-b" in str(caught.value) and "has slices but no slicing" in str(caught.value)


def test_versions_are_chosen_by_number_unless_one_is_asked_for() -> None:
    old = profile("task-n", "Task", element("Task.authoredOn", min=1), version="1.9.0")
    new = profile("task-n", "Task", element("Task.description", min=1), version="1.10.0")
    registry = ProfileRegistry([new, old])
    newest = registry.get(EX + "task-n")
    assert newest is not None and newest.version == "1.10.0"
    pinned = registry.get(EX + "task-n|1.9.0")
    assert pinned is not None and pinned.version == "1.9.0"
    assert registry.get(EX + "task-n", "2.0.0") is None
    assert found(Validator(registry, CODES).validate(task(), EX + "task-n|1.9.0")) == [
        ("error", "required", "Task.authoredOn")
    ]


def test_base_types_are_known_without_a_definition() -> None:
    registry = ProfileRegistry([])
    assert registry.known(BASE + "Patient")
    assert not registry.known(EX + "nothing")
    assert registry.urls() == []
    assert Validator(registry, CODES).validate({"resourceType": "Patient"}, BASE + "Patient") == []


def test_an_unknown_profile_raises() -> None:
    with pytest.raises(UnknownProfile) as caught:
        Validator(ProfileRegistry([]), CODES).validate(task(), EX + "nothing")
    assert caught.value.url == EX + "nothing"


@pytest.mark.parametrize(
    ("definition", "reason"),
    [
        (
            profile("orphan", "Task", base=EX + "missing-parent"),
            f"baseDefinition {EX}missing-parent is not known",
        ),
        (
            profile("wrong-root", "Observation", element("Patient.name", min=1)),
            "Patient.name: the path is not under Observation",
        ),
        (
            profile("no-such-element", "Observation", element("Observation.colour", min=1)),
            "colour is not an element of Observation",
        ),
        (
            profile(
                "no-slicing",
                "Observation",
                element("Observation.category:a", sliceName="a", patternCodeableConcept=SURVEY),
            ),
            "Observation.category has slices but no slicing",
        ),
        (
            profile(
                "blind-slice",
                "Observation",
                element(
                    "Observation.category",
                    slicing={"discriminator": [{"type": "pattern", "path": "$this"}]},
                ),
                element("Observation.category:a", sliceName="a", min=1),
            ),
            "slice Observation.category:a cannot be told apart",
        ),
        (
            profile(
                "bad-discriminator",
                "Observation",
                element(
                    "Observation.category",
                    slicing={"discriminator": [{"type": "value", "path": "coding.where(x)"}]},
                ),
            ),
            "discriminator path 'coding.where(x)' is not supported",
        ),
        (
            profile(
                "bad-type", "Observation", element("Observation.value[x]", type=[{"code": "Money"}])
            ),
            "Money is not a type of Observation.value[x]",
        ),
        (
            profile(
                "bad-fhirpath", "Task", root={"constraint": [constraint("bad-2", "code.where(")]}
            ),
            "element Task: constraint bad-2: not valid FHIRPath",
        ),
        (profile("not-r4", "Spaceship"), "Spaceship is not an R4 resource or datatype"),
        (
            profile("new-type", "Task", derivation="specialization"),
            "only constraints (derivation 'constraint') are used",
        ),
        (
            profile("min-over-max", "Task", element("Task.input", min=3, max="2")),
            "min 3 is more than max 2",
        ),
    ],
)
def test_an_unusable_definition_is_refused_with_its_reason(
    definition: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidDefinition) as caught:
        ProfileRegistry([]).extended([definition])
    assert reason in str(caught.value)
    assert definition["url"] in str(caught.value)


def test_a_loop_of_base_definitions_is_refused() -> None:
    one = profile("loop-1", "Task", base=EX + "loop-2")
    two = profile("loop-2", "Task", base=EX + "loop-1")
    with pytest.raises(InvalidDefinition, match="loop"):
        ProfileRegistry([]).extended([one, two])


def test_a_base_of_another_type_is_refused() -> None:
    with pytest.raises(InvalidDefinition, match="does not constrain Task"):
        ProfileRegistry([]).extended([profile("mixed", "Task", base=BASE + "Patient")])


# --- reporting ------------------------------------------------------------------------------


def test_issues_come_in_document_order() -> None:
    definition = profile(
        "task-order",
        "Task",
        element("Task.intent", fixedCode="order"),
        element("Task.authoredOn", min=1),
        element("Task.priority", fixedCode="urgent"),
        root={"constraint": [constraint("ord-1", "description.exists()")]},
    )
    resource = {"resourceType": "Task", "priority": "routine", "status": "draft", "intent": "plan"}
    assert found(validate(resource, definition)) == [
        ("error", "invariant", "Task"),
        ("error", "value", "Task.priority"),
        ("error", "value", "Task.intent"),
        ("error", "required", "Task.authoredOn"),
    ]


def test_must_support_mode_names_absent_must_support_elements() -> None:
    definition = profile(
        "task-must-support",
        "Task",
        element("Task.owner", mustSupport=True),
        element("Task.statusReason", mustSupport=True),
        element("Task.statusReason.text", min=1, mustSupport=True),
        element("Task.priority", mustSupport=True),
    )
    resource = task(priority="routine", statusReason={"coding": [{"code": "x"}], "text": "why"})
    assert validate(resource, definition) == []
    issues = validate(resource, definition, must_support=True)
    assert found(issues) == [("information", "informational", "Task.owner")]


def test_must_support_mode_names_absent_must_support_slices() -> None:
    definition = sliced_categories("open")
    definition["differential"]["element"][2]["mustSupport"] = True  # the survey slice
    definition["differential"]["element"][3]["mustSupport"] = True  # the sdoh slice
    issues = validate(observation(category=[SURVEY]), definition, must_support=True)
    assert found(issues) == [("information", "informational", "Observation.category")]
    assert "slice 'sdoh'" in issues[0].message


def test_messages_do_not_echo_resource_values() -> None:
    secret = "Zebediah-Quux"
    definition = profile(
        "patient-private",
        "Patient",
        element("Patient.name.family", fixedString="Doe"),
        element(
            "Patient.managingOrganization",
            type=[{"code": "Reference", "targetProfile": [BASE + "Organization"]}],
        ),
        root={"constraint": [constraint("pat-1", "name.given.exists()")]},
    )
    resource = {
        "resourceType": "Patient",
        "name": [{"family": secret, "text": secret}],
        "managingOrganization": {"reference": f"Practitioner/{secret}", "display": secret},
    }
    issues = validate(resource, definition)
    assert len(issues) == 3
    assert all(secret not in i.message and secret not in i.expression for i in issues)


def test_a_resource_of_another_type_is_refused() -> None:
    issues = validate({"resourceType": "Patient"}, CARDINALITY)
    assert found(issues) == [("error", "structure", "Task")]


def test_an_abstract_profile_is_noted() -> None:
    definition = profile("task-abstract", "Task", abstract=True)
    issues = validate(task(), definition)
    assert found(issues) == [("information", "informational", "Task")]


@pytest.mark.parametrize(
    "resource",
    [
        [],
        "Task",
        {"resourceType": "Task", "status": 3, "input": {"type": "x"}, "for": []},
        {"resourceType": "Task", "code": {"coding": "x"}, "input": [None, 1, [2], {"type": []}]},
        {"resourceType": "Task", "_authoredOn": [None], "note": [[]], "focus": "Patient/1"},
    ],
)
def test_odd_json_gives_issues_not_exceptions(resource: Any) -> None:
    for definition in (CARDINALITY, VALUES, TASK_OUTPUTS, INVARIANTS, REFERENCES):
        issues = validate(resource, PATIENT_PROFILE, definition)
        assert all(isinstance(i, ValidationIssue) for i in issues)


# --- the bundled profiles --------------------------------------------------------------------


def test_every_bundled_profile_compiles() -> None:
    registry = ProfileRegistry.bundled()
    urls = registry.urls()
    assert urls, "profiles/definitions ships no profiles"
    for url in urls:
        compiled = registry.get(url)
        assert compiled is not None and compiled.url == url
