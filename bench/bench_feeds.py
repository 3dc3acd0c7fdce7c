"""Feed benchmark: HSDS directory loads and the IEES HL7 v2 feed over MLLP (issue 5).

``hsds``: loads into an empty database, then an unchanged reload, of

- the Miami 211 export (``../shared/feeds/hsds/miami-211-hsds1``, read in place), and
- a synthetic directory of ``--services`` services (``write_hsds_directory``), then a copy of it
  with 10 % of the services changed and 5 % dropped: about that many updated, and the dropped
  ones (with what only they used) inactivated.

Each load is ``map_directory`` (timed alone: the mapping) then ``load_mapping`` (the writing),
which together are what ``load_hsds`` does. Targets: Miami first load < 20 s; 50,000 services
< 3 min; an unchanged reload < 1/3 of the first load.

``iees``: the real listener (``IeesPipeline`` behind ``MllpServer``) in a process of its own,
so the senders' CPU is not counted against it, and ``--connections`` senders (``MllpClient``)
in this one. Phase A sends an A28 for each of ``--persons`` persons, phase B ``--updates``
A31s (``iter_iees_messages``). One person's messages always go through the same connection
(sharded by the PID-3 IndividualID), so they arrive in order. Every ACK must be AA. Prints
messages/s, latency per message and the CPU of the listener and of PostgreSQL. Target:
1,000 messages/s. ``--profile FILE`` runs the listener under cProfile (event loop and apply
thread) and prints where its time goes.

    flock /tmp/bench.lock .venv/bin/python bench/bench_feeds.py hsds
    flock /tmp/bench.lock .venv/bin/python bench/bench_feeds.py iees --persons 20000 --updates 20000
    flock /tmp/bench.lock .venv/bin/python bench/bench_feeds.py iees --profile /tmp/iees.prof

An embedded PostgreSQL (fsync on) in ``--data-dir``/db unless ``--database-url`` is given;
either way EVERY TABLE of the database is emptied before each scenario. Generated feeds are
kept in ``--data-dir`` for the next run. A script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import io
import json
import math
import multiprocessing
import os
import pstats
import resource
import shlex
import sys
import threading
import time
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.ingest.hsds import FeedSummary, load_mapping  # noqa: E402
from fhir_server.ingest.iees_pipeline import IeesPipeline  # noqa: E402
from fhir_server.ingest.mllp import MllpClient, MllpServer  # noqa: E402
from fhir_server.ingest.synthetic_feeds import (  # noqa: E402
    iter_iees_messages,
    write_hsds_directory,
)
from fhir_server.storage.database import libpq_url  # noqa: E402
from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402
from mappers.hsds import map_directory  # noqa: E402

MIAMI = ROOT / ".." / "shared" / "feeds" / "hsds" / "miami-211-hsds1"
_TICKS = os.sysconf("SC_CLK_TCK")


# -- the database ------------------------------------------------------------------------------


def empty_database(dsn: str) -> None:
    """Every table but Alembic's emptied, so each scenario starts from nothing."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname = current_schema() AND tablename <> 'alembic_version'"
            )
        ]
        if tables:
            conn.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        conn.execute("CHECKPOINT")


def _postmaster(dsn: str) -> int | None:
    """The postmaster's pid when the database is local (its backends' CPU can be read)."""
    with psycopg.connect(dsn) as conn:
        backend = conn.info.backend_pid
    try:
        return int(_stat(backend)[1])
    except OSError:
        return None


