"""The terminology operations over HTTP, on the bundled content and on posted definitions, and the
token search modifiers they answer (:in, :not-in, :below, :above)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
TEMP = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
CATEGORY_VS = "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/SDOHCC-ValueSetSDOHCategory"
ALL_LOINC_SNOMED = "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/SDOHCC-ValueSetLOINCSNOMEDCT"
DOMAIN_MAP = "http://sdoh-fhir.org/ConceptMap/sdoh-domain"
FOOD_VS = "http://sdoh-fhir.org/ValueSet/sdoh-domain-food-insecurity"


def _parameters(body: dict[str, Any]) -> dict[str, list[Any]]:
    assert body["resourceType"] == "Parameters", body
    out: dict[str, list[Any]] = {}
    for parameter in body.get("parameter", []):
        value = next((v for k, v in parameter.items() if k.startswith("value")), None)
        out.setdefault(parameter["name"], []).append(
            parameter.get("part") if value is None else value
        )
    return out


def _outcome(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return body


# -- CodeSystem ----------------------------------------------------------------------------------


async def test_lookup_gives_display_and_hierarchy(client: httpx.AsyncClient) -> None:
    response = await client.get("/CodeSystem/$lookup", params={"system": ICD10, "code": "Z59.41"})
    assert response.status_code == 200, response.text
    found = _parameters(response.json())
    assert found["display"] == ["Food insecurity"]
    properties = {
        (p[0]["valueCode"], next(v for k, v in p[1].items() if k.startswith("value")))
        for p in found["property"]
    }
    assert ("parent", "Z59.4") in properties


async def test_lookup_by_post_with_a_coding(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "coding", "valueCoding": {"system": TEMP, "code": "homelessness"}}],
    }
    response = await client.post("/CodeSystem/$lookup", json=body)
    assert response.status_code == 200, response.text
    assert _parameters(response.json())["display"] == ["Homelessness"]


async def test_lookup_unknown_system_or_code_is_404(client: httpx.AsyncClient) -> None:
    outcome = _outcome(
        await client.get(
            "/CodeSystem/$lookup", params={"system": "http://example.org/nothing", "code": "x"}
        ),
        404,
    )
    assert "http://example.org/nothing" in outcome["issue"][0]["diagnostics"]
    _outcome(await client.get("/CodeSystem/$lookup", params={"system": ICD10, "code": "Q99"}), 404)


@pytest.mark.parametrize(
    "params",
    [
        {"system": ICD10},  # no code
        {"code": "Z59.41"},  # no system
        {"system": ICD10, "code": ["Z59.41", "Z59.0"]},  # a code twice
    ],
)
async def test_lookup_bad_input_is_400(client: httpx.AsyncClient, params: Any) -> None:
    _outcome(await client.get("/CodeSystem/$lookup", params=params), 400)


async def test_subsumes_follows_the_hierarchy(client: httpx.AsyncClient) -> None:
    async def outcome(a: str, b: str) -> str:
        response = await client.get(
            "/CodeSystem/$subsumes", params={"system": ICD10, "codeA": a, "codeB": b}
        )
        assert response.status_code == 200, response.text
        return str(_parameters(response.json())["outcome"][0])

    assert await outcome("Z59", "Z59.41") == "subsumes"
    assert await outcome("Z59.41", "Z59") == "subsumed-by"
    assert await outcome("Z59.41", "Z59.41") == "equivalent"
    assert await outcome("Z59.41", "Z55.0") == "not-subsumed"


async def test_code_system_validate_code(client: httpx.AsyncClient) -> None:
    good = await client.get(
        "/CodeSystem/$validate-code", params={"url": TEMP, "code": "food-insecurity"}
    )
    assert _parameters(good.json())["result"] == [True]
    bad = await client.get("/CodeSystem/$validate-code", params={"url": TEMP, "code": "nope"})
    assert bad.status_code == 200
    result = _parameters(bad.json())
    assert result["result"] == [False]
    assert result["message"]


# -- ValueSet ------------------------------------------------------------------------------------


async def test_expand_pages_and_filters(client: httpx.AsyncClient) -> None:
    whole = (await client.get("/ValueSet/$expand", params={"url": CATEGORY_VS})).json()
    assert whole["resourceType"] == "ValueSet"
    expansion = whole["expansion"]
    assert expansion["total"] == 24
    codes = [c["code"] for c in expansion["contains"]]
    assert len(codes) == 24 and "housing-instability" in codes

    page = (
        await client.get("/ValueSet/$expand", params={"url": CATEGORY_VS, "count": 5, "offset": 5})
    ).json()["expansion"]
    assert page["total"] == 24 and page["offset"] == 5
    assert [c["code"] for c in page["contains"]] == codes[5:10]

    filtered = (
        await client.get("/ValueSet/$expand", params={"url": CATEGORY_VS, "filter": "housing"})
    ).json()["expansion"]
    assert {c["code"] for c in filtered["contains"]} >= {"housing-instability"}
    assert "food-insecurity" not in {c["code"] for c in filtered["contains"]}


async def test_expanding_a_whole_code_system_says_to_page(client: httpx.AsyncClient) -> None:
    outcome = _outcome(await client.get("/ValueSet/$expand", params={"url": ALL_LOINC_SNOMED}), 422)
    assert outcome["issue"][0]["code"] == "too-costly"


async def test_expand_unknown_value_set_is_404(client: httpx.AsyncClient) -> None:
    _outcome(
        await client.get("/ValueSet/$expand", params={"url": "http://example.org/vs/none"}), 404
    )


async def test_expand_bad_paging_is_400(client: httpx.AsyncClient) -> None:
    _outcome(await client.get("/ValueSet/$expand", params={"url": CATEGORY_VS, "count": "-1"}), 400)


async def test_value_set_validate_code(client: httpx.AsyncClient) -> None:
    async def result(code: str) -> list[Any]:
        response = await client.get(
            "/ValueSet/$validate-code", params={"url": CATEGORY_VS, "system": TEMP, "code": code}
        )
        assert response.status_code == 200, response.text
        return _parameters(response.json())["result"]

    assert await result("food-insecurity") == [True]
    assert await result("resulting-activity") == [False]  # in the code system, not the set


async def test_inline_value_set_is_expanded(client: httpx.AsyncClient) -> None:
    value_set = {
        "resourceType": "ValueSet",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": ICD10,
                    "filter": [{"property": "concept", "op": "is-a", "value": "Z59.4"}],
                }
            ]
        },
    }
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": value_set}],
    }
    response = await client.post("/ValueSet/$expand", json=body)
    assert response.status_code == 200, response.text
    codes = {c["code"] for c in response.json()["expansion"]["contains"]}
    assert {"Z59.4", "Z59.41", "Z59.48"} <= codes
    assert "Z59.0" not in codes


# -- ConceptMap ----------------------------------------------------------------------------------


async def test_translate_rolls_a_z_code_up_to_its_domain(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/ConceptMap/$translate", params={"url": DOMAIN_MAP, "system": ICD10, "code": "Z59.41"}
    )
    assert response.status_code == 200, response.text
    found = _parameters(response.json())
    assert found["result"] == [True]
    matches = [{p["name"]: p for p in match} for match in found["match"]]
    targets = {
        (m["concept"]["valueCoding"]["code"], m["equivalence"]["valueCode"]) for m in matches
    }
    assert ("food-insecurity", "wider") in targets


async def test_translate_without_a_mapping_says_so(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/ConceptMap/$translate",
        params={"url": DOMAIN_MAP, "system": "http://example.org/x", "code": "y"},
    )
    assert response.status_code == 200, response.text
    found = _parameters(response.json())
    assert found["result"] == [False]
    assert found["message"]


# -- posted definitions --------------------------------------------------------------------------

LOCAL_CS = {
    "resourceType": "CodeSystem",
    "url": "http://example.org/fhir/CodeSystem/kynect-needs",
    "version": "1",
    "status": "active",
    "content": "complete",
    "concept": [
        {
            "code": "basic",
            "display": "Basic needs",
            "concept": [
                {"code": "rent", "display": "Help with rent"},
                {"code": "groceries", "display": "Help with groceries"},
            ],
        },
        {"code": "legal", "display": "Legal aid"},
    ],
}
LOCAL_VS = {
    "resourceType": "ValueSet",
    "url": "http://example.org/fhir/ValueSet/kynect-basic-needs",
    "status": "active",
    "compose": {
        "include": [
            {
                "system": LOCAL_CS["url"],
                "filter": [{"property": "concept", "op": "is-a", "value": "basic"}],
            }
        ]
    },
}


async def test_posted_definitions_take_part(client: httpx.AsyncClient) -> None:
    created = await client.post("/CodeSystem", json=LOCAL_CS)
    assert created.status_code == 201, created.text
    code_system_id = created.json()["id"]
    assert (await client.post("/ValueSet", json=LOCAL_VS)).status_code == 201

    expansion = (await client.get("/ValueSet/$expand", params={"url": LOCAL_VS["url"]})).json()[
        "expansion"
    ]
    assert {c["code"] for c in expansion["contains"]} == {"basic", "rent", "groceries"}

    instance = await client.get(f"/CodeSystem/{code_system_id}/$lookup", params={"code": "rent"})
    assert instance.status_code == 200, instance.text
    assert _parameters(instance.json())["display"] == ["Help with rent"]

    # Ordinary resources too: searchable by url.
    found = (await client.get("/ValueSet", params={"url": LOCAL_VS["url"]})).json()
    assert [e["resource"]["url"] for e in found["entry"]] == [LOCAL_VS["url"]]


async def test_bundled_definitions_answer_at_instance_level(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/CodeSystem/SDOHCC-CodeSystemTemporaryCodes/$lookup", params={"code": "stress"}
    )
    assert response.status_code == 200, response.text
    assert _parameters(response.json())["display"] == ["Stress"]
    _outcome(await client.get("/CodeSystem/no-such-id/$lookup", params={"code": "x"}), 404)


@pytest.mark.parametrize(
    "body",
    [
        {"resourceType": "Parameters", "parameter": {"name": "code"}},
        {"resourceType": "Parameters", "parameter": [{"name": "code"}]},
        {"resourceType": "Parameters", "parameter": [{"name": "code", "valueString": 1}]},
        {"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": "x"}]},
        {"resourceType": "Patient"},
        [],
    ],
)
async def test_malformed_parameters_are_400(client: httpx.AsyncClient, body: Any) -> None:
    _outcome(await client.post("/CodeSystem/$lookup", json=body), 400)


# -- search --------------------------------------------------------------------------------------


def _condition(id: str, system: str, code: str) -> dict[str, Any]:
    return {
        "resourceType": "Condition",
        "id": id,
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": system, "code": code}]},
    }


@pytest.fixture
async def conditions(client: httpx.AsyncClient) -> None:
    for id, system, code in [
        ("food", ICD10, "Z59.41"),
        ("homeless", ICD10, "Z59.01"),
        ("school", ICD10, "Z55.0"),
        ("housing-header", ICD10, "Z59"),
        ("category", TEMP, "food-insecurity"),
    ]:
        response = await client.put(f"/Condition/{id}", json=_condition(id, system, code))
        assert response.status_code in (200, 201), response.text


async def _ids(client: httpx.AsyncClient, query: str) -> set[str]:
    response = await client.get(f"/Condition?{query}")
    assert response.status_code == 200, response.text
    return {e["resource"]["id"] for e in response.json().get("entry", [])}


async def test_search_below_and_above(client: httpx.AsyncClient, conditions: None) -> None:
    assert await _ids(client, f"code:below={ICD10}|Z59") == {"food", "homeless", "housing-header"}
    assert await _ids(client, f"code:below={ICD10}|Z59.4") == {"food"}
    assert await _ids(client, f"code:above={ICD10}|Z59.41") == {"food", "housing-header"}


async def test_search_in_and_not_in_a_value_set(
    client: httpx.AsyncClient, conditions: None
) -> None:
    assert await _ids(client, f"code:in={CATEGORY_VS}") == {"category"}
    assert "food" in await _ids(client, f"code:in={FOOD_VS}")
    assert "school" not in await _ids(client, f"code:in={FOOD_VS}")
    assert await _ids(client, f"code:not-in={CATEGORY_VS}") == {
        "food",
        "homeless",
        "school",
        "housing-header",
    }


async def test_search_in_a_posted_value_set(client: httpx.AsyncClient) -> None:
    await client.post("/CodeSystem", json=LOCAL_CS)
    await client.post("/ValueSet", json=LOCAL_VS)
    for id, code in [("a", "rent"), ("b", "legal")]:
        await client.put(f"/Condition/{id}", json=_condition(id, LOCAL_CS["url"], code))
    assert await _ids(client, f"code:in={LOCAL_VS['url']}") == {"a"}


@pytest.mark.parametrize(
    "query",
    [
        "code:in=http://example.org/vs/unknown",
        f"code:in={ALL_LOINC_SNOMED}x",
        "code:below=Z59",  # no system
        "code:below=http://example.org/unknown-system|x",
    ],
)
async def test_search_modifier_errors_are_400(client: httpx.AsyncClient, query: str) -> None:
    _outcome(await client.get(f"/Condition?{query}"), 400)


async def test_search_ignores_case_where_the_code_system_does(
    client: httpx.AsyncClient,
) -> None:
    # ICD-10-CM is not case-sensitive: a code stored in lower case is still below Z59.
    await client.put("/Condition/lower", json=_condition("lower", ICD10, "z59.41"))
    assert await _ids(client, f"code:below={ICD10}|Z59") == {"lower"}
    assert await _ids(client, f"code:in={FOOD_VS}") == {"lower"}
    # SDOHCC temporary codes are: the same letters in another case are another code.
    await client.put("/Condition/upper", json=_condition("upper", TEMP, "FOOD-INSECURITY"))
    assert "upper" not in await _ids(client, f"code:in={CATEGORY_VS}")


# -- what a review found ---------------------------------------------------------------------------


async def test_a_backtracking_regex_filter_answers_at_once(client: httpx.AsyncClient) -> None:
    code_system = {
        "resourceType": "CodeSystem",
        "url": "http://example.org/fhir/CodeSystem/as",
        "status": "active",
        "content": "complete",
        "concept": [{"code": "a" * 40, "display": "many a"}],
    }
    value_set = {
        "resourceType": "ValueSet",
        "status": "active",
        "compose": {
            "include": [
                {
                    "system": code_system["url"],
                    "filter": [{"property": "code", "op": "regex", "value": "(a|a)*X"}],
                }
            ]
        },
    }
    assert (await client.post("/CodeSystem", json=code_system)).status_code == 201
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "valueSet", "resource": value_set}],
    }
    # Python's backtracking re would take days on 40 a's; RE2 answers at once.
    response = await client.post("/ValueSet/$expand", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["expansion"]["total"] == 0
    assert "url" not in response.json()  # no made-up url for an inline value set


@pytest.mark.parametrize("count", ["\u00b2", "--5", "99999999999999999999999", "1e3"])
async def test_odd_integers_are_400(client: httpx.AsyncClient, count: str) -> None:
    _outcome(
        await client.get("/ValueSet/$expand", params={"url": CATEGORY_VS, "count": count}), 400
    )


async def test_deeply_nested_parts_are_400(client: httpx.AsyncClient) -> None:
    part: dict[str, Any] = {"name": "x", "valueString": "y"}
    for _ in range(300):
        part = {"name": "x", "part": [part]}
    body = {"resourceType": "Parameters", "parameter": [part]}
    _outcome(await client.post("/CodeSystem/$lookup", json=body), 400)


async def test_instance_operations_use_that_instance_version(client: httpx.AsyncClient) -> None:
    for version, code in [("1.0.0", "Z59.0"), ("2.0.0", "Z55.0")]:
        value_set = {
            "resourceType": "ValueSet",
            "id": f"vv-{version.replace('.', '-')}",
            "url": "http://example.org/fhir/ValueSet/vv",
            "version": version,
            "status": "active",
            "compose": {"include": [{"system": ICD10, "concept": [{"code": code}]}]},
        }
        assert (await client.put(f"/ValueSet/{value_set['id']}", json=value_set)).status_code == 201
    first = (await client.get("/ValueSet/vv-1-0-0/$expand")).json()
    assert first["version"] == "1.0.0"
    assert [c["code"] for c in first["expansion"]["contains"]] == ["Z59.0"]
    versioned = await client.get(
        "/ValueSet/$validate-code",
        params={
            "url": "http://example.org/fhir/ValueSet/vv",
            "valueSetVersion": "1.0.0",
            "system": ICD10,
            "code": "Z59.0",
        },
    )
    assert _parameters(versioned.json())["result"] == [True]


async def test_a_codeable_concept_is_valid_when_any_coding_is(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "url", "valueUri": CATEGORY_VS},
            {
                "name": "codeableConcept",
                "valueCodeableConcept": {
                    "coding": [
                        {"system": "http://loinc.org", "code": "88122-7"},
                        {"system": TEMP, "code": "food-insecurity"},
                    ]
                },
            },
        ],
    }
    response = await client.post("/ValueSet/$validate-code", json=body)
    assert response.status_code == 200, response.text
    assert _parameters(response.json())["result"] == [True]
