"""The patch engine: JSON Patch (RFC 6902) and FHIRPath Patch (R4 fhirpatch.html) on FHIR JSON."""

from __future__ import annotations

import copy
import json
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class
from fhir_core.types import FhirBase
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.core.errors import FhirError, InvalidRequest, UnprocessableEntity
from fhir_server.operations.patch import apply_fhirpath_patch, apply_json_patch, is_repeating
from profiles.models import RESOURCE_TYPES, validate_resource

EXAMPLES = Path(__file__).resolve().parents[4] / "shared" / "conformance" / "sdohcc" / "examples"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "identifier": [{"system": "urn:oid:2.16.840.1.113883.4.1", "value": "123-45-6789"}],
    "name": [
        {"use": "official", "family": "Doe", "given": ["Jane", "Q"]},
        {"use": "usual", "given": ["JJ"]},
    ],
    "telecom": [{"system": "phone", "value": "555-0100", "use": "home"}],
    "gender": "female",
    "birthDate": "1980-02-29",
    "address": [{"line": ["1 Main St"], "city": "Frankfort", "state": "KY"}],
}

OBSERVATION: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp-1",
    "status": "final",
    "category": [{"coding": [{"system": "http://x/cat", "code": "vital-signs"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
    "subject": {"reference": "Patient/pat-1"},
    "effectiveDateTime": "2024-05-01T10:00:00Z",
    "component": [
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
            "valueQuantity": {"value": 120, "unit": "mmHg"},
        },
        {
            "code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
            "valueQuantity": {"value": 80, "unit": "mmHg"},
        },
    ],
}

SERVICE_REQUEST: dict[str, Any] = {
    "resourceType": "ServiceRequest",
    "id": "ref-1",
    "status": "active",
    "intent": "order",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "410606002"}]}],
    "code": {"coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]},
    "subject": {"reference": "Patient/pat-1"},
    "occurrencePeriod": {"start": "2024-05-01"},
    "requester": {"reference": "Practitioner/doc-1"},
}


# --- JSON Patch -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ([{"op": "add", "path": "/active", "value": True}], {**PATIENT, "active": True}),
        (
            [{"op": "add", "path": "/name/1/given/-", "value": "Jo"}],
            {**PATIENT, "name": [PATIENT["name"][0], {"use": "usual", "given": ["JJ", "Jo"]}]},
        ),
        (
            [{"op": "add", "path": "/telecom/0", "value": {"system": "email", "value": "a@b"}}],
            {**PATIENT, "telecom": [{"system": "email", "value": "a@b"}, *PATIENT["telecom"]]},
        ),
        ([{"op": "add", "path": "/gender", "value": "male"}], {**PATIENT, "gender": "male"}),
        (
            [{"op": "remove", "path": "/name/1"}],
            {**PATIENT, "name": PATIENT["name"][:1]},
        ),
        (
            [{"op": "replace", "path": "/birthDate", "value": "1981-01-01"}],
            {**PATIENT, "birthDate": "1981-01-01"},
        ),
        (
            [{"op": "move", "from": "/name/0", "path": "/name/-"}],
            {**PATIENT, "name": PATIENT["name"][::-1]},
        ),
        ([{"op": "move", "from": "/gender", "path": "/gender"}], PATIENT),
        (
            [{"op": "copy", "from": "/address/0/city", "path": "/address/0/district"}],
            {**PATIENT, "address": [{**PATIENT["address"][0], "district": "Frankfort"}]},
        ),
        ([{"op": "test", "path": "/name/0/given/1", "value": "Q"}], PATIENT),
        ([{"op": "add", "path": "/id", "value": "other"}], {**PATIENT, "id": "other"}),
        (
            [{"op": "add", "path": "", "value": {"resourceType": "Basic"}}],
            {"resourceType": "Basic"},
        ),
    ],
    ids=lambda value: json.dumps(value)[:40] if isinstance(value, list) else "",
)
def test_json_patch_operations(document: list[Any], expected: dict[str, Any]) -> None:
    assert apply_json_patch(PATIENT, document) == expected


def test_json_pointer_escapes() -> None:
    resource = {"resourceType": "Basic", "a/b": 1, "m~n": 2}
    document = [
        {"op": "test", "path": "/a~1b", "value": 1},
        {"op": "move", "from": "/m~0n", "path": "/~01"},
    ]
    assert apply_json_patch(resource, document) == {"resourceType": "Basic", "a/b": 1, "~1": 2}


