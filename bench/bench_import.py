"""Bulk import benchmark: ``sdoh-fhir load ndjson`` beside a raw COPY of the same JSON.

Writes a synthetic SDoH population of N resources as NDJSON (kept in the data directory for the
next run), empties the database of an embedded PostgreSQL in the data directory, loads the file
with the command line (``python -m fhir_server load ndjson``) and, in the same run, COPYs the
same lines into a plain one-column table: the floor of any loader. Then it replays the rows the
load wrote (every table, dumped and COPYed back in one transaction, the indexes dropped and rebuilt
and the tables analyzed, as the load does): what PostgreSQL alone needs for this storage shape,
the ceiling of any loader with no Python at all. While the load runs it notes
when the index rebuild and ANALYZE begin (from ``pg_stat_activity``) and the CPU time of the
loader, its worker processes and the PostgreSQL backends, to show where the time goes. Run from the
repository root:

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.ingest.synthetic import generate_population  # noqa: E402
from fhir_server.storage.bulk import TABLES, BulkWriter  # noqa: E402
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


def replay_rows(dsn: str, directory: Path) -> tuple[float, dict[str, float]]:
    """Seconds to write back, as an initial load does, every row the load wrote; and by phase.

    The rows are dumped first (binary COPY into files in ``directory``, not timed)."""
    files = {table: directory / f"replay-{table}.bin" for table, _ in TABLES}
    with psycopg.connect(dsn) as conn:
        for table, path in files.items():
            with (
                path.open("wb") as out,
                conn.cursor().copy(f"COPY {table} TO STDOUT (FORMAT binary)") as copy,
            ):
                for block in copy:
                    out.write(block)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(files)}")
        conn.execute("CHECKPOINT")
    writer = BulkWriter(dsn)
    phases: dict[str, float] = {}
    try:
        started = time.perf_counter()
        if not writer.start():
            sys.exit("the replay could not take the empty-database path")
        with writer.conn.cursor() as cursor:
            for table, path in files.items():
                with cursor.copy(f"COPY {table} FROM STDIN (FORMAT binary, FREEZE)") as copy:
                    with path.open("rb") as stream:
                        while block := stream.read(1 << 20):
                            copy.write(block)
        phases["COPY every table"] = time.perf_counter() - started
        writer.finish()  # rebuilds the indexes, analyzes, commits
        elapsed = time.perf_counter() - started
        phases["indexes, ANALYZE, commit"] = elapsed - phases["COPY every table"]
    finally:
        writer.close()
        for path in files.values():
            path.unlink(missing_ok=True)
    return elapsed, phases


@dataclass
class Watch:
    """Phases of the load (from pg_stat_activity) and CPU seconds per process group."""

    dsn: str
    postmaster: int
    loader: int
    started: float
    phases: dict[str, float] = field(default_factory=dict)
    cpu: dict[int, tuple[str, float]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.done.wait(0.5):
                self._sample()
                for (query,) in conn.execute(
                    "SELECT query FROM pg_stat_activity WHERE state = 'active'"
                    " AND pid <> pg_backend_pid() AND datname = current_database()"
                ):
                    words = (query or "").split()
                    if words[:2] in (["CREATE", "INDEX"], ["CREATE", "UNIQUE"], ["ALTER", "TABLE"]):
                        self.phases.setdefault("index rebuild", time.perf_counter() - self.started)
                    elif words[:1] == ["ANALYZE"]:
                        self.phases.setdefault("analyze", time.perf_counter() - self.started)

    def _sample(self) -> None:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, parent = int(entry), int(stat[1])
            if pid == self.loader:
                group = "loader (reads, writes)"
            elif parent == self.loader:
                group = "loader workers (validate, index, encode)"
            elif parent == self.postmaster:
                group = "PostgreSQL"
            else:
                continue
            ticks = int(stat[11]) + int(stat[12])
            self.cpu[pid] = (group, ticks / os.sysconf("SC_CLK_TCK"))

    def report(self, elapsed: float, stored: int) -> None:
        marks = sorted(self.phases.items(), key=lambda item: item[1])
        edges = [("read, validate, encode, COPY", 0.0), *marks, ("end", elapsed)]
        for (name, start), (_, end) in itertools.pairwise(edges):
            print(f"  {name}: {end - start:,.1f} s")
        totals: dict[str, float] = {}
        for group, seconds in self.cpu.values():
            totals[group] = totals.get(group, 0.0) + seconds
        for group, seconds in sorted(totals.items()):
            print(f"  CPU {group}: {seconds:,.1f} s, {seconds / stored * 1e6:,.0f} us a resource")


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
        child = subprocess.Popen(
            command,
            env={**os.environ, "SDOH_FHIR_DATABASE_URL": url, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        postmaster = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
        watch = Watch(dsn, postmaster, child.pid, started)
        watcher = threading.Thread(target=watch.run, daemon=True)
        watcher.start()
        stdout, _ = child.communicate()
        elapsed = time.perf_counter() - started
        watch.done.set()
        watcher.join()
        print(stdout.strip())
        if child.returncode != 0:
            sys.exit(f"the load exited with {child.returncode}")
        with psycopg.connect(dsn) as conn:
            stored = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
        load_rate = stored / elapsed
        print(
            f"load ndjson: {stored:,} resources in {elapsed:,.1f} s (the whole command):"
            f" {load_rate:,.0f} resources/s on {os.cpu_count()} CPUs"
        )
        watch.report(elapsed, stored)
        replay_seconds, phases = replay_rows(dsn, data_dir)
        replay_rate = stored / replay_seconds
        print(
            f"PostgreSQL alone, replaying the rows the load wrote: {replay_seconds:,.1f} s:"
            f" {replay_rate:,.0f} resources/s (the ceiling of this storage shape)"
        )
        for name, seconds in phases.items():
            print(f"  {name}: {seconds:,.1f} s")
        lines, copy_seconds = raw_copy(dsn, population)
        copy_rate = lines / copy_seconds
        print(
            f"raw COPY of the same lines into one text column: {lines:,} in {copy_seconds:,.1f} s:"
            f" {copy_rate:,.0f} resources/s"
        )
        print(f"load / raw COPY: {load_rate / copy_rate:.1%}")
        print(f"load / PostgreSQL alone: {load_rate / replay_rate:.1%}")
    finally:
        embedded.stop()


if __name__ == "__main__":
    main()
