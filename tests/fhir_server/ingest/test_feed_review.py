"""Review of the state-feed slice (issue 5): each test pins down one problem found in review,
as the behaviour a user of the feeds depends on. They fail until the problem is fixed."""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import shutil
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from fhir_server.ingest.hsds import load_hsds, load_mapping
from fhir_server.ingest.iees import IeesApplier, SnapshotRefused
from fhir_server.ingest.iees_files import load_iees_paths
from fhir_server.ingest.iees_pipeline import IeesPipeline
from fhir_server.storage.database import libpq_url
from mappers.hsds import Feed, map_directory
from mappers.iees import (
    InvalidSnapshot,
    group_id,
    map_snapshot,
    parse_csv,
    parse_ndjson,
    patient_id,
)
from mappers.iees.fhir import fhir_id

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = ROOT.parent / "shared" / "feeds" / "iees" / "samples"
HL7 = SAMPLES / "hl7v2"
KY = ROOT.parent / "shared" / "feeds" / "hsds" / "ky-authored-hsds-3.1"

needs_iees = pytest.mark.skipif(
    not HL7.is_dir(), reason="../shared/feeds/iees is not beside the checkout"
)

CASE = group_id("1200345678")


def sample(number: str) -> bytes:
    (path,) = HL7.glob(f"{number}_*.hl7")
    return path.read_bytes()


def code(ack: bytes) -> str:
    msa = next(s for s in ack.split(b"\r") if s.startswith(b"MSA|"))
    return msa.split(b"|")[1].decode()


def as_person(message: bytes, old: str, new: str, control: str) -> bytes:
    """``message`` about IndividualID ``new`` instead of ``old``, under MSH-10 ``control``."""
    lines = message.decode().split("\n")
    header = lines[0].split("|")
    header[9] = control
    lines[0] = "|".join(header)
    return "\n".join(lines).replace(f"{old}^^^KYIEES^PI", f"{new}^^^KYIEES^PI").encode()


def stored(url: str, resource_type: str, id: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT body FROM resource WHERE resource_type = %s AND id = %s", (resource_type, id)
        ).fetchone()
    assert row is not None, f"{resource_type}/{id} is not stored"
    body: dict[str, Any] = json.loads(row[0])
    return body


def members(url: str) -> dict[str, bool]:
    """The household's members: reference -> active."""
    group = stored(url, "Group", CASE)
    return {m["entity"]["reference"]: not m.get("inactive") for m in group["member"]}


# -- MLLP / group commit -------------------------------------------------------------------------


@needs_iees
async def test_the_pipeline_recovers_when_its_database_connection_drops(
    clean_database: str,
) -> None:
    """A database restart or failover (or an idle-connection reaper) kills the applier's one
    connection. The listener must reconnect: a message that arrives afterwards is applied and
    gets AA. Today every later message gets no ACK at all, until someone restarts the
    listener (and ``$load-iees`` answers 503 until the server restarts)."""
    url = libpq_url(clean_database)
    with psycopg.connect(url, autocommit=True) as admin:
        before = [pid for (pid,) in admin.execute("SELECT pid FROM pg_stat_activity")]
        pipeline = IeesPipeline(url)
        await pipeline.start()
        try:
            assert code(await pipeline.message(sample("01"))) == "AA"
            # The connections the pipeline opened are dropped, as a restart would drop them.
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND backend_type = 'client backend' AND NOT pid = ANY(%s)",
                (before,),
            )
            await asyncio.sleep(0.2)
            answers = []
            for number in ("02", "03"):
                try:
                    answers.append(code(await pipeline.message(sample(number))))
                except Exception as exc:  # FeedUnavailable today
                    answers.append(type(exc).__name__)
            assert answers == ["AA", "AA"]
        finally:
            await pipeline.close()