@pytest.mark.parametrize(
    ("actual", "value", "passes"),
    [
        (1, 1.0, True),
        (1, True, False),
        (0, False, False),
        (None, None, True),
        ("1", 1, False),
        ({"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2}]}, True),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
        ({"a": 1}, {"a": 1, "b": None}, False),
        ([1, 2], [2, 1], False),
    ],
)
def test_json_patch_test_uses_json_equality(actual: Any, value: Any, passes: bool) -> None:
    resource = {"resourceType": "Basic", "x": actual}
    document = [{"op": "test", "path": "/x", "value": value}]
    if passes:
        assert apply_json_patch(resource, document) == resource
    else:
        with pytest.raises(UnprocessableEntity):
            apply_json_patch(resource, document)


@pytest.mark.parametrize(
    "document",
    [
        {"op": "add", "path": "/active", "value": True},
        "[]",
        [["add", "/active"]],
        [{"op": "jump", "path": "/active"}],
        [{"path": "/active", "value": 1}],
        [{"op": "remove"}],
        [{"op": "remove", "path": 3}],
        [{"op": "remove", "path": "active"}],
        [{"op": "remove", "path": "/a~2"}],
        [{"op": "add", "path": "/active"}],
        [{"op": "replace", "path": "/active"}],
        [{"op": "test", "path": "/active"}],
        [{"op": "copy", "path": "/a"}],
        [{"op": "move", "path": "/a", "from": 1}],
        [{"op": "move", "from": "/name", "path": "/name/0"}],
        [{"op": "test", "path": "/id", "value": "nope"}, {"op": "nope", "path": "/id"}],
    ],
)
def test_json_patch_malformed_is_400(document: Any) -> None:
    with pytest.raises(InvalidRequest) as caught:
        apply_json_patch(PATIENT, document)
    assert caught.value.status == 400


@pytest.mark.parametrize(
    "operation",
    [
        {"op": "remove", "path": "/deceasedBoolean"},
        {"op": "replace", "path": "/deceasedBoolean", "value": True},
        {"op": "add", "path": "/contact/0/name", "value": {"family": "X"}},
        {"op": "add", "path": "/name/3", "value": {"family": "X"}},
        {"op": "add", "path": "/name/01", "value": {"family": "X"}},
        {"op": "replace", "path": "/name/-", "value": {"family": "X"}},
        {"op": "remove", "path": "/name/2"},
        {"op": "add", "path": "/gender/x", "value": 1},
        {"op": "test", "path": "/birthDate", "value": "1999-01-01"},
        {"op": "test", "path": "/missing", "value": None},
        {"op": "copy", "from": "/missing", "path": "/x"},
        {"op": "move", "from": "/missing", "path": "/missing"},
        {"op": "remove", "path": ""},
        {"op": "replace", "path": "", "value": []},
    ],
)
def test_json_patch_not_applicable_is_422(operation: dict[str, Any]) -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        apply_json_patch(PATIENT, [{"op": "test", "path": "/id", "value": "pat-1"}, operation])
    assert caught.value.status == 422
    assert caught.value.message.startswith(f"JSON Patch operation 1 ({operation['op']}) at ")


def test_json_patch_errors_name_the_operation_not_the_content() -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        apply_json_patch(PATIENT, [{"op": "test", "path": "/name/0/family", "value": "Roe"}])
    message = caught.value.message
    assert "operation 0 (test)" in message and "'/name/0/family'" in message
    assert "Doe" not in message and "Roe" not in message


def test_json_patch_leaves_its_inputs_alone() -> None:
    resource, value = copy.deepcopy(PATIENT), {"system": "email", "value": "a@b"}
    document = [
        {"op": "add", "path": "/telecom/-", "value": value},
        {"op": "remove", "path": "/name/0/given/0"},
        {"op": "move", "from": "/address/0", "path": "/address/-"},
    ]
    saved = copy.deepcopy(document)
    patched = apply_json_patch(resource, document)
    patched["telecom"][-1]["value"] = "changed"
    assert resource == PATIENT and document == saved and value["value"] == "a@b"


# --- FHIRPath Patch -------------------------------------------------------------------------

# Extension is not a Parameters value[x] type: an extension is given by its parts, and its
# choice element ``value`` takes the JSON name of the part's type (valueString).
EXTENSION = {
    "part": [
        {"name": "url", "valueUri": "urn:test"},
        {"name": "value", "valueString": "x"},
    ]
}


def operation(kind: str, path: str, **parts: Any) -> dict[str, Any]:
    """One ``operation`` parameter; each keyword is a part: a value[x] dict or a plain value."""
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, value in parts.items():
        if name == "name":
            part.append({"name": "name", "valueString": value})
        elif name in ("index", "source", "destination"):
            part.append({"name": name, "valueInteger": value})
        else:
            part.append({"name": name, **value})
    return {"name": "operation", "part": part}


def patch(resource: dict[str, Any], *operations: dict[str, Any]) -> dict[str, Any]:
    return apply_fhirpath_patch(
        resource, {"resourceType": "Parameters", "parameter": list(operations)}
    )


def with_(resource: dict[str, Any], **elements: Any) -> dict[str, Any]:
    return {**copy.deepcopy(resource), **elements}


def test_add_a_primitive_and_a_choice() -> None:
    patched = patch(
        PATIENT,
        operation("add", "Patient", name="active", value={"valueBoolean": True}),
        operation("add", "Patient", name="deceased", value={"valueDateTime": "2024-01-01"}),
        operation("add", "Patient", name="multipleBirth", value={"valueInteger": 2}),
    )
    assert patched == with_(
        PATIENT, active=True, deceasedDateTime="2024-01-01", multipleBirthInteger=2
    )


def test_add_to_a_repeating_element_appends_or_starts_a_list() -> None:
    email = {"system": "email", "value": "jane@example.org"}
    note = {"text": "prefers text messages"}
    gp = {"reference": "Practitioner/doc-1"}
    patched = patch(
        PATIENT,
        operation("add", "Patient", name="telecom", value={"valueContactPoint": email}),
        operation("add", "Patient", name="generalPractitioner", value={"valueReference": gp}),
        operation(
            "add", "Patient.name.where(use = 'usual')", name="prefix", value={"valueString": "Dr"}
        ),
        operation("add", "Patient.name[0]", name="given", value={"valueString": "R"}),
        operation("add", "Patient", name="extension", value=EXTENSION),
    )
    assert patched["telecom"] == [*PATIENT["telecom"], email]
    assert patched["generalPractitioner"] == [gp]
    assert patched["name"] == [
        {"use": "official", "family": "Doe", "given": ["Jane", "Q", "R"]},
        {"use": "usual", "given": ["JJ"], "prefix": ["Dr"]},
    ]
    assert patched["extension"] == [{"url": "urn:test", "valueString": "x"}]
    observation = patch(
        OBSERVATION,
        operation("add", "Observation", name="note", value={"valueAnnotation": note}),
    )
    assert observation["note"] == [note]


def test_add_an_anonymous_element_from_parts() -> None:
    """fhirpatch.html: a backbone element's content is given as parts named by element."""
    contact = {
        "part": [
            {"name": "relationship", "valueCodeableConcept": {"text": "mother"}},
            {"name": "name", "valueHumanName": {"family": "Doe", "given": ["Ann"]}},
            {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "1"}},
            {"name": "telecom", "valueContactPoint": {"system": "email", "value": "a@b"}},
            {
                "name": "period",
                "part": [{"name": "start", "valueDateTime": "2020-01-01"}],
            },
        ]
    }
    patched = patch(PATIENT, operation("add", "Patient", name="contact", value=contact))
    assert patched["contact"] == [
        {
            "relationship": [{"text": "mother"}],
            "name": {"family": "Doe", "given": ["Ann"]},
            "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
            "period": {"start": "2020-01-01"},
        }
    ]
    validate_resource(patched)


def test_add_a_component_with_a_choice_value() -> None:
    component = {
        "part": [
            {"name": "code", "valueCodeableConcept": {"text": "pulse"}},
            {"name": "value", "valueQuantity": {"value": 60, "unit": "/min"}},
            {"name": "interpretation", "valueCodeableConcept": {"text": "normal"}},
        ]
    }
    patched = patch(OBSERVATION, operation("add", "Observation", name="component", value=component))
    assert patched["component"][-1] == {
        "code": {"text": "pulse"},
        "valueQuantity": {"value": 60, "unit": "/min"},
        "interpretation": [{"text": "normal"}],
    }
    validate_resource(patched)


def test_added_elements_validate_on_a_bare_patient() -> None:
    added = [
        ("identifier", {"valueIdentifier": {"value": "1"}}),
        ("name", {"valueHumanName": {"family": "Doe"}}),
        ("telecom", {"valueContactPoint": {"value": "1"}}),
        ("address", {"valueAddress": {"city": "Lexington"}}),
        ("communication", {"part": [{"name": "language", "valueCodeableConcept": {"text": "es"}}]}),
        ("maritalStatus", {"valueCodeableConcept": {"text": "single"}}),
        ("managingOrganization", {"valueReference": {"reference": "Organization/o"}}),
        (
            "link",
            {
                "part": [
                    {"name": "other", "valueReference": {"reference": "Patient/x"}},
                    {"name": "type", "valueCode": "seealso"},
                ]
            },
        ),
    ]
    patched = patch(
        {"resourceType": "Patient"},
        *(operation("add", "Patient", name=name, value=value) for name, value in added),
    )
    validate_resource(patched)
    assert [isinstance(patched[name], list) for name, _ in added] == [
        True,
        True,
        True,
        True,
        True,
        False,
        False,
        True,
    ]


def test_insert() -> None:
    official, usual = PATIENT["name"]
    legal = {"use": "maiden", "family": "Roe"}
    assert patch(
        PATIENT, operation("insert", "Patient.name", value={"valueHumanName": legal}, index=1)
    )["name"] == [official, legal, usual]
    assert patch(
        PATIENT, operation("insert", "Patient.name", value={"valueHumanName": legal}, index=2)
    )["name"] == [official, usual, legal]
    assert patch(
        PATIENT, operation("insert", "Patient.name[0].given", value={"valueString": "A"}, index=0)
    )["name"][0]["given"] == ["A", "Jane", "Q"]
    category = {"coding": [{"system": "http://x", "code": "housing"}]}
    patched = patch(
        SERVICE_REQUEST,
        operation(
            "insert", "ServiceRequest.category", value={"valueCodeableConcept": category}, index=0
        ),
        operation(
            "insert", "ServiceRequest.note", value={"valueAnnotation": {"text": "n"}}, index=0
        ),
    )
    assert patched["category"] == [category, *SERVICE_REQUEST["category"]]
    assert patched["note"] == [{"text": "n"}]


def test_delete() -> None:
    assert patch(PATIENT, operation("delete", "Patient.birthDate")) == {
        k: v for k, v in PATIENT.items() if k != "birthDate"
    }
    assert patch(PATIENT, operation("delete", "Patient.name.where(use = 'usual')"))["name"] == [
        PATIENT["name"][0]
    ]
    assert patch(PATIENT, operation("delete", "Patient.name[0].given.last()"))["name"][0] == {
        "use": "official",
        "family": "Doe",
        "given": ["Jane"],
    }
    # The last item of a list goes with the list, and an emptied parent goes with it.
    patched = patch(PATIENT, operation("delete", "Patient.name[1].given"))
    assert patched["name"][1] == {"use": "usual"}
    assert "telecom" not in patch(PATIENT, operation("delete", "Patient.telecom.first()"))
    patched = patch(
        OBSERVATION,
        operation("delete", "Observation.component.where(code.coding.code = '8462-4')"),
        operation("delete", "Observation.category.coding"),
    )
    assert patched["component"] == OBSERVATION["component"][:1]
    assert "category" not in patched


def test_delete_of_nothing_changes_nothing() -> None:
    for path in ("Patient.name.where(use = 'nickname')", "Patient.photo", "Observation.status"):
        assert patch(PATIENT, operation("delete", path)) == PATIENT


def test_replace() -> None:
    patched = patch(
        PATIENT,
        operation("replace", "Patient.birthDate", value={"valueDate": "1980-03-01"}),
        operation(
            "replace", "Patient.name.where(use = 'official').family", value={"valueString": "Roe"}
        ),
        operation("replace", "Patient.name[1].given[0]", value={"valueString": "Jay"}),
        operation("replace", "Patient.telecom[0]", value={"valueContactPoint": {"value": "9"}}),
    )
    assert patched == with_(
        PATIENT,
        birthDate="1980-03-01",
        name=[
            {"use": "official", "family": "Roe", "given": ["Jane", "Q"]},
            {"use": "usual", "given": ["Jay"]},
        ],
        telecom=[{"value": "9"}],
    )


def test_replace_a_choice_element_may_change_its_type() -> None:
    patched = patch(
        SERVICE_REQUEST,
        operation("replace", "ServiceRequest.occurrence", value={"valueDateTime": "2024-06-01"}),
        operation("replace", "ServiceRequest.status", value={"valueCode": "completed"}),
    )
    assert "occurrencePeriod" not in patched
    assert (patched["occurrenceDateTime"], patched["status"]) == ("2024-06-01", "completed")
    patched = patch(
        OBSERVATION,
        operation(
            "replace",
            "Observation.component.where(code.coding.code = '8480-6').value.ofType(Quantity).value",
            value={"valueDecimal": 118.5},
        ),
        operation("replace", "Observation.effective", value={"valuePeriod": {"start": "2024"}}),
    )
    assert patched["component"][0]["valueQuantity"] == {"value": 118.5, "unit": "mmHg"}
    assert patched["effectivePeriod"] == {"start": "2024"} and "effectiveDateTime" not in patched


def test_move() -> None:
    a, b, c = ({"value": str(n)} for n in range(3))
    resource = with_(PATIENT, telecom=[a, b, c])
    assert patch(resource, operation("move", "Patient.telecom", source=0, destination=2))[
        "telecom"
    ] == [b, c, a]
    assert patch(resource, operation("move", "Patient.telecom", source=2, destination=0))[
        "telecom"
    ] == [c, a, b]
    assert (
        patch(resource, operation("move", "Patient.telecom", source=1, destination=1)) == resource
    )


def test_primitive_arrays_keep_their_extensions_aligned() -> None:
    ext = {"extension": [{"url": "http://x/ext", "valueString": "y"}]}
    resource = with_(PATIENT, name=[{"given": ["A", "B", "C"], "_given": [None, ext, None]}])
    assert patch(resource, operation("delete", "Patient.name.given[1]"))["name"] == [
        {"given": ["A", "C"]}
    ]
    assert patch(resource, operation("move", "Patient.name.given", source=1, destination=0))[
        "name"
    ] == [{"given": ["B", "A", "C"], "_given": [ext, None, None]}]
    assert patch(
        resource, operation("insert", "Patient.name.given", value={"valueString": "Z"}, index=0)
    )["name"] == [{"given": ["Z", "A", "B", "C"], "_given": [None, None, ext, None]}]


def test_ofType_selects_by_type() -> None:
    contained = [
        {"resourceType": "Organization", "id": "o", "name": "Food bank"},
        {"resourceType": "Practitioner", "id": "p"},
    ]
    resource = with_(SERVICE_REQUEST, contained=contained)
    patched = patch(
        resource,
        operation(
            "add",
            "ServiceRequest.contained.ofType(Practitioner)",
            name="active",
            value={"valueBoolean": True},
        ),
        operation(
            "replace",
            "ServiceRequest.contained.ofType(Organization).name",
            value={"valueString": "Pantry"},
        ),
    )
    assert patched["contained"] == [
        {"resourceType": "Organization", "id": "o", "name": "Pantry"},
        {"resourceType": "Practitioner", "id": "p", "active": True},
    ]
    assert (
        patch(SERVICE_REQUEST, operation("delete", "ServiceRequest.occurrence.ofType(dateTime)"))
        == SERVICE_REQUEST
    )


def test_type_and_id_may_change_here() -> None:
    patched = patch(PATIENT, operation("replace", "Patient.id", value={"valueId": "other"}))
    assert patched["id"] == "other"


def test_fhirpath_patch_leaves_its_inputs_alone() -> None:
    resource = copy.deepcopy(OBSERVATION)
    quantity = {"value": 1}
    parameters = {
        "resourceType": "Parameters",
        "parameter": [
            operation(
                "replace", "Observation.component[0].value", value={"valueQuantity": quantity}
            ),
            operation("delete", "Observation.component[1]"),
            operation("move", "Observation.category", source=0, destination=0),
        ],
    }
    saved = copy.deepcopy(parameters)
    patched = apply_fhirpath_patch(resource, parameters)
    patched["component"][0]["valueQuantity"]["value"] = 2
    assert resource == OBSERVATION and parameters == saved and quantity == {"value": 1}


@pytest.mark.parametrize(
    "parameters",
    [
        [],
        {"resourceType": "Patient"},
        {"resourceType": "Parameters", "parameter": {}},
        {"resourceType": "Parameters", "parameter": [{"name": "op", "part": []}]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [1]}]},
    ],
)
def test_not_a_fhirpath_patch_is_400(parameters: Any) -> None:
    with pytest.raises(InvalidRequest):
        apply_fhirpath_patch(PATIENT, parameters)