def _stat(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (index 0 is field 3, the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process, all its threads."""
    try:
        fields = _stat(pid)
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _children_cpu(parent: int) -> float:
    """CPU of the live children of ``parent`` (PostgreSQL's backends and helpers)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat(int(entry))
            except OSError:
                continue
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / _TICKS
    return total


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


# -- HSDS --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoadFigures:
    step: str
    summary: FeedSummary
    mapping: float
    total: float
    peak_rss_mb: float


def load_once(dsn: str, path: Path, feed: str, step: str) -> LoadFigures:
    """One full load of ``path`` as ``feed``: mapping and writing timed apart."""
    started = time.monotonic()
    result = map_directory(path, feed=feed)
    mapped = time.monotonic()
    summary = load_mapping(dsn, result, full=True, started=started)
    total = time.monotonic() - started
    figures = LoadFigures(step, summary, mapped - started, total, _peak_rss_mb())
    _print_load(figures)
    return figures


def _print_load(f: LoadFigures) -> None:
    s = f.summary
    print(
        f"  {f.step:<28} {f.total:8.1f} {f.mapping:8.1f} {f.total - f.mapping:8.1f}"
        f" {s.created:>8,} {s.updated:>8,} {s.unchanged:>9,} {s.inactivated:>8,}"
        f" {s.rejected:>6,} {f.peak_rss_mb:>8,.0f}"
    )


def _load_header(title: str) -> None:
    print(f"\n{title}")
    print(
        f"  {'step':<28} {'total s':>8} {'map s':>8} {'write s':>8} {'created':>8}"
        f" {'updated':>8} {'unchanged':>9} {'inactiv.':>8} {'reject':>6} {'RSS MB':>8}"
    )


def _verdict(name: str, value: float, limit: float, unit: str = "s") -> str:
    mark = "ok" if value < limit else "MISSED"
    return f"  {name}: {value:,.2f} {unit} (target < {limit:,.2f} {unit}): {mark}"


def bench_miami(dsn: str, path: Path) -> None:
    if not (path / "datapackage.json").exists():
        print(f"\nMiami 211 export not found at {path}: skipped")
        return
    empty_database(dsn)
    _load_header(f"HSDS: Miami 211 export ({path.resolve()})")
    first = load_once(dsn, path, "bench-miami", "first load (empty database)")
    again = load_once(dsn, path, "bench-miami", "unchanged reload")
    print(_verdict("first load", first.total, 20.0))
    print(_verdict("reload / first load", again.total / first.total, 1 / 3, "x"))
    _print_problems(first.summary)


def _synthetic(directory: Path, services: int, **changes: float) -> tuple[Path, _Counts]:
    """The synthetic feed in ``directory``, written unless a previous run left it complete
    (its counts in ``COUNTS``, written last)."""
    done = directory / "COUNTS"
    if not done.exists():
        for stale in directory.glob("*.json"):
            stale.unlink()
        started = time.monotonic()
        written = write_hsds_directory(directory, services, seed=1, **changes)
        counts = _Counts(**{f.name: getattr(written, f.name) for f in dataclasses.fields(_Counts)})
        done.write_text(json.dumps(dataclasses.asdict(counts)))
        print(f"  wrote {directory} in {time.monotonic() - started:,.1f} s")
    return directory, _Counts(**json.loads(done.read_text()))


@dataclass(frozen=True, slots=True)
class _Counts:
    """What ``write_hsds_directory`` reported, kept beside the feed for the next run."""

    organizations: int
    locations: int
    services: int
    service_at_locations: int
    changed: int
    dropped: int
    files: int


def bench_synthetic(dsn: str, data_dir: Path, services: int) -> None:
    base, base_counts = _synthetic(data_dir / f"hsds-{services}", services)
    changed, changed_counts = _synthetic(
        data_dir / f"hsds-{services}-changed", services, changed=0.1, dropped=0.05
    )
    print(f"\n  base feed: {_describe(base_counts)}")
    print(f"  changed copy: {_describe(changed_counts)}")
    empty_database(dsn)
    _load_header(f"HSDS: synthetic directory of {services:,} services")
    first = load_once(dsn, base, "bench-synthetic", "first load (empty database)")
    again = load_once(dsn, base, "bench-synthetic", "unchanged reload")
    update = load_once(dsn, changed, "bench-synthetic", "reload, 10% changed 5% gone")
    print(_verdict("first load", first.total, 180.0))
    print(_verdict("reload / first load", again.total / first.total, 1 / 3, "x"))
    print(
        f"  changed copy: expected about {changed_counts.changed:,} services updated and"
        f" {changed_counts.dropped:,} inactivated; got {update.summary.updated:,} updated,"
        f" {update.summary.inactivated:,} inactivated (a dropped service the feed already"
        " had inactive needs no new version)"
    )
    _print_problems(first.summary)


def _describe(counts: _Counts) -> str:
    return (
        f"{counts.organizations:,} organizations, {counts.locations:,} locations,"
        f" {counts.services:,} services, {counts.service_at_locations:,} service-at-locations"
        f" in {counts.files:,} files; {counts.changed:,} changed, {counts.dropped:,} dropped"
    )


def _print_problems(summary: FeedSummary) -> None:
    for title, counter in (("rejected", summary.reasons), ("problems", summary.problems)):
        if counter:
            listed = ", ".join(f"{n:,} {code}" for code, n in counter.most_common(6))
            print(f"  {title} (first load): {listed}")


# -- IEES over MLLP ----------------------------------------------------------------------------


def individual_id(message: bytes) -> bytes:
    """PID-3's first identifier (the IndividualID): the shard key that keeps a person's order."""
    start = message.index(b"\rPID|") + 1
    fields = message[start : message.index(b"\r", start)].split(b"|")
    return fields[3].split(b"~")[0].split(b"^")[0]


def ack_code(reply: bytes) -> str:
    """MSA-1 of an ACK."""
    start = reply.find(b"MSA|")
    if start < 0:
        return "no MSA"
    return reply[start + 4 :].split(b"|", 1)[0].split(b"\r", 1)[0].decode()


def shard(messages: Sequence[bytes], connections: int) -> list[list[bytes]]:
    lanes: list[list[bytes]] = [[] for _ in range(connections)]
    for message in messages:
        lanes[zlib.crc32(individual_id(message)) % connections].append(message)
    return lanes


@dataclass
class PhaseFigures:
    name: str
    messages: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # ms
    codes: Counter[str] = field(default_factory=Counter)
    server_cpu: float = 0.0
    postgres_cpu: float = 0.0
    client_cpu: float = 0.0
    batches: int = 0
    statements: Counter[str] = field(default_factory=Counter)  # pg_stat_activity samples
    samples: int = 0


class StatementSampler:
    """What PostgreSQL is busy with, sampled from pg_stat_activity every ``interval`` s: a
    poor man's profile of the database side (one cheap query per sample)."""

    def __init__(self, dsn: str, figures: PhaseFigures, interval: float = 0.02) -> None:
        self.dsn = dsn
        self.figures = figures
        self.interval = interval
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> StatementSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()

    def _run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.done.wait(self.interval):
                self.figures.samples += 1
                for (query,) in conn.execute(_ACTIVE):
                    self.figures.statements[_statement(query or "")] += 1


_ACTIVE = (
    "SELECT query FROM pg_stat_activity WHERE state = 'active'"
    " AND pid <> pg_backend_pid() AND datname = current_database()"
)


def _statement(query: str) -> str:
    """A statement's first words: enough to tell them apart, never a value (all bound)."""
    return " ".join(query.split())[:90]


async def _send_lane(port: int, lane: list[bytes], figures: PhaseFigures) -> None:
    client = await MllpClient.connect("127.0.0.1", port, timeout=120.0)
    try:
        for message in lane:
            started = time.perf_counter()
            reply = await client.send(message)
            figures.latencies.append((time.perf_counter() - started) * 1000)
            figures.codes[ack_code(reply)] += 1
    finally:
        await client.close()


async def _send_phase(port: int, lanes: list[list[bytes]], figures: PhaseFigures) -> None:
    await asyncio.gather(*(_send_lane(port, lane, figures) for lane in lanes if lane))


def run_phase(
    dsn: str,
    name: str,
    port: int,
    messages: Sequence[bytes],
    connections: int,
    server_pid: int,
    postmaster: int | None,
    batches: Callable[[], int],
) -> PhaseFigures:
    figures = PhaseFigures(name, len(messages))
    lanes = shard(messages, connections)
    server_before = _cpu_seconds(server_pid)
    postgres_before = _children_cpu(postmaster) if postmaster else 0.0
    client_before = time.process_time()
    batches_before = batches()
    started = time.perf_counter()
    with StatementSampler(dsn, figures):
        asyncio.run(_send_phase(port, lanes, figures))
    figures.seconds = time.perf_counter() - started
    figures.client_cpu = time.process_time() - client_before
    figures.server_cpu = _cpu_seconds(server_pid) - server_before
    if postmaster:
        figures.postgres_cpu = _children_cpu(postmaster) - postgres_before
    figures.batches = batches() - batches_before
    return figures


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(pct / 100 * len(ordered)) - 1))]


