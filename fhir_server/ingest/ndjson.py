"""Bulk load of NDJSON files (``sdoh-fhir load ndjson PATH...``), as the FHIR Bulk Data import does.

NDJSON: one resource per line (http://hl7.org/fhir/R4/nd-json.html,
https://hl7.org/fhir/uv/bulkdata/export.html#file-format). Files are ``*.ndjson`` or
``*.ndjson.gz``, or directories of them (hidden files skipped), read as a stream in chunks: the
memory used does not grow with the size of the input.

Each line is validated (``profiles.json_rules.check_structure``; a line it refuses is refused
only if the models, ``check_resource``, refuse it too, with their issues, as a REST write would
report them), given a server id if it has none (an id it has is kept) and stored as a create
would store it, by ``fhir_server.storage.bulk``. Worker processes do the parsing, validation and
indexing; this process reads the files and writes to the database in file order.

Existing ids: a line whose id is stored already (or appeared earlier in the load) becomes a new
version, as ``PUT`` would make it, and one whose content is identical makes no new version
(``unchanged``). So re-running an import changes nothing, and loading a corrected file updates
what changed. Into an empty database the load is one transaction (see ``BulkWriter``).

Refused lines are not lost: each is reported with its file, line number, text and issues.
"""

from __future__ import annotations

import gc
import gzip
import itertools
import multiprocessing
import os
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

import orjson
import psycopg

from fhir_server.conformance import Conformance
from fhir_server.core.errors import FhirError, Issue
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.bulk import BatchEncoder, BulkWriter, EncodedBatch, WriteCounts, new_id
from fhir_server.storage.conformance import load_definitions_sync as load_conformance_sync
from fhir_server.storage.repository import Indexer, check_resource, now_millis
from fhir_server.storage.search_parameters import build_registry, load_definitions_sync
from profiles.json_rules import check_structure
from profiles.models import RESOURCE_TYPES

__all__ = [
    "LoadError",
    "LoadSummary",
    "Progress",
    "RefusedLine",
    "find_ndjson_files",
    "load_ndjson",
]

CHUNK_LINES = 2000


class LoadError(RuntimeError):
    """The load cannot go on (no input, unreadable file); nothing after it is loaded."""


@dataclass(frozen=True, slots=True)
class RefusedLine:
    """One line that was not loaded, and why (the issues a REST write would have answered)."""

    source: str
    line: int  # from 1
    text: str
    issues: tuple[Issue, ...]


@dataclass(frozen=True, slots=True)
class Progress:
    loaded: int
    refused: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.loaded / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LoadSummary:
    created: int
    updated: int  # existing ids given a new version
    unchanged: int  # existing ids whose content was the same: no new version
    refused: int
    seconds: float
    initial: bool  # loaded in one transaction into an empty database

    @property
    def loaded(self) -> int:
        return self.created + self.updated + self.unchanged

    @property
    def rate(self) -> float:
        return self.loaded / self.seconds if self.seconds > 0 else 0.0


