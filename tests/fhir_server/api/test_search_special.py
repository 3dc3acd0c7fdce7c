"""Special search parameters over HTTP: near, _text, _content, _list, and compartment restriction.

Spec: http://hl7.org/fhir/R4/search.html (#special, #text, #list) and
http://hl7.org/fhir/R4/location.html#search (near).
"""

from __future__ import annotations

from typing import Any

import httpx
import psycopg

from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.database import libpq_url
from fhir_server.storage.repository import Indexer, Repository

REGISTRY = SearchRegistry.load_default()


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in {200, 201}, response.text


async def _search(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.get(query)
    assert response.status_code == 200, (query, response.text)
    bundle: dict[str, Any] = response.json()
    return bundle


async def _all_pages(client: httpx.AsyncClient, query: str) -> list[str]:
    seen: list[str] = []
    page = await _search(client, query)
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        links = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not links:
            return seen
        page = await _search(client, links[0].removeprefix("http://test"))


# -- compartment restriction ---------------------------------------------------------------


async def test_compartment_restriction(client: httpx.AsyncClient, clean_database: str) -> None:
    for pid in ("a", "b"):
        await _put(client, {"resourceType": "Patient", "id": pid})
    for oid, subject in (("o1", "a"), ("o2", "a"), ("o3", "b")):
        await _put(
            client,
            {
                "resourceType": "Observation",
                "id": oid,
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient/{subject}"},
            },
        )
    async with await psycopg.AsyncConnection.connect(
        libpq_url(clean_database), autocommit=True
    ) as conn:
        repository = Repository(conn, Indexer(REGISTRY))
        request = parse_search(
            "Observation", [("_total", "accurate")], REGISTRY, compartment=("Patient", "a")
        )
        page = await repository.search(request)
        assert {r.id for r in page.resources} == {"o1", "o2"}
        assert page.total == 2
        assert sorted(await repository.find(request, limit=5)) == ["o1", "o2"]
        other = parse_search(
            "Observation", [("_id", "o1,o3")], REGISTRY, compartment=("Patient", "b")
        )
        assert [r.id for r in (await repository.search(other)).resources] == ["o3"]
        patients = parse_search("Patient", [], REGISTRY, compartment=("Patient", "a"))
        assert [r.id for r in (await repository.search(patients)).resources] == ["a"]


# -- near --------------------------------------------------------------------------------------

# Louisville; Lexington 112.2 km and Frankfort 77.5 km east of it; Paris (France).
_PLACES = {
    "louisville": (38.2527, -85.7585),
    "lexington": (38.0406, -84.5037),
    "frankfort": (38.2009, -84.8733),
    "paris": (48.8566, 2.3522),
}


async def _locations(client: httpx.AsyncClient) -> None:
    for name, (lat, lon) in _PLACES.items():
        await _put(
            client,
            {
                "resourceType": "Location",
                "id": name,
                "name": name,
                "position": {"latitude": lat, "longitude": lon},
            },
        )
    await _put(client, {"resourceType": "Location", "id": "nowhere", "name": "nowhere"})
    await _put(
        client,
        {
            "resourceType": "HealthcareService",
            "id": "pantry",
            "location": [{"reference": "Location/lexington"}],
        },
    )


async def test_near_distances_and_units(client: httpx.AsyncClient) -> None:
    await _locations(client)
    lat, lon = _PLACES["louisville"]
    cases = {
        f"{lat}|{lon}|10|km": {"louisville"},
        f"{lat}|{lon}|80|km": {"louisville", "frankfort"},
        f"{lat}|{lon}|113": {"louisville", "frankfort", "lexington"},
        f"{lat}|{lon}|112": {"louisville", "frankfort"},
        f"{lat}|{lon}|50|[mi_i]": {"louisville", "frankfort"},  # 80.5 km
        f"{lat}|{lon}|50|mi": {"louisville", "frankfort"},
        f"{lat}|{lon}|77000|m": {"louisville"},
        f"{lat}|{lon}|78000|m": {"louisville", "frankfort"},
        f"{lat}|{lon}": {"louisville"},  # 50 km by default
        f"{lat}|{lon}|0": {"louisville"},
        "48.85|2.35|5|km": {"paris"},
        f"48.85|2.35|5|km,{lat}|{lon}|1|km": {"paris", "louisville"},
        "0|0|100|km": set(),
    }
    for value, expected in cases.items():
        bundle = await _search(client, f"/Location?near={value}&_total=accurate")
        assert _ids(bundle) == expected, value
        assert bundle["total"] == len(expected), value
    # AND: within 113 km of Louisville and within 10 km of Lexington.
    both = await _search(
        client, f"/Location?near={lat}|{lon}|113&near={_PLACES['lexington'][0]}|-84.5|10"
    )
    assert _ids(both) == {"lexington"}


async def test_near_sort_and_paging(client: httpx.AsyncClient) -> None:
    await _locations(client)
    lat, lon = _PLACES["louisville"]
    query = f"/Location?near={lat}|{lon}|9000|km&_sort=near&_count=1"
    assert await _all_pages(client, query) == ["louisville", "frankfort", "lexington", "paris"]
    farthest = await _all_pages(client, query.replace("_sort=near", "_sort=-near"))
    assert farthest == ["paris", "lexington", "frankfort", "louisville"]
    response = await client.get("/Location?_sort=near")
    assert response.status_code == 400


async def test_near_through_a_chain(client: httpx.AsyncClient) -> None:
    await _locations(client)
    lat, lon = _PLACES["lexington"]
    bundle = await _search(client, f"/HealthcareService?location.near={lat}|{lon}|5|km")
    assert _ids(bundle) == {"pantry"}
    far = await _search(client, "/HealthcareService?location.near=48.85|2.35|5|km")
    assert _ids(far) == set()


async def test_near_follows_updates_and_deletes(client: httpx.AsyncClient) -> None:
    await _locations(client)
    lat, lon = _PLACES["paris"]
    await _put(
        client,
        {
            "resourceType": "Location",
            "id": "louisville",
            "position": {"latitude": lat, "longitude": lon},
        },
    )
    bundle = await _search(client, f"/Location?near={lat}|{lon}|1|km")
    assert _ids(bundle) == {"paris", "louisville"}
    assert (await client.delete("/Location/paris")).status_code in {200, 204}
    bundle = await _search(client, f"/Location?near={lat}|{lon}|1|km")
    assert _ids(bundle) == {"louisville"}


async def test_near_refuses_bad_values(client: httpx.AsyncClient) -> None:
    bad = ("91|0|1", "0|181|1", "a|0", "0", "0|0|1|furlong", "0|0|-1", "0|0|1e3", "0|0|1|km|x")
    for value in bad:
        response = await client.get("/Location", params={"near": value})
        assert response.status_code == 400, value
        assert response.json()["resourceType"] == "OperationOutcome"
    response = await client.get("/Location", params={"near:missing": "true"})
    assert response.status_code == 400
    response = await client.get("/Patient", params={"near": "0|0|1"})
    assert response.status_code == 400


async def test_near_across_the_antimeridian_and_a_pole(client: httpx.AsyncClient) -> None:
    for name, lat, lon in (("fiji", -17.0, 179.95), ("north", 89.95, 0.0)):
        await _put(
            client,
            {
                "resourceType": "Location",
                "id": name,
                "position": {"latitude": lat, "longitude": lon},
            },
        )
    assert _ids(await _search(client, "/Location?near=-17|-179.95|20|km")) == {"fiji"}
    assert _ids(await _search(client, "/Location?near=-17|-179.95|5|km")) == set()
    assert _ids(await _search(client, "/Location?near=89.95|180|15|km")) == {"north"}


# -- _text and _content ------------------------------------------------------------------------


def _narrated(id: str, div: str, **rest: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "subject": {"reference": "Patient/p"},
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{div}</div>',
        },
        **rest,
    }