def _print_phases(phases: list[PhaseFigures], resources: dict[str, int]) -> None:
    print(
        f"\n  {'phase':<22} {'msgs':>7} {'s':>7} {'msg/s':>7} {'p50 ms':>7} {'p95 ms':>7}"
        f" {'p99 ms':>7} {'msg/commit':>10} {'srv CPU':>8} {'pg CPU':>7} {'cli CPU':>8}"
        "  ACKs"
    )
    for p in phases:
        acks = ", ".join(f"{n:,} {code}" for code, n in sorted(p.codes.items()))
        per_commit = p.messages / p.batches if p.batches else float("nan")
        print(
            f"  {p.name:<22} {p.messages:>7,} {p.seconds:>7.1f} {p.messages / p.seconds:>7,.0f}"
            f" {_percentile(p.latencies, 50):>7.1f} {_percentile(p.latencies, 95):>7.1f}"
            f" {_percentile(p.latencies, 99):>7.1f} {per_commit:>10.1f}"
            f" {p.server_cpu:>7.1f}s {p.postgres_cpu:>6.1f}s {p.client_cpu:>7.1f}s  {acks}"
        )
    for p in phases:
        us = 1e6 / p.messages
        print(
            f"  {p.name}: CPU per message: listener {p.server_cpu * us:,.0f} us,"
            f" PostgreSQL {p.postgres_cpu * us:,.0f} us, senders {p.client_cpu * us:,.0f} us;"
            f" {p.messages / p.seconds:,.0f} messages/s (target >= 1,000):"
            f" {'ok' if p.messages / p.seconds >= 1000 else 'MISSED'}"
        )
    for p in phases:
        print(
            f"  {p.name}: PostgreSQL busy in {sum(p.statements.values()) / p.samples:.0%} of"
            f" {p.samples:,} samples of pg_stat_activity; by statement:"
        )
        for statement, n in p.statements.most_common(12):
            print(f"    {n / p.samples:6.1%}  {statement}")
    stored = ", ".join(f"{n:,} {t}" for t, n in sorted(resources.items()))
    print(f"  stored after both phases: {stored}")


