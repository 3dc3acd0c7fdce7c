"""What the state feeds write, and what they remember between messages and loads.

:class:`FeedWriter` writes mapped resources as an idempotent upsert on a connection of its own,
in transactions the caller delimits (``with writer.transaction():``), so a feed can load while
the server runs: new ids are copied, existing ones become new versions as ``PUT`` would make
them, and content equal to the stored one makes no new version (``BulkWriter`` does the rows,
with the same per-resource locks as an update). Each resource a feed wrote has a ``feed_item``
row with the hash of what was mapped and the version written, so a reload skips an unchanged
record without reading it; a record someone else has changed since is written again.

The other tables (migration 0009) are the feed's memory: HL7 v2 duplicate keys with their
original ACKs, the last event applied per person, the dead letters, and one row per load.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from fhir_server.conformance import Conformance
from fhir_server.core.errors import FhirError, Issue
from fhir_server.storage.bulk import BatchEncoder, BulkWriter, WriteCounts
from fhir_server.storage.repository import (
    INSERT_STATEMENT,
    UPDATE_STATEMENT,
    Indexer,
    canonical_resource,
    check_resource,
    index_params,
    now_millis,
    same_content,
)

__all__ = [
    "DeadLetter",
    "FeedWriter",
    "ItemState",
    "Key",
    "Pending",
    "PersonState",
    "Refused",
    "Written",
    "chunked",
]

Key = tuple[str, str]  # (resource type, id)


@dataclass(frozen=True, slots=True)
class ItemState:
    """A resource the feed may have written: what the feed last wrote, and what is stored."""

    content_hash: str | None  # None: the feed never wrote it
    feed_version: int | None
    inactive: bool
    version: int | None  # the stored version; None: not stored
    deleted: bool

    def unchanged(self, content_hash: str) -> bool:
        """The feed wrote this very content, and nobody has changed the resource since."""
        return (
            self.content_hash == content_hash
            and self.version is not None
            and self.version == self.feed_version
            and not self.deleted
        )


@dataclass(frozen=True, slots=True)
class Refused:
    key: Key
    issues: tuple[Issue, ...]


@dataclass(frozen=True, slots=True)
class Written:
    """What one ``FeedWriter.write`` did; ``versions``: the version now stored of each key
    written (created or updated; unchanged ones too)."""

    counts: WriteCounts
    refused: tuple[Refused, ...]
    versions: dict[Key, int]
    changed: tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class PersonState:
    event_time: datetime
    event_time_text: str
    programs: tuple[str, ...]
    related: tuple[str, ...] | None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: int
    feed: str
    kind: str
    received_at: datetime
    payload: bytes
    reason: str


_STATES = (
    "SELECT k.t, k.i, f.content_hash, f.version_id, coalesce(f.inactive, false),"
    " r.version_id, coalesce(r.deleted, false)"
    " FROM unnest(%s::text[], %s::text[]) AS k (t, i)"
    " LEFT JOIN feed_item f ON f.feed = %s AND f.resource_type = k.t AND f.id = k.i"
    " LEFT JOIN resource r ON r.resource_type = k.t AND r.id = k.i"
)
_BODIES = (
    "SELECT r.resource_type, r.id, r.body FROM unnest(%s::text[], %s::text[]) AS k (t, i)"
    " JOIN resource r ON r.resource_type = k.t AND r.id = k.i WHERE NOT r.deleted"
)
_REMEMBER = (
    "INSERT INTO feed_item (feed, resource_type, id, content_hash, version_id, inactive, run_id)"
    " SELECT %s, k.t, k.i, k.h, r.version_id, k.inactive, %s"
    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::bool[]) AS k (t, i, h, inactive)"
    " JOIN resource r ON r.resource_type = k.t AND r.id = k.i"
    " ON CONFLICT (feed, resource_type, id) DO UPDATE SET content_hash = excluded.content_hash,"
    " version_id = excluded.version_id, inactive = excluded.inactive, run_id = excluded.run_id"
    " RETURNING resource_type, id, version_id"
)
# Up to this many resources, a write is statements, not the bulk path (see _write_statements).
SMALL_WRITE = 300


_RESERVE = (
    "SELECT array_agg(nextval('resource_rid_seq')), array_agg(nextval('resource_history_seq'))"
    " FROM generate_series(1, %s)"
)


@dataclass(frozen=True, slots=True)
class Pending:
    """A body to write for the feed; ``content_hash`` of what was mapped (kept for reloads)."""

    body: dict[str, Any]
    content_hash: str
    inactive: bool = False
    remember: bool = True  # False: not the feed's (a Provenance, a referrer moved by a merge)

    @property
    def key(self) -> Key:
        return (self.body["resourceType"], self.body["id"])


class FeedWriter:
    """Writes one feed's resources; one connection, one transaction at a time."""

    def __init__(
        self,
        conninfo: str,
        feed: str,
        indexer: Indexer,
        conformance: Conformance,
        *,
        durable: bool = True,
    ) -> None:
        self.feed = feed
        self.conformance = conformance
        self._bulk = BulkWriter(conninfo)
        self._encoder = BatchEncoder(indexer)
        self._durable = durable
        self._durable_conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        return self._bulk.conn

    def close(self) -> None:
        self._bulk.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction; ``durable`` (the default) commits synchronously, as an ACK needs.

        A connection the server dropped (a restart, a failover) is replaced first.
        """
        if self._bulk._conn is not None and self._bulk._conn.closed:
            self._bulk.close()
        conn = self.conn
        if self._durable and self._durable_conn is not conn:
            conn.execute("SET synchronous_commit = on")  # the bulk writer's session turns it off
            self._durable_conn = conn
        with conn.transaction():
            yield

    def analyze(self) -> None:
        """Fresh planner statistics for the feed's memory: a load that finds stale ones (an
        empty table, say, after a first load of 100,000 records) joins it row by row."""
        self.conn.execute("ANALYZE feed_item")

    def lost_connection(self) -> bool:
        """Whether the connection is gone (the next transaction opens a new one)."""
        return self._bulk._conn is not None and self._bulk._conn.closed

    def finish(self) -> None:
        """Make every commit so far durable (asynchronous ones included)."""
        self._bulk.finish()

    # -- locks ---------------------------------------------------------------------------------

    def try_lock_feed(self) -> bool:
        """A session lock on this feed, so two loads of one feed never run at once."""
        row = self.conn.execute(
            "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (f"feed:{self.feed}",)
        ).fetchone()
        return bool(row and row[0])

    def lock_resources(self, keys: Iterable[Key]) -> None:
        """The per-resource locks an update takes (``Repository.update``, ``BulkWriter``),
        in one order: what is read under them cannot change before this transaction writes."""
        ordered = sorted(set(keys))
        if ordered:
            self.conn.execute(
                "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
                " FROM unnest(%s::text[]) AS k",
                ([f"{t}/{i}" for t, i in ordered],),
            )

    def lock_keys(self, keys: Iterable[str]) -> None:
        """Transaction locks on ``keys`` (say, Patient ids), in one order: no deadlock."""
        ordered = sorted(set(keys))
        if ordered:
            self.conn.execute(
                "SELECT count(pg_advisory_xact_lock(hashtextextended(k, 0)))"
                " FROM unnest(%s::text[]) AS k",
                ([f"feed:{self.feed}:{k}" for k in ordered],),
            )

    # -- resources -----------------------------------------------------------------------------

    def states(self, keys: Sequence[Key]) -> dict[Key, ItemState]:
        if not keys:
            return {}
        types, ids = zip(*keys, strict=True)
        rows = self.conn.execute(_STATES, (list(types), list(ids), self.feed)).fetchall()
        return {
            (t, i): ItemState(h, fv, inactive, v, deleted)
            for t, i, h, fv, inactive, v, deleted in rows
        }

    def bodies(self, keys: Sequence[Key]) -> dict[Key, dict[str, Any]]:
        """The stored bodies of the keys that exist and are not deleted."""
        if not keys:
            return {}
        types, ids = zip(*keys, strict=True)
        return {
            (t, i): orjson.loads(body)
            for t, i, body in self.conn.execute(_BODIES, (list(types), list(ids))).fetchall()
        }

    def feed_keys(self, resource_types: Sequence[str]) -> dict[Key, bool]:
        """Every resource of these types the feed wrote, and whether it is inactive."""
        rows = self.conn.execute(
            "SELECT resource_type, id, inactive FROM feed_item"
            " WHERE feed = %s AND resource_type = ANY(%s)",
            (self.feed, list(resource_types)),
        ).fetchall()
        return {(t, i): inactive for t, i, inactive in rows}

    def check(self, body: dict[str, Any]) -> tuple[Issue, ...]:
        """What a REST write would answer for ``body``: the base rules, then the profiles."""
        resource_type = body.get("resourceType")
        try:
            check_resource(resource_type if isinstance(resource_type, str) else "", body)
            self.conformance.check_write(str(resource_type), body)
        except FhirError as exc:
            return exc.issues
        except Exception:  # the models' validators raise a few other things on odd input
            return (Issue("error", "structure", "the resource cannot be validated"),)
        return ()

    def write(
        self,
        pending: Sequence[Pending],
        run_id: int | None,
        *,
        remember: bool = True,
        checked: bool = False,
        provenance: Callable[[list[str]], dict[str, Any]] | None = None,
    ) -> Written:
        """Validate and write ``pending`` (in the caller's transaction) and, unless
        ``remember`` is False (a Provenance, say), remember them as the feed's.

        A key appearing twice is written in order (two versions). Refused bodies are not
        written; the caller reports them. ``checked``: the caller has checked every body.
        ``provenance``: given the versions written ("Type/id/_history/n"), the Provenance to
        write with them, in the same round trips (not when nothing changed).
        """
        valid: list[Pending] = []
        refused: list[Refused] = []
        for item in pending:
            issues = () if checked else self.check(item.body)
            if issues:
                refused.append(Refused(item.key, issues))
            else:
                valid.append(item)
        if not valid:
            return Written(WriteCounts(), tuple(refused), {}, ())
        if len(valid) <= SMALL_WRITE and len({p.key for p in valid}) == len(valid):
            return self._write_statements(valid, tuple(refused), run_id, remember, provenance)
        row = self.conn.execute(_RESERVE, (len(valid),)).fetchone()
        assert row is not None
        encoded = self._encoder.encode([p.body for p in valid], row[0], row[1], now_millis())
        with self.conn.transaction():
            before = self._versions([p.key for p in valid])
            counts = self._bulk.write(encoded)
            last = {p.key: p for p in valid if remember and p.remember}
            versions = self._versions([p.key for p in valid])
            if last:  # a key's last write is what the feed holds
                versions.update(self._remember(list(last.values()), run_id))
        changed = tuple(k for k, v in versions.items() if before.get(k) != v)
        return Written(counts, tuple(refused), versions, changed)

    def _write_statements(
        self,
        valid: Sequence[Pending],
        refused: tuple[Refused, ...],
        run_id: int | None,
        remember: bool,
        provenance: Callable[[list[str]], dict[str, Any]] | None = None,
    ) -> Written:
        """A few resources (one group commit of messages): each written by the statement a
        REST create or update runs, sent together in pipeline mode. Staging tables, which the
        bulk path needs, would cost more than the rows here (their truncation at every
        commit alone took a third of PostgreSQL's time)."""
        keys = [p.key for p in valid]
        self.lock_resources(keys)
        types, ids = zip(*keys, strict=True)
        current = {
            (t, i): (rid, version, deleted, body)
            for t, i, rid, version, deleted, body in self.conn.execute(
                "SELECT r.resource_type, r.id, r.rid, r.version_id, r.deleted, r.body"
                " FROM unnest(%s::text[], %s::text[]) AS k (t, i)"
                " JOIN resource r ON r.resource_type = k.t AND r.id = k.i",
                (list(types), list(ids)),
            ).fetchall()
        }
        now = now_millis()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        versions: dict[Key, int] = {}
        changed: list[Key] = []
        unchanged = 0
        for item in valid:
            resource_type, id = item.key
            found = current.get(item.key)
            if (
                found is not None
                and not found[2]
                and same_content(orjson.loads(found[3]), item.body)
            ):
                versions[item.key] = found[1]
                unchanged += 1
                continue
            version = 1 if found is None else found[1] + 1
            body = canonical_resource(resource_type, id, version, now, item.body)
            params = {
                "t": resource_type,
                "id": id,
                "now": now,
                "body": orjson.dumps(body).decode(),
                **index_params(self._encoder.indexer, resource_type, id, body),
            }
            if found is None:
                inserts.append(params)
            else:
                updates.append({**params, "v": version, "rid": found[0]})
            versions[item.key] = version
            changed.append(item.key)
        if provenance is not None and changed:
            trace = provenance([f"{t}/{i}/_history/{versions[(t, i)]}" for t, i in changed])
            issues = self.check(trace)
            if issues:
                raise ValueError(f"a Provenance of this writer is invalid: {issues[0].diagnostics}")
            trace_body = canonical_resource("Provenance", trace["id"], 1, now, trace)
            inserts.append(
                {
                    "t": "Provenance",
                    "id": trace["id"],
                    "now": now,
                    "body": orjson.dumps(trace_body).decode(),
                    **index_params(self._encoder.indexer, "Provenance", trace["id"], trace_body),
                }
            )
        with self.conn.cursor() as cursor:
            if inserts:
                cursor.executemany(INSERT_STATEMENT, inserts)
            if updates:
                cursor.executemany(UPDATE_STATEMENT, updates)
        if remember:
            kept = [p for p in valid if p.remember]
            if kept:
                self.conn.execute(
                    "INSERT INTO feed_item (feed, resource_type, id, content_hash, version_id,"
                    " inactive, run_id) SELECT %s, k.t, k.i, k.h, k.v, k.inactive, %s"
                    " FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[], %s::bool[])"
                    " AS k (t, i, h, v, inactive) ON CONFLICT (feed, resource_type, id) DO UPDATE"
                    " SET content_hash = excluded.content_hash, version_id = excluded.version_id,"
                    " inactive = excluded.inactive, run_id = excluded.run_id",
                    (
                        self.feed,
                        run_id,
                        [p.key[0] for p in kept],
                        [p.key[1] for p in kept],
                        [p.content_hash for p in kept],
                        [versions[p.key] for p in kept],
                        [p.inactive for p in kept],
                    ),
                )
        counts = WriteCounts(len(inserts), len(updates), unchanged)
        return Written(counts, refused, versions, tuple(changed))

    def _versions(self, keys: Sequence[Key]) -> dict[Key, int]:
        types, ids = zip(*keys, strict=True)
        rows = self.conn.execute(
            "SELECT r.resource_type, r.id, r.version_id FROM unnest(%s::text[], %s::text[])"
            " AS k (t, i) JOIN resource r ON r.resource_type = k.t AND r.id = k.i"
            " WHERE NOT r.deleted",
            (list(types), list(ids)),
        ).fetchall()
        return {(t, i): v for t, i, v in rows}

    def _remember(self, items: Sequence[Pending], run_id: int | None) -> dict[Key, int]:
        rows = self.conn.execute(
            _REMEMBER,
            (
                self.feed,
                run_id,
                [p.key[0] for p in items],
                [p.key[1] for p in items],
                [p.content_hash for p in items],
                [p.inactive for p in items],
            ),
        ).fetchall()
        return {(t, i): v for t, i, v in rows}

    # -- runs ----------------------------------------------------------------------------------

    def start_run(self, kind: str) -> int:
        row = self.conn.execute(
            "INSERT INTO feed_run (feed, kind) VALUES (%s, %s) RETURNING id", (self.feed, kind)
        ).fetchone()
        assert row is not None
        return int(row[0])

    def finish_run(self, run_id: int, counts: dict[str, Any], provenance_id: str | None) -> None:
        self.conn.execute(
            "UPDATE feed_run SET finished_at = now(), counts = %s, provenance_id = %s"
            " WHERE id = %s",
            (Jsonb(counts), provenance_id, run_id),
        )

    # -- HL7 v2 duplicates and ordering --------------------------------------------------------

    def stored_acks(
        self, keys: Sequence[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], bytes]:
        if not keys:
            return {}
        senders, facilities, controls = (list(x) for x in zip(*keys, strict=True))
        rows = self.conn.execute(
            "SELECT k.s, k.f, k.c, m.ack FROM unnest(%s::text[], %s::text[], %s::text[])"
            " AS k (s, f, c) JOIN feed_message m ON m.feed = %s AND m.sender = k.s"
            " AND m.facility = k.f AND m.control_id = k.c",
            (senders, facilities, controls, self.feed),
        ).fetchall()
        return {(s, f, c): bytes(ack) for s, f, c, ack in rows}

    def remember_acks(
        self, acks: Sequence[tuple[tuple[str, str, str], bytes]], *, replace: bool = False
    ) -> None:
        """Keep each message's key and ACK; ``replace``: a replayed message's new ACK."""
        if not acks:
            return
        if replace:
            acks = list({key: ack for key, ack in acks}.items())
        conflict = (
            "ON CONFLICT (feed, sender, facility, control_id) DO UPDATE SET ack = excluded.ack,"
            " received_at = now()"
            if replace
            else "ON CONFLICT DO NOTHING"
        )
        self.conn.execute(
            "INSERT INTO feed_message (feed, sender, facility, control_id, ack)"
            " SELECT %s, s, f, c, a FROM unnest(%s::text[], %s::text[], %s::text[], %s::bytea[])"
            f" AS k (s, f, c, a) {conflict}",
            (
                self.feed,
                [k[0] for k, _ in acks],
                [k[1] for k, _ in acks],
                [k[2] for k, _ in acks],
                [a for _, a in acks],
            ),
        )

    def forget_acks(self, older_than_days: int = 30) -> int:
        """Drop duplicate keys older than the retention (feeds/iees/README.md rule 2: 30 days)."""
        cursor = self.conn.execute(
            "DELETE FROM feed_message WHERE feed = %s"
            " AND received_at < now() - make_interval(days => %s)",
            (self.feed, older_than_days),
        )
        return cursor.rowcount

    def persons(self, patient_ids: Sequence[str]) -> dict[str, PersonState]:
        if not patient_ids:
            return {}
        rows = self.conn.execute(
            "SELECT patient_id, event_time, event_time_text, programs, related, groups"
            " FROM feed_person WHERE feed = %s AND patient_id = ANY(%s)",
            (self.feed, list(patient_ids)),
        ).fetchall()
        return {
            p: PersonState(
                t, text, tuple(programs), None if related is None else tuple(related), tuple(g)
            )
            for p, t, text, programs, related, g in rows
        }

    def all_persons(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT patient_id FROM feed_person WHERE feed = %s", (self.feed,)
        ).fetchall()
        return [row[0] for row in rows]

    def referrers(self, target_type: str, target_id: str) -> list[Key]:
        """The stored resources that refer to ``target_type/target_id`` (through a search
        parameter, or as members of its compartment)."""
        rows = self.conn.execute(
            "SELECT r.resource_type, r.id FROM idx_reference x JOIN resource r"
            " ON r.resource_type = x.resource_type AND r.rid = x.rid"
            " WHERE x.target_type = %s AND x.target_id = %s AND NOT r.deleted"
            " UNION SELECT r.resource_type, r.id FROM compartment c JOIN resource r"
            " ON r.resource_type = c.resource_type AND r.rid = c.rid"
            " WHERE c.compartment_type = %s AND c.compartment_id = %s AND NOT r.deleted",
            (target_type, target_id, target_type, target_id),
        ).fetchall()
        return [(t, i) for t, i in rows]

    def save_persons(self, states: dict[str, PersonState]) -> None:
        if not states:
            return
        ids = list(states)
        self.conn.execute(
            "INSERT INTO feed_person (feed, patient_id, event_time, event_time_text, programs,"
            " related, groups) SELECT %s, k.p, k.t, k.x, k.programs::text[], k.related::text[],"
            " k.groups::text[] FROM unnest(%s::text[], %s::timestamptz[], %s::text[], %s::text[],"
            " %s::text[], %s::text[]) AS k (p, t, x, programs, related, groups)"
            " ON CONFLICT (feed, patient_id) DO UPDATE SET event_time = excluded.event_time,"
            " event_time_text = excluded.event_time_text, programs = excluded.programs,"
            " related = excluded.related, groups = excluded.groups",
            (
                self.feed,
                ids,
                [states[p].event_time for p in ids],
                [states[p].event_time_text for p in ids],
                # Arrays of arrays must be rectangular: each list travels as one text value.
                [_text_array(states[p].programs) for p in ids],
                [
                    None if states[p].related is None else _text_array(states[p].related or ())
                    for p in ids
                ],
                [_text_array(states[p].groups) for p in ids],
            ),
        )

    # -- dead letters --------------------------------------------------------------------------

    def dead_letter(self, kind: str, payload: bytes, reason: str, ack_code: str | None) -> int:
        row = self.conn.execute(
            "INSERT INTO feed_dead_letter (feed, kind, payload, reason, ack_code)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (self.feed, kind, payload, reason, ack_code),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def pending_dead_letters(
        self, limit: int = 1000, after: int = 0, *, newest: bool = False
    ) -> list[DeadLetter]:
        """Dead letters not replayed yet, oldest first after id ``after`` (or newest first)."""
        order = "DESC" if newest else "ASC"
        rows = self.conn.execute(
            "SELECT id, feed, kind, received_at, payload, reason FROM feed_dead_letter"
            " WHERE feed = %s AND replayed_at IS NULL AND id > %s"
            f" ORDER BY id {order} LIMIT %s",
            (self.feed, after, limit),
        ).fetchall()
        return [DeadLetter(i, f, k, at, bytes(p), r) for i, f, k, at, p, r in rows]

    def mark_replayed(self, dead_letter_id: int, result: str) -> None:
        self.conn.execute(
            "UPDATE feed_dead_letter SET replayed_at = now(), replay_result = %s WHERE id = %s",
            (result, dead_letter_id),
        )


def _text_array(values: Iterable[str]) -> str:
    """A PostgreSQL array literal of ``values`` (quoted, escaped)."""
    quoted = ('"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"' for value in values)
    return "{" + ",".join(quoted) + "}"


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in itertools.count(0, size):
        if start >= len(items):
            return
        yield items[start : start + size]
