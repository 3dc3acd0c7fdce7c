"""IEES files for ``sdoh-fhir load iees PATH...``: HL7 v2 message files and the NDJSON and CSV
snapshots (feeds/iees/README.md), told apart by what they hold, and the dead-letter replay.

An HL7 file holds one message, or several: MLLP-framed (``VT ... FS CR``, what a capture of
the wire or a batch export looks like) or one after another, each starting at an ``MSH``
segment. Files are applied in the order given (a directory: its files by name), messages in
file order, with the same rules as over MLLP: an ACK for each, duplicates and stale messages
recognised, AE and AR kept as dead letters.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.conformance import Conformance
from fhir_server.ingest.iees import IeesApplier, Reply, SnapshotSummary
from mappers.iees import InvalidSnapshot, map_snapshot, parse_csv, parse_ndjson

__all__ = [
    "IeesLoadSummary",
    "ReplaySummary",
    "load_iees_paths",
    "replay_dead_letters",
    "split_messages",
]

BATCH = 200
_MSH = re.compile(rb"(?:^|[\r\n])(?=MSH\|)")


class IeesFileError(RuntimeError):
    """A file that cannot be loaded at all (unreadable, a refused snapshot)."""


def split_messages(data: bytes) -> list[bytes]:
    """The messages of an HL7 file: its MLLP frames, or its MSH-started messages.

    Nothing is dropped: a byte-order mark and blank space around messages are padding, and
    any other bytes before the first message (or outside the frames) come back as a message
    of their own, which is then answered AR and kept as a dead letter."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\x0b" in data:
        out = []
        before, *frames = data.split(b"\x0b")
        if before.strip():
            out.append(before.strip())
        for part in frames:
            payload, _, after = part.partition(b"\x1c")
            if payload.strip():
                out.append(payload)
            if after.strip():
                out.append(after.strip())
        return out
    starts = sorted(
        {
            m.end() if data[m.start() : m.start() + 1] in (b"\r", b"\n") else m.start()
            for m in _MSH.finditer(data)
        }
    )
    if not starts or starts[0] != 0:
        starts.insert(0, 0)
    ends = [*starts[1:], len(data)]
    return [
        data[a:b].lstrip(b" \t\r\n\x00") if a == 0 else data[a:b]
        for a, b in zip(starts, ends, strict=True)
        if data[a:b].strip(b" \t\r\n\x00")
    ]


@dataclass
class IeesLoadSummary:
    messages: int = 0
    acks: Counter[str] = field(default_factory=Counter)  # by acknowledgment code
    errors: Counter[str] = field(default_factory=Counter)  # ERR-3 code and ERR-2 location
    applied: int = 0
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "applied": self.applied,
            "acks": dict(self.acks),
            "errors": dict(self.errors),
            "snapshots": self.snapshots,
            "seconds": round(self.seconds, 3),
        }


def _files(paths: Sequence[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            if (path / "persons.csv").exists():
                yield path
                continue
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            yield path
        else:
            raise IeesFileError(f"{path} does not exist")


def load_iees_paths(
    conninfo: str,
    paths: Sequence[Path],
    *,
    conformance: Conformance | None = None,
    snapshot_date: str | None = None,
    mode: str = "full",
    force: bool = False,
    on_reply: Callable[[Reply], None] | None = None,
    on_progress: Callable[[int, float], None] | None = None,
) -> IeesLoadSummary:
    """Apply every IEES file at ``paths``; CSV snapshots need ``snapshot_date`` (the NDJSON
    header carries its own)."""
    import datetime as dt

    started = time.monotonic()
    summary = IeesLoadSummary()
    applier = IeesApplier(conninfo, conformance)
    last = started
    try:
        for path in _files(paths):
            if path.is_dir() or path.suffix.lower() in {".ndjson", ".jsonl"}:
                try:
                    if path.is_dir():
                        if snapshot_date is None:
                            raise IeesFileError(f"{path}: a CSV snapshot needs --snapshot-date")
                        day = dt.date.fromisoformat(snapshot_date)
                        file = parse_csv(path, snapshot_date=day, mode=mode)  # type: ignore[arg-type]
                    else:
                        file = parse_ndjson(path.read_bytes())
                    result = applier.apply_snapshot(map_snapshot(file), force=force)
                except InvalidSnapshot as exc:
                    raise IeesFileError(f"{path.name}: the snapshot is refused: {exc}") from None
                summary.snapshots.append(_snapshot(path.name, result))
                continue
            messages = split_messages(path.read_bytes())
            for start in range(0, len(messages), BATCH):
                for reply in applier.apply_messages(messages[start : start + BATCH]):
                    _count(summary, reply)
                    if on_reply is not None:
                        on_reply(reply)
                now = time.monotonic()
                if on_progress is not None and now - last >= 1.0:
                    last = now
                    on_progress(summary.messages, now - started)
    finally:
        applier.close()
    summary.seconds = time.monotonic() - started
    return summary


def _count(summary: IeesLoadSummary, reply: Reply) -> None:
    summary.messages += 1
    summary.applied += reply.applied
    summary.acks[reply.code] += 1
    for segment in reply.ack.split(b"\r"):
        if segment.startswith(b"ERR|"):
            fields = segment.decode("utf-8", "replace").split("|")
            location = fields[2] if len(fields) > 2 else ""
            code = fields[3].split("^")[0] if len(fields) > 3 else ""
            severity = fields[4] if len(fields) > 4 else ""
            summary.errors[f"{severity} {code} at {location}"] += 1


def _snapshot(name: str, result: SnapshotSummary) -> dict[str, Any]:
    return {
        "file": name,
        "persons": result.persons,
        "applied": result.applied,
        "stale": result.stale,
        "endedPersons": result.ended_persons,
        "merges": result.merges,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
        "rejectedReasons": result.reasons,
    }


@dataclass
class ReplaySummary:
    replayed: int = 0
    acks: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)  # kinds that cannot be replayed


def replay_dead_letters(
    conninfo: str, conformance: Conformance | None = None, *, ids: Sequence[int] = ()
) -> ReplaySummary:
    """Apply the pending HL7 v2 dead letters again, oldest first (or those of ``ids``).

    Each is marked replayed with its new acknowledgment code; one refused again is kept
    again as a new dead letter, so a message is never lost by replaying it. Framing garbage
    cannot be applied and stays pending (it is counted as skipped)."""
    summary = ReplaySummary()
    applier = IeesApplier(conninfo, conformance)
    writer = applier.writer
    try:
        after = 0
        wanted = set(ids)
        # Only what is pending now: a letter refused again is kept anew, after these.
        pending = writer.pending_dead_letters(limit=1, after=0, newest=True)
        last = pending[0].id if pending else 0
        while after < last:
            letters = [d for d in writer.pending_dead_letters(after=after) if d.id <= last]
            if not letters:
                break
            after = letters[-1].id
            for letter in letters:
                if wanted and letter.id not in wanted:
                    continue
                if letter.kind != "hl7v2":
                    summary.skipped[letter.kind] += 1
                    continue
                (reply,) = applier.apply_messages([letter.payload])
                with writer.transaction():
                    writer.mark_replayed(letter.id, reply.code)
                summary.replayed += 1
                summary.acks[reply.code] += 1
    finally:
        applier.close()
    return summary