async def _conditions(client: httpx.AsyncClient) -> None:
    await _put(
        client,
        _narrated(
            "food",
            "<p>Food <b>insecurity</b> &amp; housing</p>",
            code={"text": "Hunger Vital Sign positive"},
        ),
    )
    await _put(
        client,
        _narrated("housing", "<p>Homeless, needs shelter</p>", code={"text": "Z59.0 Homelessness"}),
    )
    await _put(
        client,
        {
            "resourceType": "Condition",
            "id": "bare",
            "subject": {"reference": "Patient/p"},
            "note": [{"text": "transport to clinic"}],
        },
    )


async def test_text_searches_the_narrative(client: httpx.AsyncClient) -> None:
    await _conditions(client)
    cases = {
        "insecurity": {"food"},
        "INSECURITY": {"food"},
        "food housing": {"food"},
        '"food insecurity"': {"food"},
        "shelter,insecurity": {"food", "housing"},
        "shelter or insecurity": {"food", "housing"},
        "housing -food": set(),
        "hunger": set(),  # in the code's text, not the narrative
        "transport": set(),  # no narrative at all
        "div": set(),  # markup is not text
    }
    for value, expected in cases.items():
        bundle = await _search(client, f"/Condition?_text={value}&_total=accurate")
        assert _ids(bundle) == expected, value
        assert bundle["total"] == len(expected), value
    both = await _search(client, "/Condition?_text=housing&_text=insecurity")
    assert _ids(both) == {"food"}


