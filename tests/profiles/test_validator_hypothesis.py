"""Property tests: the validator never raises on resource-shaped JSON, odd values included, and
the compiled FHIRPath closures answer as fhirpathpy does.

Resources are drawn from the R4 models' element structure (``profiles.models.element_children``):
the right JSON names with values of the right type most of the time, codes and references from
the inline profiles' vocabulary so that slices, bindings and invariants are exercised, and now
and then a value of the wrong JSON type, a null or an empty container.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
import test_validator
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_validator import (
    CODES,
    EX,
    OBS_CAT,
    TEMP,
    US_CORE_CAT,
    Codes,
    sliced_categories,
)

from profiles.fhirpath import Environment, compile_expression
from profiles.models import element_children
from profiles.registry import ProfileRegistry
from profiles.validator import ValidationIssue, Validator

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

SEVERITIES = {"error", "warning", "information"}
ISSUE_CODES = {
    "required",
    "value",
    "code-invalid",
    "invariant",
    "structure",
    "processing",
    "not-found",
    "informational",
    "too-costly",
}

INLINE = [
    value
    for value in vars(test_validator).values()
    if isinstance(value, dict) and value.get("resourceType") == "StructureDefinition"
] + [
    sliced_categories(rules, ordered)
    for rules in ("closed", "openAtEnd")
    for ordered in (False, True)
]
INLINE_REGISTRY = ProfileRegistry(INLINE)

TEMP_CODES = [
    "make-contact",
    "review-material",
    "general-information",
    "general-information-response",
    "questionnaire-category",
    "questionnaire-pdf",
    "contact-entity",
    "chosen-contact",
    "resulting-activity",
    "food-insecurity",
    "capacity",
]
SDC_TEMP = "http://hl7.org/fhir/uv/sdc/CodeSystem/temp"
CODINGS = st.one_of(
    st.builds(lambda c: {"system": TEMP, "code": c}, st.sampled_from(TEMP_CODES)),
    st.builds(
        lambda c: {"system": SDC_TEMP, "code": c},
        st.sampled_from(["complete-questionnaire", "questionnaire", "questionnaire-response"]),
    ),
    st.sampled_from(
        [
            {"system": OBS_CAT, "code": "survey"},
            {"system": US_CORE_CAT, "code": "sdoh"},
            {"system": "http://loinc.org", "code": "88122-7"},
            {"system": "http://loinc.org", "code": "72826-1"},
            {"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "x"},
            {"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"},
            {"system": "http://unitsofmeasure.org", "code": "kg"},
            {"code": "final"},
        ]
    ),
)
REFERENCES = st.sampled_from(
    [
        "Patient/1",
        "ServiceRequest/2",
        "DocumentReference/3",
        "Procedure/4",
        "Consent/5",
        "Device/6",
        "https://other.example/fhir/Task/7/_history/1",
        "#c1",
        "#missing",
        "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
        "Unknown/8",
        "",
    ]
)
EXTENSION_URLS = st.sampled_from(
    [
        EX + "asserter",
        EX + "capacity",
        EX + "mystery",
        EX + "appointment-flag",
        "status",
        "notes",
        "http://hl7.org/fhir/StructureDefinition/data-absent-reason",
        "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race",
        "ombCategory",
        "text",
    ]
)
STRINGS = st.sampled_from(["final", "order", "routine", "2024-01-01", "x", "Zebediah"]) | st.text(
    max_size=8
)
JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=4) | st.just([]) | st.just({}),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def primitive(code: str) -> st.SearchStrategy[Any]:
    if code == "boolean":
        return st.booleans()
    if code in ("integer", "positiveInt", "unsignedInt"):
        return st.integers(-3, 10**12)
    if code == "decimal":
        return (
            st.integers(-5, 5)
            | st.floats(allow_nan=False, allow_infinity=False)
            | st.builds(Decimal, st.sampled_from(["1.5", "0", "-2"]))
        )
    if code in ("uri", "url", "canonical"):
        return EXTENSION_URLS | REFERENCES
    return STRINGS


# The elements the profiles and invariants here talk about: drawn more often than the rest.
FAVOURITES = frozenset(
    {
        "authoredOn", "category", "code", "coding", "component", "contained", "description",
        "effective", "extension", "focus", "for", "input", "lastModified", "note", "output",
        "owner", "priority", "reference", "requester", "status", "statusReason", "subject",
        "supportingInfo", "system", "telecom", "text", "type", "url", "value",
    }
)  # fmt: skip


@st.composite
def shaped(draw: st.DrawFn, context: str, depth: int = 0) -> dict[str, Any]:
    """An object with some of the elements the models give ``context``."""
    infos = element_children(context)
    if not infos or depth > 4:
        return {}
    names = draw(st.lists(st.sampled_from(sorted(infos)), max_size=4, unique=True))
    favourites = sorted(FAVOURITES & infos.keys())
    if favourites:
        names += draw(st.lists(st.sampled_from(favourites), max_size=len(favourites), unique=True))
    names = list(dict.fromkeys(names))
    obj: dict[str, Any] = {}
    for name in names:
        info = infos[name]
        key = draw(st.sampled_from(sorted(info.types)))
        value = value_of(info.types[key], info.children_of.get(info.types[key]), depth)
        if info.is_list:
            value = st.lists(value, min_size=1, max_size=3)
        obj[key] = draw(st.one_of(value, value, value, value, value, JUNK))
    if context == "Extension" or "extension" in names:
        obj.setdefault("url", draw(EXTENSION_URLS))
    return obj


def value_of(code: str, child: str | None, depth: int) -> st.SearchStrategy[Any]:
    if code == "CodeableConcept":
        return st.builds(
            lambda codings, text: {"coding": codings, **({"text": text} if text else {})},
            st.lists(CODINGS, min_size=1, max_size=3),
            st.sampled_from([None, "text"]),
        ) | shaped(code, depth + 1)
    if code == "Coding":
        return CODINGS
    if code == "Reference":
        return st.builds(lambda r: {"reference": r}, REFERENCES) | shaped(code, depth + 1)
    if code == "Resource":
        return st.sampled_from(["Patient", "DocumentReference"]).flatmap(
            lambda t: shaped(t, depth + 2).map(lambda o: {"resourceType": t, "id": "c1", **o})
        )
    if code[:1].islower():
        return primitive(code)
    return shaped(child or code, depth + 1)


def resource_of(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    return shaped(type_name).map(lambda o: {"resourceType": type_name, **o})


def assert_issues(issues: list[ValidationIssue], type_name: str) -> None:
    for issue in issues:
        assert isinstance(issue, ValidationIssue)
        assert issue.severity in SEVERITIES
        assert issue.code in ISSUE_CODES
        assert issue.expression.startswith(type_name)


@pytest.mark.parametrize("url", sorted(d["url"] for d in INLINE))
@SETTINGS
@given(data=st.data())
def test_inline_profiles_never_raise(url: str, data: st.DataObject) -> None:
    profile = INLINE_REGISTRY.get(url)
    assert profile is not None
    resource = data.draw(resource_of(profile.type))
    validator = Validator(INLINE_REGISTRY, CODES)
    assert_issues(validator.validate(resource, url), profile.type)
    assert_issues(validator.validate(resource, url, must_support=True), profile.type)


BUNDLED = ProfileRegistry.bundled()


@pytest.mark.parametrize("url", BUNDLED.urls())
@settings(SETTINGS, max_examples=15)
@given(data=st.data())
def test_bundled_profiles_never_raise(url: str, data: st.DataObject) -> None:
    profile = BUNDLED.get(url)
    assert profile is not None
    resource = data.draw(resource_of(profile.type))
    validator = Validator(BUNDLED, Codes({}))
    assert_issues(validator.validate(resource, url), profile.type)


TASK_NAMES = st.sampled_from(sorted(element_children("Task")))


@SETTINGS
@given(
    resource=st.one_of(
        JUNK,
        st.dictionaries(TASK_NAMES | st.text(max_size=5), JUNK, max_size=6).map(
            lambda o: {**o, "resourceType": "Task"}
        ),
    )
)
def test_arbitrary_json_never_raises(resource: Any) -> None:
    validator = Validator(INLINE_REGISTRY, CODES)
    for url in (EX + "task-invariants", EX + "task-outputs", EX + "task-values"):
        assert_issues(validator.validate(resource, url), "Task")


def test_deep_nesting_is_cut_short_not_a_crash() -> None:
    nested: dict[str, Any] = {"url": EX + "capacity"}
    for _ in range(5_000):
        nested = {"url": EX + "capacity", "extension": [nested]}
    resource = {"resourceType": "Condition", "extension": [nested]}
    issues = Validator(INLINE_REGISTRY, CODES).validate(resource, EX + "condition-extensions")
    assert_issues(issues, "Condition")


def test_huge_arrays_stop_at_the_issue_limit() -> None:
    resource = {"resourceType": "Observation", "category": [{"text": "x"}] * 100_000}
    issues = Validator(INLINE_REGISTRY, CODES).validate(resource, EX + "obs-slices-closed-false")
    assert issues[-1].code == "too-costly"
    assert len(issues) <= 201


# --- the FHIRPath closures against fhirpathpy ----------------------------------------------

SDOHCC_TEMP = TEMP  # the inline vocabulary stands in for the SDOHCC temporary code system


def _task_invariants() -> list[str]:
    """SDOHCC's TaskForPatient invariants (research note §2.13), over the inline vocabulary."""
    temp, sdc = SDOHCC_TEMP, SDC_TEMP

    def coded(path: str, system: str, code: str) -> str:
        return f"{path}.where(system='{system}' and code='{code}').exists()"

    return [
        f"{coded('code.coding', sdc, 'complete-questionnaire')} implies"
        f" (({coded('input.type.coding', sdc, 'questionnaire')}"
        f" xor {coded('input.type.coding', temp, 'questionnaire-pdf')})"
        f" and {coded('input.type.coding', temp, 'questionnaire-category')})",
        f"{coded('code.coding', temp, 'general-information')} implies (description.exists() and"
        f" (output.empty() or output.type.coding.all(system='{temp}'"
        " and code='general-information-response').exists()))",
        f"{coded('code.coding', temp, 'review-material')} implies"
        " focus.resolve().all($this is DocumentReference)",
        f"{coded('code.coding', temp, 'make-contact')} implies"
        f" {coded('input.type.coding', temp, 'contact-entity')}",
        f"{coded('input.type.coding', sdc, 'questionnaire')} implies"
        f" ({coded('output.type.coding', sdc, 'questionnaire-response')} or output.empty())",
        "code.memberOf('" + test_validator.VS + "task-code')",
        "input.count() + output.count() <= 3 and (priority = 'routine' or priority.empty())",
        "status != 'draft' and (owner.exists() xor requester.exists())",
        "(input | output).type.coding.code.distinct().count() >= 0",
        "input.value.exists() and input[0].type.exists()",
        "statusReason.coding.code in ('x' | 'final') or 'final' in statusReason.coding.code",
        "contained.where($this is Patient).exists() implies for.exists()",
        "extension('" + EX + "asserter').count() + input.where(type.text.exists()).count() <= 1",
        "note.text.first() = note.text.last()",
        "authoredOn.exists() and lastModified.exists() implies lastModified >= authoredOn",
    ]