@needs_iees
def test_two_loads_adding_members_to_one_household_lose_neither(clean_database: str) -> None:
    """The MLLP listener and ``sdoh-fhir load iees`` (or two listener processes) apply two
    people of one case at once. Each reads the household Group before the per-resource lock
    that the write takes, so the second write puts back the member list it read, without the
    first one's new member: a child silently drops out of the household."""
    url = libpq_url(clean_database)
    seed = IeesApplier(url)
    try:
        assert seed.apply_messages([sample("01")])[0].code == "AA"
    finally:
        seed.close()
    child = sample("02")  # 900000103 joins case 1200345678
    other = as_person(sample("02"), "900000103", "900000105", "REVIEW-105")
    first, second = IeesApplier(url), IeesApplier(url)
    codes: list[str] = []
    with psycopg.connect(url) as blocker:
        # Hold the Group's per-resource write lock (the one BulkWriter and REST updates take),
        # so both loads read the Group and then wait to write it.
        blocker.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('Group/' || %s, 0))", (CASE,)
        )
        threads = [
            threading.Thread(
                target=lambda a=applier, m=message: codes.extend(
                    r.code for r in a.apply_messages([m])
                )
            )
            for applier, message in ((first, child), (second, other))
        ]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            row = blocker.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()
            if row and row[0] >= 2:
                break
            time.sleep(0.05)
        blocker.rollback()
    for thread in threads:
        thread.join(30)
    first.close()
    second.close()
    assert codes == ["AA", "AA"]
    household = members(url)
    assert household.get(f"Patient/{patient_id('900000103')}") is True
    assert household.get(f"Patient/{patient_id('900000105')}") is True


# -- snapshots ------------------------------------------------------------------------------------


def _snapshot(date: str, people: int) -> bytes:
    """A full NDJSON snapshot of ``people`` one-person SNAP cases, last updated on its date."""
    lines: list[dict[str, Any]] = [
        {
            "record_type": "header",
            "file_id": f"REVIEW-{date}",
            "snapshot_date": date,
            "mode": "full",
        }
    ]
    for n in range(people):
        individual = f"9000003{n:02d}"
        lines.append(
            {
                "record_type": "person",
                "last_updated": f"{date}T00:00:00-04:00",
                "individual_id": individual,
                "case_number": f"12009990{n:02d}",
                "relationship_to_head": "SEL",
                "head_individual_id": individual,
                "family": "SAMPLESON",
                "given": ["PAT"],
                "birth_date": "1970-01-01",
                "sex": "F",
                "programs": [
                    {
                        "program": "SNAP",
                        "status": "ACTIVE",
                        "begin_date": "2025-01-01",
                        "end_date": "2026-12-31",
                        "admin_agency": "KYDCBS",
                    }
                ],
            }
        )
    lines.append({"record_type": "trailer", "person_count": people, "merge_count": 0})
    return b"\n".join(json.dumps(line).encode() for line in lines)


@needs_iees
def test_a_full_snapshot_does_not_end_people_updated_after_its_date(clean_database: str) -> None:
    """Rule 3 (ordering) holds for snapshots too. Maria's A31 of 2025-08-15 is newer than the
    2025-07-01 snapshot that does not list her (it was cut before her case existed here, or
    is delivered late over SFTP). The snapshot must not end her Medicaid: today it is ended
    on 2025-06-30 (its start pulled back to that date), cancelled, and she leaves her
    household, with no warning in the summary."""
    url = libpq_url(clean_database)
    applier = IeesApplier(url)
    try:
        old = map_snapshot(parse_ndjson(_snapshot("2025-06-01", 100)))
        applier.apply_snapshot(old)
        assert [r.code for r in applier.apply_messages([sample("01"), sample("03")])] == [
            "AA",
            "AA",
        ]
        late = map_snapshot(parse_ndjson(_snapshot("2025-07-01", 100)))
        summary = applier.apply_snapshot(late)
    finally:
        applier.close()
    medicaid = stored(url, "Coverage", fhir_id("iees-cov", "900000101", "medicaid", "1200345678"))
    assert (medicaid["status"], medicaid["period"]) == (
        "active",
        {"start": "2025-01-01", "end": "2025-12-31"},
    )
    assert members(url)[f"Patient/{patient_id('900000101')}"] is True
    assert summary.ended_persons == 0


