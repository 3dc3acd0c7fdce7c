"""Parsing and SQL of chained parameters, _has and composites (search.html#chaining, #has,
#composite): typed clauses from query keys, names only from the registry, values only bound."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.search.parse import (
    MAX_CHAIN_DEPTH,
    Clause,
    CompositeValue,
    DateValue,
    InvalidSearch,
    QuantityValue,
    StringValue,
    TokenValue,
    parse_search,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.sql import build_count, build_search

REGISTRY = SearchRegistry.load_default()


def clause(resource_type: str, key: str, value: str) -> Clause:
    (parsed,) = parse_search(resource_type, [(key, value)], REGISTRY).clauses
    return parsed


def test_typed_chain() -> None:
    chain = clause("Observation", "subject:Patient.name", "Smith")
    assert (chain.kind, chain.code, chain.modifier) == ("chain", "subject", "Patient")
    ((types, inner),) = chain.nested
    assert types == ("Patient",)
    assert (inner.kind, inner.code, inner.values) == (
        "string",
        "name",
        (StringValue("smith", "Smith"),),
    )


def test_untyped_chain_groups_the_target_types_that_have_the_parameter() -> None:
    chain = clause("Observation", "subject.name", "smith")
    ((types, inner),) = chain.nested  # Patient.name and Location.name search alike: one group
    assert set(types) == {"Patient", "Location"}  # Device and Group have no "name"
    assert inner.kind == "string"
    focus = clause("Task", "focus.name", "x")
    assert len(focus.nested) == 1 and len(focus.nested[0][0]) > 20


def test_untyped_chain_keeps_apart_what_searches_differently() -> None:
    # Observation.subject may be a Patient, Group, Device or Location; "identifier" is a token
    # everywhere, so one group. "organization" exists only on some, as a reference.
    identifier = clause("Observation", "subject.identifier", "s|1")
    assert len(identifier.nested) == 1
    assert set(identifier.nested[0][0]) == {"Patient", "Group", "Device", "Location"}
    organization = clause("Observation", "subject.organization.name", "acme")
    ((types, inner),) = organization.nested
    assert set(types) == {"Patient", "Device", "Location"}
    assert inner.kind == "chain" and inner.nested[0][0] == ("Organization",)


def test_deep_chain_with_a_modifier_and_a_prefix_at_the_end() -> None:
    chain = clause("Task", "focus:ServiceRequest.patient.birthdate", "lt2000")
    ((_, requests),) = chain.nested
    ((patient_types, birth),) = requests.nested
    assert patient_types == ("Patient",)  # ServiceRequest.patient: Patient or Group
    assert birth.kind == "date" and isinstance(birth.values[0], DateValue)
    assert birth.values[0].prefix == "lt"
    exact = clause("Observation", "subject:Patient.family:exact", "Smith")
    assert exact.nested[0][1].modifier == "exact"


def test_has_and_nested_has() -> None:
    has = clause("Patient", "_has:Observation:subject:code", "http://loinc.org|88122-7")
    assert (has.kind, has.code, has.param and has.param.resource_type) == (
        "has",
        "subject",
        "Observation",
    )
    ((types, inner),) = has.nested
    assert types == ("Observation",)
    assert inner.values == (TokenValue("http://loinc.org", "88122-7"),)
    nested = clause("Organization", "_has:Patient:organization:_has:Observation:subject:code", "x")
    assert nested.nested[0][1].kind == "has"
    mixed = clause("Organization", "_has:ServiceRequest:requester:subject:Patient.family", "x")
    assert mixed.nested[0][1].kind == "chain"


def test_composite_values() -> None:
    composite = clause(
        "Observation",
        "component-code-value-quantity",
        r"http://loinc.org|8480-6$gt140||mm[Hg],a\$b$1",
    )
    assert composite.kind == "composite"
    first, second = composite.values
    assert isinstance(first, CompositeValue) and isinstance(second, CompositeValue)
    (code_kind, code), (value_kind, value) = first.parts
    assert (code_kind, code) == ("token", TokenValue("http://loinc.org", "8480-6"))
    assert value_kind == "quantity"
    assert value == QuantityValue(
        "gt", Decimal(140), Decimal("139.5"), Decimal("140.5"), None, "mm[Hg]"
    )
    assert second.parts[0][1] == TokenValue(None, "a$b")


@pytest.mark.parametrize(
    ("resource_type", "key", "value"),
    [
        ("Observation", "subject.shoe-size", "1"),
        ("Observation", "code.text", "x"),
        ("Observation", "subject:Organization.name", "x"),
        ("Observation", "subject:patient.name", "x"),
        ("Observation", "subject.", "x"),
        ("Observation", "subject:Patient._count", "1"),
        ("Observation", "subject:Patient._include", "1"),
        ("Observation", "subject:Patient.birthdate", "later"),
        ("Patient", "_has", "x"),
        ("Patient", "_has:Observation:subject", "x"),
        ("Patient", "_has:Observation:subject:", "x"),
        ("Patient", "_has:observation:subject:code", "x"),
        ("Patient", "_has:Observation:code:code", "x"),
        ("Organization", "_has:Observation:subject:code", "x"),
        ("Observation", "code-value-quantity", "x"),
        ("Observation", "code-value-quantity", "x$1$2"),
        ("Observation", "code-value-quantity:missing", "true"),
        ("Observation", "code-value-quantity", "x$lots"),
        ("MolecularSequence", "chromosome-variant-coordinate", "1$2$3"),
    ],
)
def test_refused(resource_type: str, key: str, value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_search(resource_type, [(key, value)], REGISTRY)


def test_depth_is_limited_even_when_lenient() -> None:
    links = ".".join(["partof"] * (MAX_CHAIN_DEPTH - 1))
    assert clause("Patient", f"organization.{links}.name", "x").kind == "chain"
    too_deep = f"organization.{links}.partof.name"
    with pytest.raises(InvalidSearch, match="at most"):
        parse_search("Patient", [(too_deep, "x")], REGISTRY, lenient=True)


def test_lenient_ignores_unknown_links_but_not_bad_values() -> None:
    request = parse_search(
        "Observation",
        [("subject.shoe-size", "9"), ("_has:Spaceship:x:y", "1"), ("code", "a")],
        REGISTRY,
        lenient=True,
    )
    assert [c.code for c in request.clauses] == ["code"]
    assert len(request.ignored) == 2
    with pytest.raises(InvalidSearch):
        parse_search("Observation", [("subject:Patient.birthdate", "x")], REGISTRY, lenient=True)


def test_names_and_values_are_bound_never_written_into_the_sql() -> None:
    request = parse_search(
        "Observation",
        [
            ("subject:Patient.organization.name", "o'brien"),
            ("performer._has:Task:owner:code", "x"),
            ("combo-code-value-quantity", "http://loinc.org|8480-6$gt140"),
        ],
        REGISTRY,
    )
    sql = build_search(request, None)
    for text in ("Observation", "Patient", "subject", "organization", "brien", "owner", "Task",
                 "combo", "loinc", "140"):  # fmt: skip
        assert text not in sql.text, text
    bound = {str(v) for v in sql.params.values()}
    assert {"Observation", "subject", "Patient", "organization", "owner", "Task"} <= bound
    assert "combo-code-value-quantity$1" in bound
    assert build_count(request).text.startswith("SELECT count(*) FROM resource r WHERE")


_SEGMENTS = st.sampled_from(
    [
        "subject", "subject:Patient", "subject:Group", "patient", "organization", "partof",
        "name", "family:exact", "code", "code:text", "_id", "_lastUpdated", "birthdate",
        "general-practitioner", "focus", "requester", "identifier", "x", "", "Patient",
        "component-code-value-quantity", "code-value-concept",
    ]
)  # fmt: skip
_KEYS = st.one_of(
    st.lists(_SEGMENTS, min_size=1, max_size=5).map(".".join),
    st.tuples(
        st.sampled_from(["Observation", "Patient", "Task", "X", ""]), _SEGMENTS, _SEGMENTS
    ).map(lambda t: f"_has:{t[0]}:{t[1]}:{t[2]}"),
    st.text(alphabet=":._$|aPs", max_size=16),
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(["Observation", "Patient", "Task", "Organization"]),
    st.lists(st.tuples(_KEYS, st.text(alphabet="ab|$,\\:.0123-", max_size=12)), max_size=3),
    st.booleans(),
)
def test_any_chain_parses_and_builds_or_is_refused_cleanly(
    resource_type: str, items: list[tuple[str, str]], lenient: bool
) -> None:
    try:
        request = parse_search(resource_type, items, REGISTRY, lenient=lenient)
    except InvalidSearch:
        return
    sql = build_search(request, None)
    assert sql.text.count("(") == sql.text.count(")")
