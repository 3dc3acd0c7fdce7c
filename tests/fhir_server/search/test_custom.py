"""SearchParameter resources turned into search parameters, or refused with a reason."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_server.search.custom import InvalidDefinition, check_syntax, params_from_definition
from fhir_server.search.registry import SearchRegistry, split_union

REGISTRY = SearchRegistry.load_default()


def _definition(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "SearchParameter",
        "url": "http://example.org/SearchParameter/x",
        "status": "active",
        "code": "screened-by",
        "base": ["Observation", "QuestionnaireResponse"],
        "type": "reference",
        "expression": "Observation.performer | QuestionnaireResponse.author",
        "target": ["Practitioner", "Organization"],
    } | changes


def test_one_parameter_per_base_with_its_own_part_of_the_expression() -> None:
    params = params_from_definition(_definition(), REGISTRY)
    assert [(p.resource_type, p.expression) for p in params] == [
        ("Observation", "Observation.performer"),
        ("QuestionnaireResponse", "QuestionnaireResponse.author"),
    ]
    assert params[0].targets == ("Practitioner", "Organization")
    assert all(p.pending is None and p.url.endswith("/x") for p in params)
    # A registry with them finds them by code and by URL.
    registry = REGISTRY.with_params(params)
    assert registry.get("Observation", "screened-by") == params[0]
    assert registry.by_url("http://example.org/SearchParameter/x", "QuestionnaireResponse")


def test_a_custom_composite_of_known_components() -> None:
    definition = _definition(
        code="coded-answer",
        base=["Observation"],
        type="composite",
        expression="Observation",
        component=[
            {
                "definition": "http://hl7.org/fhir/SearchParameter/clinical-code",
                "expression": "code",
            },
            {
                "definition": "http://hl7.org/fhir/SearchParameter/Observation-value-concept",
                "expression": "value.as(CodeableConcept)",
            },
        ],
    )
    (param,) = params_from_definition(definition, REGISTRY)
    assert [c.expression for c in param.components] == ["code", "value.as(CodeableConcept)"]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"code": "_mine"}, "SearchParameter.code"),
        ({"code": None}, "SearchParameter.code"),
        ({"type": "special"}, "cannot be indexed"),
        ({"type": ["token"]}, "cannot be indexed"),
        ({"code": "performer"}, "already has a search parameter 'performer'"),
        ({"code": "with.dot"}, "SearchParameter.code"),
        ({"expression": ""}, "expression is required"),
        ({"expression": "Observation.performer.where(display = "}, "not valid FHIRPath"),
        ({"expression": "Patient.name"}, "no part that starts at Observation"),
        ({"base": ["Nonsense"]}, "not a resource type"),
        ({"base": []}, "names no resource type"),
        ({"target": "Practitioner"}, "code lists"),
        ({"type": "composite", "component": [{"definition": "x", "expression": "y"}]}, "two"),
    ],
)
def test_refused_with_the_reason(changes: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidDefinition, match=reason):
        params_from_definition(_definition(**({"base": ["Observation"]} | changes)), REGISTRY)


def test_every_r4_expression_passes_the_syntax_check() -> None:
    """The strict parse refuses nothing the R4 definitions use (fhirpathpy's own is lenient)."""
    checked = 0
    for resource_type in REGISTRY.all_resource_types():
        for param in REGISTRY.for_type(resource_type).values():
            expressions = [param.expression or "", *(c.expression for c in param.components)]
            for part in (p for e in expressions for p in split_union(e) if p):
                check_syntax(part)
                checked += 1
    assert checked > 2000
