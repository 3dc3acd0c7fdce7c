"""The IEES feed applied to the database, as the state sends it: the ten sample messages in
order with the ACKs the README expects and the resources its table lists; resends; merges
that move references; snapshots; dead letters and replay; ``$load-iees`` over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from fhir_server.ingest.iees import IeesApplier, SnapshotRefused
from fhir_server.ingest.iees_files import replay_dead_letters, split_messages
from fhir_server.storage.database import libpq_url
from mappers.iees import group_id, map_snapshot, parse_csv, parse_ndjson, patient_id
from mappers.iees.fhir import fhir_id

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "feeds" / "iees" / "samples"
HL7 = SAMPLES / "hl7v2"

pytestmark = pytest.mark.skipif(
    not SAMPLES.is_dir(), reason="../shared/feeds/iees is not beside the checkout"
)


def sample(number: str) -> bytes:
    (path,) = HL7.glob(f"{number}_*.hl7")
    return path.read_bytes()


def errs(ack: bytes) -> tuple[str, list[tuple[str, str, str]]]:
    """(MSA-1, [(ERR-2, ERR-3.1, ERR-4)]) of an ACK, with any line endings."""
    segments = ack.replace(b"\r\n", b"\r").replace(b"\n", b"\r").decode().split("\r")
    code = next(s.split("|")[1] for s in segments if s.startswith("MSA|"))
    found = []
    for segment in segments:
        if segment.startswith("ERR|"):
            fields = segment.split("|")
            found.append((fields[2], fields[3].split("^")[0], fields[4]))
    return code, found


def history_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resource_history WHERE resource_type <> 'Provenance'"
        ).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def applier(clean_database: str) -> Any:
    applier = IeesApplier(libpq_url(clean_database))
    yield applier
    applier.close()


async def read(client: httpx.AsyncClient, reference: str) -> dict[str, Any]:
    response = await client.get(f"/{reference}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


P = {n: patient_id(f"9000001{n:02d}") for n in (1, 2, 3, 4, 99)}
CASE = group_id("1200345678")


def program(kind: str, person: int, code: str) -> str:
    prefix, resource_type = (
        ("iees-cov", "Coverage") if kind == "cov" else ("iees-enr", "Observation")
    )
    return f"{resource_type}/{fhir_id(prefix, f'9000001{person:02d}', code, '1200345678')}"


async def test_the_samples_in_order(
    client: httpx.AsyncClient, clean_database: str, applier: IeesApplier
) -> None:
    url = libpq_url(clean_database)
    before_resend = 0
    for number in [f"{n:02d}" for n in range(1, 11)]:
        if number == "04":
            before_resend = history_count(url)
        (reply,) = applier.apply_messages([sample(number)])
        expected = errs((HL7 / "acks" / f"ACK_{number}.hl7").read_bytes())
        got = errs(reply.ack)
        if number == "06":
            # Rule 6(c)/(d): 900000199 was never sent, so the merge is a no-op, and the rule
            # asks for a warning saying so (the sample ACK leaves it out).
            assert got == (expected[0], [*expected[1], ("MRG^1^1^1", "0", "W")])
        else:
            assert got == expected, number
        if number == "04":
            assert history_count(url) == before_resend  # no second version of anything

    maria = await read(client, f"Patient/{P[1]}")
    assert maria["address"][0]["city"] == "LEXINGTON"
    assert any(
        t.get("value", "").startswith("859") or "859" in t.get("value", "")
        for t in maria["telecom"]
    )
    james = await read(client, f"Patient/{P[2]}")
    assert james["address"][0]["city"] == "RICHMOND"
    await read(client, f"Patient/{P[3]}")
    await read(client, f"Patient/{P[4]}")  # 6(d): the survivor, created from the A40's PID

    household = await read(client, f"Group/{CASE}")
    members = {m["entity"]["reference"].split("/")[1]: m for m in household["member"]}
    assert set(members) == {P[1], P[2], P[3]}
    assert not members[P[1]]["inactive"] and not members[P[3]]["inactive"]
    assert members[P[2]]["inactive"] is True
    assert members[P[2]]["period"]["end"] == "2025-09-30"
    assert household["quantity"] == 2

    medicaid = await read(client, program("cov", 1, "medicaid"))
    assert (medicaid["status"], medicaid["period"]) == (
        "active",
        {"start": "2025-01-01", "end": "2025-12-31"},
    )
    ktap = await read(client, program("obs", 1, "ktap"))
    assert ktap["valueCodeableConcept"]["coding"][0]["code"] == "not-enrolled"
    assert ktap["effectivePeriod"]["end"] == "2025-08-14"
    ccap = await read(client, program("obs", 1, "ccap"))
    assert ccap["valueCodeableConcept"]["coding"][0]["code"] == "enrolled"
    assert ccap["effectivePeriod"]["start"] == "2025-09-01"
    kchip = await read(client, program("cov", 3, "kchip"))
    assert kchip["subscriber"] == {"reference": f"Patient/{P[1]}"}
    assert kchip["relationship"]["coding"][0]["code"] == "child"
    james_snap = await read(client, program("obs", 2, "snap"))
    assert james_snap["effectivePeriod"]["end"] == "2025-09-30"

    with psycopg.connect(url) as conn:
        letters = conn.execute(
            "SELECT payload, ack_code FROM feed_dead_letter ORDER BY id"
        ).fetchall()
    assert [(bytes(p), c) for p, c in letters] == [
        (sample("07"), "AE"),
        (sample("08"), "AR"),
        (sample("09"), "AE"),
    ]

    # Everything again, in one batch: each gets its original ACK plus the notice; no change.
    count = history_count(url)
    replies = applier.apply_messages([sample(f"{n:02d}") for n in range(1, 11)])
    assert [r.code for r in replies] == ["AA"] * 6 + ["AE", "AR", "AE", "AA"]
    # The accepted ones answer as resends; the refused ones are judged again (they may have
    # been corrected under the same MSH-10), refused again, and kept again.
    resent = [("MSH^1^10", "0", "I") in errs(r.ack)[1] for r in replies]
    assert resent == [True] * 6 + [False] * 3 + [True]
    assert history_count(url) == count


def with_id(message: bytes, old: str, new: str, control: str) -> bytes:
    text = message.decode()
    lines = text.split("\n")
    header = lines[0].split("|")
    header[9] = control
    lines[0] = "|".join(header)
    return "\n".join(lines).replace(f"{old}^^^KYIEES^PI", f"{new}^^^KYIEES^PI").encode()


async def test_a_merge_moves_references(
    client: httpx.AsyncClient, clean_database: str, applier: IeesApplier
) -> None:
    applier.apply_messages([sample("01")])
    # 900000199 (a duplicate record of Lucas, 104) and 104 both sent as children of Maria.
    retired = with_id(sample("02"), "900000103", "900000199", "M-199")
    survivor = with_id(sample("02"), "900000103", "900000104", "M-104")
    assert [r.code for r in applier.apply_messages([retired, survivor])] == ["AA", "AA"]
    kchip_199 = program("cov", 99, "kchip")
    assert (await read(client, kchip_199))["beneficiary"]["reference"] == f"Patient/{P[99]}"

    (reply,) = applier.apply_messages([sample("06")])
    assert errs(reply.ack) == ("AA", [])
    gone = await read(client, f"Patient/{P[99]}")
    assert gone["active"] is False
    assert gone["link"] == [{"other": {"reference": f"Patient/{P[4]}"}, "type": "replaced-by"}]
    kept = await read(client, f"Patient/{P[4]}")
    assert {"other": {"reference": f"Patient/{P[99]}"}, "type": "replaces"} in kept["link"]
    assert {"use": "old", "value": "900000199"}.items() <= next(
        i for i in kept["identifier"] if i.get("use") == "old"
    ).items()
    moved = await read(client, kchip_199)
    assert moved["beneficiary"]["reference"] == f"Patient/{P[4]}"
    household = await read(client, f"Group/{CASE}")
    references = [m["entity"]["reference"] for m in household["member"]]
    assert f"Patient/{P[99]}" not in references
    assert references.count(f"Patient/{P[4]}") == 1
    found = await client.get(f"/Coverage?beneficiary=Patient/{P[99]}")
    assert found.json().get("total", len(found.json().get("entry", []))) == 0
    # A later A31 for the survivor does not undo the merge.
    later = with_id(sample("02"), "900000103", "900000104", "M-104b").replace(
        b"20250701092955-0400", b"20251101092955-0400"
    )
    assert applier.apply_messages([later])[0].code == "AA"
    kept = await read(client, f"Patient/{P[4]}")
    assert any(link["type"] == "replaces" for link in kept["link"])
    # The same merge again changes nothing.
    count = history_count(libpq_url(clean_database))
    again = with_id(sample("06"), "900000104", "900000104", "M-06b")
    assert applier.apply_messages([again])[0].code == "AA"
    assert history_count(libpq_url(clean_database)) == count


def test_a_merge_into_itself_is_refused(applier: IeesApplier) -> None:
    message = sample("06").replace(b"MRG|900000199", b"MRG|900000104")
    (reply,) = applier.apply_messages([message])
    assert reply.code == "AE" and not reply.applied


async def test_stale_and_out_of_order_in_one_batch(
    client: httpx.AsyncClient, applier: IeesApplier
) -> None:
    replies = applier.apply_messages([sample("01"), sample("03"), sample("05")])
    assert [errs(r.ack)[1] for r in replies][2] == [("EVN^1^6", "0", "W")]
    maria = await read(client, f"Patient/{P[1]}")
    assert maria["address"][0]["city"] == "LEXINGTON"  # 05 (older) did not move her back


def test_snapshots_ndjson_and_csv_agree(clean_database: str) -> None:
    url = libpq_url(clean_database)
    ndjson = map_snapshot(
        parse_ndjson((SAMPLES / "batch" / "iees_snapshot_2025-07-01.ndjson").read_bytes())
    )
    applier = IeesApplier(url)
    try:
        summary = applier.apply_snapshot(ndjson)
    finally:
        applier.close()
    assert (summary.persons, summary.applied, summary.merges) == (5, 5, 1)
    with psycopg.connect(url) as conn:
        stored: dict[str, str] = dict(
            conn.execute(
                "SELECT resource_type || '/' || id, body FROM resource"
                " WHERE resource_type <> 'Provenance'"
            ).fetchall()
        )
    assert f"Patient/{P[1]}" in stored
    # The CSV form of the same snapshot changes nothing.
    import datetime as dt

    csv = map_snapshot(parse_csv(SAMPLES / "batch", snapshot_date=dt.date(2025, 7, 1), mode="full"))
    applier = IeesApplier(url)
    try:
        again = applier.apply_snapshot(csv)
    finally:
        applier.close()
    assert (again.created, again.updated) == (0, 0)


def test_a_full_snapshot_that_would_end_too_much_is_refused(clean_database: str) -> None:
    url = libpq_url(clean_database)
    text = (SAMPLES / "batch" / "iees_snapshot_2025-07-01.ndjson").read_bytes()
    applier = IeesApplier(url)
    try:
        applier.apply_snapshot(map_snapshot(parse_ndjson(text)))
        lines = text.splitlines()
        persons = [line for line in lines if b'"record_type":"person"' in line]
        smaller = [line for line in lines if line not in persons[:2]]
        smaller = [line.replace(b'"person_count":5', b'"person_count":3') for line in smaller]
        snapshot = map_snapshot(parse_ndjson(b"\n".join(smaller)))
        with pytest.raises(SnapshotRefused):
            applier.apply_snapshot(snapshot)
        forced = applier.apply_snapshot(snapshot, force=True)
        assert forced.ended_persons == 2
    finally:
        applier.close()


async def test_dead_letters_are_kept_and_replayed(
    clean_database: str, applier: IeesApplier
) -> None:
    url = libpq_url(clean_database)
    applier.apply_messages([sample("07"), sample("08")])
    summary = replay_dead_letters(url)
    assert (summary.replayed, dict(summary.acks)) == (2, {"AE": 1, "AR": 1})
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT replayed_at IS NOT NULL, replay_result FROM feed_dead_letter ORDER BY id"
        ).fetchall()
    # The two replayed, and kept again (refused again): nothing lost.
    assert rows == [(True, "AE"), (True, "AR"), (False, None), (False, None)]


def test_split_messages() -> None:
    one, two = sample("01"), sample("02")
    assert split_messages(one + two) == [one, two]
    framed = b"\x0b" + one + b"\x1c\r\x0b" + two + b"\x1c\r"
    assert split_messages(framed) == [one, two]
    assert split_messages(b"") == []


async def test_load_iees_over_http(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/$load-iees",
        content=sample("01") + sample("08"),
        headers={"Content-Type": "x-application/hl7-v2+er7"},
    )
    assert response.status_code == 200, response.text
    acks = [a for a in response.content.split(b"MSH|") if a]
    assert [errs(b"MSH|" + a)[0] for a in acks] == ["AA", "AR"]
    snapshot = await client.post(
        "/$load-iees",
        content=(SAMPLES / "batch" / "iees_snapshot_2025-07-01.ndjson").read_bytes(),
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert snapshot.status_code == 200, snapshot.text
    counts = {p["name"]: p.get("valueInteger") for p in snapshot.json()["parameter"]}
    assert counts["persons"] == 5
    truncated = await client.post(
        "/$load-iees",
        content=b'{"record_type":"header","file_id":"x","snapshot_date":"2025-07-01","mode":"full"}\n',
        headers={"Content-Type": "application/x-ndjson"},
    )
    assert truncated.status_code == 422
    assert truncated.json()["resourceType"] == "OperationOutcome"
    wrong = await client.post("/$load-iees", content=b"x", headers={"Content-Type": "image/png"})
    assert wrong.status_code == 415


def test_the_command(clean_database: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "fhir_server",
            "load",
            "iees",
            str(HL7),
            "--acks",
            str(tmp_path / "acks"),
        ],
        env={**os.environ, "SDOH_FHIR_DATABASE_URL": clean_database},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stderr  # some messages got AE and AR
    assert "10 messages (7 AA, 2 AE, 1 AR), 5 applied" in result.stdout
    assert "EXAMPLEMAN" not in result.stdout + result.stderr
    assert (tmp_path / "acks").read_bytes().count(b"\x0b") == 10
