"""Transaction benchmark: resources/s written by referral transaction Bundles of 10-100 entries.

Each Bundle carries a few residents' records as the referral platform sends them: the Patient
(conditional create on its state identifier), screenings, Conditions, Goals, Consent and the
referral (ServiceRequest, Task, Procedure), every reference between them a ``urn:uuid:`` that
the server rewrites. It runs against the database bench_rest.py built (1 million resources or
more), with ``sdoh-fhir serve`` and wrk posting the Bundles.

    python bench/bench_transaction.py --data-dir /tmp/sdoh-bench

Prints the figures; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_rest import _REPORT, _start, _stop, _wait, conninfo, wrk  # noqa: E402

from fhir_server.ingest.synthetic import generate_population  # noqa: E402
from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402

_NETWORK = {"Organization", "Location", "HealthcareService", "Practitioner", "PractitionerRole"}

_BODIES = (
    """
local bodies = {}
local next_body = 1
init = function(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  next_body = math.random(#bodies)
end
request = function()
  next_body = next_body % #bodies + 1
  return wrk.format("POST", "/", {["Content-Type"] = "application/fhir+json",
    ["Prefer"] = "return=minimal"}, bodies[next_body])
end
"""
    + _REPORT
)


def referral_bundles(n_patients: int, seed: int) -> list[tuple[bytes, int]]:
    """Transaction Bundles of 1-8 residents each (10-100 entries) and their entry counts."""
    rng = random.Random(seed)
    groups: list[list[dict[str, Any]]] = []
    for resource in generate_population(n_patients, seed=seed):
        if resource["resourceType"] in _NETWORK:
            continue
        if resource["resourceType"] == "Patient":
            groups.append([])
        groups[-1].append(resource)
    bundles = []
    while groups:
        take = rng.randint(1, 8)
        chosen, groups = groups[:take], groups[take:]
        entries = _entries([r for group in chosen for r in group])
        if not 10 <= len(entries) <= 100:
            continue
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        bundles.append((orjson.dumps(bundle), len(entries)))
    return bundles


def _entries(resources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    urns = {f"{r['resourceType']}/{r['id']}": f"urn:uuid:{uuid.uuid4()}" for r in resources}
    entries = []
    for resource in resources:
        body = _rewrite({k: v for k, v in resource.items() if k != "id"}, urns)
        request: dict[str, Any] = {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] == "Patient":
            identifier = resource["identifier"][0]
            request["ifNoneExist"] = f"identifier={identifier['system']}|{identifier['value']}"
        entries.append(
            {
                "fullUrl": urns[f"{resource['resourceType']}/{resource['id']}"],
                "resource": body,
                "request": request,
            }
        )
    return entries


def _rewrite(value: Any, urns: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            k: urns.get(v, v) if k == "reference" and isinstance(v, str) else _rewrite(v, urns)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rewrite(v, urns) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-bench"))
    parser.add_argument("--patients", type=int, default=4000, help="residents in the Bundles")
    parser.add_argument("--duration", type=int, default=20, help="seconds of posting")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8181)
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    bundles = referral_bundles(options.patients, seed=int.from_bytes(os.urandom(4), "big"))
    sizes = [n for _, n in bundles]
    mean_entries = sum(sizes) / len(sizes)
    work = Path(tempfile.mkdtemp())
    (work / "bundles.ndjson").write_bytes(b"\n".join(body for body, _ in bundles) + b"\n")
    print(
        f"{len(bundles)} transaction Bundles, {min(sizes)}-{max(sizes)} entries "
        f"(mean {mean_entries:.1f})"
    )

    embedded = EmbeddedPostgres(options.data_dir)
    url = embedded.start()
    try:
        upgrade(url)
        with psycopg.connect(conninfo(url)) as conn:
            stored = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
        print(f"stored resources before: {stored:,}")
        env = {**os.environ, "SDOH_FHIR_DATABASE_URL": url}
        base = f"http://127.0.0.1:{options.port}"
        command = [sys.executable, "-m", "fhir_server", "serve", "--port", str(options.port)]
        server = _start([*command, "--workers", str(options.workers)], env)
        try:
            _wait(f"{base}/metadata", server)
            args = [str(work / "bundles.ndjson")]
            wrk(base, _BODIES, args, 3, options.connections)  # warm-up
            postmaster = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
            result = wrk(
                base,
                _BODIES,
                args,
                options.duration,
                options.connections,
                cpu_of={"server": server.pid, "postgres": postmaster},
            )
        finally:
            _stop(server)
    finally:
        embedded.stop()

    print(
        f"\nconcurrency {options.connections}, {options.workers} workers, "
        f"{options.duration}s, {os.cpu_count()} cores"
    )
    print(
        f"transactions/s {result['rps']:,.1f}  resources/s {result['rps'] * mean_entries:,.0f}  "
        f"p50 {result['p50_ms']:.0f} ms  p95 {result['p95_ms']:.0f} ms  "
        f"errors {result['errors']:.0f}"
    )
    # CPU per resource: what the 2 cores must fit, so the figure to compare across noisy runs.
    print(
        f"CPU ms per resource: server {result['cpu_server'] / mean_entries:.3f}  "
        f"postgres {result['cpu_postgres'] / mean_entries:.3f}  "
        f"(other work on the machine: {result['other_cores']:.2f} cores)"
    )


if __name__ == "__main__":
    main()
