"""Profiles on the write path and $validate: claimed and required profiles, posted
StructureDefinitions, the operator's settings, and package installs."""

from __future__ import annotations

import asyncio
import copy
import io
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from fhir_server.api.app import create_app
from fhir_server.cli import app as cli
from fhir_server.conformance import Conformance
from fhir_server.ingest.packages import PackageError, install_package
from fhir_server.settings import Settings

SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
TEMP = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
RESIDENT = "http://example.org/fhir/StructureDefinition/kynect-resident"

CONDITION: dict[str, Any] = {
    "resourceType": "Condition",
    "meta": {"profile": [SDOHCC + "SDOHCC-Condition"]},
    "clinicalStatus": {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
        ]
    },
    "verificationStatus": {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                "code": "confirmed",
            }
        ]
    },
    "category": [
        {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/condition-category",
                    "code": "problem-list-item",
                }
            ]
        },
        {
            "coding": [
                {
                    "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-category",
                    "code": "sdoh",
                }
            ]
        },
        {"coding": [{"system": TEMP, "code": "food-insecurity"}]},
    ],
    "code": {
        "coding": [
            {
                "system": "http://hl7.org/fhir/sid/icd-10-cm",
                "code": "Z59.41",
                "display": "Food insecurity",
            }
        ]
    },
    "subject": {"reference": "Patient/p1"},
    "onsetDateTime": "2024-01-01",
}

RESIDENT_PROFILE: dict[str, Any] = {
    "resourceType": "StructureDefinition",
    "url": RESIDENT,
    "name": "KynectResident",
    "status": "active",
    "fhirVersion": "4.0.1",
    "kind": "resource",
    "abstract": False,
    "type": "Patient",
    "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
    "derivation": "constraint",
    "differential": {
        "element": [
            {"id": "Patient", "path": "Patient"},
            {"id": "Patient.birthDate", "path": "Patient.birthDate", "min": 1},
        ]
    },
}


@asynccontextmanager
async def _client(database_url: str, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(
            database_url=database_url,
            base_url="http://test",
            search_parameter_poll_seconds=0.3,
            **settings,
        )
    )
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://test",
            headers={"Content-Type": "application/fhir+json"},
        ) as http:
            yield http


def _issues(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    issues: list[dict[str, Any]] = body["issue"]
    return issues


def _errors(response: httpx.Response) -> list[dict[str, Any]]:
    return [i for i in _issues(response) if i["severity"] in ("error", "fatal")]


def _expressions(issues: list[dict[str, Any]]) -> set[str]:
    return {e for i in issues for e in i.get("expression", [])}


# -- claimed profiles ----------------------------------------------------------------------------


async def test_a_conformant_claim_is_stored(client: httpx.AsyncClient) -> None:
    response = await client.post("/Condition", json=CONDITION)
    assert response.status_code == 201, response.text


async def test_a_broken_claim_is_422_naming_what_is_wrong(client: httpx.AsyncClient) -> None:
    broken = copy.deepcopy(CONDITION)
    broken["category"] = broken["category"][:1] + broken["category"][2:]  # no sdoh category
    response = await client.post("/Condition", json=broken)
    assert response.status_code == 422, response.text
    errors = _errors(response)
    assert errors
    assert any("SDOH-Con-3" in i["diagnostics"] for i in errors)
    assert all(e.startswith("Condition") for e in _expressions(errors))
    # Nothing was stored.
    assert (await client.get("/Condition")).json().get("entry", []) == []


async def test_updates_and_transactions_are_checked_too(client: httpx.AsyncClient) -> None:
    broken = {**copy.deepcopy(CONDITION), "id": "c1"}
    del broken["code"]
    assert (await client.put("/Condition/c1", json=broken)).status_code == 422
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": CONDITION, "request": {"method": "POST", "url": "Condition"}},
            {"resource": broken, "request": {"method": "PUT", "url": "Condition/c1"}},
        ],
    }
    response = await client.post("/", json=bundle)
    assert response.status_code == 422, response.text
    assert (await client.get("/Condition")).json().get("entry", []) == []


async def test_unknown_claims_are_accepted_by_default(client: httpx.AsyncClient) -> None:
    body = {
        "resourceType": "Patient",
        "meta": {"profile": ["http://example.org/fhir/StructureDefinition/unknown"]},
    }
    assert (await client.post("/Patient", json=body)).status_code == 201
    checked = await client.post("/Patient/$validate", json=body)
    assert checked.status_code == 200
    info = [i for i in _issues(checked) if i["severity"] == "information"]
    assert any(
        "http://example.org/fhir/StructureDefinition/unknown" in i["diagnostics"] for i in info
    )
    assert not _errors(checked)