def _stored(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT resource_type, count(*) FROM resource GROUP BY resource_type"
        ).fetchall()
    return {str(t): int(n) for t, n in rows}


# The listener's process. It is started with "spawn", so it shares nothing with the senders.


def _listener(dsn: str, profile: str | None, control: Connection) -> None:
    """Run IeesPipeline + MllpServer on a free port until told to stop over ``control``."""
    loop_profile = cProfile.Profile() if profile else None
    apply_profile = cProfile.Profile() if profile else None

    async def serve() -> None:
        pipeline = IeesPipeline(dsn)
        await pipeline.start()
        if apply_profile is not None:
            _profile_apply(pipeline, apply_profile)
        server = MllpServer(pipeline)
        await server.start("127.0.0.1", 0)
        control.send(("port", server.port))
        loop = asyncio.get_running_loop()
        while True:
            request = await loop.run_in_executor(None, control.recv)
            if request == "batches":
                control.send(("batches", pipeline.batches))
            elif request == "stop":
                break
        await server.close()
        await pipeline.close()

    if loop_profile is not None:
        loop_profile.enable()
    try:
        asyncio.run(serve())
    finally:
        if loop_profile is not None and apply_profile is not None and profile is not None:
            loop_profile.disable()
            apply_profile.dump_stats(profile)
            loop_profile.dump_stats(f"{profile}.loop")
        control.send(("stopped", None))


def _profile_apply(pipeline: IeesPipeline, profiler: cProfile.Profile) -> None:
    """Profile the apply thread: cProfile sees only the thread it is enabled in (Python 3.11),
    and the pipeline applies its batches in a worker thread."""
    applier = pipeline._applier  # noqa: SLF001 - a benchmark's look inside
    assert applier is not None
    apply = applier.apply_messages

    def profiled(payloads: Sequence[bytes]) -> Any:
        profiler.enable()
        try:
            return apply(payloads)
        finally:
            profiler.disable()

    applier.apply_messages = profiled  # type: ignore[method-assign]


class Listener:
    """The listener's process, seen from the senders."""

    def __init__(self, dsn: str, profile: str | None) -> None:
        context = multiprocessing.get_context("spawn")
        self._control, child = context.Pipe()
        self.process = context.Process(target=_listener, args=(dsn, profile, child), daemon=True)
        self.process.start()
        kind, port = self._control.recv()
        assert kind == "port"
        self.port: int = port
        assert self.process.pid is not None
        self.pid: int = self.process.pid

    def batches(self) -> int:
        self._control.send("batches")
        kind, value = self._control.recv()
        assert kind == "batches"
        return int(value)

    def stop(self) -> None:
        self._control.send("stop")
        self._control.recv()
        self.process.join(60)


def bench_iees(dsn: str, persons: int, updates: int, connections: int, profile: str | None) -> None:
    started = time.monotonic()
    messages = list(iter_iees_messages(persons, seed=1, updates=updates))
    print(
        f"\nIEES over MLLP: {persons:,} persons (A28), {updates:,} updates (A31),"
        f" {connections} connections; messages made in {time.monotonic() - started:,.1f} s,"
        f" {sum(map(len, messages)) / len(messages):,.0f} bytes each"
    )
    empty_database(dsn)
    postmaster = _postmaster(dsn)
    listener = Listener(dsn, profile)
    try:
        phases = [
            run_phase(
                dsn,
                name,
                listener.port,
                part,
                connections,
                listener.pid,
                postmaster,
                listener.batches,
            )
            for name, part in (
                ("A: A28 adds", messages[:persons]),
                ("B: A31 updates", messages[persons:]),
            )
            if part
        ]
    finally:
        listener.stop()
    _print_phases(phases, _stored(dsn))
    bad = {code: n for p in phases for code, n in p.codes.items() if code != "AA"}
    if bad:
        print(f"  NOT ALL AA: {bad}")
    if profile:
        print_profile(profile)


