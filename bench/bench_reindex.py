"""Reindex benchmark: how long a new custom SearchParameter takes to become searchable.

Posts a SearchParameter on Patient (``Patient.address.postalCode`` under a new code) to a
server on the database bench_rest.py built, then follows its reindex job to the end: resources
reindexed per second (every index row of each Patient made anew), and the time from the POST to
the first search that answers.

    python bench/bench_reindex.py --data-dir /tmp/sdoh-bench

Prints the figures; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_rest import _start, _stop, _wait, conninfo  # noqa: E402

from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402

_JOB = re.compile(r"\$reindex-poll-status/([0-9a-f-]{36})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-bench"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8182)
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]

    embedded = EmbeddedPostgres(options.data_dir)
    url = embedded.start()
    try:
        upgrade(url)
        with psycopg.connect(conninfo(url)) as conn:
            row = conn.execute(
                "SELECT count(*) FROM resource WHERE resource_type = 'Patient' AND NOT deleted"
            ).fetchone()
        patients = row[0] if row else 0
        print(f"stored Patients: {patients:,}")
        env = {**os.environ, "SDOH_FHIR_DATABASE_URL": url}
        base = f"http://127.0.0.1:{options.port}"
        command = [sys.executable, "-m", "fhir_server", "serve", "--port", str(options.port)]
        server = _start([*command, "--workers", str(options.workers)], env)
        try:
            _wait(f"{base}/metadata", server)
            _run(base, url)
        finally:
            _stop(server)
    finally:
        embedded.stop()


def _run(base: str, url: str) -> None:
    code = f"bench-zip-{uuid.uuid4().hex[:8]}"
    definition = {
        "resourceType": "SearchParameter",
        "url": f"http://example.org/SearchParameter/{code}",
        "name": "BenchZip",
        "status": "active",
        "description": "Benchmark: the postal code under a new code",
        "code": code,
        "base": ["Patient"],
        "type": "string",
        "expression": "Patient.address.postalCode",
    }
    query = f"{base}/Patient?{code}=4&_count=1"
    with httpx.Client(timeout=60, headers={"Content-Type": "application/fhir+json"}) as http:
        started = time.perf_counter()
        posted = http.post(f"{base}/SearchParameter", json=definition)
        posted.raise_for_status()
        job = None
        while job is None:
            match = _JOB.search(http.get(query).text)
            job = match.group(1) if match else None
            time.sleep(0.05)
        while True:
            status = http.get(f"{base}/$reindex-poll-status/{job}")
            if status.status_code != 202:
                break
            time.sleep(0.5)
        status.raise_for_status()
        while http.get(query).status_code != 200:
            time.sleep(0.05)
        usable = time.perf_counter() - started
        http.delete(f"{base}/SearchParameter/{posted.json()['id']}")
    with psycopg.connect(conninfo(url)) as conn:
        row = conn.execute(
            "SELECT (result -> 'indexed' ->> 'Patient')::int,"
            " (result ->> 'scanSeconds')::float,"
            " extract(epoch FROM (finished_at - started_at))"
            " FROM job WHERE id = %s",
            (job,),
        ).fetchone()
    assert row is not None
    indexed, scanning, total = row
    print(f"\n{os.cpu_count()} cores")
    print(
        f"reindexed {indexed:,} Patients: {indexed / float(scanning):,.0f} resources/s"
        f" (scan {float(scanning):.1f} s; the job {float(total):.1f} s in all, with its wait"
        " for every process to reload and its last pass over recent writes)"
    )
    print(f"from the POST to the first answering search: {usable:.1f} s")


if __name__ == "__main__":
    main()