def bad(kind: str, path: str, *extra: dict[str, Any]) -> dict[str, Any]:
    part = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    return {"name": "operation", "part": [*part, *extra]}


VALUE = {"name": "value", "valueString": "x"}
NAME = {"name": "name", "valueString": "gender"}


@pytest.mark.parametrize(
    "parameter",
    [
        bad("upsert", "Patient"),
        bad("add", "Patient", VALUE),
        bad("add", "Patient", NAME),
        bad("add", "Patient", {"name": "name", "valueString": "a.b"}, VALUE),
        bad("insert", "Patient.name", VALUE),
        bad("move", "Patient.name", {"name": "source", "valueInteger": 0}),
        bad("replace", "Patient.gender"),
        bad("delete", "Patient", {"name": "colour", "valueString": "x"}),
        bad("delete", "Patient.gender", {"name": "path", "valueString": "Patient.id"}),
        {"name": "operation", "part": [{"name": "type", "valueCode": "delete"}]},
        {"name": "operation", "part": [{"name": "type", "valueInteger": 1}]},
        bad("delete", ""),
        bad("delete", "Patient..name"),
        bad("delete", "Patient.name["),
        bad("delete", "Patient.name[x]"),
        bad("delete", "Patient.name.where(use = 'x'"),
        bad("delete", "Patient.name.where()"),
        bad("delete", "Patient.name.first(1)"),
        bad("delete", "Patient.name.ofType('x')"),
        bad("delete", "Patient.name.exists()"),
        bad("delete", "Patient.managingOrganization.resolve().name"),
        bad("delete", "Patient.name.where(use = )"),
        bad("delete", "Patient.name | Patient.telecom"),
        bad("insert", "Patient.name[0]", VALUE, {"name": "index", "valueInteger": 0}),
        bad("insert", "Patient", VALUE, {"name": "index", "valueInteger": 0}),
        bad("insert", "Patient.name", VALUE, {"name": "index", "valueInteger": -1}),
        bad("insert", "Patient.name", VALUE, {"name": "index", "valueString": "0"}),
        bad("insert", "Patient.name", VALUE, {"name": "index", "valueInteger": True}),
        bad("replace", "Patient.gender", {"name": "value", "valueCode": "x", "valueString": "y"}),
        bad("replace", "Patient.gender", {"name": "value"}),
        bad("replace", "Patient.gender", {"name": "value", "valueFoo": "x"}),
        bad("replace", "Patient.gender", {"name": "value", "valueCode": 1}),
        bad("replace", "Patient.active", {"name": "value", "valueBoolean": "true"}),
        bad("replace", "Patient.multipleBirth", {"name": "value", "valueInteger": 1.5}),
        bad("replace", "Patient.name[0]", {"name": "value", "valueHumanName": "Doe"}),
        bad("replace", "Patient.name[0]", {"name": "value", "part": []}),
        bad("replace", "Patient.name[0]", {"name": "value", "part": [{"valueString": "x"}]}),
        bad("replace", "Patient.name[0]", {"name": "value", "resource": {"id": "x"}}),
    ],
)
def test_malformed_operation_is_400(parameter: dict[str, Any]) -> None:
    parameters = {"resourceType": "Parameters", "parameter": [parameter]}
    with pytest.raises(InvalidRequest) as caught:
        apply_fhirpath_patch(PATIENT, parameters)
    assert caught.value.status == 400
    assert caught.value.message.startswith("FHIRPath Patch operation 0")