async def test_unknown_claims_refused_when_the_operator_says_so(clean_database: str) -> None:
    body = {
        "resourceType": "Patient",
        "meta": {"profile": ["http://example.org/fhir/StructureDefinition/unknown"]},
    }
    async with _client(clean_database, unknown_profiles="error") as http:
        response = await http.post("/Patient", json=body)
        assert response.status_code == 422, response.text
        assert _expressions(_errors(response)) == {"Patient.meta.profile"}


# -- required profiles ---------------------------------------------------------------------------

REFERRAL_RULE = orjson.dumps(
    [
        {
            "resourceType": "Task",
            "profile": SDOHCC + "SDOHCC-TaskForReferralManagement",
            "when": f"code.coding.where(system = '{TASK_CODE}' and code = 'fulfill').exists()",
        }
    ]
).decode()


def _task(code: str) -> dict[str, Any]:
    return {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": code}]},
        "for": {"reference": "Patient/p1"},
    }


async def test_required_profile_applies_to_what_matches(clean_database: str) -> None:
    async with _client(clean_database, required_profiles=REFERRAL_RULE) as http:
        referral = await http.post("/Task", json=_task("fulfill"))
        assert referral.status_code == 422, referral.text
        assert {"Task.focus", "Task.authoredOn", "Task.requester"} <= _expressions(
            _errors(referral)
        )
        other = await http.post("/Task", json=_task("approve"))
        assert other.status_code == 201, other.text


@pytest.mark.parametrize(
    "setting",
    [
        "not json",
        '{"resourceType": "Task"}',
        '[{"resourceType": "Task"}]',
        '[{"resourceType": "Task", "profile": "x", "when": "code.where("}]',
    ],
)
def test_a_bad_required_profiles_setting_stops_the_server(
    clean_database: str, setting: str
) -> None:
    with pytest.raises(ValueError, match="required profiles"):
        create_app(Settings(database_url=clean_database, required_profiles=setting))


def test_a_bad_unknown_profiles_setting_stops_the_server(clean_database: str) -> None:
    with pytest.raises(ValueError, match="unknown_profiles"):
        create_app(Settings(database_url=clean_database, unknown_profiles="maybe"))


# -- $validate -----------------------------------------------------------------------------------


async def test_validate_answers_200_with_every_issue(client: httpx.AsyncClient) -> None:
    good = await client.post("/Condition/$validate", json=CONDITION)
    assert good.status_code == 200, good.text
    assert not _errors(good)
    broken = copy.deepcopy(CONDITION)
    del broken["subject"]
    bad = await client.post("/Condition/$validate", json=broken)
    assert bad.status_code == 200
    assert "Condition.subject" in _expressions(_errors(bad))


async def test_validate_with_parameters_and_an_explicit_profile(
    client: httpx.AsyncClient,
) -> None:
    plain = {key: value for key, value in CONDITION.items() if key != "meta"}
    del plain["code"]
    body = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": plain},
            {"name": "profile", "valueUri": SDOHCC + "SDOHCC-Condition"},
            {"name": "mode", "valueCode": "create"},
        ],
    }
    response = await client.post("/Condition/$validate", json=body)
    assert response.status_code == 200, response.text
    assert "Condition.code" in _expressions(_errors(response))
    # Without the profile the base rules alone find nothing wrong.
    alone = await client.post("/Condition/$validate", json=plain)
    assert not _errors(alone)


async def test_validate_reports_must_support_as_information(client: httpx.AsyncClient) -> None:
    response = await client.post("/Condition/$validate", json=CONDITION)
    info = [i for i in _issues(response) if i["severity"] == "information"]
    # recordedDate is must-support in SDOHCC-Condition and absent here.
    assert any("Condition.recordedDate" in i.get("expression", []) for i in info)


