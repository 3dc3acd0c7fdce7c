"""Index rows of composite parameters: one set per element, tied together by ``ord``.

Spec: http://hl7.org/fhir/R4/search.html#composite
"""

from __future__ import annotations

import copy
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.search.extract import (
    IndexExtractor,
    QuantityRow,
    ResourceIndex,
    TokenRow,
    composite_code,
    composite_indexable,
)
from fhir_server.search.registry import SearchRegistry

LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load_default()


def composites(registry: SearchRegistry, resource: dict[str, Any], *codes: str) -> ResourceIndex:
    params = registry.for_type(resource["resourceType"])
    return IndexExtractor([params[c] for c in codes], registry=registry).extract(resource)


def _coded(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


BLOOD_PRESSURE: dict[str, Any] = {
    "resourceType": "Observation",
    "id": "bp",
    "status": "final",
    "code": _coded("85354-9"),
    "component": [
        {"code": _coded("8480-6"), "valueQuantity": {"value": 150, "system": UCUM, "code": "mm"}},
        {"code": _coded("8462-4"), "valueQuantity": {"value": 90.5, "unit": "mmHg"}},
        {"code": _coded("9999-9")},  # no value: no rows for this element
        {"code": _coded("8867-4"), "valueCodeableConcept": _coded("high", "urn:x")},
    ],
}


def _quantity(param: str, value: str, low: str, high: str, **units: Any) -> QuantityRow:
    return QuantityRow(
        param,
        Decimal(value),
        Decimal(low),
        Decimal(high),
        units.get("system"),
        units.get("code"),
        units.get("unit"),
    )


def test_component_code_value_quantity(registry: SearchRegistry) -> None:
    index = composites(registry, BLOOD_PRESSURE, "component-code-value-quantity")
    code, value = (composite_code("component-code-value-quantity", n) for n in (0, 1))
    assert code == "component-code-value-quantity$0"
    assert index.tokens == (
        TokenRow(code, LOINC, "8480-6", None, ord=0),
        TokenRow(code, LOINC, "8462-4", None, ord=1),
    )
    assert index.quantities == (
        replace(_quantity(value, "150", "149.5", "150.5", system=UCUM, code="mm"), ord=0),
        replace(_quantity(value, "90.5", "90.45", "90.55", unit="mmHg"), ord=1),
    )
    assert index.strings == index.dates == index.references == ()


def test_combo_numbers_the_resource_then_its_components(registry: SearchRegistry) -> None:
    resource = {**BLOOD_PRESSURE, "valueQuantity": {"value": 1}}
    index = composites(registry, resource, "combo-code-value-quantity")
    assert [(row.code, row.ord) for row in index.tokens] == [
        ("85354-9", 0),
        ("8480-6", 1),
        ("8462-4", 2),
    ]
    assert [(row.value, row.ord) for row in index.quantities] == [
        (Decimal(1), 0),
        (Decimal(150), 1),
        (Decimal("90.5"), 2),
    ]


def test_code_value_concept_and_its_codings(registry: SearchRegistry) -> None:
    resource = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": LOINC, "code": "88122-7"}, {"code": "local"}]},
        "valueCodeableConcept": _coded("LA28397-0"),
    }
    index = composites(registry, resource, "code-value-concept")
    assert {(row.param, row.code, row.ord) for row in index.tokens} == {
        ("code-value-concept$0", "88122-7", 0),
        ("code-value-concept$0", "local", 0),
        ("code-value-concept$1", "LA28397-0", 0),
    }


def test_code_value_date_reads_date_times_and_periods(registry: SearchRegistry) -> None:
    # R4 writes value.as(DateTime), the FHIRPath system type: the FHIR dateTime is meant.
    timed = {"resourceType": "Observation", "code": _coded("x"), "valueDateTime": "2024-05-06"}
    period = {"resourceType": "Observation", "code": _coded("x"), "valuePeriod": {"start": "2024"}}
    for resource in (timed, period):
        index = composites(registry, {**resource, "status": "final"}, "code-value-date")
        assert [row.ord for row in index.dates] == [0]
        assert index.dates[0].param == "code-value-date$1"