@pytest.mark.parametrize(
    "parameter",
    [
        operation("add", "Patient", name="gender", value={"valueCode": "male"}),
        operation("add", "Patient", name="deceased", value={"valueDateTime": "2020-01-01"}),
        operation("add", "Patient.contact", name="gender", value={"valueCode": "male"}),
        operation("add", "Patient.name", name="text", value={"valueString": "x"}),
        operation("add", "Patient.gender", name="text", value={"valueString": "x"}),
        operation("add", "Observation", name="text", value={"valueString": "x"}),
        operation("replace", "Patient.photo", value={"valueAttachment": {}}),
        operation("replace", "Patient.name.given", value={"valueString": "x"}),
        operation("replace", "Patient", value={"valueString": "x"}),
        operation("delete", "Patient.name"),
        operation("delete", "Patient"),
        operation("insert", "Patient.name", value={"valueHumanName": {}}, index=3),
        operation("insert", "Patient.gender", value={"valueCode": "x"}, index=0),
        operation("insert", "Patient.name.given", value={"valueString": "x"}, index=0),
        operation("insert", "Patient.deceased", value={"valueBoolean": True}, index=0),
        operation("move", "Patient.name", source=0, destination=2),
        operation("move", "Patient.name", source=2, destination=0),
        operation("move", "Patient.photo", source=0, destination=0),
    ],
)
def test_patch_that_cannot_apply_is_422(parameter: dict[str, Any]) -> None:
    parameters = {"resourceType": "Parameters", "parameter": [parameter]}
    with pytest.raises(UnprocessableEntity) as caught:
        apply_fhirpath_patch(with_(PATIENT, deceasedBoolean=False), parameters)
    assert caught.value.status == 422
    assert caught.value.message.startswith("FHIRPath Patch operation 0 (")


