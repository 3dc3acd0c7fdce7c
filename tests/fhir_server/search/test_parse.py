"""The search parser: typed values from query text, and only our own error for bad input."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.search.parse import (
    DateValue,
    InvalidSearch,
    QuantityValue,
    ReferenceValue,
    TokenValue,
    parse_search,
    split_escaped,
)
from fhir_server.search.registry import SearchRegistry

REGISTRY = SearchRegistry.load_default()


def test_split_escaped_keeps_escaped_separators() -> None:
    assert split_escaped(r"a\,b,c", ",") == [r"a\,b", "c"]
    assert split_escaped(r"s|c\|d", "|") == ["s", r"c\|d"]


def test_token_forms() -> None:
    request = parse_search("Patient", [("identifier", "s|1,|2,s|,3")], REGISTRY)
    values = request.clauses[0].values
    assert values == (
        TokenValue("s", "1"),
        TokenValue("", "2"),
        TokenValue("s", None),
        TokenValue(None, "3"),
    )


def test_escaped_comma_is_part_of_the_value() -> None:
    request = parse_search("Patient", [("identifier", r"a\,b")], REGISTRY)
    assert request.clauses[0].values == (TokenValue(None, "a,b"),)


def test_repeated_keys_are_and_commas_are_or() -> None:
    request = parse_search("Patient", [("given", "a,b"), ("given", "c")], REGISTRY)
    assert len(request.clauses) == 2
    assert len(request.clauses[0].values) == 2


def test_date_prefix_and_precision() -> None:
    value = parse_search("Patient", [("birthdate", "ge2020-02")], REGISTRY).clauses[0].values[0]
    assert value == DateValue(
        "ge", datetime(2020, 2, 1, tzinfo=UTC), datetime(2020, 3, 1, tzinfo=UTC)
    )


def test_quantity_with_units() -> None:
    value = (
        parse_search(
            "Observation", [("value-quantity", "lt5.4|http://unitsofmeasure.org|mg")], REGISTRY
        )
        .clauses[0]
        .values[0]
    )
    assert isinstance(value, QuantityValue)
    assert (value.prefix, value.value, value.system, value.code) == (
        "lt",
        Decimal("5.4"),
        "http://unitsofmeasure.org",
        "mg",
    )


def test_reference_forms() -> None:
    values = (
        parse_search(
            "Observation", [("subject", "Patient/1,2,http://x.org/fhir/Patient/3")], REGISTRY
        )
        .clauses[0]
        .values
    )
    assert values == (
        ReferenceValue("Patient", "1"),
        ReferenceValue(None, "2"),
        ReferenceValue(None, None, url="http://x.org/fhir/Patient/3"),
    )
    typed = parse_search("Observation", [("subject:Patient", "2")], REGISTRY).clauses[0]
    assert typed.values == (ReferenceValue("Patient", "2"),)


def test_count_is_capped_and_sort_parsed() -> None:
    request = parse_search(
        "Patient", [("_count", "5000"), ("_sort", "-birthdate,_id")], REGISTRY, max_count=1000
    )
    assert request.count == 1000
    assert [(k.code, k.descending) for k in request.sort] == [("birthdate", True), ("_id", False)]


def test_unknown_parameter() -> None:
    with pytest.raises(InvalidSearch):
        parse_search("Patient", [("nonsense", "1")], REGISTRY)
    lenient = parse_search("Patient", [("nonsense", "1")], REGISTRY, lenient=True)
    assert lenient.clauses == () and "nonsense" in lenient.ignored[0]


_keys = st.sampled_from(
    [
        "name",
        "family",
        "birthdate",
        "identifier",
        "general-practitioner",
        "_id",
        "_lastUpdated",
        "_count",
        "_sort",
        "_total",
        "_summary",
        "_elements",
        "gender:not",
        "family:exact",
        "name:missing",
        "identifier:of-type",
        "general-practitioner:Practitioner",
        "organization:identifier",
        "address-postalcode:contains",
        "x",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(_keys | st.text(max_size=12), st.text(max_size=40)), max_size=6))
def test_any_query_parses_or_is_refused_cleanly(items: list[tuple[str, str]]) -> None:
    try:
        parse_search("Patient", items, REGISTRY)
    except InvalidSearch:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_keys, st.text(max_size=40)), max_size=6))
def test_lenient_parses_or_is_refused_cleanly(items: list[tuple[str, str]]) -> None:
    try:
        parse_search("Patient", items, REGISTRY, lenient=True)
    except InvalidSearch:
        pass


def test_compartment_is_kept_on_the_request() -> None:
    request = parse_search("Observation", [], REGISTRY, compartment=("Patient", "123"))
    assert request.compartment == ("Patient", "123")
    assert parse_search("Observation", [], REGISTRY).compartment is None
