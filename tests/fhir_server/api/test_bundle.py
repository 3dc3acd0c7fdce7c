"""Transaction and batch Bundles posted to the base (http://hl7.org/fhir/R4/http.html#transaction)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

SYSTEM = "https://kynect.ky.gov/fhir/sid/individual-id"


def _patient(value: str, family: str = "Referral") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": value}],
        "name": [{"family": family}],
    }


def _referral(patient_ref: str, request_ref: str) -> list[dict[str, Any]]:
    """A ServiceRequest for food assistance and the Task that tracks it."""
    return [
        {
            "fullUrl": request_ref,
            "resource": {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "code": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "467771000124109"}]
                },
                "subject": {"reference": patient_ref},
            },
            "request": {"method": "POST", "url": "ServiceRequest"},
        },
        {
            "fullUrl": "urn:uuid:6c0c3f5e-0000-4000-8000-00000000000b",
            "resource": {
                "resourceType": "Task",
                "status": "requested",
                "intent": "order",
                "focus": {"reference": request_ref},
                "for": {"reference": patient_ref},
            },
            "request": {"method": "POST", "url": "Task"},
        },
    ]


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


PATIENT_URN = "urn:uuid:6c0c3f5e-0000-4000-8000-000000000001"
REQUEST_URN = "urn:uuid:6c0c3f5e-0000-4000-8000-00000000000a"


async def _count(client: httpx.AsyncClient, resource_type: str) -> int:
    bundle = (await client.get(f"/{resource_type}?_total=accurate&_count=1")).json()
    return int(bundle["total"])


async def test_referral_transaction_lands_whole_with_references_rewritten(
    client: httpx.AsyncClient,
) -> None:
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("TX-1"),
            "request": {"method": "POST", "url": "Patient"},
        },
        *_referral(PATIENT_URN, REQUEST_URN),
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["resourceType"] == "Bundle"
    assert result["type"] == "transaction-response"
    assert [e["response"]["status"] for e in result["entry"]] == ["201 Created"] * 3
    patient_id = result["entry"][0]["resource"]["id"]
    request_id = result["entry"][1]["resource"]["id"]
    for entry in result["entry"]:
        resource = entry["resource"]
        assert entry["response"]["location"] == (
            f"{resource['resourceType']}/{resource['id']}/_history/1"
        )
        assert entry["response"]["etag"] == 'W/"1"'
        assert entry["fullUrl"] == f"http://test/{resource['resourceType']}/{resource['id']}"
    stored_request = (await client.get(f"/ServiceRequest/{request_id}")).json()
    assert stored_request["subject"] == {"reference": f"Patient/{patient_id}"}
    task_id = result["entry"][2]["resource"]["id"]
    task = (await client.get(f"/Task/{task_id}")).json()
    assert task["focus"] == {"reference": f"ServiceRequest/{request_id}"}
    assert task["for"] == {"reference": f"Patient/{patient_id}"}
    # The references are searchable like any other.
    found = (await client.get(f"/Task?focus=ServiceRequest/{request_id}")).json()
    assert [e["resource"]["id"] for e in found["entry"]] == [task_id]


async def test_a_failing_last_entry_leaves_nothing_behind(client: httpx.AsyncClient) -> None:
    bad = {
        "resource": {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "hunger"},
            "effectiveDateTime": "yesterday",
        },
        "request": {"method": "POST", "url": "Observation"},
    }
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("TX-2"),
            "request": {"method": "POST", "url": "Patient"},
        },
        *_referral(PATIENT_URN, REQUEST_URN),
        bad,
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert all(i["diagnostics"].startswith("Bundle.entry[3]") for i in outcome["issue"])
    for resource_type in ("Patient", "ServiceRequest", "Task", "Observation"):
        assert await _count(client, resource_type) == 0
    history = (await client.get("/_history")).json()
    assert history.get("entry", []) == []


async def test_entries_run_in_the_specified_order(client: httpx.AsyncClient) -> None:
    old = (await client.put("/Patient/old-1", json={**_patient("OLD"), "id": "old-1"})).json()
    assert old["id"] == "old-1"
    # Listed GET first, POST second, DELETE last: processed DELETE, POST, PUT, GET.
    bundle = _transaction(
        {"request": {"method": "GET", "url": "Patient?identifier=NEW-1"}},
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("NEW-1"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {**_patient("PUT-1"), "id": "put-1"},
            "request": {"method": "PUT", "url": "Patient/put-1"},
        },
        {"request": {"method": "DELETE", "url": "Patient/old-1"}},
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert [e["response"]["status"] for e in entries] == [
        "200 OK",
        "201 Created",
        "201 Created",
        "204 No Content",
    ]
    search = entries[0]["resource"]
    assert search["type"] == "searchset"
    assert [e["resource"]["id"] for e in search["entry"]] == [entries[1]["resource"]["id"]]
    assert (await client.get("/Patient/old-1")).status_code == 410


async def test_if_none_exist_reuses_the_match_and_rewrites_to_it(
    client: httpx.AsyncClient,
) -> None:
    existing = (await client.post("/Patient", json=_patient("TX-3"))).json()
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("TX-3"),
            "request": {
                "method": "POST",
                "url": "Patient",
                "ifNoneExist": f"identifier={SYSTEM}|TX-3",
            },
        },
        *_referral(PATIENT_URN, REQUEST_URN),
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == existing["id"]
    assert entries[1]["resource"]["subject"] == {"reference": f"Patient/{existing['id']}"}
    assert await _count(client, "Patient") == 1


async def test_conditional_references_resolve_to_the_single_match(
    client: httpx.AsyncClient,
) -> None:
    patient = (await client.post("/Patient", json=_patient("TX-4"))).json()
    bundle = _transaction(*_referral(f"Patient?identifier={SYSTEM}|TX-4", REQUEST_URN))
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    request = response.json()["entry"][0]["resource"]
    assert request["subject"] == {"reference": f"Patient/{patient['id']}"}

    unmatched = _transaction(*_referral("Patient?identifier=NOBODY", REQUEST_URN))
    response = await client.post("/", json=unmatched)
    assert response.status_code == 412
    assert "matches nothing" in response.json()["issue"][0]["diagnostics"]
    assert await _count(client, "ServiceRequest") == 1


async def test_a_reference_to_no_entry_is_refused(client: httpx.AsyncClient) -> None:
    bundle = _transaction(*_referral("urn:uuid:00000000-0000-4000-8000-0000000000ff", REQUEST_URN))
    response = await client.post("/", json=bundle)
    assert response.status_code == 400
    assert "not the fullUrl of any entry" in response.json()["issue"][0]["diagnostics"]
    assert await _count(client, "ServiceRequest") == 0


async def test_stale_if_match_fails_the_transaction(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/p-5", json={**_patient("TX-5"), "id": "p-5"})
    await client.put("/Patient/p-5", json={**_patient("TX-5", "Changed"), "id": "p-5"})
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("TX-5b"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {**_patient("TX-5", "Again"), "id": "p-5"},
            "request": {"method": "PUT", "url": "Patient/p-5", "ifMatch": 'W/"1"'},
        },
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 412
    assert await _count(client, "Patient") == 1
    assert (await client.get("/Patient/p-5")).json()["meta"]["versionId"] == "2"


async def test_conditional_update_in_a_transaction(client: httpx.AsyncClient) -> None:
    existing = (await client.post("/Patient", json=_patient("TX-6"))).json()
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("TX-6", "Updated"),
            "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|TX-6"},
        },
        *_referral(PATIENT_URN, REQUEST_URN),
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    entries = response.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    assert entries[0]["resource"]["id"] == existing["id"]
    assert entries[0]["resource"]["name"] == [{"family": "Updated"}]
    assert entries[1]["resource"]["subject"]["reference"] == f"Patient/{existing['id']}"


async def test_identical_conditional_transactions_at_once_make_one_set(
    client: httpx.AsyncClient,
) -> None:
    def bundle() -> dict[str, Any]:
        return _transaction(
            {
                "fullUrl": PATIENT_URN,
                "resource": _patient("TX-7"),
                "request": {
                    "method": "POST",
                    "url": "Patient",
                    "ifNoneExist": f"identifier={SYSTEM}|TX-7",
                },
            },
            {
                "fullUrl": REQUEST_URN,
                "resource": {
                    "resourceType": "ServiceRequest",
                    "identifier": [{"system": "urn:referral", "value": "R-7"}],
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": PATIENT_URN},
                },
                "request": {
                    "method": "POST",
                    "url": "ServiceRequest",
                    "ifNoneExist": "identifier=urn:referral|R-7",
                },
            },
        )

    responses = await asyncio.gather(*(client.post("/", json=bundle()) for _ in range(8)))
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    statuses = sorted(r.json()["entry"][0]["response"]["status"] for r in responses)
    assert statuses == ["200 OK"] * 7 + ["201 Created"]
    assert await _count(client, "Patient") == 1
    assert await _count(client, "ServiceRequest") == 1
    assert len({r.json()["entry"][1]["resource"]["id"] for r in responses}) == 1


async def test_batch_reports_each_entry_on_its_own(client: httpx.AsyncClient) -> None:
    await client.put("/Patient/b-1", json={**_patient("B-1"), "id": "b-1"})
    bundle = _transaction(
        {"resource": _patient("B-2"), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {"resourceType": "Patient", "birthDate": "last spring"},
            "request": {"method": "POST", "url": "Patient"},
        },
        {"request": {"method": "GET", "url": "Patient/b-1"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "FETCH", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": "Patient/b-1"}},
        kind="batch",
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "400", "200 OK", "404", "400", "204 No Content"]
    assert result["entry"][1]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert result["entry"][2]["resource"]["id"] == "b-1"
    assert await _count(client, "Patient") == 1  # B-2 created, b-1 deleted


async def test_prefer_minimal_leaves_resources_out(client: httpx.AsyncClient) -> None:
    bundle = _transaction(
        {"resource": _patient("M-1"), "request": {"method": "POST", "url": "Patient"}}
    )
    response = await client.post("/", json=bundle, headers={"Prefer": "return=minimal"})
    entry = response.json()["entry"][0]
    assert "resource" not in entry
    assert entry["response"]["status"] == "201 Created"
    assert entry["response"]["location"].startswith("Patient/")


async def test_xml_transaction(client: httpx.AsyncClient) -> None:
    xml = (
        '<Bundle xmlns="http://hl7.org/fhir"><type value="transaction"/>'
        '<entry><resource><Patient><name><family value="Xml"/></name></Patient></resource>'
        '<request><method value="POST"/><url value="Patient"/></request></entry></Bundle>'
    )
    response = await client.post(
        "/",
        content=xml,
        headers={"Content-Type": "application/fhir+xml", "Accept": "application/fhir+xml"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/fhir+xml")
    assert '<status value="201 Created"/>' in response.text


async def test_malformed_bundles_are_400(client: httpx.AsyncClient) -> None:
    cases: list[Any] = [
        {"resourceType": "Patient"},
        {"resourceType": "Bundle", "type": "collection"},
        {"resourceType": "Bundle", "type": "transaction", "entry": {}},
        _transaction({"resource": _patient("X")}),
        _transaction({"request": {"method": "POST", "url": "Patient"}}),
        _transaction({"resource": _patient("X"), "request": {"method": "POST", "url": "Task"}}),
        _transaction({"request": {"method": "GET", "url": "http://elsewhere.org/Patient/1"}}),
        _transaction({"request": {"method": "PUT", "url": "Patient"}, "resource": _patient("X")}),
        _transaction(
            {
                "fullUrl": "urn:uuid:1",
                "resource": _patient("A"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:1",
                "resource": _patient("B"),
                "request": {"method": "POST", "url": "Patient"},
            },
        ),
        [1, 2, 3],
    ]
    for case in cases:
        response = await client.post("/", json=case)
        assert response.status_code == 400, (case, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    response = await client.post(
        "/", json=_transaction({"request": {"method": "GET", "url": "Nonsense/1"}})
    )
    assert response.status_code == 404
    assert await _count(client, "Patient") == 0


_ODD_VALUES: list[Any] = [
    None,
    True,
    0,
    -1,
    1.5,
    "",
    "x",
    "urn:uuid:",
    "Patient?",
    "Patient/",
    "/",
    "?x=1",
    [],
    {},
    [{}],
    {"reference": "urn:uuid:nowhere"},
    "Patient?identifier=a&_count=x",
    "Patient/../x",
    "Patient/a/_history/x",
    "\x00",
]


def _mutate(value: Any, rng: random.Random) -> Any:
    """The value with one element somewhere replaced, dropped or duplicated."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(list(value))
        copy = dict(value)
        roll = rng.random()
        if roll < 0.2:
            del copy[key]
        elif roll < 0.5:
            copy[key] = rng.choice(_ODD_VALUES)
        else:
            copy[key] = _mutate(value[key], rng)
        return copy
    if isinstance(value, list) and value and rng.random() < 0.8:
        index = rng.randrange(len(value))
        copy = list(value)
        if rng.random() < 0.3:
            copy.append(copy[index])
        else:
            copy[index] = _mutate(value[index], rng)
        return copy
    return rng.choice(_ODD_VALUES)