def test_choice_element_added_without_a_type_is_422() -> None:
    value = {"part": [{"name": "system", "valueUri": "http://unitsofmeasure.org"}]}
    with pytest.raises(UnprocessableEntity):
        patch(
            {"resourceType": "Observation"},
            operation("add", "Observation", name="value", value=value),
        )


def test_every_operation_is_checked_before_any_applies() -> None:
    parameters = [
        operation("replace", "Patient.photo", value={"valueAttachment": {}}),  # would be 422
        bad("delete", "Patient.name.exists()"),  # 400
    ]
    with pytest.raises(InvalidRequest):
        patch(PATIENT, *parameters)


def test_fhirpath_errors_name_the_operation_not_the_content() -> None:
    with pytest.raises(UnprocessableEntity) as caught:
        patch(
            PATIENT,
            operation("delete", "Patient.identifier"),
            operation("replace", "Patient.name.given", value={"valueString": "Roe"}),
        )
    message = caught.value.message
    assert message.startswith("FHIRPath Patch operation 1 (replace) at 'Patient.name.given'")
    for content in ("Jane", "Doe", "JJ", "Roe", "123-45-6789"):
        assert content not in message


# --- is_repeating against the R4B models --------------------------------------------------------

DATATYPES = (
    "Address Age Annotation Attachment CodeableConcept Coding ContactPoint Count Distance "
    "Duration HumanName Identifier Money Meta Narrative Period Quantity Range Ratio Reference "
    "SampledData Signature Timing ContactDetail Contributor DataRequirement Expression "
    "ParameterDefinition RelatedArtifact TriggerDefinition UsageContext Dosage Extension"
).split()
# The resources whose repeating elements is_repeating knows exactly.
COVERED = (
    "Patient Observation Condition ServiceRequest Task Consent QuestionnaireResponse "
    "Questionnaire Organization Location HealthcareService Group RelatedPerson Coverage Goal "
    "Procedure Practitioner PractitionerRole Encounter CarePlan CareTeam Communication "
    "CommunicationRequest DocumentReference EpisodeOfCare Provenance Parameters"
).split()


