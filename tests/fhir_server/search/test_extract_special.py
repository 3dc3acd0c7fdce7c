"""Index rows of the special parameters: Location positions, and the text of full-text search."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.search.extract import TEXT_MAX, GeoRow, IndexExtractor, extract_text
from fhir_server.search.registry import SearchRegistry

REGISTRY = SearchRegistry.load_default()


def _geo(resource: dict[str, object], fast_path: bool = True) -> tuple[GeoRow, ...]:
    params = REGISTRY.for_type("Location").values()
    return IndexExtractor(params, registry=REGISTRY, fast_path=fast_path).extract(resource).geo


def test_position_rows_on_both_paths() -> None:
    location = {
        "resourceType": "Location",
        "position": {"latitude": 38.2527, "longitude": -85.7585, "altitude": 140},
    }
    expected = (GeoRow("near", Decimal("38.2527"), Decimal("-85.7585")),)
    assert _geo(location) == expected
    assert _geo(location, fast_path=False) == expected


def test_incomplete_or_impossible_positions_give_no_rows() -> None:
    for position in (
        {"latitude": 1},
        {"latitude": "1", "longitude": 2},
        {"latitude": 91, "longitude": 0},
    ):
        assert _geo({"resourceType": "Location", "position": position}) == ()


def test_text_of_narrative_and_content() -> None:
    resource = {
        "resourceType": "Condition",
        "id": "secret-id",
        "meta": {"versionId": "1", "tag": [{"code": "tagged"}]},
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>Food&#160;<b>insecurity</b> &amp;'
            " housing</p></div>",
        },
        "code": {"coding": [{"code": "Z59.0"}], "text": "Homelessness"},
        "content": [{"attachment": {"data": "aGVsbG8="}}],
    }
    narrative, content = extract_text(resource)
    assert narrative == "Food insecurity & housing"  # &#160; is a space too
    words = content.split()
    assert {"Z59.0", "Homelessness", "generated", "insecurity"} <= set(words)
    assert not {"secret-id", "tagged", "Condition", "aGVsbG8=", "div", "<p>"} & set(words)


def test_text_is_bounded() -> None:
    resource = {"resourceType": "Basic", "note": [{"text": "word " * 100_000}]}
    narrative, content = extract_text(resource)
    assert narrative == "" and len(content) == TEXT_MAX
