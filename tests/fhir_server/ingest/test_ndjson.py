"""The NDJSON bulk load and its parts, against the REST write path they must equal.

- ``check_structure`` (the load's validation) agrees with the models' ``validate_resource``;
- ``BatchEncoder`` (the load's index rows, cached per element group) writes the rows a REST
  create writes;
- ``load_ndjson`` keeps ids, gives existing ids new versions as ``PUT`` does, and reports
  refused lines with their numbers and reasons.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.ingest.ndjson import LoadSummary, RefusedLine, load_ndjson
from fhir_server.ingest.synthetic import generate_population
from fhir_server.search.extract import extract_text, patient_compartment_ids
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.bulk import TABLES, BatchEncoder, EncodedBatch
from fhir_server.storage.database import libpq_url
from fhir_server.storage.repository import (
    INDEX_LAYOUT,
    Indexer,
    canonical_resource,
    index_rows,
    now_millis,
)
from profiles.json_rules import check_structure
from profiles.models import ResourceInvalid, validate_resource

EXAMPLES = Path(__file__).resolve().parents[3].parent / "shared" / "conformance" / "sdohcc"
EXAMPLES = EXAMPLES / "examples"
POPULATION = list(generate_population(8, seed=21))


def examples() -> list[dict[str, Any]]:
    if not EXAMPLES.is_dir():
        pytest.skip(f"the SDOHCC conformance examples are not at {EXAMPLES}")
    found = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    assert found, f"no examples in {EXAMPLES}"
    return found


def _examples_or_none() -> list[dict[str, Any]]:
    return [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]


def models_accept(resource: Any) -> bool:
    try:
        validate_resource(resource)
    except ResourceInvalid:
        return False
    except Exception:  # the models' own validators trip on some odd input: a refusal too
        return False
    return True


# --- check_structure agrees with the models ----------------------------------------------------


def test_structure_accepts_the_sdohcc_examples_as_the_models_do() -> None:
    for resource in examples():
        assert models_accept(resource), resource["id"]
        assert check_structure(resource) == [], resource["id"]


def test_structure_accepts_the_synthetic_population() -> None:
    for resource in POPULATION:
        assert check_structure(resource) == [], resource["id"]
        assert models_accept(resource)


@pytest.mark.parametrize(
    ("resource", "path"),
    [
        ({"resourceType": "Patient", "unknown": 1}, "Patient.unknown"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
        ({"resourceType": "Patient", "gender": ["male"]}, "Patient.gender"),
        ({"resourceType": "Observation", "code": {"text": "x"}}, "Observation.status"),
        ({"resourceType": "Observation", "status": "final"}, "Observation.code"),
        ({"resourceType": "Patient", "birthDate": "2021-02-29"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "birthDate": "2021-2-1"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "gender": "fe  male"}, "Patient.gender"),
        ({"resourceType": "Patient", "id": "no spaces allowed"}, "Patient.id"),
        (
            {"resourceType": "Patient", "multipleBirthInteger": 2**31},
            "Patient.multipleBirthInteger",
        ),
        (
            {"resourceType": "Patient", "meta": {"lastUpdated": "2021-01-01"}},
            "Patient.meta.lastUpdated",
        ),
        (
            {
                "resourceType": "Patient",
                "extension": [{"url": "http://x", "valueString": "a", "valueCode": "b"}],
            },
            "Patient.extension[0].valueString",
        ),
        (
            {"resourceType": "Patient", "extension": [{"valueString": "a"}]},
            "Patient.extension[0].url",
        ),
    ],
)
def test_structure_refuses_what_the_models_refuse(resource: dict[str, Any], path: str) -> None:
    assert not models_accept(resource)
    assert path in [p for p, _ in check_structure(resource)]


def _undecided(issues: list[tuple[str, str]]) -> bool:
    """Issues check_structure leaves to the models (see its docstring)."""
    tolerated = {"fhir_comments", "resource_type", "resourceType"}
    return all(
        message.startswith("the models decide")
        or (
            message == "unknown element"
            and re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1] in tolerated
        )
        for path, message in issues
    )


_TRICKY_STRINGS = [
    "",
    " ",
    "\u2003",
    "x\ny",
    " lead",
    "trail ",
    "two  spaces",
    "2021-02-30",
    "2021-13-01",
    "2024-02-29",
    "2021-06-15T10:00:00Z",
    "2021-06-15T10:00:60+14:00",
    "2021-06-15T24:00:00Z",
    "2021-06-15T10:00:00",
    "2021-06",
    "0000",
    "10:00:00",
    "urn:oid:1.2.3",
    "urn:oid:1.02",
    "http://example.org/fhir",
    "http://example.org:99999/x",
    "Patient/123",
    "a" * 256,
    "YWJj",
    "YWJ=",
    "final",
    "male",
]
_KEYS = [
    "id",
    "extension",
    "url",
    "valueString",
    "valueCode",
    "valueQuantity",
    "valueCodeableConcept",
    "system",
    "code",
    "display",
    "text",
    "coding",
    "reference",
    "value",
    "start",
    "end",
    "status",
    "fhir_comments",
    "resourceType",
    "_status",
    "_code",
]
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10)
    | st.sampled_from(_TRICKY_STRINGS)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


def _places(value: Any) -> list[tuple[Any, Any]]:
    """(container, key or index) of every value inside ``value``, the root resourceType aside."""
    found: list[tuple[Any, Any]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, child in node.items():
                if not (node is value and key == "resourceType"):
                    found.append((node, key))
                stack.append(child)
        elif isinstance(node, list):
            for index, child in enumerate(node):
                found.append((node, index))
                stack.append(child)
    return found


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    """A resource from the examples or the population with one to three changes anywhere."""
    resource = copy.deepcopy(draw(st.sampled_from(_BASES)))
    for _ in range(draw(st.integers(1, 3))):
        places = _places(resource)
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["delete", "replace", "rename", "add", "string"]))
        if action == "delete":
            del container[key]
        elif action == "replace":
            container[key] = draw(_VALUES)
        elif action == "rename" and isinstance(container, dict):
            container[draw(st.sampled_from(_KEYS))] = container.pop(key)
        elif action == "add":
            target = container[key] if isinstance(container[key], dict) else container
            if isinstance(target, dict):
                target[draw(st.sampled_from(_KEYS))] = draw(_VALUES)
        elif action == "string" and isinstance(container[key], str):
            container[key] = draw(st.sampled_from(_TRICKY_STRINGS))
    return resource


_BASES = POPULATION[:40] + (_examples_or_none() if EXAMPLES.is_dir() else [])


@settings(deadline=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_structure_agrees_with_the_models_on_mutated_resources(resource: dict[str, Any]) -> None:
    issues = check_structure(resource)
    accepted = models_accept(resource)
    if not issues:
        assert accepted, resource  # never accepts what the models refuse
    else:
        assert not accepted or _undecided(issues), issues


@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=8), _VALUES, max_size=6))
def test_structure_of_arbitrary_json_never_raises(elements: dict[str, Any]) -> None:
    issues = check_structure({**elements, "resourceType": "Patient"})
    assert isinstance(issues, list)
    if not issues:
        assert models_accept({**elements, "resourceType": "Patient"})


# --- encoded rows are the REST write's rows ----------------------------------------------------

_INDEXER = Indexer(SearchRegistry.load_default())
_ENCODER = BatchEncoder(_INDEXER)
_UNESCAPE = {"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}


def _field(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int | Decimal):
        return str(value)
    return str(value)


def expected_rows(resources: list[dict[str, Any]], now: datetime) -> dict[str, Counter[Any]]:
    """What REST creates of these resources write, with rid and seq 1000 + position."""
    tables = {field: table for field, (table, _) in INDEX_LAYOUT.items()}
    out: dict[str, Counter[Any]] = {name: Counter() for name, _ in TABLES}
    for position, body in enumerate(resources):
        rid = seq = 1000 + position
        resource_type, id = body["resourceType"], body["id"]
        stored = canonical_resource(resource_type, id, 1, now, body)
        text = orjson.dumps(stored).decode()
        stamp = now.isoformat()
        out["resource"][(resource_type, id, str(rid), "1", stamp, "f", text)] += 1
        out["resource_history"][(resource_type, id, "1", str(seq), stamp, "POST", "f", text)] += 1
        index = _INDEXER.extract(resource_type, stored)
        for field, rows in index_rows(resource_type, rid, index).items():
            for row in rows:
                out[tables[field]][tuple(_field(v) for v in row)] += 1
        compartment = _INDEXER.compartment_params(resource_type)
        for patient in patient_compartment_ids(resource_type, id, index.references, compartment):
            out["compartment"][(resource_type, str(rid), "Patient", patient)] += 1
        narrative, content = extract_text(stored)
        out["idx_text"][(resource_type, str(rid), narrative, content)] += 1
    return out


def encoded_rows(batch: EncodedBatch) -> dict[str, Counter[Any]]:
    out: dict[str, Counter[Any]] = {}
    for position, (name, columns) in enumerate(TABLES):
        rows: Counter[Any] = Counter()
        for line in batch.lines[position].decode().split("\n")[:-1]:
            fields = line.split("\t")
            assert len(fields) == len(columns), (name, line)
            rows[
                tuple(
                    None if f == "\\N" else re.sub(r"\\(.)", lambda m: _UNESCAPE[m.group(1)], f)
                    for f in fields
                )
            ] += 1
        out[name] = rows
    return out


def assert_encoded_like_rest(resources: list[dict[str, Any]]) -> None:
    now = now_millis()
    positions = range(1000, 1000 + len(resources))
    batch = _ENCODER.encode(resources, positions, positions, now)
    assert batch.keys == tuple((r["resourceType"], r["id"]) for r in resources)
    expected, got = expected_rows(resources, now), encoded_rows(batch)
    for name, _ in TABLES:
        assert got[name] == expected[name], name


def test_encoded_rows_of_the_examples_and_the_population() -> None:
    resources = POPULATION + (_examples_or_none() if EXAMPLES.is_dir() else [])
    assert_encoded_like_rest(resources)
    assert_encoded_like_rest(resources)  # again, now from the cache


def test_a_batch_can_be_taken_apart_by_resource() -> None:
    now = now_millis()
    batch = _ENCODER.encode(POPULATION[:10], range(10), range(10), now)
    whole = encoded_rows(batch)
    parts = [
        encoded_rows(
            EncodedBatch(
                batch.keys,
                tuple(batch.select(t, positions) + b"" for t in range(len(TABLES))),
                batch.ends,
            )
        )
        for positions in ([0, 2, 4, 6, 8], [1, 3, 5, 7, 9])
    ]
    for name, _ in TABLES:
        assert parts[0][name] + parts[1][name] == whole[name]


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated(), min_size=1, max_size=4))
def test_encoded_rows_of_mutated_resources(resources: list[dict[str, Any]]) -> None:
    valid = []
    for resource in resources:
        if check_structure(resource):
            continue
        resource.setdefault("id", "made-up")
        valid.append(resource)
    if valid:
        assert_encoded_like_rest(valid)


# --- loads --------------------------------------------------------------------------------------


def load(url: str, *paths: Path, initial: bool = True) -> tuple[LoadSummary, list[RefusedLine]]:
    refused: list[RefusedLine] = []
    summary = load_ndjson(
        libpq_url(url),
        list(paths),
        on_refused=refused.append,
        workers=0,
        initial=initial,
        chunk_lines=7,
    )
    return summary, refused


def write(path: Path, resources: list[Any]) -> Path:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in resources))
    return path


def stored(url: str) -> dict[tuple[str, str], tuple[int, Any]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return {
            (t, i): (v, orjson.loads(b) if b else None)
            for t, i, v, b in conn.execute(
                "SELECT resource_type, id, version_id, body FROM resource"
            )
        }


def history(url: str) -> list[tuple[str, str, int, str]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return sorted(
            conn.execute("SELECT resource_type, id, version_id, method FROM resource_history")
        )


@pytest.mark.parametrize("initial", [True, False], ids=["into-empty-database", "online"])
async def test_ids_are_kept_and_missing_ones_given(
    clean_database: str, tmp_path: Path, initial: bool
) -> None:
    resources = [*POPULATION[:20], {"resourceType": "Basic", "code": {"text": "no id"}}]
    summary, refused = load(
        clean_database, write(tmp_path / "a.ndjson", resources), initial=initial
    )
    assert refused == []
    assert (summary.created, summary.updated, summary.unchanged) == (21, 0, 0)
    assert summary.initial is initial
    found = stored(clean_database)
    for resource in POPULATION[:20]:
        version, body = found[(resource["resourceType"], resource["id"])]
        assert version == 1 and body["meta"]["versionId"] == "1"
    (basic,) = [key for key in found if key[0] == "Basic"]
    assert re.fullmatch(r"[0-9a-f-]{36}", basic[1])


def indexes(url: str) -> set[tuple[str, str]]:
    with psycopg.connect(libpq_url(url)) as conn:
        return set(
            conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename = ANY(%s)",
                ([name for name, _ in TABLES],),
            ).fetchall()
        )


async def test_an_initial_load_rebuilds_every_index_it_dropped(
    clean_database: str, tmp_path: Path
) -> None:
    before = indexes(clean_database)
    summary, _ = load(clean_database, write(tmp_path / "a.ndjson", POPULATION[:30]))
    assert summary.initial
    assert indexes(clean_database) == before


async def test_refused_lines_are_kept_with_their_numbers_and_reasons(
    clean_database: str, tmp_path: Path
) -> None:
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(
        b"\xef\xbb\xbf"  # a byte order mark
        + orjson.dumps(POPULATION[0])
        + b"\r\n"
        + b"[1, 2]\r\n"
        + b"\n"
        + orjson.dumps({"resourceType": "Patient", "id": "bad id"})
        + b"\n"
        + orjson.dumps({"resourceType": "Patient", "active": "yes"})
        + b"\n"
        + orjson.dumps({"resourceType": "Patient", "fhir_comments": "kept: the models allow it"})
        + b"\n"
        + b'{"resourceType": "Patient", "id": "cut off'
    )
    summary, refused = load(clean_database, source)
    assert (summary.created, summary.refused) == (2, 4)
    assert [(r.source, r.line) for r in refused] == [(str(source), n) for n in (2, 4, 5, 7)]
    assert refused[0].text == "[1, 2]"
    assert refused[1].issues[0].expression == ("Patient.id",)
    assert refused[2].issues[0].expression == ("Patient.active",)
    assert "not JSON" in refused[3].issues[0].diagnostics
    assert all(issue.severity == "error" for r in refused for issue in r.issues)


async def test_existing_ids_become_versions_as_put_makes_them(
    client: httpx.AsyncClient,
    clean_database: str,
    tmp_path: Path,
    snapshot: Callable[[str], dict[str, Counter[Any]]],
    empty_tables: Callable[[str], None],
) -> None:
    first = POPULATION[:30]
    second = copy.deepcopy(first)
    for resource in second[::3]:
        resource["meta"] = {**resource.get("meta", {}), "source": "https://example.org/feed"}
    gone = second[1]
    gone_path = f"/{gone['resourceType']}/{gone['id']}"
    second[2].pop("meta", None)  # meta dropped: a change as well
    first_file = write(tmp_path / "first.ndjson", first)
    second_file = write(tmp_path / "second.ndjson", second)

    # By the load: first, then one resource deleted over REST, then the second file.
    load(clean_database, first_file)
    assert (await client.delete(gone_path)).status_code == 204
    summary, refused = load(clean_database, second_file)
    assert refused == []
    assert summary.created == 0
    changed = {*range(0, len(second), 3), 1, 2}  # meta changed or dropped, or deleted before
    assert (summary.updated, summary.unchanged) == (len(changed), len(second) - len(changed))
    by_load = snapshot(clean_database)

    # By REST: the same first file, the same delete, then PUT of each resource of the second.
    empty_tables(clean_database)
    load(clean_database, first_file)
    assert (await client.delete(gone_path)).status_code == 204
    for resource in second:
        response = await client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    by_rest = snapshot(clean_database)
    assert by_load.keys() == by_rest.keys()
    for table in by_rest:
        assert by_load[table] == by_rest[table], table

    # Loading the second file again changes nothing.
    summary, _ = load(clean_database, second_file)
    assert (summary.created, summary.updated, summary.unchanged) == (0, 0, len(second))
    assert snapshot(clean_database) == by_rest


@pytest.mark.parametrize("initial", [True, False], ids=["into-empty-database", "online"])
async def test_an_id_repeated_in_one_load_is_versioned_in_file_order(
    clean_database: str, tmp_path: Path, initial: bool
) -> None:
    if not initial:
        load(clean_database, write(tmp_path / "other.ndjson", POPULATION[40:41]))
    patient = {"resourceType": "Patient", "id": "twice", "gender": "female"}
    changed = {**patient, "gender": "male"}
    resources = [patient, *POPULATION[:9], patient, changed, *POPULATION[9:12], changed]
    summary, _ = load(clean_database, write(tmp_path / "a.ndjson", resources), initial=initial)
    assert (summary.created, summary.updated, summary.unchanged) == (13, 1, 2)
    version, body = stored(clean_database)[("Patient", "twice")]
    assert (version, body["gender"], body["meta"]["versionId"]) == (2, "male", "2")
    assert [h for h in history(clean_database) if h[1] == "twice"] == [
        ("Patient", "twice", 1, "POST"),
        ("Patient", "twice", 2, "PUT"),
    ]