# Where the apply thread's time goes: self time of functions, grouped by what they do (first
# match wins; filenames or builtin names).
_AREAS = (
    ("waiting for PostgreSQL (psycopg wait)", ("psycopg/connection.py:wait", "wait_c")),
    ("psycopg (send, adapt, load rows)", ("psycopg",)),
    (
        "parse HL7 + ACK (mappers/iees _er7, message)",
        ("iees/_er7", "iees/message", "iees/structure", "iees/acknowledgment", "iees/errors"),
    ),
    ("map to FHIR (mappers/iees fhir, records, changes)", ("mappers/iees/",)),
    (
        "validate (conformance, profiles, models)",
        ("conformance/", "profiles/", "fhir/resources", "pydantic", "check_resource"),
    ),
    ("index rows (search, fhirpath)", ("fhir_server/search/", "fhirpathpy", "repository.py")),
    ("encode rows for COPY (storage/bulk.py)", ("storage/bulk.py",)),
    ("JSON + hashing (orjson, hashlib)", ("orjson", "hashlib", "sha256", "hexdigest")),
    ("feed storage logic (storage/feeds.py)", ("storage/feeds.py",)),
    ("IEES apply logic (ingest/iees.py)", ("ingest/iees.py",)),
)


def print_profile(path: str) -> None:
    """Top functions of the apply thread and the event loop, and apply self time by area."""
    stats = pstats.Stats(path)
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("cumulative").print_stats(40)
    stats.sort_stats("tottime").print_stats(30)
    loop = pstats.Stats(f"{path}.loop", stream=out)
    loop.sort_stats("tottime").print_stats(20)
    print(f"\n  cProfile of the listener: apply thread {path}, event loop {path}.loop")
    print(out.getvalue())
    areas: Counter[str] = Counter()
    total = 0.0
    for (filename, _, name), row in stats.stats.items():  # type: ignore[attr-defined]
        self_time = row[2]
        total += self_time
        where = f"{filename}:{name}"
        for area, needles in _AREAS:
            if any(needle in where for needle in needles):
                areas[area] += self_time
                break
        else:
            areas["other"] += self_time
    print(f"  apply thread, self time by area ({total:,.1f} s profiled; compare shares):")
    for area, seconds in areas.most_common():
        print(f"    {area:<52} {seconds:8.2f} s {seconds / total:6.1%}")


# -- main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("hsds", "iees", "all"))
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-feeds-bench"))
    parser.add_argument("--database-url", help="use this database (emptied!) instead")
    parser.add_argument("--miami", type=Path, default=MIAMI, help="the Miami 211 HSDS export")
    parser.add_argument("--services", type=int, default=50_000, help="synthetic HSDS services")
    parser.add_argument("--skip-miami", action="store_true")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--persons", type=int, default=20_000, help="IEES phase A: A28s")
    parser.add_argument("--updates", type=int, default=20_000, help="IEES phase B: A31s")
    parser.add_argument("--connections", type=int, default=8, help="MLLP senders")
    parser.add_argument("--profile", help="IEES: cProfile the listener into this file")
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    print("$ " + shlex.join([Path(sys.executable).name, *sys.argv]))
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    data_dir: Path = options.data_dir.absolute()
    data_dir.mkdir(parents=True, exist_ok=True)

    embedded = None
    if options.database_url:
        url = options.database_url
    else:
        embedded = EmbeddedPostgres(data_dir / "db", durable=True)
        url = embedded.start()
    try:
        upgrade(url)
        dsn = libpq_url(url)
        if options.what in ("hsds", "all"):
            if not options.skip_miami:
                bench_miami(dsn, options.miami)
            if not options.skip_synthetic:
                bench_synthetic(dsn, data_dir, options.services)
        if options.what in ("iees", "all"):
            bench_iees(dsn, options.persons, options.updates, options.connections, options.profile)
    finally:
        if embedded is not None:
            embedded.stop()


if __name__ == "__main__":
    main()
