"""Search over HTTP: every parameter type, modifiers, prefixes, sorting, paging, result shaping."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {
        e["resource"]["id"]
        for e in bundle.get("entry", [])
        if e.get("search", {}).get("mode") == "match"
    }


async def _put(client: httpx.AsyncClient, resource: dict[str, Any]) -> None:
    response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in {200, 201}, response.text


def _patient(id: str, family: str, given: str, birth: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": id,
        "name": [{"family": family, "given": [given]}],
        "birthDate": birth,
        **extra,
    }


def _obs(
    id: str,
    subject: str,
    date: str,
    code: str = "88122-7",
    value: Any = None,
    category: str = "food-insecurity",
) -> dict[str, Any]:
    obs: dict[str, Any] = {
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": [
            {
                "coding": [
                    {
                        "system": "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
                        "code": category,
                    }
                ]
            }
        ],
        "code": {
            "coding": [{"system": "http://loinc.org", "code": code}],
            "text": "Within the past 12 months we worried whether our food would run out",
        },
        "subject": {"reference": subject},
        "effectiveDateTime": date,
    }
    if value is not None:
        obs["valueQuantity"] = value
    return obs


@pytest.fixture
async def people(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await _put(
        client,
        _patient(
            "p1",
            "Müller",
            "Zoë",
            "1980-04-02",
            gender="female",
            identifier=[
                {
                    "system": "urn:oid:2.16.840.1.113883.4.1",
                    "value": "111-22-3333",
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                "code": "SS",
                            }
                        ]
                    },
                }
            ],
            active=True,
        ),
    )
    await _put(client, _patient("p2", "Muller", "Adam", "1975-12-31", gender="male", active=False))
    await _put(client, _patient("p3", "Smith", "José", "2001-06-15", gender="male"))
    await _put(
        client,
        _obs(
            "o1",
            "Patient/p1",
            "2024-03-05T10:00:00Z",
            value={
                "value": 5.4,
                "unit": "mmol/L",
                "system": "http://unitsofmeasure.org",
                "code": "mmol/L",
            },
        ),
    )
    await _put(client, _obs("o2", "Patient/p1", "2025-01-10", category="housing-instability"))
    await _put(
        client,
        _obs(
            "o3",
            "Patient/p2",
            "2023-07-01T08:30:00-05:00",
            value={"value": 120, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"},
        ),
    )
    return client


async def _search(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.get(query)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    return bundle


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("/Patient?family=mul", {"p1", "p2"}),  # starts-with, accent-insensitive
        ("/Patient?family=MÜLLER", {"p1", "p2"}),
        ("/Patient?family:exact=Müller", {"p1"}),
        ("/Patient?family:contains=ll", {"p1", "p2"}),
        ("/Patient?given=jose", {"p3"}),
        ("/Patient?name=zoe", {"p1"}),
        ("/Patient?family=mul&gender=male", {"p2"}),  # AND
        ("/Patient?gender=female,male", {"p1", "p2", "p3"}),  # OR
        ("/Patient?family=smith,muller", {"p1", "p2", "p3"}),
        ("/Patient?gender:not=male", {"p1"}),
        ("/Patient?active=true", {"p1"}),
        ("/Patient?active:missing=true", {"p3"}),
        ("/Patient?active:missing=false", {"p1", "p2"}),
        ("/Patient?identifier=111-22-3333", {"p1"}),
        ("/Patient?identifier=urn:oid:2.16.840.1.113883.4.1|111-22-3333", {"p1"}),
        ("/Patient?identifier=urn:oid:2.16.840.1.113883.4.1|", {"p1"}),
        ("/Patient?identifier=|111-22-3333", set()),
        (
            "/Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|SS|111-22-3333",
            {"p1"},
        ),
        ("/Patient?birthdate=1980", {"p1"}),
        ("/Patient?birthdate=1980-04", {"p1"}),
        ("/Patient?birthdate=1980-04-02", {"p1"}),
        ("/Patient?birthdate=gt1980-04-02", {"p3"}),
        ("/Patient?birthdate=ge1980-04-02", {"p1", "p3"}),
        ("/Patient?birthdate=lt1980", {"p2"}),
        ("/Patient?birthdate=le1980-12-31", {"p1", "p2"}),
        ("/Patient?birthdate=ne1980-04-02", {"p2", "p3"}),
        ("/Patient?birthdate=sa1999", {"p3"}),
        ("/Patient?birthdate=eb1976", {"p2"}),
        ("/Patient?birthdate=ge1975&birthdate=lt1990", {"p1", "p2"}),
        ("/Patient?_id=p1,p3", {"p1", "p3"}),
        ("/Observation?subject=Patient/p1", {"o1", "o2"}),
        ("/Observation?subject=p2", {"o3"}),
        ("/Observation?subject:Patient=p2", {"o3"}),
        ("/Observation?patient=p1", {"o1", "o2"}),
        ("/Observation?subject:missing=false", {"o1", "o2", "o3"}),
        ("/Observation?code=http://loinc.org|88122-7", {"o1", "o2", "o3"}),
        ("/Observation?code:text=within the past", {"o1", "o2", "o3"}),
        ("/Observation?category=housing-instability", {"o2"}),
        ("/Observation?date=2024", {"o1"}),
        ("/Observation?date=ge2024-01-01", {"o1", "o2"}),
        ("/Observation?date=2023-07-01T13:30:00Z", {"o3"}),  # -05:00 offset normalized to UTC
        ("/Observation?value-quantity=5.4", {"o1"}),
        ("/Observation?value-quantity=gt100", {"o3"}),
        ("/Observation?value-quantity=lt100|http://unitsofmeasure.org|mmol/L", {"o1"}),
        ("/Observation?value-quantity=120||mg", {"o3"}),
        ("/Observation?value-quantity=ap5", {"o1"}),
        ("/Observation?subject=Patient/p1&category=food-insecurity", {"o1"}),
    ],
)
async def test_search_matches(people: httpx.AsyncClient, query: str, expected: set[str]) -> None:
    assert _ids(await _search(people, query)) == expected


async def test_sort_and_paging(people: httpx.AsyncClient) -> None:
    bundle = await _search(people, "/Patient?_sort=-birthdate")
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["p3", "p1", "p2"]
    # Müller and Muller tie on the normalized family name; -given puts Zoë before Adam.
    bundle = await _search(people, "/Patient?_sort=family,-given")
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["p1", "p2", "p3"]
    bundle = await _search(people, "/Patient?_sort=family,given")
    assert [e["resource"]["id"] for e in bundle["entry"]] == ["p2", "p1", "p3"]

    seen = []
    page = await _search(people, "/Patient?_count=1&_sort=birthdate")
    while True:
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = await _search(people, nxt[0].removeprefix("http://test"))
    assert seen == ["p2", "p1", "p3"]
    # And back again through the previous links.
    back = []
    while True:
        prev = [link["url"] for link in page["link"] if link["relation"] == "previous"]
        if not prev:
            break
        page = await _search(people, prev[0].removeprefix("http://test"))
        back += [e["resource"]["id"] for e in page.get("entry", [])]
    assert back == ["p1", "p2"]


async def test_total_and_summary(people: httpx.AsyncClient) -> None:
    assert "total" not in await _search(people, "/Patient")
    assert (await _search(people, "/Patient?_total=accurate&_count=1"))["total"] == 3
    assert isinstance((await _search(people, "/Patient?_total=estimate"))["total"], int)
    counted = await _search(people, "/Patient?_summary=count")
    assert counted["total"] == 3 and "entry" not in counted
    summary = (await _search(people, "/Patient?_id=p1&_summary=true"))["entry"][0]["resource"]
    assert {"name", "birthDate", "gender", "identifier"} <= set(summary)
    assert any(t["code"] == "SUBSETTED" for t in summary["meta"]["tag"])
    text = (await _search(people, "/Patient?_id=p1&_summary=text"))["entry"][0]["resource"]
    assert "name" not in text
    elements = await _search(people, "/Patient?_id=p1&_elements=birthDate")
    resource = elements["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "birthDate"}
    assert any(t["code"] == "SUBSETTED" for t in resource["meta"]["tag"])


async def test_post_search(people: httpx.AsyncClient) -> None:
    response = await people.post(
        "/Patient/_search",
        data={"family": "smith"},
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == {"p3"}


async def test_unknown_parameter_strict_and_lenient(people: httpx.AsyncClient) -> None:
    strict = await people.get("/Patient?shoe-size=9")
    assert strict.status_code == 400
    assert strict.json()["resourceType"] == "OperationOutcome"
    lenient = await people.get(
        "/Patient?shoe-size=9&family=smith", headers={"Prefer": "handling=lenient"}
    )
    assert lenient.status_code == 200
    bundle = lenient.json()
    assert _ids(bundle) == {"p3"}
    outcomes = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
    assert "shoe-size" in outcomes[0]["resource"]["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "query",
    [
        "/Patient?birthdate=yesterday",
        "/Patient?_count=-1",
        "/Patient?_sort=shoe",
        "/Observation?value-quantity=abc",
        "/Patient?family:below=x",
        "/Patient?_cursor=zzz",
        "/Observation?subject=Patient/",
        "/Patient?_total=maybe",
        "/Patient?gender:missing=perhaps",
    ],
)
async def test_bad_search_is_400(people: httpx.AsyncClient, query: str) -> None:
    response = await people.get(query)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_deleted_resources_leave_search(people: httpx.AsyncClient) -> None:
    assert (await people.delete("/Patient/p3")).status_code == 204
    assert _ids(await _search(people, "/Patient?gender=male")) == {"p2"}


async def test_tag_profile_security_source(client: httpx.AsyncClient) -> None:
    meta = {
        "tag": [{"system": "urn:kynect", "code": "ky-partner"}],
        "profile": ["http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient"],
        "security": [
            {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
        ],
        "source": "urn:iees",
    }
    # A US Core Patient, as it claims: an identifier and a gender.
    us_core = {"identifier": [{"system": "urn:kynect", "value": "t1"}], "gender": "unknown"}
    await _put(client, {**_patient("t1", "Tag", "T", "1990-01-01"), "meta": meta, **us_core})
    await _put(client, _patient("t2", "Tag", "U", "1990-01-01"))
    for query in [
        "_tag=urn:kynect|ky-partner",
        "_profile=http://hl7.org/fhir/us/core/StructureDefinition/us-core-patient",
        "_security=R",
        "_source=urn:iees",
    ]:
        assert _ids(await _search(client, f"/Patient?{query}")) == {"t1"}, query
    assert _ids(await _search(client, "/Patient?_lastUpdated=gt2000-01-01")) == {"t1", "t2"}
    assert _ids(await _search(client, "/Patient?_lastUpdated=lt2000-01-01")) == set()


async def test_uri_number_and_reference_identifier(client: httpx.AsyncClient) -> None:
    await _put(
        client,
        {
            "resourceType": "RiskAssessment",
            "id": "r1",
            "status": "final",
            "subject": {"reference": "Patient/p9"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    )
    await _put(
        client,
        {
            "resourceType": "RiskAssessment",
            "id": "r2",
            "status": "final",
            "subject": {"reference": "http://other.example/fhir/Patient/p9"},
            "prediction": [{"probabilityDecimal": 0.8}],
        },
    )
    await _put(
        client,
        {
            "resourceType": "Task",
            "id": "t1",
            "status": "requested",
            "intent": "order",
            "owner": {"identifier": {"system": "urn:npi", "value": "1234567893"}},
            "meta": {"source": "https://ehr.example/fhir/"},
        },
    )
    cases = [
        ("/RiskAssessment?probability=0.25", {"r1"}),
        ("/RiskAssessment?probability=gt0.5", {"r2"}),
        ("/RiskAssessment?probability=le0.8", {"r1", "r2"}),
        ("/RiskAssessment?subject=http://other.example/fhir/Patient/p9", {"r2"}),
        ("/RiskAssessment?subject=Patient/p9", {"r1"}),
        ("/Task?owner:identifier=urn:npi|1234567893", {"t1"}),
        ("/Task?owner:identifier=urn:npi|999", set()),
        ("/Task?_source=https://ehr.example/fhir/", {"t1"}),
        ("/Task?_source:below=https://ehr.example", {"t1"}),
        ("/Task?_source:above=https://ehr.example/fhir/Task/1", {"t1"}),
        ("/Task?_source:above=https://other.example/fhir/", set()),
    ]
    for query, expected in cases:
        assert _ids(await _search(client, query)) == expected, query


@pytest.mark.parametrize(
    "cursor",
    [
        "eyJuIjoieCJ9",  # {"n":"x"}
        "W1t7Im4iOiJ4In1dLDEsZmFsc2Vd",  # [[{"n":"x"}],1,false]
        "W1siYWJjIl0sMSxmYWxzZV0",  # [["abc"],1,false]: a string where a date belongs
        "W1sxXSwxLGZhbHNlXQ",  # [[1],1,false]
        "W1t7InQiOiIyMDIwLTAxLTAxIn1dLDk5OTk5OTk5OTk5OTk5OTk5OTk5LGZhbHNlXQ",  # rid too large
    ],
)
async def test_forged_cursor_is_400(people: httpx.AsyncClient, cursor: str) -> None:
    response = await people.get("/Patient", params={"_sort": "birthdate", "_cursor": cursor})
    assert response.status_code == 400, response.text


async def test_subsetted_xml_keeps_mandatory_elements(people: httpx.AsyncClient) -> None:
    response = await people.get("/Observation?_id=o1&_elements=subject&_format=xml")
    assert response.status_code == 200, response.text
    assert b"<code>" in response.content and b"<status" in response.content
    json_form = await _search(people, "/Observation?_id=o1&_elements=subject")
    resource = json_form["entry"][0]["resource"]
    assert {"status", "code", "subject"} <= set(resource) and "effectiveDateTime" not in resource


async def test_paging_links_keep_the_format(people: httpx.AsyncClient) -> None:
    response = await people.get("/Patient?_count=1&_format=json&_pretty=true")
    next_url = [link["url"] for link in response.json()["link"] if link["relation"] == "next"][0]
    assert "_format=json" in next_url and "_pretty=true" in next_url


async def test_update_replaces_index_rows(client: httpx.AsyncClient) -> None:
    await _put(client, _patient("u1", "Before", "A", "1990-01-01"))
    await _put(client, _obs("uo", "Patient/u1", "2024-01-01"))
    await _put(client, _patient("u1", "After", "A", "1990-01-01"))
    await _put(client, _obs("uo", "Patient/u2", "2024-01-01"))
    assert _ids(await _search(client, "/Patient?family=before")) == set()
    assert _ids(await _search(client, "/Patient?family=after")) == {"u1"}
    assert _ids(await _search(client, "/Observation?subject=Patient/u1")) == set()
    assert _ids(await _search(client, "/Observation?patient=u2")) == {"uo"}
    # Deleting removes its rows from search too.
    assert (await client.delete("/Observation/uo")).status_code == 204
    assert _ids(await _search(client, "/Observation?patient=u2")) == set()


async def test_reference_by_this_servers_absolute_url(people: httpx.AsyncClient) -> None:
    # The test client's base is http://test: an absolute URL under it is a local reference.
    assert _ids(await _search(people, "/Observation?subject=http://test/Patient/p2")) == {"o3"}
    assert _ids(await _search(people, "/Observation?subject=http://elsewhere/Patient/p2")) == set()