def find_ndjson_files(paths: Sequence[Path]) -> list[Path]:
    """The files to load: each file named, and the ``*.ndjson[.gz]`` files under each directory."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.name.endswith((".ndjson", ".ndjson.gz"))
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise LoadError(f"no .ndjson or .ndjson.gz files in {path}")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise LoadError(f"{path} does not exist")
    return files


def load_ndjson(
    conninfo: str,
    paths: Sequence[Path],
    *,
    on_refused: Callable[[RefusedLine], None],
    on_progress: Callable[[Progress], None] | None = None,
    progress_every: float = 5.0,
    workers: int | None = None,
    initial: bool = True,
    chunk_lines: int = CHUNK_LINES,
    conformance: Conformance | None = None,
) -> LoadSummary:
    """Load every resource of the NDJSON files at ``paths`` into the database at ``conninfo``.

    ``workers``: processes that validate and index (default: one per CPU; 0 runs it all here).
    ``initial=False`` never takes the empty-database path (``BulkWriter.start``).
    ``conformance``: the profiles and policy lines are checked against, as a REST write would be
    (default: the bundled profiles, unknown ones accepted); the stored definitions are added.
    """
    global _REGISTRY, _CONFORMANCE
    files = find_ndjson_files(paths)
    _REGISTRY, _CONFORMANCE = _load_registry(conninfo, conformance or Conformance.bundled())
    # The worker processes fork before any connection or thread exists here (the one that
    # read the registry is closed).
    pool = _executor(workers if workers is not None else os.cpu_count() or 1)
    writer = BulkWriter(conninfo)
    run = _Run(writer, pool, on_refused, on_progress, progress_every, time.monotonic())
    try:
        is_initial = writer.start(initial=initial)
        with tempfile.TemporaryFile() as deferred:
            run.deferred = deferred if is_initial else None
            run.load(_read_files(files, chunk_lines))
            if not deferred.tell():
                pool.close()  # their memory is better spent on the index builds
            writer.finish()
            if deferred.tell():
                # Ids repeated in an initial load: their later occurrences become new versions.
                deferred.seek(0)
                run.deferred = None
                writer.start(initial=False)
                run.load(_read_deferred(deferred, chunk_lines))
                writer.finish()
    finally:
        pool.close()
        writer.close()
    return LoadSummary(
        run.counts.created,
        run.counts.updated,
        run.counts.unchanged,
        run.refused,
        time.monotonic() - run.started,
        is_initial,
    )


# --- reading ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chunk:
    source: str
    numbers: Sequence[int]  # the line number of each line
    text: bytes  # the lines, joined by \n


def _open(path: Path) -> IO[bytes]:
    try:
        if path.name.endswith(".gz"):
            return gzip.GzipFile(path, "rb")  # type: ignore[return-value]
        return path.open("rb")
    except OSError as exc:
        raise LoadError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _read_files(files: Sequence[Path], chunk_lines: int) -> Iterator[_Chunk]:
    for path in files:
        with _open(path) as stream:
            first = 1
            while True:
                try:
                    lines = list(itertools.islice(stream, chunk_lines))
                except (OSError, EOFError, gzip.BadGzipFile) as exc:
                    raise LoadError(f"cannot read {path} after line {first - 1}: {exc}") from exc
                if not lines:
                    break
                text = b"".join(lines)
                if text.endswith(b"\n"):
                    text = text[:-1]
                if first == 1 and text.startswith(b"\xef\xbb\xbf"):
                    text = text[3:]  # a byte order mark
                yield _Chunk(str(path), range(first, first + len(lines)), text)
                first += len(lines)


def _read_deferred(stream: IO[bytes], chunk_lines: int) -> Iterator[_Chunk]:
    """Chunks of the lines written by ``_Run._defer``: ``["source", line]\\ttext``."""
    source: str | None = None
    numbers: list[int] = []
    lines: list[bytes] = []
    for record in stream:
        head, _, text = record.rstrip(b"\n").partition(b"\t")
        where, number = orjson.loads(head)
        if (where != source or len(lines) >= chunk_lines) and lines:
            yield _Chunk(source or "", numbers, b"\n".join(lines))
            numbers, lines = [], []
        source = where
        numbers.append(number)
        lines.append(text)
    if lines:
        yield _Chunk(source or "", numbers, b"\n".join(lines))


# --- preparing (in the workers) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Task:
    chunk: _Chunk
    rids: list[int]
    seqs: list[int]
    now: datetime


@dataclass(frozen=True, slots=True)
class _Prepared:
    batch: EncodedBatch
    lines: tuple[int, ...]  # the index in the chunk of each encoded resource's line
    refused: tuple[RefusedLine, ...]


class _Preparer:
    """Parses, validates and encodes the lines of a chunk."""

    def __init__(self) -> None:
        indexer = Indexer(_REGISTRY or SearchRegistry.load_default())
        self.encoder = BatchEncoder(indexer)
        self.conformance = _CONFORMANCE or Conformance.bundled()
        # As the REST API: the types the models define that have search parameters.
        self.types = RESOURCE_TYPES & indexer.registry.all_resource_types()
        self._chunks = 0

    def prepare(self, task: _Task) -> _Prepared:
        chunk = task.chunk
        valid: list[dict[str, Any]] = []
        positions: list[int] = []
        refused: list[RefusedLine] = []
        for position, line in enumerate(chunk.text.split(b"\n")):
            if not line.strip():
                continue  # blank lines carry nothing
            issues: tuple[Issue, ...] = ()
            try:
                body = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                issues = (Issue("error", "invalid", f"the line is not JSON: {exc}"),)
            else:
                issues = self._check(body)
            if issues:
                text = line.rstrip(b"\r").decode("utf-8", "replace")
                refused.append(RefusedLine(chunk.source, chunk.numbers[position], text, issues))
                continue
            if "id" not in body:
                body["id"] = new_id()
            valid.append(body)
            positions.append(position)
        batch = self.encoder.encode(
            valid, [task.rids[p] for p in positions], [task.seqs[p] for p in positions], task.now
        )
        self._chunks += 1
        if self._chunks % 25 == 0 and not gc.isenabled():
            gc.collect()  # now and then, for what cycles there are (see _quiet_gc)
        return _Prepared(batch, tuple(positions), tuple(refused))

    def _check(self, body: Any) -> tuple[Issue, ...]:
        if type(body) is not dict:
            return (Issue("error", "invalid", "a line must hold one resource, a JSON object"),)
        resource_type = body.get("resourceType")
        if not check_structure(body):
            if resource_type not in self.types:
                return (
                    Issue(
                        "error",
                        "not-supported",
                        f"{resource_type!r} is not a resource type this server knows",
                        ("resourceType",),
                    ),
                )
            return self._check_profiles(resource_type, body)
        # A refusal by the fast check stands only if the models refuse too, with their issues.
        try:
            check_resource(resource_type if isinstance(resource_type, str) else "", body)
        except FhirError as exc:
            return exc.issues
        except Exception:  # the models' own validators raise a few other things on odd input
            return (Issue("error", "structure", "the resource cannot be validated"),)
        if resource_type not in self.types:
            return (
                Issue(
                    "error",
                    "not-supported",
                    f"{resource_type!r} is not a resource type this server knows",
                    ("resourceType",),
                ),
            )
        return self._check_profiles(resource_type, body)

    def _check_profiles(self, resource_type: str, body: dict[str, Any]) -> tuple[Issue, ...]:
        try:
            self.conformance.check_write(resource_type, body)
        except FhirError as exc:
            return exc.issues
        return ()


_PREPARER: _Preparer | None = None
# The registry with the database's custom search parameters, and the profiles and terminology
# with the stored ones, read before the workers fork.
_REGISTRY: SearchRegistry | None = None
_CONFORMANCE: Conformance | None = None


def _load_registry(conninfo: str, conformance: Conformance) -> tuple[SearchRegistry, Conformance]:
    """The built-in parameters and the SearchParameters stored, indexed as the server would;
    ``conformance`` with the stored profiles and terminology.

    A pending parameter (its reindex job not done) is indexed too: the job may have passed these
    resources already.
    """
    with psycopg.connect(conninfo) as conn:
        definitions = load_definitions_sync(conn)
        stored = load_conformance_sync(conn)
    registry = build_registry(SearchRegistry.load_default(), definitions)
    return registry, conformance.with_definitions(stored) if stored else conformance


def _start_worker() -> None:
    global _PREPARER
    _PREPARER = _Preparer()
    _quiet_gc()


def _quiet_gc() -> None:
    """No automatic cyclic garbage collection: parsed JSON makes no cycles, and each collection
    would walk every compiled expression and cached index row (it cost more than the parsing).
    ``_Preparer.prepare`` collects now and then instead."""
    gc.freeze()
    gc.disable()


def _prepare(task: _Task) -> _Prepared:
    assert _PREPARER is not None
    return _PREPARER.prepare(task)


class _Handle(Protocol):
    def get(self) -> _Prepared: ...


class _Executor(Protocol):
    def submit(self, task: _Task) -> _Handle: ...

    def close(self) -> None: ...

    @property
    def depth(self) -> int: ...


class _Pool:
    """Worker processes, forked now (before this process opens any connection)."""

    def __init__(self, workers: int) -> None:
        context = multiprocessing.get_context("fork")
        self._pool = context.Pool(workers, initializer=_start_worker)
        self._closed = False
        self.depth = 2 * workers + 1  # chunks in flight: enough to keep every worker busy

    def submit(self, task: _Task) -> _Handle:
        return self._pool.apply_async(_prepare, (task,))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.terminate()
            self._pool.join()


@dataclass
class _Later:
    preparer: _Preparer
    task: _Task

    def get(self) -> _Prepared:
        return self.preparer.prepare(self.task)


class _InProcess:
    depth = 1

    def __init__(self) -> None:
        self._preparer = _Preparer()
        self._enabled = gc.isenabled()
        self._closed = False
        _quiet_gc()

    def submit(self, task: _Task) -> _Handle:
        return _Later(self._preparer, task)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            gc.unfreeze()
            if self._enabled:
                gc.enable()


def _executor(workers: int) -> _Executor:
    return _Pool(workers) if workers > 0 else _InProcess()


# --- writing (here) -----------------------------------------------------------------------------


@dataclass
class _Run:
    writer: BulkWriter
    pool: _Executor
    on_refused: Callable[[RefusedLine], None]
    on_progress: Callable[[Progress], None] | None
    progress_every: float
    started: float
    counts: WriteCounts = field(default_factory=WriteCounts)
    refused: int = 0
    deferred: IO[bytes] | None = None
    _reported: float = 0.0

    def load(self, chunks: Iterator[_Chunk]) -> None:
        window: deque[tuple[_Task, _Handle]] = deque()
        for chunk in chunks:
            rids, seqs = self.writer.reserve(len(chunk.numbers))
            task = _Task(chunk, rids, seqs, now_millis())
            window.append((task, self.pool.submit(task)))
            if len(window) >= self.pool.depth:
                self._write(*window.popleft())
        while window:
            self._write(*window.popleft())

    def _write(self, task: _Task, handle: _Handle) -> None:
        prepared = handle.get()
        for refused in prepared.refused:
            self.on_refused(refused)
        self.refused += len(prepared.refused)
        counts = self.writer.write(prepared.batch)
        if counts.deferred:
            self._defer(task.chunk, [prepared.lines[i] for i in counts.deferred])
        self.counts = WriteCounts(
            self.counts.created + counts.created,
            self.counts.updated + counts.updated,
            self.counts.unchanged + counts.unchanged,
        )
        now = time.monotonic()
        if self.on_progress is not None and now - self._reported >= self.progress_every:
            self._reported = now
            loaded = self.counts.created + self.counts.updated + self.counts.unchanged
            self.on_progress(Progress(loaded, self.refused, now - self.started))

    def _defer(self, chunk: _Chunk, positions: list[int]) -> None:
        assert self.deferred is not None
        lines = chunk.text.split(b"\n")
        for position in positions:
            head = orjson.dumps([chunk.source, chunk.numbers[position]])
            self.deferred.write(head + b"\t" + lines[position] + b"\n")