@needs_iees
def test_a_csv_snapshot_with_a_truncated_eligibility_file_is_refused(
    clean_database: str, tmp_path: Path
) -> None:
    """The CSV form has no trailer; the counts are checked against ``cases.csv`` only, and
    the safety valve counts only the enrollments of people *absent* from the file. An
    ``eligibility.csv`` cut short in transfer (header only, every person still listed)
    passes both: snapshot semantics then end every listed person's Medicaid, KCHIP and SNAP
    the day before (cancelled), exactly what the README's
    "a truncated full file would otherwise end everyone's enrollment" forbids."""
    url = libpq_url(clean_database)
    folder = tmp_path / "batch"
    shutil.copytree(SAMPLES / "batch", folder)
    applier = IeesApplier(url)
    try:
        applier.apply_snapshot(
            map_snapshot(parse_csv(folder, snapshot_date=dt.date(2025, 7, 1), mode="full"))
        )
        eligibility = folder / "eligibility.csv"
        eligibility.write_text(eligibility.read_text().splitlines()[0] + "\n")
        refused = False
        try:
            applier.apply_snapshot(
                map_snapshot(parse_csv(folder, snapshot_date=dt.date(2025, 7, 2), mode="full"))
            )
        except (SnapshotRefused, InvalidSnapshot):
            refused = True
    finally:
        applier.close()
    medicaid = stored(url, "Coverage", fhir_id("iees-cov", "900000101", "medicaid", "1200345678"))
    assert (medicaid["status"], members(url)[f"Patient/{patient_id('900000101')}"]) == (
        "active",
        True,
    )
    assert refused


# -- merges ---------------------------------------------------------------------------------------


@needs_iees
def test_a_message_for_a_merged_away_individual_does_not_undo_the_merge(
    clean_database: str,
) -> None:
    """After an A40 retired 900000199 into 900000104, a late A31 still naming 900000199 (the
    sender's queue held it; rule 6 says nothing lets it revive the old record) puts the
    retired Patient back in the household as an active member and gives it new active
    coverage, beside the survivor's: two people for one child again. It must instead be
    refused (AE 204, unknown key identifier) or applied to the survivor."""
    url = libpq_url(clean_database)
    applier = IeesApplier(url)
    try:
        retired = as_person(sample("02"), "900000103", "900000199", "R-199")
        survivor = as_person(sample("02"), "900000103", "900000104", "R-104")
        replies = applier.apply_messages([sample("01"), retired, survivor, sample("06")])
        assert [r.code for r in replies] == ["AA"] * 4
        late = as_person(sample("02"), "900000103", "900000199", "R-199-late").replace(
            b"20250701092955-0400", b"20251001092955-0400"
        )
        (reply,) = applier.apply_messages([late])
    finally:
        applier.close()
    # The retired record stays out of the household, and its coverage stays the survivor's.
    assert members(url).get(f"Patient/{patient_id('900000199')}") in (None, False)
    coverage = stored(url, "Coverage", fhir_id("iees-cov", "900000199", "kchip", "1200345678"))
    assert coverage["beneficiary"]["reference"] != f"Patient/{patient_id('900000199')}"


# -- HL7 files -----------------------------------------------------------------------------------


@needs_iees
@pytest.mark.parametrize("lead", [b"\xef\xbb\xbf", b" ", b"\x00"], ids=["bom", "space", "nul"])
def test_no_message_of_a_file_is_dropped_silently(
    clean_database: str, tmp_path: Path, lead: bytes
) -> None:
    """An export with a UTF-8 byte-order mark (Windows tools write one) or any byte before the
    first MSH: ``split_messages`` keeps only what follows each later MSH, so the file's first
    message gets no ACK, no dead letter and no count. The operator sees "1 message, AA" for
    a file of two; Maria's record never arrives. Every message must be answered (rule 7)."""
    path = tmp_path / "export.hl7"
    path.write_bytes(lead + sample("01") + sample("02"))
    summary = load_iees_paths(libpq_url(clean_database), [path])
    assert summary.messages == 2


# -- $load-hsds -----------------------------------------------------------------------------------


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


_ORG = json.dumps([{"id": "o1", "name": "Review Food Pantry"}]).encode()


async def _post_zip(client: httpx.AsyncClient, body: bytes) -> httpx.Response:
    return await client.post(
        "/$load-hsds?feed=review", content=body, headers={"Content-Type": "application/zip"}
    )


def _damaged() -> bytes:
    """Intact directory, damaged data: a truncated or corrupted upload (Bad CRC-32)."""
    good = _zip([("organizations.json", _ORG * 50)])
    at = good.index(b"organizations.json") + len("organizations.json") + 10
    return good[:at] + bytes(b ^ 0xFF for b in good[at : at + 8]) + good[at + 8 :]


def _encrypted() -> bytes:
    """A password-protected zip (the "encrypted" flag, bit 0, in both headers)."""
    body = bytearray(_zip([("organizations.json", _ORG)]))
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        body[body.index(signature) + offset] |= 0x01
    return bytes(body)