async def test_mutated_bundles_never_cause_a_server_error(client: httpx.AsyncClient) -> None:
    rng = random.Random(20261123)
    seed = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("FUZZ-1"),
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=FUZZ-1"},
        },
        *_referral(PATIENT_URN, REQUEST_URN),
        {"request": {"method": "GET", "url": "Patient?identifier=FUZZ-1"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=nobody"}},
    )
    for _ in range(150):
        bundle = seed
        for _ in range(rng.randint(1, 3)):
            bundle = _mutate(bundle, rng)
        for kind in ("transaction", "batch"):
            if isinstance(bundle, dict) and "type" in bundle:
                bundle = {**bundle, "type": kind}
            response = await client.post("/", json=bundle)
            assert response.status_code < 500, (bundle, response.text)
            assert response.json()["resourceType"] in {"Bundle", "OperationOutcome"}


async def test_two_entries_writing_one_resource_fail_the_transaction(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/Patient/x", json={**_patient("OV-1"), "id": "x"})
    bundle = _transaction(
        {
            "resource": {**_patient("OV-1"), "id": "x"},
            "request": {"method": "PUT", "url": "Patient/x"},
        },
        {
            "resource": {**_patient("OV-1", "Other"), "id": "x"},
            "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|OV-1"},
        },
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 400
    assert "both write Patient/x" in response.json()["issue"][0]["diagnostics"]
    assert (await client.get("/Patient/x")).json()["meta"]["versionId"] == "1"


async def test_opposite_orders_do_not_deadlock(client: httpx.AsyncClient) -> None:
    def bundle(first: str, second: str) -> dict[str, Any]:
        return _transaction(
            *(
                {
                    "resource": {**_patient(i), "id": i},
                    "request": {"method": "PUT", "url": f"Patient/{i}"},
                }
                for i in (first, second)
            )
        )

    responses = await asyncio.gather(
        *(
            client.post("/", json=bundle("a1", "a2") if n % 2 else bundle("a2", "a1"))
            for n in range(8)
        )
    )
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]


async def test_uri_elements_and_narrative_are_rewritten(client: httpx.AsyncClient) -> None:
    bundle = _transaction(
        {
            "fullUrl": PATIENT_URN,
            "resource": _patient("RW-1"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "note"},
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                    f'<a href="{PATIENT_URN}">who</a></div>',
                },
                "valueString": "x",
                "extension": [{"url": "http://example.org/about", "valueUri": PATIENT_URN}],
            },
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 200, response.text
    patient_id = response.json()["entry"][0]["resource"]["id"]
    observation = response.json()["entry"][1]["resource"]
    assert observation["extension"][0]["valueUri"] == f"Patient/{patient_id}"
    assert f'href="Patient/{patient_id}"' in observation["text"]["div"]


async def test_batch_entries_cannot_refer_to_each_other(client: httpx.AsyncClient) -> None:
    bundle = _transaction(*_referral(PATIENT_URN, REQUEST_URN), kind="batch")
    response = await client.post("/", json=bundle)
    statuses = [e["response"]["status"] for e in response.json()["entry"]]
    assert statuses == ["400", "400"]


async def test_deeply_nested_resources_are_400(client: httpx.AsyncClient) -> None:
    nested: Any = {"url": "http://example.org/x", "valueString": "v"}
    for _ in range(400):
        nested = {"url": "http://example.org/x", "extension": [nested]}
    bundle = _transaction(
        {
            "resource": {**_patient("DEEP"), "extension": [nested]},
            "request": {"method": "POST", "url": "Patient"},
        }
    )
    response = await client.post("/", json=bundle)
    assert response.status_code == 400


async def test_conditional_update_does_not_overwrite_an_unrelated_resource(
    client: httpx.AsyncClient,
) -> None:
    await client.put("/Patient/other", json={**_patient("UNRELATED"), "id": "other"})
    response = await client.put(
        "/Patient?identifier=NOBODY", json={**_patient("NOBODY"), "id": "other"}
    )
    assert response.status_code == 409
    assert (await client.get("/Patient/other")).json()["identifier"][0]["value"] == "UNRELATED"
