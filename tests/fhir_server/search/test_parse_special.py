"""Parsing of the special parameters: near, _text, _content, _list, and the refused _contained."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_server.search.parse import (
    NEAR_DEFAULT_KM,
    InvalidSearch,
    NearValue,
    ReferenceValue,
    SortKey,
    TextValue,
    parse_search,
)
from fhir_server.search.registry import SearchRegistry

REGISTRY = SearchRegistry.load_default()


def test_near_defaults_and_units() -> None:
    values = parse_search("Location", [("near", "1|2,1|2|3,1|2|3|mi,1|2|500|m")], REGISTRY)
    assert values.clauses[0].kind == "near"
    assert values.clauses[0].values == (
        NearValue(1.0, 2.0, NEAR_DEFAULT_KM),
        NearValue(1.0, 2.0, 3.0),
        NearValue(1.0, 2.0, 3 * 1.609344),
        NearValue(1.0, 2.0, 0.5),
    )
    miles = parse_search("Location", [("near", "1|2|1|[mi_i]")], REGISTRY)
    assert miles.clauses[0].values == (NearValue(1.0, 2.0, 1.609344),)


@pytest.mark.parametrize(
    "value", ["", "1", "1|2|3|4|5", "x|2", "1|2|NaN", "1|2|inf", "100|0", "0|-181", "0|0|1|ft"]
)
def test_near_refuses(value: str) -> None:
    with pytest.raises(InvalidSearch):
        parse_search("Location", [("near", value)], REGISTRY)


def test_near_chains_from_healthcare_service() -> None:
    clause = parse_search("HealthcareService", [("location.near", "1|2|3")], REGISTRY).clauses[0]
    assert clause.kind == "chain"
    ((types, inner),) = clause.nested
    assert types == ("Location",) and inner.kind == "near"


def test_sort_by_near_needs_near() -> None:
    request = parse_search("Location", [("_sort", "-near"), ("near", "1|2")], REGISTRY)
    point = NearValue(1.0, 2.0, NEAR_DEFAULT_KM)
    near = REGISTRY.get("Location", "near")
    assert request.sort[0] == SortKey("near", "near", near, True, point)
    with pytest.raises(InvalidSearch, match="near"):
        parse_search("Location", [("_sort", "near")], REGISTRY)


def test_full_text_on_any_type() -> None:
    for resource_type in ("Patient", "Bundle", "Binary"):
        request = parse_search(resource_type, [("_text", "a b"), ("_content", "x,y")], REGISTRY)
        assert [c.kind for c in request.clauses] == ["text", "text"]
        assert request.clauses[1].values == (TextValue("x"), TextValue("y"))


def test_list_values() -> None:
    clause = parse_search("Condition", [("_list", "a,List/b")], REGISTRY).clauses[0]
    assert clause.kind == "list"
    assert clause.values == (ReferenceValue("List", "a"), ReferenceValue("List", "b"))
    lenient = parse_search("Condition", [("_list", "$current")], REGISTRY, lenient=True)
    assert lenient.clauses == () and lenient.ignored


@pytest.mark.parametrize("key", ["_contained", "_containedType"])
def test_contained_is_refused_even_when_lenient(key: str) -> None:
    with pytest.raises(InvalidSearch, match="contained"):
        parse_search("Condition", [(key, "true")], REGISTRY, lenient=True)


_KEYS = st.sampled_from(["near", "_text", "_content", "_list", "_sort", "location.near"])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["Location", "HealthcareService", "Patient"]),
    st.lists(
        st.tuples(
            _KEYS,
            st.text(alphabet="0123456789.-|,$/ abkmi[]_\\", max_size=30) | st.text(max_size=20),
        ),
        max_size=4,
    ),
)
def test_special_values_parse_or_are_refused_cleanly(
    resource_type: str, items: list[tuple[str, str]]
) -> None:
    try:
        parse_search(resource_type, items, REGISTRY)
    except InvalidSearch:
        pass


def test_a_near_search_is_nearest_first_unless_sorted() -> None:
    direct = parse_search("Location", [("near", "1|2|3|mi")], REGISTRY)
    (key,) = direct.sort
    assert (key.kind, key.descending, key.via) == ("near", False, ())
    assert key.point == NearValue(1.0, 2.0, 3 * 1.609344) and key.point.unit == "[mi_i]"
    chained = parse_search("HealthcareService", [("location.near", "1|2|3")], REGISTRY)
    assert chained.sort[0].via == (("location", ("Location",)),)
    farthest = parse_search(
        "HealthcareService", [("_sort", "-near"), ("location.near", "1|2|3")], REGISTRY
    )
    assert farthest.sort[0].descending and farthest.sort[0].via == chained.sort[0].via
    by_name = parse_search("Location", [("near", "1|2"), ("_sort", "name")], REGISTRY)
    assert [k.code for k in by_name.sort] == ["name"]
    with pytest.raises(InvalidSearch, match="near"):
        parse_search("HealthcareService", [("_sort", "near"), ("name", "x")], REGISTRY)


def test_healthcare_services_are_active_only_unless_asked() -> None:
    (default,) = parse_search("HealthcareService", [("name", "x")], REGISTRY).defaults
    assert (default.code, default.modifier) == ("active", "not")
    for items in ([("active", "false")], [("active:missing", "true")], [("_id", "a")]):
        assert parse_search("HealthcareService", items, REGISTRY).defaults == (), items
    assert parse_search("Organization", [], REGISTRY).defaults == ()