def model_elements(path: str, model: type[Any], depth: int = 0) -> Iterator[tuple[str, bool]]:
    """(element path, repeats) for every element of a model and its backbone elements."""
    for field in model.model_fields.values():
        name = field.alias
        if not name or name.startswith("_") or name == "fhir_comments":
            continue
        annotation, repeats = field.annotation, False
        while typing.get_origin(annotation) in (typing.Union, list, typing.get_origin(int | None)):
            repeats = repeats or typing.get_origin(annotation) is list
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                break
            annotation = members[0]
        yield f"{path}.{name}", repeats
        if isinstance(annotation, type) and issubclass(annotation, FhirBase):
            child = annotation.get_model_klass()
            if child.__name__.startswith(model.__name__) and child is not model and depth < 4:
                yield from model_elements(f"{path}.{name}", child, depth + 1)


def test_is_repeating_is_exact_for_the_covered_types() -> None:
    wrong = [
        (path, repeats)
        for root in DATATYPES + COVERED
        for path, repeats in model_elements(root, get_fhir_model_class(root))
        if is_repeating(path) != repeats
    ]
    assert wrong == []


def test_is_repeating_never_says_a_single_element_repeats() -> None:
    wrong = [
        path
        for root in sorted(RESOURCE_TYPES)
        for path, repeats in model_elements(root, get_fhir_model_class(root))
        if is_repeating(path) and not repeats
    ]
    assert wrong == []


