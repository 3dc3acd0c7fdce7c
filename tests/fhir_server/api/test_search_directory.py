"""Searching the community resource directory (211 HSDS: Organization, Location,
HealthcareService) over HTTP, as residents, kynectors and EHRs do.

Spec: http://hl7.org/fhir/R4/healthcareservice.html#search, http://hl7.org/fhir/R4/location.html#search
(near, and the location-distance extension), http://hl7.org/fhir/R4/search.html#chaining.
"""

from __future__ import annotations

from typing import Any

import httpx

_CATEGORY = "http://terminology.hl7.org/CodeSystem/service-category"
_SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
_DISTANCE = "http://hl7.org/fhir/StructureDefinition/location-distance"
# Downtown Louisville; the other sites are due east of it, at about 1, 3, 6 and 30 km.
_ORIGIN = (38.2527, -85.7585)
_SITES = {"one": 1.0, "three": 3.0, "six": 6.0, "thirty": 30.0}


def _east(km: float) -> tuple[float, float]:
    """A point ``km`` due east of the origin (0.01 degree of longitude here is 0.873 km)."""
    return _ORIGIN[0], _ORIGIN[1] + km / 87.3


def _ids(bundle: dict[str, Any]) -> list[str]:
    return [
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    ]


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
        seen += _ids(page)
        links = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not links:
            return seen
        page = await _search(client, links[0].removeprefix("http://test"))


def _service(id: str, *sites: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "HealthcareService",
        "id": id,
        "providedBy": {"reference": "Organization/agency"},
        "location": [{"reference": f"Location/{site}"} for site in sites],
        **extra,
    }


async def _directory(client: httpx.AsyncClient) -> None:
    await _put(
        client,
        {
            "resourceType": "Organization",
            "id": "agency",
            "name": "Dare to Care Food Bank",
            "address": [{"city": "Louisville", "state": "KY"}],
        },
    )
    await _put(
        client,
        {
            "resourceType": "Organization",
            "id": "other",
            "name": "Bluegrass Housing Partners",
            "address": [{"city": "Lexington", "state": "KY"}],
        },
    )
    for name, km in _SITES.items():
        lat, lon = _east(km)
        await _put(
            client,
            {
                "resourceType": "Location",
                "id": name,
                "name": f"Site {name}",
                "position": {"latitude": lat, "longitude": lon},
            },
        )
    food = {"coding": [{"system": _SDOHCC, "code": "food-insecurity"}]}
    housing = {"coding": [{"system": _SDOHCC, "code": "housing-instability"}]}
    # Entered so that rid order (the order without a sort) is not distance order.
    await _put(client, _service("far", "thirty", category=[food], name="Mobile Pantry"))
    await _put(
        client,
        _service(
            "pantry",
            "six",
            "one",  # its nearest site counts: 1 km
            category=[food],
            type=[{"coding": [{"system": _CATEGORY, "code": "10"}]}],
            name="Westside Food Pantry",
            text={"status": "generated", "div": "<div>Groceries every Tuesday</div>"},
        ),
    )
    await _put(client, _service("shelter", "three", category=[housing], name="Family Shelter"))
    await _put(client, _service("closed", "one", category=[food], name="Old Pantry", active=False))
    await _put(client, _service("open", "six", category=[food], name="Pantry Six", active=True))


async def test_token_string_and_text_parameters(client: httpx.AsyncClient) -> None:
    await _directory(client)
    by_category = await _search(
        client, f"/HealthcareService?service-category={_SDOHCC}|food-insecurity"
    )
    assert sorted(_ids(by_category)) == ["far", "open", "pantry"]
    by_type = await _search(client, f"/HealthcareService?service-type={_CATEGORY}|10")
    assert _ids(by_type) == ["pantry"]
    assert _ids(await _search(client, f"/HealthcareService?service-type={_CATEGORY}|11")) == []
    contains = await _search(client, "/HealthcareService?name:contains=pantry")
    assert sorted(_ids(contains)) == ["far", "open", "pantry"]
    text = await _search(client, "/HealthcareService?_text=tuesday")
    assert _ids(text) == ["pantry"]


async def test_organization_name_contains_and_city(client: httpx.AsyncClient) -> None:
    await _directory(client)
    assert _ids(await _search(client, "/Organization?name:contains=food")) == ["agency"]
    assert _ids(await _search(client, "/Organization?name:contains=HOUSING")) == ["other"]
    assert _ids(await _search(client, "/Organization?address-city=lexington")) == ["other"]
    assert _ids(await _search(client, "/Organization?address-city=Frankfort")) == []


async def test_inactive_services_are_hidden_unless_asked_for(client: httpx.AsyncClient) -> None:
    await _directory(client)
    everything = {"far", "pantry", "shelter", "open"}
    assert set(_ids(await _search(client, "/HealthcareService"))) == everything
    counted = await _search(client, "/HealthcareService?_summary=count")
    assert counted["total"] == 4
    assert _ids(await _search(client, "/HealthcareService?active=false")) == ["closed"]
    assert _ids(await _search(client, "/HealthcareService?active=true")) == ["open"]
    missing = await _search(client, "/HealthcareService?active:missing=true")
    assert sorted(_ids(missing)) == ["far", "pantry", "shelter"]
    both = await _search(client, "/HealthcareService?active:missing=false")
    assert sorted(_ids(both)) == ["closed", "open"]
    assert _ids(await _search(client, "/HealthcareService?_id=closed")) == ["closed"]
    # Other types are not filtered, nor are services reached as references.
    inactive_org = {"resourceType": "Organization", "id": "gone", "active": False}
    await _put(client, inactive_org)
    assert "gone" in _ids(await _search(client, "/Organization"))
    included = await _search(client, "/Location?_id=one&_revinclude=HealthcareService:location")
    revincluded = {
        e["resource"]["id"] for e in included["entry"] if e["search"]["mode"] == "include"
    }
    assert revincluded == {"pantry", "closed"}


