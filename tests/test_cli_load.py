"""``sdoh-fhir load ndjson`` end to end, as a user runs it: a subprocess on the test database.

What a load stores must be what REST writes store: the same bodies, versions, history and the
rows of every index table and of the compartment table.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from fhir_server.ingest.synthetic import generate_population
from fhir_server.storage.database import libpq_url

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT.parent / "shared" / "conformance" / "sdohcc" / "examples"


def run_load(url: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fhir_server", "load", "ndjson", *map(str, args)],
        env={**os.environ, "SDOH_FHIR_DATABASE_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def write_ndjson(path: Path, resources: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def population() -> list[dict[str, Any]]:
    resources = list(generate_population(4, seed=5))
    if EXAMPLES.is_dir():
        resources += [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    return resources


@pytest.mark.parametrize("online", [False, True], ids=["into-empty-database", "online"])
async def test_a_load_stores_what_rest_writes_store(
    client: httpx.AsyncClient,
    clean_database: str,
    tmp_path: Path,
    online: bool,
    snapshot: Callable[[str], dict[str, Counter[Any]]],
    empty_tables: Callable[[str], None],
) -> None:
    resources = population()
    refused_by_rest = set()
    for resource in resources:
        path = f"/{resource['resourceType']}/{resource['id']}"
        response = await client.put(path, json=resource)
        if response.status_code >= 400:
            refused_by_rest.add((resource["resourceType"], resource["id"]))
        else:
            assert response.status_code == 201, response.text
    by_rest = snapshot(clean_database)
    assert sum(by_rest["resource"].values()) == len(resources) - len(refused_by_rest)

    empty_tables(clean_database)
    if online:  # something already stored: the load keeps the indexes and commits as it goes
        other = {"resourceType": "Basic", "id": "other", "code": {"text": "x"}}
        assert (await client.put("/Basic/other", json=other)).status_code == 201
    errors = tmp_path / "errors.ndjson"
    source = write_ndjson(tmp_path / "population.ndjson", resources)
    result = run_load(clean_database, source, "--errors", errors, "--workers", "2")
    assert result.returncode == (1 if refused_by_rest else 0), result.stderr
    if online:
        await client.delete("/Basic/other")
        with psycopg.connect(libpq_url(clean_database), autocommit=True) as conn:
            conn.execute("DELETE FROM resource_history WHERE id = 'other'")
            conn.execute("DELETE FROM resource WHERE id = 'other'")
    by_load = snapshot(clean_database)

    for table in by_rest:
        assert by_load[table] == by_rest[table], table
    assert set(by_load) == set(by_rest)
    refused = (
        [orjson.loads(line) for line in errors.read_bytes().splitlines()] if errors.exists() else []
    )
    assert {
        (orjson.loads(r["text"])["resourceType"], orjson.loads(r["text"])["id"]) for r in refused
    } == refused_by_rest


async def test_exit_status_summary_and_refused_lines(clean_database: str, tmp_path: Path) -> None:
    good = {"resourceType": "Patient", "id": "p1", "gender": "female"}
    lines = [
        orjson.dumps(good),
        b"",  # blank: skipped, not refused
        b"{not json",
        orjson.dumps({"resourceType": "Patient", "id": "p2", "birthDate": "1990-02-30"}),
        orjson.dumps({"resourceType": "Nonsense", "id": "x"}),
        orjson.dumps({"resourceType": "Observation", "status": "final"}),
        orjson.dumps({"resourceType": "Patient", "gender": "male"}),  # no id: a server id
    ]
    source = tmp_path / "in"
    source.mkdir()
    (source / "patients.ndjson").write_bytes(b"\n".join(lines) + b"\n")
    result = run_load(clean_database, source)
    assert result.returncode == 1, result.stderr
    assert "loaded 2 resources (2 created, 0 updated, 0 unchanged), refused 4" in result.stdout
    assert "resources/s" in result.stdout
    errors = list(source.glob(".sdoh-fhir-load-errors-*.ndjson"))
    assert len(errors) == 1, list(source.iterdir())
    refused = [orjson.loads(line) for line in errors[0].read_bytes().splitlines()]
    assert [r["line"] for r in refused] == [3, 4, 5, 6]
    assert all(r["file"] == str(source / "patients.ndjson") for r in refused)
    assert [r["text"] for r in refused] == [line.decode() for line in lines[2:6]]
    for record in refused:
        outcome = record["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"] and all(i["severity"] == "error" for i in outcome["issue"])
    assert refused[1]["outcome"]["issue"][0]["expression"] == ["Patient.birthDate"]
    assert refused[3]["outcome"]["issue"][0]["expression"] == ["Observation.code"]
    with psycopg.connect(libpq_url(clean_database)) as conn:
        ids = {row[0] for row in conn.execute("SELECT id FROM resource")}
    assert "p1" in ids and len(ids) == 2

    # A second run of the same directory changes nothing (the errors file is hidden: skipped).
    again = run_load(clean_database, source, "--errors", tmp_path / "again.ndjson")
    assert again.returncode == 1
    assert "loaded 2 resources (1 created, 0 updated, 1 unchanged), refused 4" in again.stdout


async def test_gzip_files_and_directories(clean_database: str, tmp_path: Path) -> None:
    resources = list(generate_population(2, seed=9))
    half = len(resources) // 2
    with gzip.open(tmp_path / "a.ndjson.gz", "wb") as out:
        out.write(b"".join(orjson.dumps(r) + b"\n" for r in resources[:half]))
    write_ndjson(tmp_path / "b.ndjson", resources[half:])
    (tmp_path / "notes.txt").write_text("not loaded")
    result = run_load(clean_database, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"loaded {len(resources)} resources ({len(resources)} created" in result.stdout
    with psycopg.connect(libpq_url(clean_database)) as conn:
        stored = {(t, i) for t, i in conn.execute("SELECT resource_type, id FROM resource")}
    assert stored == {(r["resourceType"], r["id"]) for r in resources}


async def test_fatal_errors_exit_2(clean_database: str, tmp_path: Path) -> None:
    missing = run_load(clean_database, tmp_path / "nothing-here.ndjson")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    (tmp_path / "broken.ndjson.gz").write_bytes(b"this is not gzip")
    broken = run_load(clean_database, tmp_path / "broken.ndjson.gz")
    assert broken.returncode == 2
    assert "cannot read" in broken.stderr
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    assert run_load(clean_database, empty_dir).returncode == 2