def test_is_repeating_follows_types_and_content_references() -> None:
    assert is_repeating("Patient.name.given")
    assert is_repeating("Patient.contact.name.given")
    assert not is_repeating("Patient.contact.name")
    assert is_repeating("Consent.provision.provision.actor")
    assert is_repeating("QuestionnaireResponse.item.answer.item.answer")
    assert is_repeating("MedicationRequest.extension")
    assert not is_repeating("Nothing.here")


# --- the SDOHCC examples ------------------------------------------------------------------------


def examples() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(EXAMPLES.glob("*.json"))]


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason="the SDOHCC examples are not checked out")
def test_examples_take_an_extension_and_give_it_back() -> None:
    for resource in examples():
        kind = resource["resourceType"]
        added = patch(resource, operation("add", kind, name="extension", value=EXTENSION))
        validate_resource(added)
        assert added["extension"][-1] == {"url": "urn:test", "valueString": "x"}
        removed = patch(added, operation("delete", f"{kind}.extension.where(url = 'urn:test')"))
        assert removed == resource
        assert (
            apply_json_patch(resource, [{"op": "test", "path": "", "value": resource}]) == resource
        )


# --- every input gives a result or our own error ------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
)
JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
TOKENS = st.sampled_from(
    ["name", "0", "1", "2", "-", "01", "given", "telecom", "birthDate", "id", "~0", "~1", "~", ""]
) | st.text(max_size=4)
POINTERS = st.lists(TOKENS, max_size=4).map(lambda tokens: "".join(f"/{t}" for t in tokens))
JSON_OPERATIONS = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test"]) | JSON,
        "path": POINTERS | JSON,
    },
    optional={"value": JSON, "from": POINTERS | JSON},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=st.lists(JSON_OPERATIONS | JSON, max_size=4) | JSON)