async def test_conditional_update_sees_inactive_services(client: httpx.AsyncClient) -> None:
    """A default that hid the inactive service from the criteria would create a duplicate."""
    await _put(
        client,
        {
            "resourceType": "HealthcareService",
            "id": "hs1",
            "active": False,
            "identifier": [{"system": "https://211.example/id", "value": "s-1"}],
        },
    )
    response = await client.put(
        "/HealthcareService?identifier=https://211.example/id|s-1",
        json={
            "resourceType": "HealthcareService",
            "active": False,
            "name": "renamed",
            "identifier": [{"system": "https://211.example/id", "value": "s-1"}],
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["id"] == "hs1"


async def test_chained_near_is_nearest_first(client: httpx.AsyncClient) -> None:
    await _directory(client)
    lat, lon = _ORIGIN
    bundle = await _search(client, f"/HealthcareService?location.near={lat}|{lon}|10|mi")
    # 10 miles is 16 km: "far" (30 km) is out, "closed" is inactive.
    assert _ids(bundle) == ["pantry", "shelter", "open"]
    # Each match carries the distance of its nearest Location, in the unit asked.
    distances = [
        e["search"]["extension"][0]["valueDistance"]
        for e in bundle["entry"]
        if e["search"]["mode"] == "match"
    ]
    assert all(d["code"] == "[mi_i]" for d in distances)
    for distance, km in zip(distances, (1.0, 3.0, 6.0), strict=True):
        assert abs(distance["value"] - km / 1.609344) < 0.01
    paged = await _all_pages(client, f"/HealthcareService?location.near={lat}|{lon}|50|km&_count=1")
    assert paged == ["pantry", "shelter", "open", "far"]
    farthest = await _all_pages(
        client, f"/HealthcareService?location.near={lat}|{lon}|50|km&_sort=-near&_count=2"
    )
    assert farthest == ["far", "open", "shelter", "pantry"]
    explicit = await _search(client, f"/HealthcareService?location.near={lat}|{lon}|50&_sort=near")
    assert _ids(explicit) == ["pantry", "shelter", "open", "far"]
    # An explicit _sort wins over distance.
    by_id = await _search(client, f"/HealthcareService?location.near={lat}|{lon}|50&_sort=_id")
    assert _ids(by_id) == ["far", "open", "pantry", "shelter"]
    filtered = await _search(
        client,
        f"/HealthcareService?location.near={lat}|{lon}|50|km"
        f"&service-category={_SDOHCC}|food-insecurity",
    )
    assert _ids(filtered) == ["pantry", "open", "far"]
    assert (await client.get("/HealthcareService?_sort=near")).status_code == 400


async def test_near_on_location_is_nearest_first_with_distances(
    client: httpx.AsyncClient,
) -> None:
    await _directory(client)
    lat, lon = _ORIGIN
    bundle = await _search(client, f"/Location?near={lat}|{lon}|10|mi")
    assert _ids(bundle) == ["one", "three", "six"]
    distances = [
        e["search"]["extension"][0]["valueDistance"]
        for e in bundle["entry"]
        if e["search"]["mode"] == "match"
    ]
    assert [d["code"] for d in distances] == ["[mi_i]"] * 3
    assert [d["unit"] for d in distances] == ["mi"] * 3
    for distance, km in zip(distances, (1.0, 3.0, 6.0), strict=True):
        assert abs(distance["value"] - km / 1.609344) < 0.01
    assert {e["search"]["extension"][0]["url"] for e in bundle["entry"]} == {_DISTANCE}
    in_km = await _search(client, f"/Location?near={lat}|{lon}|5")
    value = in_km["entry"][0]["search"]["extension"][0]["valueDistance"]
    assert value["code"] == "km" and abs(value["value"] - 1.0) < 0.01
    # Pages of one, forward and back, keep the order.
    paged = await _all_pages(client, f"/Location?near={lat}|{lon}|50|km&_count=1")
    assert paged == ["one", "three", "six", "thirty"]
    first = await _search(client, f"/Location?near={lat}|{lon}|50|km&_count=2")
    second = await _search(
        client,
        next(x["url"] for x in first["link"] if x["relation"] == "next")[len("http://test") :],
    )
    back = await _search(
        client,
        next(x["url"] for x in second["link"] if x["relation"] == "previous")[len("http://test") :],
    )
    assert _ids(second) == ["six", "thirty"] and _ids(back) == ["one", "three"]


async def test_capability_statement_says_active_only(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/metadata")).json()
    (service,) = [r for r in statement["rest"][0]["resource"] if r["type"] == "HealthcareService"]
    (active,) = [p for p in service["searchParam"] if p["name"] == "active"]
    assert "not inactive" in active["documentation"]
