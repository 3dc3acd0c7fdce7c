"""Bulk import benchmark: ``sdoh-fhir load ndjson`` beside a raw COPY of the same JSON.

Writes a synthetic SDoH population of N resources as NDJSON (kept in the data directory for the
next run), empties the database of an embedded PostgreSQL in the data directory, loads the file
with the command line (``python -m fhir_server load ndjson``) and, in the same run, COPYs the
same lines into a plain one-column table: the floor of any loader. Run from the repository root:

    .venv/bin/python bench/bench_import.py --resources 1000000 --data-dir /tmp/sdoh-import-bench

``--online`` loads with the indexes in place (``load ndjson --online``) instead of the
empty-database path. Prints the figures; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.ingest.synthetic import generate_population  # noqa: E402
from fhir_server.storage.bulk import TABLES  # noqa: E402
from fhir_server.storage.database import libpq_url  # noqa: E402
from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402

RESOURCES_PER_PATIENT = 11.7


def write_population(path: Path, n: int) -> float:
    """The first ``n`` resources of the seeded population as NDJSON; seconds it took."""
    started = time.perf_counter()
    patients = int(n / RESOURCES_PER_PATIENT * 1.1) + 10  # enough: the ratio varies a little
    partial = path.with_suffix(".partial")
    written = 0
    with partial.open("wb") as out:
        for resource in itertools.islice(generate_population(patients, seed=11), n):
            out.write(orjson.dumps(resource) + b"\n")
            written += 1
    if written < n:
        sys.exit(f"the population of {patients} patients has only {written} resources")
    partial.rename(path)
    return time.perf_counter() - started


def empty_database(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(table for table, _ in TABLES)}")
        conn.execute("DROP TABLE IF EXISTS raw_copy")
        conn.execute("CHECKPOINT")


def raw_copy(dsn: str, path: Path) -> tuple[int, float]:
    """Lines and seconds of a COPY of the file's lines into ``raw_copy (body text)``."""
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TABLE raw_copy (body text)")
        conn.commit()
        started = time.perf_counter()
        lines = 0
        with path.open("rb") as stream, conn.cursor() as cur:
            with cur.copy("COPY raw_copy (body) FROM STDIN") as copy:
                while block := stream.read(1 << 20):
                    lines += block.count(b"\n")
                    copy.write(block.replace(b"\\", b"\\\\"))
        conn.commit()
        elapsed = time.perf_counter() - started
        conn.execute("DROP TABLE raw_copy")
        conn.commit()
    return lines, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-import-bench"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--online", action="store_true", help="load with the indexes in place")
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    data_dir: Path = options.data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)

    population = data_dir / f"population-{options.resources}.ndjson"
    if not population.exists():
        seconds = write_population(population, options.resources)
        print(f"wrote {population} ({options.resources:,} resources) in {seconds:,.0f} s")
    size = population.stat().st_size
    print(f"input: {population}, {size / 1e9:.2f} GB, {size / options.resources:,.0f} bytes each")

    embedded = EmbeddedPostgres(data_dir / "db")
    url = embedded.start()
    try:
        upgrade(url)
        dsn = libpq_url(url)
        empty_database(dsn)
        command = [sys.executable, "-m", "fhir_server", "load", "ndjson", str(population)]
        if options.workers is not None:
            command += ["--workers", str(options.workers)]
        if options.online:
            command.append("--online")
        errors = data_dir / "load-errors.ndjson"
        command += ["--errors", str(errors)]
        print("$ " + " ".join(command[1:]))
        started = time.perf_counter()
        result = subprocess.run(
            command,
            env={**os.environ, "SDOH_FHIR_DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        print(result.stdout.strip())
        if result.returncode != 0:
            sys.exit(f"the load exited with {result.returncode}")
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
        load_rate = stored / elapsed
        print(
            f"load ndjson: {stored:,} resources in {elapsed:,.1f} s (the whole command):"
            f" {load_rate:,.0f} resources/s on {os.cpu_count()} CPUs"
        )
        lines, copy_seconds = raw_copy(dsn, population)
        copy_rate = lines / copy_seconds
        print(
            f"raw COPY of the same lines into one text column: {lines:,} in {copy_seconds:,.1f} s:"
            f" {copy_rate:,.0f} resources/s"
        )
        print(f"load / raw COPY: {load_rate / copy_rate:.1%}")
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