async def test_validate_instance_modes(client: httpx.AsyncClient) -> None:
    stored = (await client.put("/Condition/c1", json={**CONDITION, "id": "c1"})).json()
    assert stored["id"] == "c1"
    response = await client.get("/Condition/c1/$validate")
    assert response.status_code == 200
    assert not _errors(response)
    deleting = await client.post(
        "/Condition/c1/$validate",
        json={"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]},
    )
    assert deleting.status_code == 200 and not _errors(deleting)
    mismatch = await client.post(
        "/Condition/c1/$validate?mode=update", json={**CONDITION, "id": "other"}
    )
    assert "Condition.id" in _expressions(_errors(mismatch))
    assert (await client.get("/Condition/missing/$validate")).status_code == 404


@pytest.mark.parametrize(
    "path, body",
    [
        ("/Condition/$validate", None),
        ("/Condition/$validate?mode=sideways", CONDITION),
        ("/Nothing/$validate", CONDITION),
        ("/Condition/$validate", {"resourceType": "Parameters", "parameter": [{"name": "mode"}]}),
    ],
)
async def test_validate_bad_requests(
    client: httpx.AsyncClient, path: str, body: dict[str, Any] | None
) -> None:
    response = await client.post(path, json=body) if body else await client.post(path)
    assert response.status_code in (400, 404), response.text
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_validate_structure_errors_come_back_as_issues(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/Patient/$validate", json={"resourceType": "Patient", "gender": 12}
    )
    assert response.status_code == 200
    assert _errors(response)


# -- posted StructureDefinitions ------------------------------------------------------------------


async def test_a_posted_profile_is_enforced(client: httpx.AsyncClient) -> None:
    created = await client.post("/StructureDefinition", json=RESIDENT_PROFILE)
    assert created.status_code == 201, created.text
    claim = {"resourceType": "Patient", "meta": {"profile": [RESIDENT]}}
    refused = await client.post("/Patient", json=claim)
    assert refused.status_code == 422, refused.text
    assert _expressions(_errors(refused)) == {"Patient.birthDate"}
    accepted = await client.post("/Patient", json={**claim, "birthDate": "1990-01-01"})
    assert accepted.status_code == 201, accepted.text
    # Deleting the profile makes it unknown again: accepted unchecked.
    await client.delete(f"/StructureDefinition/{created.json()['id']}")
    response = await client.post("/Patient", json=claim)
    assert response.status_code == 201, response.text


async def test_a_posted_profile_is_known_to_another_server_process(clean_database: str) -> None:
    async with _client(clean_database) as first, _client(clean_database) as second:
        assert (await first.post("/StructureDefinition", json=RESIDENT_PROFILE)).status_code == 201
        claim = {"resourceType": "Patient", "meta": {"profile": [RESIDENT]}}
        response = await second.post("/Patient", json=claim)
        assert response.status_code == 422, response.text


async def test_an_unusable_profile_is_refused(client: httpx.AsyncClient) -> None:
    orphan = {**RESIDENT_PROFILE, "baseDefinition": "http://example.org/nothing"}
    response = await client.post("/StructureDefinition", json=orphan)
    assert response.status_code == 422, response.text
    assert "http://example.org/nothing" in response.text


# -- packages ------------------------------------------------------------------------------------


def _package(path: Path, resources: list[dict[str, Any]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        files = {"package/package.json": {"name": "example.kynect", "version": "0.1.0"}}
        for position, resource in enumerate(resources):
            files[f"package/{resource['resourceType']}-{position}.json"] = resource
        files["package/example/Patient-x.json"] = {"resourceType": "Patient", "id": "x"}
        for name, content in files.items():
            data = orjson.dumps(content)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


CHILD = {
    **RESIDENT_PROFILE,
    "id": "kynect-resident-gendered",
    "url": RESIDENT + "-gendered",
    "name": "KynectResidentGendered",
    "baseDefinition": RESIDENT,
    "differential": {"element": [{"id": "Patient.gender", "path": "Patient.gender", "min": 1}]},
}


def test_install_a_package(clean_database: str, tmp_path: Path) -> None:
    # The child comes first in the tarball: the install orders it after its parent.
    package = _package(tmp_path / "p.tgz", [CHILD, {**RESIDENT_PROFILE, "id": "kynect-resident"}])
    summary = install_package(clean_database, package, Conformance.bundled())
    assert summary.created == {"StructureDefinition": 2}
    assert summary.skipped == 0  # the example folder is not the package folder
    again = install_package(clean_database, package, Conformance.bundled())
    assert again.unchanged == {"StructureDefinition": 2} and not again.created

    async def refused() -> httpx.Response:
        async with _client(clean_database) as http:
            claim = {"resourceType": "Patient", "meta": {"profile": [CHILD["url"]]}}
            return await http.post("/Patient", json=claim)

    assert _expressions(_errors(asyncio.run(refused()))) == {"Patient.birthDate", "Patient.gender"}


def test_install_refuses_a_broken_package_and_stores_nothing(
    clean_database: str, tmp_path: Path
) -> None:
    broken = {**CHILD, "baseDefinition": "http://example.org/nothing"}
    package = _package(tmp_path / "p.tgz", [{**RESIDENT_PROFILE, "id": "kynect-resident"}, broken])
    with pytest.raises(PackageError, match="cannot be installed"):
        install_package(clean_database, package, Conformance.bundled())
    (tmp_path / "junk.tgz").write_bytes(b"not a tarball")
    with pytest.raises(PackageError):
        install_package(clean_database, tmp_path / "junk.tgz", Conformance.bundled())


def test_install_from_the_command_line(clean_database: str, tmp_path: Path) -> None:
    package = _package(tmp_path / "p.tgz", [{**RESIDENT_PROFILE, "id": "kynect-resident"}])
    runner = CliRunner()
    env = {"SDOH_FHIR_DATABASE_URL": clean_database}
    result = runner.invoke(cli, ["profiles", "install", str(package)], env=env)
    assert result.exit_code == 0, result.output
    assert "created: 1 StructureDefinition" in result.output
    missing = runner.invoke(cli, ["profiles", "install", str(tmp_path / "none.tgz")], env=env)
    assert missing.exit_code == 2


# -- what a review found ---------------------------------------------------------------------------


async def test_odd_versions_never_break_the_server(clean_database: str) -> None:
    odd = {**RESIDENT_PROFILE, "version": "1.\u00b2"}  # a superscript digit
    async with _client(clean_database) as http:
        response = await http.post("/StructureDefinition", json=odd)
        assert response.status_code in (201, 422), response.text
    async with _client(clean_database) as http:  # a new process still starts and works
        claim = {"resourceType": "Patient", "meta": {"profile": [RESIDENT]}}
        assert (await http.post("/Patient", json=claim)).status_code in (201, 422)


async def test_claims_of_unknown_profiles_do_not_starve_the_pool(clean_database: str) -> None:
    body = {
        "resourceType": "Patient",
        "meta": {"profile": ["http://example.org/fhir/StructureDefinition/nowhere"]},
    }
    async with _client(clean_database, pool_size=2) as http:
        responses = await asyncio.gather(*(http.post("/Patient", json=body) for _ in range(8)))
    assert [r.status_code for r in responses] == [201] * 8


async def test_updating_a_parent_keeps_its_children_enforced(client: httpx.AsyncClient) -> None:
    assert (
        await client.put("/StructureDefinition/parent", json={**RESIDENT_PROFILE, "id": "parent"})
    ).status_code == 201
    assert (
        await client.put("/StructureDefinition/child", json={**CHILD, "id": "child"})
    ).status_code == 201
    changed = {**RESIDENT_PROFILE, "id": "parent", "description": "changed"}
    assert (await client.put("/StructureDefinition/parent", json=changed)).status_code == 200
    claim = {"resourceType": "Patient", "meta": {"profile": [CHILD["url"]]}}
    refused = await client.post("/Patient", json=claim)
    assert _expressions(_errors(refused)) == {"Patient.birthDate", "Patient.gender"}


@pytest.mark.parametrize(
    "path, definition",
    [
        (
            "/StructureDefinition",
            {
                **RESIDENT_PROFILE,
                "url": SDOHCC + "SDOHCC-Condition",
                "type": "Condition",
                "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Condition",
                "differential": {"element": [{"id": "Condition", "path": "Condition"}]},
            },
        ),
        (
            "/ValueSet",
            {
                "resourceType": "ValueSet",
                "status": "active",
                "url": "http://hl7.org/fhir/us/sdoh-clinicalcare/ValueSet/SDOHCC-ValueSetSDOHCategory",
                "compose": {"include": [{"system": "http://example.org/x"}]},
            },
        ),
    ],
)
async def test_shipped_definitions_cannot_be_replaced(
    client: httpx.AsyncClient, path: str, definition: dict[str, Any]
) -> None:
    response = await client.post(path, json=definition)
    assert response.status_code == 422, response.text
    assert "ships" in response.text
    # The bundled profile still holds.
    bare = {key: value for key, value in CONDITION.items() if key != "code"}
    assert (await client.post("/Condition", json=bare)).status_code == 422


async def test_a_required_profile_nothing_defines_stops_the_server(clean_database: str) -> None:
    rule = orjson.dumps(
        [{"resourceType": "Task", "profile": "http://example.org/fhir/StructureDefinition/typo"}]
    ).decode()
    with pytest.raises(ValueError, match="typo"):
        async with _client(clean_database, required_profiles=rule):
            pass