async def test_content_searches_every_string(client: httpx.AsyncClient) -> None:
    await _conditions(client)
    cases = {
        "hunger": {"food"},
        "Z59.0": {"housing"},
        "z59.0": {"housing"},
        "transport": {"bare"},
        "insecurity": {"food"},  # the narrative is content too
        "Patient/p": {"food", "housing", "bare"},
        "hunger,transport": {"food", "bare"},
        "nothing-like-this": set(),
    }
    for value, expected in cases.items():
        bundle = await _search(client, f"/Condition?_content={value}")
        assert _ids(bundle) == expected, value
    assert await _all_pages(client, "/Condition?_content=Patient/p&_count=1") == [
        "food",
        "housing",
        "bare",
    ]


async def test_full_text_follows_updates_and_deletes(client: httpx.AsyncClient) -> None:
    await _conditions(client)
    await _put(client, _narrated("food", "<p>Resolved</p>"))
    assert _ids(await _search(client, "/Condition?_text=insecurity")) == set()
    assert _ids(await _search(client, "/Condition?_text=resolved")) == {"food"}
    assert (await client.delete("/Condition/food")).status_code in {200, 204}
    assert _ids(await _search(client, "/Condition?_content=resolved")) == set()


async def test_full_text_on_any_type_and_in_chains(client: httpx.AsyncClient) -> None:
    await _put(client, {"resourceType": "Patient", "id": "p", "name": [{"family": "Nakamura"}]})
    await _conditions(client)
    assert _ids(await _search(client, "/Patient?_content=nakamura")) == {"p"}
    chained = await _search(client, "/Condition?subject:Patient._content=nakamura")
    assert _ids(chained) == {"food", "housing", "bare"}
    assert _ids(await _search(client, "/Bundle?_text=x")) == set()
    assert _ids(await _search(client, "/Binary?_content=x")) == set()


async def test_full_text_refuses_modifiers_and_empty_values(client: httpx.AsyncClient) -> None:
    for query in ("_text:exact=a", "_content:missing=true", "_text=", "_content=,"):
        response = await client.get(f"/Condition?{query}")
        assert response.status_code == 400, query


# -- _list ---------------------------------------------------------------------------------------


async def test_list_selects_the_items_of_a_list(client: httpx.AsyncClient) -> None:
    await _conditions(client)
    for pid in ("p", "q"):
        await _put(client, {"resourceType": "Patient", "id": pid})
    await _put(
        client,
        {
            "resourceType": "List",
            "id": "problems",
            "status": "current",
            "mode": "working",
            "entry": [
                {"item": {"reference": "Condition/food"}},
                {"item": {"reference": "Condition/housing"}},
                {"item": {"reference": "Patient/q"}},
            ],
        },
    )
    await _put(
        client,
        {
            "resourceType": "List",
            "id": "other",
            "status": "current",
            "mode": "working",
            "entry": [{"item": {"reference": "Condition/bare"}}],
        },
    )
    assert _ids(await _search(client, "/Condition?_list=problems")) == {"food", "housing"}
    assert _ids(await _search(client, "/Condition?_list=List/problems")) == {"food", "housing"}
    assert _ids(await _search(client, "/Patient?_list=problems")) == {"q"}
    either = await _search(client, "/Condition?_list=problems,other&_total=accurate")
    assert _ids(either) == {"food", "housing", "bare"}
    assert either["total"] == 3
    both = await _search(client, "/Condition?_list=problems&_list=other")
    assert _ids(both) == set()
    narrowed = await _search(client, "/Condition?_list=problems&_text=shelter")
    assert _ids(narrowed) == {"housing"}
    assert await _all_pages(client, "/Condition?_list=problems,other&_count=1") == [
        "food",
        "housing",
        "bare",
    ]
    assert _ids(await _search(client, "/Condition?_list=unknown")) == set()
    assert (await client.delete("/List/problems")).status_code in {200, 204}
    assert _ids(await _search(client, "/Condition?_list=problems")) == set()


async def test_list_refusals(client: httpx.AsyncClient) -> None:
    for query in ("_list=$current-problems", "_list=a/b/c", "_list:missing=true", "_list="):
        response = await client.get(f"/Condition?{query}")
        assert response.status_code == 400, query
    lenient = await client.get(
        "/Condition?_list=$current-problems", headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200


# -- _contained ----------------------------------------------------------------------------------


async def test_contained_is_refused_with_a_reason(client: httpx.AsyncClient) -> None:
    for query in ("_contained=true", "_containedType=contained"):
        for headers in ({}, {"Prefer": "handling=lenient"}):
            response = await client.get(f"/Condition?{query}", headers=headers)
            assert response.status_code == 400, (query, headers)
            outcome = response.json()
            text = " ".join(i.get("diagnostics", "") for i in outcome["issue"])
            assert "contained" in text and "not supported" in text, text


async def test_full_text_without_words_matches_nothing(client: httpx.AsyncClient) -> None:
    await _conditions(client)
    for value in ("!!!", "-", '"', "or"):
        bundle = await _search(client, f"/Condition?_content={value}")
        assert _ids(bundle) <= {"food", "housing", "bare"}, value
    assert _ids(await _search(client, "/Condition?_content=%26%26")) == set()
