"""Directory benchmark: proximity searches of a 211 resource directory over 50,000 services.

Fills a database with HealthcareServices, their Organizations and Locations spread over Kentucky
(denser around Louisville, Lexington and Bowling Green; about one service in ten inactive;
categories from three code systems), written as NDJSON and bulk-loaded with
``fhir_server.ingest.ndjson.load_ndjson``. Then starts ``sdoh-fhir serve`` on it and times, one
request at a time over HTTP, searches from random points where residents live:

- ``HealthcareService?location.near=lat|lon|10|mi`` (nearest first, active only by default)
- the same ``&service-category=system|code``
- ``Location?near=lat|lon|10|mi``

    flock /tmp/bench.lock python bench/bench_directory.py
    flock /tmp/bench.lock python bench/bench_directory.py --data-dir /tmp/sdoh-directory

An embedded PostgreSQL in a temporary directory unless ``--data-dir`` (kept, and loaded only
once) or ``--database-url`` (an empty database) is given. Prints p50/p95/p99 and the rows each
search returned; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_rest import _start, _stop, _wait  # noqa: E402

from fhir_server.ingest.ndjson import RefusedLine, load_ndjson  # noqa: E402
from fhir_server.storage.database import libpq_url  # noqa: E402
from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402

SERVICES = 50_000
# Kentucky's bounding box, near enough.
_LAT = (36.5, 39.1)
_LON = (-89.5, -81.9)
# (weight, latitude, longitude, spread in degrees): where people, and so services, are.
_CITIES = (
    (0.30, 38.2527, -85.7585, 0.12),  # Louisville
    (0.18, 38.0406, -84.5037, 0.10),  # Lexington
    (0.08, 36.9685, -86.4808, 0.07),  # Bowling Green
)
_CATEGORY = "http://terminology.hl7.org/CodeSystem/service-category"
_SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
_TAXONOMY = "https://211taxonomy.org"
_CATEGORIES = (
    *((_CATEGORY, str(code)) for code in range(1, 36)),
    *(
        (_SDOHCC, code)
        for code in (
            "food-insecurity",
            "housing-instability",
            "transportation-insecurity",
            "financial-insecurity",
            "utility-insecurity",
            "inadequate-housing",
        )
    ),
    *((_TAXONOMY, f"B{letter}-{n:04d}") for letter in "DHT" for n in range(100, 1100, 100)),
)


def _point(rng: random.Random) -> tuple[float, float]:
    """A position in Kentucky, drawn around the cities more often than elsewhere."""
    pick = rng.random()
    for weight, lat, lon, spread in _CITIES:
        if pick < weight:
            return (
                min(max(rng.gauss(lat, spread), _LAT[0]), _LAT[1]),
                min(max(rng.gauss(lon, spread * 1.3), _LON[0]), _LON[1]),
            )
        pick -= weight
    return rng.uniform(*_LAT), rng.uniform(*_LON)


def _directory(services: int, rng: random.Random) -> Iterator[dict[str, Any]]:
    """Organizations with 1-4 sites each and 1-8 services, until ``services`` exist."""
    made = org = 0
    while made < services:
        org += 1
        lat, lon = _point(rng)
        yield {
            "resourceType": "Organization",
            "id": f"org-{org}",
            "active": True,
            "name": f"Community Agency {org}",
            "address": [{"city": rng.choice(("Louisville", "Lexington", "Bowling Green"))}],
        }
        sites = []
        for site in range(rng.randint(1, 4)):
            sites.append(f"loc-{org}-{site}")
            yield {
                "resourceType": "Location",
                "id": sites[-1],
                "status": "active",
                "name": f"Agency {org} site {site}",
                "position": {
                    "latitude": round(lat + rng.gauss(0, 0.02), 6),
                    "longitude": round(lon + rng.gauss(0, 0.02), 6),
                },
                "managingOrganization": {"reference": f"Organization/org-{org}"},
            }
        for _ in range(min(rng.randint(1, 8), services - made)):
            made += 1
            system, code = rng.choice(_CATEGORIES)
            service: dict[str, Any] = {
                "resourceType": "HealthcareService",
                "id": f"hs-{made}",
                "providedBy": {"reference": f"Organization/org-{org}"},
                "category": [{"coding": [{"system": system, "code": code}]}],
                "name": f"Service {made} of agency {org}",
                "location": [
                    {"reference": f"Location/{s}"}
                    for s in rng.sample(sites, k=min(len(sites), rng.randint(1, 2)))
                ],
            }
            if rng.random() < 0.9:
                service["active"] = rng.random() < 0.95  # about 1 in 10 inactive in all
            yield service


def _load(url: str, services: int, rng: random.Random) -> None:
    with tempfile.TemporaryDirectory() as work:
        path = Path(work) / "directory.ndjson"
        with path.open("wb") as out:
            for resource in _directory(services, rng):
                out.write(orjson.dumps(resource) + b"\n")
        refused: list[RefusedLine] = []
        summary = load_ndjson(libpq_url(url), [path], on_refused=refused.append)
        print(f"loaded {summary.created:,} resources in {summary.seconds:.1f} s")
        if refused:
            sys.exit(f"{len(refused)} lines refused, the first: {refused[0]}")


def _loaded(url: str) -> int:
    with psycopg.connect(libpq_url(url)) as conn:
        row = conn.execute(
            "SELECT count(*) FROM resource WHERE resource_type = 'HealthcareService'"
        ).fetchone()
    return int(row[0]) if row else 0


def _time(client: httpx.Client, paths: list[str]) -> tuple[list[float], list[int]]:
    """Milliseconds and match entries of each search, one at a time."""
    elapsed, rows = [], []
    for path in paths:
        started = time.perf_counter()
        response = client.get(path)
        elapsed.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        entries = response.json().get("entry", [])
        rows.append(sum(1 for e in entries if e["search"]["mode"] == "match"))
    return elapsed, rows


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(pct / 100 * len(ordered)) - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="embedded PostgreSQL here (kept)")
    parser.add_argument("--database-url", help="an empty database instead of the embedded one")
    parser.add_argument("--services", type=int, default=SERVICES)
    parser.add_argument("--searches", type=int, default=300, help="per kind of search")
    parser.add_argument("--port", type=int, default=8183)
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    rng = random.Random(5)

    temporary = None
    embedded = None
    if options.database_url:
        url = options.database_url
    else:
        if options.data_dir is None:
            temporary = tempfile.TemporaryDirectory()
            options.data_dir = Path(temporary.name)
        embedded = EmbeddedPostgres(options.data_dir, durable=False)
        url = embedded.start()
    results: dict[str, tuple[list[float], list[int]]] = {}
    try:
        upgrade(url)
        if _loaded(url) < options.services:
            _load(url, options.services, rng)
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            conn.execute("ANALYZE")
        env = {**os.environ, "SDOH_FHIR_DATABASE_URL": url}
        base = f"http://127.0.0.1:{options.port}"
        command = [sys.executable, "-m", "fhir_server", "serve", "--port", str(options.port)]
        server = _start(command, env)
        try:
            _wait(f"{base}/metadata", server)
            points = [_point(rng) for _ in range(options.searches)]
            near = [f"{lat:.4f}|{lon:.4f}|10|mi" for lat, lon in points]
            categories = [rng.choice(_CATEGORIES) for _ in points]
            searches = {
                "HealthcareService location.near": [
                    f"/HealthcareService?location.near={n}" for n in near
                ],
                "  + service-category": [
                    f"/HealthcareService?location.near={n}&service-category={s}|{c}"
                    for n, (s, c) in zip(near, categories, strict=True)
                ],
                "Location near": [f"/Location?near={n}" for n in near],
            }
            with httpx.Client(base_url=base, timeout=60) as client:
                for name, paths in searches.items():
                    _time(client, paths[:20])  # warm-up
                    results[name] = _time(client, paths)
        finally:
            _stop(server)
    finally:
        if embedded is not None:
            embedded.stop()
        if temporary is not None:
            temporary.cleanup()

    print(f"\n{options.services:,} services, {options.searches} searches each, one at a time")
    print(f"{'':34} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'rows/page':>10} {'empty':>6}")
    for name, (elapsed, rows) in results.items():
        print(
            f"{name:34} {_percentile(elapsed, 50):8.1f} {_percentile(elapsed, 95):8.1f}"
            f" {_percentile(elapsed, 99):8.1f} {statistics.mean(rows):10.1f}"
            f" {sum(1 for r in rows if r == 0):6d}"
        )


if __name__ == "__main__":
    main()
