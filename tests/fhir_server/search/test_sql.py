"""The SQL builder: statement shape and bound parameters, without a database."""

from __future__ import annotations

from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.sql import build_count, build_ids, build_search

REGISTRY = SearchRegistry.load_default()

_COMPARTMENT = (
    "EXISTS (SELECT 1 FROM compartment c WHERE c.resource_type = r.resource_type"
    " AND c.rid = r.rid AND c.compartment_type = %(p1)s AND c.compartment_id = %(p2)s)"
)


def test_compartment_restricts_every_statement() -> None:
    request = parse_search("Observation", [("code", "x")], REGISTRY, compartment=("Patient", "p1"))
    for sql in (build_search(request, None), build_count(request), build_ids(request, 2)):
        assert _COMPARTMENT in sql.text
        assert sql.params["p1"] == "Patient"
        assert sql.params["p2"] == "p1"
        # Only names from the builder enter the text; the id is bound.
        assert "'p1'" not in sql.text


def test_no_compartment_no_join() -> None:
    request = parse_search("Observation", [("code", "x")], REGISTRY)
    assert "compartment" not in build_search(request, None).text


def test_near_bounding_box_is_bound() -> None:
    request = parse_search("Location", [("near", "38|-85|10|km")], REGISTRY)
    sql = build_count(request)  # the near predicate; build_search walks rings (below)
    assert "FROM idx_geo i" in sql.text
    assert "i.lat BETWEEN" in sql.text and "i.lon BETWEEN" in sql.text
    assert "38" not in sql.text.replace("%(p", "")  # the point is bound, never in the text
    lats = sorted(v for v in sql.params.values() if isinstance(v, float) and 37 < v < 39)
    assert lats[0] < 38 - 0.089 and lats[-1] > 38 + 0.089  # 10 km is 0.0899 degrees


def test_near_across_the_antimeridian_and_pole() -> None:
    east = build_search(parse_search("Location", [("near", "0|179.99|10")], REGISTRY), None)
    assert "(i.lon >= " in east.text and " OR i.lon <= " in east.text
    pole = build_search(parse_search("Location", [("near", "89.99|0|10")], REGISTRY), None)
    assert "i.lon BETWEEN" not in pole.text and "i.lon >=" not in pole.text


def test_full_text_and_list_statements() -> None:
    request = parse_search(
        "Condition", [("_text", "a b"), ("_content", "c"), ("_list", "l1,l2")], REGISTRY
    )
    sql = build_count(request)
    assert "i.narrative @@ websearch_to_tsquery('simple', %(p1)s)" in sql.text
    assert "i.content @@ websearch_to_tsquery('simple', %(p2)s)" in sql.text
    assert sql.params["p1"] == "a b" and sql.params["p3"] == ["l1", "l2"]


def test_nearest_first_walks_rings_of_bound_boxes() -> None:
    request = parse_search("HealthcareService", [("location.near", "38|-85|10|km")], REGISTRY)
    sql = build_search(request, None)
    assert "WITH ORDINALITY" in sql.text and "ORDER BY q.ring ASC, q.s0 ASC" in sql.text
    assert "38" not in sql.text.replace("%(p", "")
    outer = next(v for v in sql.params.values() if isinstance(v, list) and v[-1] == 10.0)
    assert outer == sorted(outer) and outer[0] < 1  # the first ring is small
    # A backwards page, several points, or farthest first: one disc, no rings.
    for items in (
        [("location.near", "38|-85|10|km,39|-85|1|km")],
        [("location.near", "38|-85|10|km"), ("_sort", "-near")],
        [("location.near", "0|179.99|10")],
    ):
        other = build_search(parse_search("HealthcareService", items, REGISTRY), None)
        assert "WITH ORDINALITY" not in other.text, items


def test_default_clauses_narrow_searches_not_conditional_matches() -> None:
    request = parse_search("HealthcareService", [("name", "pantry")], REGISTRY)
    assert [c.code for c in request.defaults] == ["active"]
    assert "i.param = %(p" in build_search(request, None).text
    assert "active" in build_search(request, None).params.values()
    assert "active" in build_count(request).params.values()
    assert "active" not in build_ids(request, 2).params.values()
