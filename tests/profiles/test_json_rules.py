"""The R4 JSON rules checker: what the lax models let through is refused, with element paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.json_rules import MAX_ISSUES, check_json_rules
from profiles.models import ResourceInvalid, validate_resource

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "sdohcc" / "examples"

BOOLEAN = "must be a JSON boolean (true or false)"
INTEGER = "must be a JSON number without a fraction"
NUMBER = "must be a JSON number"
STRING = "must be a JSON string"
NULL = "null is not allowed here"
EMPTY_ARRAY = "empty arrays are not allowed"
EMPTY_OBJECT = "empty objects are not allowed"
EMPTY_STRING = "empty strings are not allowed"
NOT_ARRAY = "must not be a JSON array (the element does not repeat)"
ARRAY = "must be a JSON array (the element repeats)"
OBJECT = "must be a JSON object"


def patient(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", **elements}


def observation(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, **elements}


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        (patient(active="true"), ("Patient.active", BOOLEAN)),
        (patient(active=1), ("Patient.active", BOOLEAN)),
        (patient(multipleBirthInteger="2"), ("Patient.multipleBirthInteger", INTEGER)),
        (patient(multipleBirthInteger=2.0), ("Patient.multipleBirthInteger", INTEGER)),
        (patient(multipleBirthInteger=True), ("Patient.multipleBirthInteger", INTEGER)),
        (patient(gender=None), ("Patient.gender", NULL)),
        (patient(gender=["male"]), ("Patient.gender", NOT_ARRAY)),
        (patient(birthDate=19870220), ("Patient.birthDate", STRING)),
        (patient(name=[]), ("Patient.name", EMPTY_ARRAY)),
        (patient(name=[{}]), ("Patient.name[0]", EMPTY_OBJECT)),
        (patient(name=[None]), ("Patient.name[0]", NULL)),
        (patient(name={"family": "Shaw"}), ("Patient.name", ARRAY)),
        (patient(name=[{"family": ""}]), ("Patient.name[0].family", EMPTY_STRING)),
        (patient(name=[{"given": ["Amy", 7]}]), ("Patient.name[0].given[1]", STRING)),
        (
            patient(name=[{"given": [["Amy"]]}]),
            ("Patient.name[0].given[0]", "must not be a JSON array (arrays do not nest)"),
        ),
        (patient(maritalStatus="M"), ("Patient.maritalStatus", OBJECT)),
        (patient(text={"status": "generated", "div": ""}), ("Patient.text.div", EMPTY_STRING)),
        (patient(_birthDate="x"), ("Patient._birthDate", OBJECT)),
        (patient(_birthDate={}), ("Patient._birthDate", EMPTY_OBJECT)),
        (
            patient(_birthDate={"extension": [{"url": "http://x", "valueBoolean": "yes"}]}),
            ("Patient._birthDate.extension[0].valueBoolean", BOOLEAN),
        ),
        (observation(valueQuantity={"value": "1.5"}), ("Observation.valueQuantity.value", NUMBER)),
        (observation(valueQuantity={"value": False}), ("Observation.valueQuantity.value", NUMBER)),
        (
            observation(valueQuantity={"value": float("nan")}),
            ("Observation.valueQuantity.value", NUMBER),
        ),
        (
            observation(component=[{"code": {"text": "y"}, "valueQuantity": {"value": "1"}}]),
            ("Observation.component[0].valueQuantity.value", NUMBER),
        ),
        (observation(valueInteger=None), ("Observation.valueInteger", NULL)),
    ],
)
def test_breaches_are_refused_at_their_element(
    resource: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert check_json_rules(resource) == [expected]


@pytest.mark.parametrize(
    "resource",
    [
        patient(active=True, multipleBirthInteger=2, gender="female", birthDate="1987-02-20"),
        patient(
            birthDate="1987",
            _birthDate={"extension": [{"url": "http://x", "valueCode": "a"}]},
        ),
        patient(_birthDate={"id": "b1"}),  # an extension without a value
        patient(name=[{"given": ["Amy", None], "_given": [None, {"id": "g2"}]}]),
        patient(name=[{"given": [None, "V."], "_given": [{"id": "g1"}, None]}]),
        patient(name=[{"_given": [{"id": "g1"}]}]),
        observation(valueQuantity={"value": 1}),
        observation(valueQuantity={"value": 1.25e3}),
        observation(valueInteger=-3),
        patient(unknownElement=None, _unknown=[]),  # unknown properties are the models' business
    ],
)
def test_conforming_json_passes(resource: dict[str, Any]) -> None:
    assert check_json_rules(resource) == []


def test_a_null_placeholder_needs_an_entry_in_the_other_array() -> None:
    lone = patient(name=[{"given": ["Amy", None]}])
    assert check_json_rules(lone) == [
        ("Patient.name[0].given[1]", "null is only a placeholder for an entry of _given"),
    ]
    lone_extension = patient(name=[{"_given": [None]}])
    assert check_json_rules(lone_extension) == [
        ("Patient.name[0]._given[0]", "null is only a placeholder for an entry of given"),
    ]
    both_null = patient(name=[{"given": ["Amy", None], "_given": [None, None]}])
    assert check_json_rules(both_null) == [
        ("Patient.name[0].given[1]", "null is only a placeholder for an entry of _given"),
    ]
    uneven = patient(name=[{"given": ["Amy", "V."], "_given": [{"id": "g1"}]}])
    assert check_json_rules(uneven) == [
        ("Patient.name[0]._given", "must have as many entries as given"),
    ]


def test_contained_resources_are_checked_by_their_own_type() -> None:
    resource = patient(
        contained=[
            {"resourceType": "Organization", "id": "o1", "active": "yes"},
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "valueQuantity": {"value": "2"},
            },
        ]
    )
    assert check_json_rules(resource) == [
        ("Patient.contained[0].active", BOOLEAN),
        ("Patient.contained[1].valueQuantity.value", NUMBER),
    ]


def test_bundle_entries_are_checked() -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:1", "resource": patient(active=True)},
            {"resource": patient(active="true")},
            {"resource": {"resourceType": "HumanName", "family": "Shaw"}},
            {"resource": {"active": True}},
        ],
    }
    assert check_json_rules(bundle) == [
        ("Bundle.entry[1].resource.active", BOOLEAN),
        ("Bundle.entry[2].resource.resourceType", "unknown or missing resourceType"),
        ("Bundle.entry[3].resource.resourceType", "unknown or missing resourceType"),
    ]


def test_parameters_resources_are_checked() -> None:
    parameters = {
        "resourceType": "Parameters",
        "parameter": [{"name": "p", "resource": patient(gender=None)}],
    }
    assert check_json_rules(parameters) == [("Parameters.parameter[0].resource.gender", NULL)]


def test_the_root_must_be_a_known_resource() -> None:
    expected = [("resourceType", "unknown or missing resourceType")]
    assert check_json_rules({"active": True}) == expected
    assert check_json_rules({"resourceType": "DomainResource"}) == expected
    assert check_json_rules({"resourceType": "Coding"}) == expected


def test_issues_are_capped() -> None:
    resource = patient(name=[{"family": ""} for _ in range(2 * MAX_ISSUES)])
    issues = check_json_rules(resource)
    assert len(issues) == MAX_ISSUES
    assert issues[0] == ("Patient.name[0].family", EMPTY_STRING)


def test_deep_nesting_does_not_exhaust_the_stack() -> None:
    extension: dict[str, Any] = {"url": "http://x", "valueBoolean": "deep"}
    for _ in range(5000):
        extension = {"url": "http://x", "extension": [extension]}
    issues = check_json_rules(patient(extension=[extension]))
    assert len(issues) == 1
    assert issues[0][0].endswith(".extension[0].valueBoolean")


def test_paths_match_the_models_paths() -> None:
    for resource in (
        patient(active="maybe"),
        {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": patient(active="maybe")}],
        },
    ):
        with pytest.raises(ResourceInvalid) as caught:
            validate_resource(resource)
        model_paths = [issue.expression for issue in caught.value.issues]
        assert [path for path, _ in check_json_rules(resource)] == model_paths


def test_sdohcc_examples_pass() -> None:
    if not EXAMPLES.is_dir():
        pytest.skip(f"the SDOHCC conformance examples are not at {EXAMPLES}")
    files = sorted(EXAMPLES.glob("*.json"))
    assert files, f"no examples in {EXAMPLES}"
    for file in files:
        resource = json.loads(file.read_text(encoding="utf-8"))
        assert check_json_rules(resource) == [], file.name


# Keys that reach into the Patient model (and below), mixed with ones it does not know.
_KEYS = st.sampled_from(
    [
        "active",
        "gender",
        "birthDate",
        "_birthDate",
        "multipleBirthInteger",
        "name",
        "family",
        "given",
        "_given",
        "extension",
        "url",
        "valueBoolean",
        "valueDecimal",
        "valueInteger",
        "contained",
        "resourceType",
        "id",
        "text",
        "div",
        "telecom",
        "value",
        "period",
        "start",
        "link",
        "other",
        "Patient",
        "Bundle",
        "entry",
        "resource",
        "",
    ]
) | st.text(max_size=8)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["Patient", "Observation", "Bundle", "HumanName", "Resource", "Type"])
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=30,
)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_KEYS, _JSON, max_size=6))
def test_arbitrary_json_under_a_patient_never_raises(elements: dict[str, Any]) -> None:
    issues = check_json_rules({**elements, "resourceType": "Patient"})
    assert isinstance(issues, list)
    assert len(issues) <= MAX_ISSUES
    assert all(isinstance(path, str) and isinstance(message, str) for path, message in issues)
