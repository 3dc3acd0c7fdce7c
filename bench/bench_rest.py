"""REST benchmark: read/s, create/s and search latency at concurrency 32, beside the stack's floor.

Loads a synthetic SDoH population (default 1 million resources) into an embedded PostgreSQL,
starts ``sdoh-fhir serve`` on it, and drives it with wrk (Debian package ``wrk``), which takes
little CPU. In the same run it measures the floor: a bare FastAPI + psycopg endpoint reading one
stored row by id (bench/floor_app.py), and a raw COPY of the same JSON.

    python bench/bench_rest.py --resources 1000000 --data-dir /tmp/sdoh-bench

Prints the figures; a script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
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

from fhir_server.ingest.synthetic import generate_population  # noqa: E402
from fhir_server.search.registry import SearchRegistry  # noqa: E402
from fhir_server.storage.bulk import load_new_resources  # noqa: E402
from fhir_server.storage.embedded import EmbeddedPostgres  # noqa: E402
from fhir_server.storage.migrate import upgrade  # noqa: E402
from fhir_server.storage.repository import Indexer  # noqa: E402

RESOURCES_PER_PATIENT = 11.7

_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d duration_us=%d errors=%d non2xx=%d p50=%d p95=%d p99=%d\\n",
    summary.requests, summary.duration, errors, summary.errors.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""

_RANDOM_PATHS = (
    """
local paths = {}
init = function(args)
  for line in io.lines(args[1]) do paths[#paths + 1] = line end
  math.randomseed(os.time())
end
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""
    + _REPORT
)

_CREATE = (
    """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/fhir+json"
wrk.headers["Prefer"] = "return=minimal"
wrk.body = [[BODY]]
"""
    + _REPORT
)


def conninfo(url: str) -> str:
    match = re.match(r"postgresql\+psycopg://([^@]*)@([^/]*)/([^?]+)(?:\?host=(.*))?", url)
    if not match:
        return url.replace("postgresql+psycopg://", "postgresql://")
    user, hostport, db, socket_host = match.groups()
    host = socket_host or hostport.split(":")[0]
    return f"host={host} user={user} dbname={db}"


def _population_part(args: tuple[str, int, int, int]) -> int:
    dsn, n_patients, part, parts = args
    indexer = Indexer(SearchRegistry.load_default())
    stream = (r for i, r in enumerate(generate_population(n_patients, seed=7)) if i % parts == part)
    return load_new_resources(dsn, stream, indexer).stored


def load(dsn: str, target: int) -> tuple[int, float]:
    with psycopg.connect(dsn) as conn:
        have = conn.execute("SELECT count(*) FROM resource").fetchone()[0]  # type: ignore[index]
    if have >= target * 0.95:
        return have, 0.0
    if have:
        sys.exit(f"the database holds {have} resources, fewer than asked: use a new --data-dir")
    n_patients = int(target / RESOURCES_PER_PATIENT)
    parts = os.cpu_count() or 2
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(parts) as pool:
        stored = sum(
            pool.map(_population_part, [(dsn, n_patients, p, parts) for p in range(parts)])
        )
    elapsed = time.perf_counter() - started
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return stored, stored / elapsed