TASK_EXPRESSIONS = _task_invariants()


def _has_null(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, dict):
        return any(_has_null(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_null(v) for v in value)
    return False


@pytest.mark.parametrize("text", TASK_EXPRESSIONS)
def test_the_task_invariants_compile_to_closures(text: str) -> None:
    assert compile_expression(text).compiled


@pytest.mark.parametrize("text", TASK_EXPRESSIONS)
@SETTINGS
@given(resource=resource_of("Task"))
def test_the_closures_answer_as_fhirpathpy_does(text: str, resource: dict[str, Any]) -> None:
    # fhirpathpy's extension(url) keeps only the first extension with the url on each element;
    # FHIRPath says all of them (http://hl7.org/fhir/R4/fhirpath.html#functions). The closures
    # follow the specification: such resources are left out of the comparison.
    extensions = resource.get("extension")
    urls = (
        [repr(e.get("url")) for e in extensions if isinstance(e, dict)]
        if isinstance(extensions, list)
        else []
    )
    assume(len(urls) == len(set(urls)))
    # The validator runs on resources the R4 base rules accepted, which refuse JSON nulls:
    # fhirpathpy counts a null as an item, the closures do not, and FHIR has no such value.
    assume(not _has_null(resource))
    expression = compile_expression(text)
    env = Environment(resource, CODES.member_of, lambda r, u: None)
    try:
        expected = expression.evaluate_with_fhirpathpy(resource, "Task", env)
    except Exception:  # fhirpathpy refuses it (a non-boolean operand ...): so do we, or we agree
        return
    assert _plain(expression.evaluate(resource, "Task", env)) == _plain(expected)


def test_extension_selects_every_extension_with_the_url() -> None:
    resource = {"resourceType": "Task", "extension": [{"url": "u"}, {"url": "u"}, {"url": "v"}]}
    env = Environment(resource, CODES.member_of, lambda r, u: None)
    assert compile_expression("extension('u').count()").evaluate(resource, "Task", env) == [2]


def _plain(value: Any) -> Any:
    """fhirpathpy's answers as plain JSON values (its nodes unwrapped)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    data = getattr(value, "data", value)
    if isinstance(data, dict):
        return {k: _plain(v) for k, v in data.items()}
    return data


def test_the_bundled_invariants_compile_to_closures() -> None:
    """The invariants of the profiles the server ships avoid fhirpathpy's slow evaluator."""
    slow = []
    for url in BUNDLED.urls():
        for element in BUNDLED.get(url).definition.get("differential", {}).get("element", []):  # type: ignore[union-attr]
            for constraint in element.get("constraint", []):
                text = constraint.get("expression")
                if text and not compile_expression(text).compiled:
                    slow.append((url, constraint.get("key")))
    assert slow == []