def test_an_element_without_every_component_gives_nothing(registry: SearchRegistry) -> None:
    no_value = {"resourceType": "Observation", "status": "final", "code": _coded("x")}
    no_code = {"resourceType": "Observation", "status": "final", "valueQuantity": {"value": 1}}
    string = {**no_value, "valueString": "x"}
    for resource in (no_value, no_code, string):
        assert composites(registry, resource, "code-value-quantity") == ResourceIndex()


def test_without_a_registry_composites_give_no_rows(registry: SearchRegistry) -> None:
    param = registry.for_type("Observation")["component-code-value-quantity"]
    assert IndexExtractor([param]).extract(BLOOD_PRESSURE) == ResourceIndex()


def test_use_context_and_group_characteristic(registry: SearchRegistry) -> None:
    plan = {
        "resourceType": "PlanDefinition",
        "status": "active",
        "useContext": [
            {"code": {"code": "age"}, "valueQuantity": {"value": 18}},
            {"code": {"code": "focus"}, "valueCodeableConcept": _coded("food", "urn:x")},
        ],
    }
    index = composites(registry, plan, "context-type-quantity", "context-type-value")
    assert {(row.param, row.code, row.ord) for row in index.tokens} == {
        ("context-type-quantity$0", "age", 0),
        ("context-type-value$0", "focus", 1),
        ("context-type-value$1", "food", 1),
    }
    group = {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "characteristic": [{"code": _coded("smoker"), "valueBoolean": True, "exclude": False}],
    }
    index = composites(registry, group, "characteristic-value")
    assert {(row.param, row.code, row.ord) for row in index.tokens} == {
        ("characteristic-value$0", "smoker", 0),
        ("characteristic-value$1", "true", 0),
    }


def test_which_composites_are_indexable(registry: SearchRegistry) -> None:
    refused = set()
    for resource_type in registry.all_resource_types():
        for code, param in registry.for_type(resource_type).items():
            if param.type == "composite":
                components = registry.components(param)
                assert components is not None, (resource_type, code)
                if not composite_indexable(param, components):
                    refused.add(f"{resource_type}.{code}")
    # %resource in a component needs fhirpathpy; R4's relationship pairs its reference
    # parameter with DocumentReference.relatesTo.code, which no reference row comes from.
    assert refused == {
        "MolecularSequence.chromosome-variant-coordinate",
        "MolecularSequence.referenceseqid-variant-coordinate",
        "DocumentReference.relationship",
    }


def test_registry_components_resolve_with_relative_expressions(registry: SearchRegistry) -> None:
    param = registry.for_type("Observation")["component-code-value-quantity"]
    components = registry.components(param)
    assert components is not None
    assert [(c.code, c.type, c.expression) for c in components] == [
        ("component-code", "token", "code"),
        ("component-value-quantity", "quantity", "value.as(Quantity)"),
    ]
    assert registry.components(registry.for_type("Observation")["code"]) is None


_LEAVES = st.none() | st.booleans() | st.integers(-2, 2) | st.sampled_from(["", "x", "2020"])
_values = st.recursive(
    _LEAVES,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["code", "coding", "system", "value", "valueQuantity", "component"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["code", "component", "valueQuantity"]), _values)))
def test_arbitrary_observations_give_whole_elements(
    replacements: list[tuple[str, Any]],
) -> None:
    registry = SearchRegistry.load_default()
    resource = copy.deepcopy(BLOOD_PRESSURE)
    for key, value in replacements:
        resource[key] = value
    params = [p for p in registry.for_type("Observation").values() if p.type == "composite"]
    index = IndexExtractor(params, registry=registry).extract(resource)
    rows = [row for kind in ResourceIndex.__slots__ for row in getattr(index, kind)]
    elements: dict[tuple[str, int | None], set[str]] = {}
    for row in rows:
        code, _, part = row.param.rpartition("$")
        elements.setdefault((code, row.ord), set()).add(part)
    for (code, ordinal), parts in elements.items():
        assert ordinal is not None and parts == {"0", "1"}, (code, ordinal)
    # The code component of a composite on the Observation itself is the code parameter's rows.
    plain = IndexExtractor([registry.for_type("Observation")["code"]]).extract(resource)
    own = {(r.system, r.code, r.text) for r in index.tokens if r.param == "code-value-quantity$0"}
    if own:
        assert own == {(r.system, r.code, r.text) for r in plain.tokens}
