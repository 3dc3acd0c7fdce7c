"""Search benchmark: _include/_revinclude, 2-level chains (c=16) and Location?near over 20,000.

Runs against the database bench_rest.py built (1 million resources or more). It first brings the
Locations up to 20,000 (positions spread over Kentucky, posted as transaction Bundles), then
drives ``sdoh-fhir serve`` with wrk on random residents and points:

- ``ServiceRequest?subject=Patient/x&_include=ServiceRequest:subject&_revinclude=Task:focus``
- ``Task?focus:ServiceRequest.subject:Patient.identifier=system|value`` (two links)
- ``Location?near=lat|lon|10|km&_count=20``

    python bench/bench_search.py --data-dir /tmp/sdoh-bench

Prints the figures; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_rest import _RANDOM_PATHS, _start, _stop, _wait, conninfo, wrk  # noqa: E402

from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402

LOCATIONS = 20_000
# Kentucky's bounding box, near enough.
_LAT = (36.5, 39.1)
_LON = (-89.5, -81.9)


def _add_locations(base: str, have: int, rng: random.Random) -> None:
    with httpx.Client(base_url=base, timeout=120) as client:
        while have < LOCATIONS:
            batch = min(100, LOCATIONS - have)
            entries = [
                {
                    "request": {"method": "POST", "url": "Location"},
                    "resource": {
                        "resourceType": "Location",
                        "status": "active",
                        "name": f"Site {have + n}",
                        "position": {
                            "latitude": round(rng.uniform(*_LAT), 5),
                            "longitude": round(rng.uniform(*_LON), 5),
                        },
                    },
                }
                for n in range(batch)
            ]
            bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
            response = client.post("/", json=bundle, headers={"Prefer": "return=minimal"})
            response.raise_for_status()
            have += batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-bench"))
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8182)
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")
    rng = random.Random(11)

    embedded = EmbeddedPostgres(options.data_dir)
    url = embedded.start()
    results = {}
    try:
        upgrade(url)
        dsn = conninfo(url)
        env = {**os.environ, "SDOH_FHIR_DATABASE_URL": url}
        base = f"http://127.0.0.1:{options.port}"
        command = [sys.executable, "-m", "fhir_server", "serve", "--port", str(options.port)]
        server = _start([*command, "--workers", str(options.workers)], env)
        try:
            _wait(f"{base}/metadata", server)
            with psycopg.connect(dsn) as conn:
                have = conn.execute(
                    "SELECT count(DISTINCT rid) FROM idx_geo WHERE resource_type = 'Location'"
                ).fetchone()[0]  # type: ignore[index]
            if have < LOCATIONS:
                print(f"adding {LOCATIONS - have:,} Locations")
                _add_locations(base, have, rng)
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ANALYZE")
                residents = conn.execute(
                    "SELECT p.id, t.system, t.code FROM resource p"
                    " JOIN idx_token t ON t.resource_type = 'Patient' AND t.rid = p.rid"
                    " AND t.param = 'identifier'"
                    " WHERE p.resource_type = 'Patient' AND NOT p.deleted"
                    " AND EXISTS (SELECT 1 FROM idx_reference r"
                    " WHERE r.resource_type = 'ServiceRequest' AND r.param = 'subject'"
                    " AND r.target_type = 'Patient' AND r.target_id = p.id)"
                    " ORDER BY random() LIMIT 3000"
                ).fetchall()
            work = Path(tempfile.mkdtemp())
            paths = {
                "include+revinclude": [
                    f"/ServiceRequest?subject=Patient/{pid}&_include=ServiceRequest:subject"
                    "&_revinclude=Task:focus"
                    for pid, _, _ in residents
                ],
                "chain, 2 links": [
                    f"/Task?focus:ServiceRequest.subject:Patient.identifier={system}|{code}"
                    for _, system, code in residents
                ],
                "near 10 km": [
                    f"/Location?near={rng.uniform(*_LAT):.4f}|{rng.uniform(*_LON):.4f}|10|km"
                    "&_count=20"
                    for _ in range(3000)
                ],
            }
            for name, lines in paths.items():
                file = work / f"{name.split()[0]}.txt"
                file.write_text("".join(line + "\n" for line in lines))
                wrk(base, _RANDOM_PATHS, [str(file)], 3, options.connections)  # warm-up
                results[name] = wrk(
                    base, _RANDOM_PATHS, [str(file)], options.duration, options.connections
                )
        finally:
            _stop(server)
    finally:
        embedded.stop()

    print(
        f"\nconcurrency {options.connections}, {options.workers} workers, "
        f"{options.duration}s per run, {os.cpu_count()} cores"
    )
    print(f"{'':20} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for name, r in results.items():
        print(
            f"{name:20} {r['rps']:9,.0f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['errors']:7.0f}"
        )


if __name__ == "__main__":
    main()