def test_any_json_patch_gives_a_resource_or_our_error(document: Any) -> None:
    saved = copy.deepcopy(document)
    try:
        result = apply_json_patch(PATIENT, document)
    except FhirError as exc:
        assert exc.status in (400, 422)
    else:
        assert isinstance(result, dict)
    assert document == saved


PATHS = st.sampled_from(
    [
        "Patient",
        "Patient.name",
        "Patient.name[0]",
        "Patient.name[1].given",
        "Patient.name.first().given",
        "Patient.name.last()",
        "Patient.name.where(use = 'official')",
        "Patient.name.where(given = 'JJ').given",
        "Patient.telecom.where(system = 'phone').value",
        "Patient.deceased.ofType(boolean)",
        "Patient.address.line",
        "Patient.contact",
        "Patient.name.where(",
        "Patient.name.where(use = )",
        "Patient.name.where(%x)",
        "Patient.name.exists()",
        "name.given",
    ]
)
NAMES = st.sampled_from(["given", "name", "telecom", "gender", "deceased", "extension"]) | JSON
VALUE_PARTS = st.recursive(
    st.builds(dict, valueString=st.text(max_size=4))
    | st.builds(dict, valueInteger=SCALARS)
    | st.builds(dict, valueHumanName=JSON)
    | st.builds(dict, valueBoolean=SCALARS)
    | st.dictionaries(st.text(max_size=12), JSON, max_size=2),
    lambda inner: st.builds(
        dict, part=st.lists(st.builds(lambda n, v: {"name": n, **v}, NAMES, inner), max_size=3)
    ),
    max_leaves=5,
)
INDEXES = st.integers(min_value=-1, max_value=4) | SCALARS
PART_VALUES = {
    "name": NAMES.map(lambda name: {"valueString": name}),
    "value": VALUE_PARTS,
    "index": INDEXES.map(lambda index: {"valueInteger": index}),
    "source": INDEXES.map(lambda index: {"valueInteger": index}),
    "destination": INDEXES.map(lambda index: {"valueInteger": index}),
}


KINDS = st.sampled_from(["add", "insert", "delete", "replace", "move"])
ONE_IN_FIVE = st.sampled_from([False, False, False, False, True])


@st.composite
def fhirpath_operations(draw: st.DrawFn) -> dict[str, Any]:
    """Mostly well-formed operations: each optional part is there 4 times in 5, and one time in
    five the type, the path or an extra part is arbitrary."""
    kind = draw(JSON if draw(ONE_IN_FIVE) else KINDS)
    path = draw(st.text(max_size=12) if draw(ONE_IN_FIVE) else PATHS)
    parts = [{"name": "type", "valueCode": kind}, {"name": "path", "valueString": path}]
    for name, values in PART_VALUES.items():
        if not draw(ONE_IN_FIVE):
            parts.append({"name": name, **draw(values)})
    if draw(ONE_IN_FIVE):
        parts.append(draw(JSON))
    return {"name": "operation", "part": draw(st.permutations(parts))}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    parameters=st.builds(
        dict,
        resourceType=st.sampled_from(["Parameters", "Patient"]),
        parameter=st.lists(fhirpath_operations() | JSON, max_size=3),
    )
    | JSON
)
def test_any_fhirpath_patch_gives_a_resource_or_our_error(parameters: Any) -> None:
    resource = with_(PATIENT, deceasedBoolean=False, contact=[{"name": {"family": "X"}}])
    saved = copy.deepcopy(parameters)
    try:
        result = apply_fhirpath_patch(resource, parameters)
    except FhirError as exc:
        assert exc.status in (400, 422)
    else:
        assert isinstance(result, dict)
    assert parameters == saved