@pytest.mark.parametrize(
    "body",
    [
        _damaged(),
        _zip([("a", _ORG), ("a/b.json", _ORG)]),  # a file and a folder of one name
        _encrypted(),
        _zip([("x" * 300 + ".json", _ORG)]),  # a name longer than the file system takes
    ],
    ids=["bad-crc", "file-and-folder", "encrypted", "long-name"],
)
async def test_load_hsds_a_zip_that_cannot_be_extracted_is_a_client_error(
    client: httpx.AsyncClient, body: bytes
) -> None:
    """``_extract`` catches BadZipFile only when opening the archive. Extraction raises
    BadZipFile (CRC), FileExistsError, RuntimeError (encrypted) or OSError (name too long)
    outside any handler: the 211 partner pushing its directory gets a 500 "internal server
    error" (an alert for the operator) instead of a 400 that says what is wrong with the zip."""
    response = await _post_zip(client, body)
    assert response.status_code in (400, 422), response.text


needs_hsds = pytest.mark.skipif(
    not KY.is_dir(), reason="../shared/feeds/hsds is not beside the checkout"
)


@needs_hsds
async def test_a_full_load_of_a_feed_with_no_records_does_not_empty_the_directory(
    client: httpx.AsyncClient, clean_database: str
) -> None:
    """A full load that maps no record at all (the 211 API returned an error object as JSON,
    the wrong file was picked, an empty export) makes every Organization, Location and
    HealthcareService of the directory inactive, and so gone from the searches residents and
    kynectors run (active only by default). The IEES feed has a safety valve for exactly this
    (README: more than 5% ending: stop); the directory has none. It must refuse the load."""
    summary = load_hsds(libpq_url(clean_database), KY, feed="ky-211")
    assert summary.created > 0
    response = await client.post(
        "/$load-hsds?feed=ky-211&mode=full",
        content=b'{"error": "upstream timeout"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (400, 409, 422), response.text
    found = await client.get("/HealthcareService?active=true&_count=1")
    assert found.json().get("entry"), "the directory was emptied"


# -- Provenance -----------------------------------------------------------------------------------


def _cancel_the_waiting_backend(url: str) -> None:
    """Cancel the first backend seen waiting for an advisory lock (within 20 s)."""
    deadline = time.monotonic() + 20
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pg_cancel_backend(pid) FROM pg_locks"
                " WHERE locktype = 'advisory' AND NOT granted LIMIT 1"
            ).fetchone()
            if row is not None:
                return
            time.sleep(0.05)


@needs_hsds
def test_every_version_an_interrupted_hsds_load_committed_has_provenance(
    clean_database: str,
) -> None:
    """A directory load commits a transaction per batch but writes its Provenance only after
    the last one. A load that stops part way (a lock or statement timeout, a lost
    connection, Ctrl-C, which the command says keeps "what was committed") leaves committed
    versions with no Provenance naming the feed and run, and its feed_run row unfinished.
    IEES writes a Provenance in each batch's transaction; the directory should too."""
    url = libpq_url(clean_database)
    first = map_directory(KY, feed=Feed("ky-211"))
    load_mapping(url, first)
    # The next day's export changed every record.
    result = replace(
        first,
        resources=tuple(
            replace(item, resource={**item.resource, "language": "en"}, content_hash="v2")
            for item in first.resources
        ),
    )
    later = result.resources[15]
    with psycopg.connect(url) as blocker:
        # Someone holds one resource of the second batch; the loader's wait for it is
        # cancelled (a statement timeout, an operator, a failover: the load stops there).
        blocker.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            (f"{later.resource_type}/{later.id}",),
        )
        canceller = threading.Thread(target=_cancel_the_waiting_backend, args=(url,))
        canceller.start()
        try:
            with pytest.raises(psycopg.Error):
                load_mapping(url, result, batch_size=10)
        finally:
            canceller.join(30)
            blocker.rollback()
    with psycopg.connect(url) as conn:
        versions = {
            f"{t}/{i}/_history/{v}"
            for t, i, v in conn.execute(
                "SELECT resource_type, id, version_id FROM resource"
                " WHERE resource_type <> 'Provenance'"
            )
        }
        targets = {
            target["reference"]
            for (body,) in conn.execute(
                "SELECT body FROM resource WHERE resource_type = 'Provenance'"
            )
            for target in json.loads(body)["target"]
        }
    assert versions, "the first batch was committed"
    assert versions <= targets