def raw_copy_rate(dsn: str, n: int) -> float:
    """Resources/s of a raw COPY of the same JSON into a bare table: the floor of any loader."""
    bodies = [orjson.dumps(r).decode() for r in _take(generate_population(n // 11 + 1, seed=9), n)]
    with psycopg.connect(dsn) as conn:
        conn.execute("CREATE TEMP TABLE raw_copy (body text)")
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy("COPY raw_copy (body) FROM STDIN") as copy:
            for body in bodies:
                copy.write_row((body,))
        conn.commit()
        elapsed = time.perf_counter() - started
    return len(bodies) / elapsed


def _take(items: Iterator[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    for i, item in enumerate(items):
        if i >= n:
            return
        yield item


def _wait(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the server exited: {process.stdout.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.5)
    sys.exit(f"{url} did not answer")


def wrk(
    url: str,
    script: str,
    args: list[str],
    duration: int,
    connections: int,
    cpu_of: dict[str, int] | None = None,
) -> dict[str, float]:
    """One wrk run; with ``cpu_of`` (name -> root pid), also the CPU ms per request of each."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script)
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "10s",
        "-s",
        lua.name,
        url,
        *(["--", *args] if args else []),
    ]
    before = _cpu_snapshot(cpu_of or {})
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    after = _cpu_snapshot(cpu_of or {})
    os.unlink(lua.name)
    line = next(line for line in output.splitlines() if line.startswith("RESULT"))
    values = dict(item.split("=") for item in line.split()[1:])
    seconds = int(values["duration_us"]) / 1e6
    cpu = _cpu_ms_per_request(before, after, int(values["requests"]))
    # Cores busy with anything else (other users of the machine, wrk itself): how noisy it was.
    others = (cpu.pop("machine") - sum(cpu.values())) * int(values["requests"]) / 1000 / seconds
    return {
        **{f"cpu_{name}": ms for name, ms in cpu.items()},
        "other_cores": others,
        "rps": int(values["requests"]) / seconds,
        "p50_ms": int(values["p50"]) / 1000,
        "p95_ms": int(values["p95"]) / 1000,
        "p99_ms": int(values["p99"]) / 1000,
        "errors": int(values["errors"]) + int(values["non2xx"]),
    }


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _cpu_snapshot(roots: dict[str, int]) -> dict[str, dict[int, float]]:
    snapshot = {
        name: {pid: _cpu_seconds(pid) for pid in _tree(root)} for name, root in roots.items()
    }
    # The whole machine's busy CPU seconds (all but idle and iowait), under a pid no process has.
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    snapshot["machine"] = {-1: busy / os.sysconf("SC_CLK_TCK")}
    return snapshot


def _cpu_ms_per_request(
    before: dict[str, dict[int, float]], after: dict[str, dict[int, float]], requests: float
) -> dict[str, float]:
    """CPU milliseconds per request of each process tree, from two snapshots around a run.

    Processes that ended in between are left out; ones that started count from zero.
    """
    return {
        name: sum(cpu - before[name].get(pid, 0.0) for pid, cpu in after[name].items())
        * 1000
        / max(requests, 1)
        for name in after
    }


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/sdoh-bench"))
    parser.add_argument("--duration", type=int, default=20, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8180)
    parser.add_argument(
        "--only",
        action="append",
        choices=["read", "search", "create", "create-profiled", "floor"],
        help="run only these parts (repeatable); default: all",
    )
    parser.add_argument(
        "--runs", type=int, default=1, help="timed runs of each part, one after another"
    )
    options = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install wrk")

    embedded = EmbeddedPostgres(options.data_dir)
    url = embedded.start()
    try:
        upgrade(url)
        dsn = conninfo(url)
        stored, load_rate = load(dsn, options.resources)
        print(f"stored resources: {stored}")
        if load_rate:
            print(
                f"bulk load (validate + index + COPY, {os.cpu_count()} processes): "
                f"{load_rate:,.0f} resources/s"
            )
        if not options.only:
            rate = raw_copy_rate(dsn, 100_000)
            print(f"raw COPY of the same JSON (1 process): {rate:,.0f} resources/s")
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Settle the database so that no autovacuum or checkpoint lands inside a timed run.
            conn.execute("VACUUM ANALYZE")
            conn.execute("CHECKPOINT")
            # A server that has been up holds its working set in memory; one whose machine just
            # restarted reads it from disk, and on this VM's disk a cold read can stall a request
            # for 100-300 ms. Read every table and index once so that the runs measure the server.
            started = time.perf_counter()
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
            relations = conn.execute(
                "SELECT c.oid::regclass::text FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
            ).fetchall()
            blocks = sum(
                conn.execute("SELECT pg_prewarm(%s::regclass, 'read')", (name,)).fetchone()[0]
                for (name,) in relations
            )
            print(
                f"read {blocks * 8 / 1024 / 1024:.1f} GiB of tables and indexes into the page cache"
                f" in {time.perf_counter() - started:.0f} s"
            )
        with psycopg.connect(dsn) as conn:
            patients = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM resource WHERE resource_type = 'Patient' AND NOT deleted "
                    "ORDER BY random() LIMIT 5000"
                )
            ]
            category = conn.execute(
                "SELECT code FROM idx_token WHERE resource_type = 'Observation' "
                "AND param = 'category' GROUP BY code ORDER BY count(*) DESC LIMIT 1"
            ).fetchone()[0]  # type: ignore[index]
        work = Path(tempfile.mkdtemp())
        (work / "read.txt").write_text("".join(f"/Patient/{p}\n" for p in patients))
        (work / "search.txt").write_text(
            "".join(
                f"/Observation?subject=Patient/{p}&category={category}&_sort=-date&_count=5\n"
                for p in patients
            )
        )
        observation = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "88122-7"}]},
            "subject": {"reference": f"Patient/{random.choice(patients)}"},
            "effectiveDateTime": "2026-11-01T10:00:00-05:00",
            "valueCodeableConcept": {
                "coding": [{"system": "http://loinc.org", "code": "LA28397-0"}]
            },
        }
        # The same write claiming its SDOHCC profile (a screening response from the synthetic
        # population, which conforms): what profile validation adds to a create.
        profiled = next(
            r
            for r in generate_population(3, seed=3)
            if r["resourceType"] == "Observation" and r.get("meta", {}).get("profile")
        )
        profiled = {k: v for k, v in profiled.items() if k != "id"}
        profiled["subject"] = observation["subject"]
        env = {**os.environ, "SDOH_FHIR_DATABASE_URL": url}
        postmaster = int((embedded.pgdata / "postmaster.pid").read_text().split()[0])
        parts = set(options.only or ["read", "search", "create", "create-profiled", "floor"])
        base = f"http://127.0.0.1:{options.port}"
        results: dict[str, dict[str, float]] = {}

        def timed(name: str, url: str, script: str, args: list[str], roots: dict[str, int]) -> None:
            wrk(url, script, args, 3, options.connections)  # warm-up
            for run in range(options.runs):
                label = name if options.runs == 1 else f"{name} {run + 1}"
                results[label] = wrk(
                    url, script, args, options.duration, options.connections, roots
                )

        server = _start(
            [
                sys.executable,
                "-m",
                "fhir_server",
                "serve",
                "--port",
                str(options.port),
                "--workers",
                str(options.workers),
            ],
            env,
        )
        try:
            _wait(f"{base}/metadata", server)
            roots = {"server": server.pid, "postgres": postmaster}
            for name, path, script, args in [
                ("read", "", _RANDOM_PATHS, [str(work / "read.txt")]),
                ("search", "", _RANDOM_PATHS, [str(work / "search.txt")]),
                (
                    "create",
                    "/Observation",
                    _CREATE.replace("BODY", orjson.dumps(observation).decode()),
                    [],
                ),
                (
                    "create-profiled",
                    "/Observation",
                    _CREATE.replace("BODY", orjson.dumps(profiled).decode()),
                    [],
                ),
            ]:
                if name in parts:
                    timed(name, base + path, script, args, roots)
        finally:
            _stop(server)

        if "floor" not in parts:
            _report(options, results)
            return
        floor = _start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "floor_app:app",
                "--port",
                str(options.port),
                "--workers",
                str(options.workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            {**env, "FLOOR_CONNINFO": dsn, "PYTHONPATH": str(ROOT / "bench")},
        )
        try:
            _wait(f"{base}/Patient/none", floor)
            timed(
                "floor read",
                base,
                _RANDOM_PATHS,
                [str(work / "read.txt")],
                {"server": floor.pid, "postgres": postmaster},
            )
        finally:
            _stop(floor)
    finally:
        embedded.stop()
    _report(options, results)


def _report(options: argparse.Namespace, results: dict[str, dict[str, float]]) -> None:
    print(
        f"\nconcurrency {options.connections}, {options.workers} workers, "
        f"{options.duration}s per run, {os.cpu_count()} cores"
    )
    print(
        f"{'':12} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}"
        f" {'CPU ms/req: server':>19} {'postgres':>9} {'other cores':>12}"
    )
    for name, r in results.items():
        print(
            f"{name:12} {r['rps']:9,.0f} {r['p50_ms']:8.1f} {r['p95_ms']:8.1f} "
            f"{r['p99_ms']:8.1f} {r['errors']:7.0f}"
            f" {r['cpu_server']:19.2f} {r['cpu_postgres']:9.2f} {r['other_cores']:12.2f}"
        )
    print("other cores: CPU the rest of the machine used meanwhile (wrk, other users), in cores")
    if "read" in results and "floor read" in results:
        print(f"read / floor read: {results['read']['rps'] / results['floor read']['rps']:.0%}")


if __name__ == "__main__":
    main()
