"""Applying the IEES eligibility feed (feeds/iees/README.md): HL7 v2 messages from the MLLP
listener, ``POST /$load-iees`` and ``sdoh-fhir load iees``, and the NDJSON/CSV snapshots.

``mappers.iees`` parses and maps; this module applies what a message states to what is stored,
by the profile's processing rules, on one connection (:class:`IeesApplier`):

* rule 2, duplicates: the (MSH-3, MSH-4, MSH-10) of every message accepted (AA) is kept with
  its ACK; a resend gets that ACK again with an informational ERR, and nothing is applied (a
  refused message may be corrected and resent under its MSH-10: it is judged again);
* rule 3, ordering: a message older (EVN-6) than the last one applied for the person gets AA
  with a warning and is not applied;
* rules 4 and 5, snapshot semantics: programs, co-members and households the person's last
  message listed and this one does not are ended (``mappers.iees.changes``);
* rule 6, merges: the retired Patient is made inactive and ``replaced-by`` the survivor, which
  ``replaces`` it and keeps its IndividualID as an old identifier; every resource that refers
  to the retired Patient is re-pointed, all in the message's transaction;
* rule 7: AE and AR messages are answered with their ERRs and kept, raw, as dead letters.

Messages are applied in batches (group commit): every message of ``apply_messages`` in one
transaction, committed durably before any ACK goes out, in order, each seeing what the ones
before it did. A message whose resources the server refuses (a required profile, say) gets AE
and is dead-lettered alone. If the batch fails in the database, its messages are applied one
by one; a message that still fails is dead-lettered and answered AE (207, application
error), so it can be replayed (``sdoh-fhir feeds replay``). If even that cannot be stored,
:class:`FeedUnavailable` is raised and no ACK is sent: the sender keeps the message and
sends it again, so nothing received is lost.

Each batch that changed something writes one Provenance naming the feed, the run and the
versions written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from fhir_server.conformance import Conformance
from fhir_server.core.errors import Issue
from fhir_server.ingest.feed_context import open_writer, provenance, refusal_reason
from fhir_server.storage.feeds import (
    FeedWriter,
    ItemState,
    Key,
    Pending,
    PersonState,
    Written,
    chunked,
)
from fhir_server.storage.repository import now_millis, same_content
from mappers.hsds.result import content_hash
from mappers.iees import (
    ErrorDetail,
    InvalidMessage,
    MappedMessage,
    ParsedMessage,
    Snapshot,
    ack,
    duplicate_notice,
    map_message,
    merge_noop_warning,
    parse,
    patient_id,
    stale_warning,
)
from mappers.iees.changes import (
    end_member,
    end_program,
    end_related_person,
    keep_merge_links,
    merge_member,
    repoint,
    retire_patient,
    take_over,
)

__all__ = [
    "FEED",
    "FeedUnavailable",
    "IeesApplier",
    "Reply",
    "SnapshotRefused",
    "SnapshotSummary",
]

FEED = "iees"
log = logging.getLogger(__name__)


class FeedUnavailable(RuntimeError):
    """The database could not take a message, not even as a dead letter: send no ACK."""


class SnapshotRefused(RuntimeError):
    """A full snapshot that would end too many enrollments: nothing was written."""


class _Refused(Exception):
    def __init__(self, key: Key, issues: tuple[Issue, ...]) -> None:
        super().__init__(f"{key[0]} refused")
        self.key = key
        self.issues = issues


@dataclass(frozen=True, slots=True)
class Reply:
    """What a message got: its ACK, the acknowledgment code, and whether it was applied."""

    ack: bytes
    code: str
    applied: bool


@dataclass
class SnapshotSummary:
    persons: int = 0
    applied: int = 0
    stale: int = 0
    ended_persons: int = 0
    newer: int = 0  # not listed, but updated since the snapshot's date: not ended
    merges: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    provenance: list[str] = field(default_factory=list)


@dataclass
class _Message:
    payload: bytes
    parsed: ParsedMessage | None = None
    mapped: MappedMessage | None = None
    error: InvalidMessage | None = None

    @property
    def duplicate_key(self) -> tuple[str, str, str] | None:
        header = self.parsed.header if self.parsed else (self.error.header if self.error else None)
        if header is None or not all(header.duplicate_key):
            return None
        return header.duplicate_key


def _prepare(payload: bytes) -> _Message:
    message = _Message(payload)
    try:
        message.parsed = parse(payload)
        message.mapped = map_message(message.parsed)
    except InvalidMessage as exc:
        message.error = exc
    return message


class _Work:
    """The batch's view of the resources it touches: what is stored, as changed so far."""

    def __init__(self, writer: FeedWriter) -> None:
        self.writer = writer
        self.states: dict[Key, ItemState] = {}
        self.stored: dict[Key, dict[str, Any] | None] = {}
        self.pending: dict[Key, Pending] = {}
        self._undo: list[tuple[Key, Pending | None]] = []

    def prefetch(self, keys: Iterable[Key]) -> None:
        missing = [k for k in dict.fromkeys(keys) if k not in self.states]
        if missing:
            self.states.update(self.writer.states(missing))

    def state(self, key: Key) -> ItemState:
        if key not in self.states:
            self.prefetch([key])
        return self.states[key]

    def unchanged(self, key: Key, content_hash: str) -> bool:
        return key not in self.pending and self.state(key).unchanged(content_hash)

    def current(self, key: Key) -> dict[str, Any] | None:
        if key in self.pending:
            return self.pending[key].body
        if key not in self.stored:
            # Under the resource's lock, whatever the prefetch saw: another applier (or a REST
            # update) may have written it since, and its write must not be lost.
            self.writer.lock_resources([key])
            self.stored.update(self.writer.bodies([key]))
            self.stored.setdefault(key, None)
        return self.stored[key]

    def put(self, body: dict[str, Any], content_hash: str, *, remember: bool = True) -> None:
        key = (body["resourceType"], body["id"])
        stored = self.current(key)
        if stored is not None and same_content(stored, body):
            return
        issues = self.writer.check(body)
        if issues:
            raise _Refused(key, issues)
        self._undo.append((key, self.pending.get(key)))
        self.pending[key] = Pending(body, content_hash, remember=remember)

    def preload(self, keys: Sequence[Key]) -> None:
        """Lock and read ``keys`` now, in one order, two round trips for all of them."""
        wanted = sorted({k for k in keys if k not in self.stored and k not in self.pending})
        if not wanted:
            return
        self.writer.lock_resources(wanted)
        self.stored.update(self.writer.bodies(wanted))
        for key in wanted:
            self.stored.setdefault(key, None)

    def mark(self) -> int:
        return len(self._undo)

    def rollback(self, mark: int) -> None:
        while len(self._undo) > mark:
            key, before = self._undo.pop()
            if before is None:
                del self.pending[key]
            else:
                self.pending[key] = before


class IeesApplier:
    """Applies IEES messages and snapshots on a connection of its own (one at a time)."""

    def __init__(self, conninfo: str, conformance: Conformance | None = None) -> None:
        self.writer = open_writer(conninfo, FEED, conformance, durable=True)
        self.run_id: int | None = None
        self._provenances = 0
        self._forgotten_at = 0.0
        self.provenance: list[str] = []  # the Provenances written, in order

    def close(self) -> None:
        self.writer.close()

    def _run(self) -> int:
        if self.run_id is None:
            self.run_id = self.writer.start_run("iees")
        return self.run_id

    # -- HL7 v2 --------------------------------------------------------------------------------

    def apply_messages(self, payloads: Sequence[bytes]) -> list[Reply]:
        """One Reply per payload (the bytes inside the MLLP frame), in order.

        A batch that fails is applied again message by message; a message that fails alone
        (the database, or a fault of ours) is dead-lettered and answered AE 207, so one bad
        message never stops the feed."""
        messages = [_prepare(payload) for payload in payloads]
        self._forget_old_acks()
        failure = self._attempt(messages)
        if isinstance(failure, list):
            return failure
        if self.writer.lost_connection():
            # The server dropped the connection (a restart, a failover): the next
            # transaction reconnects; the whole batch once more.
            log.warning("the IEES feed's database connection was lost; reconnecting")
            failure = self._attempt(messages)
            if isinstance(failure, list):
                return failure
        if len(messages) == 1:
            return [self._failed(messages[0], failure)]
        log.warning("a batch of %d IEES messages failed; applying them one by one", len(messages))
        replies = []
        for message in messages:
            try:
                replies.extend(self._in_transaction([message]))
            except Exception as exc:
                replies.append(self._failed(message, exc))
        return replies

    def _attempt(self, messages: list[_Message]) -> list[Reply] | Exception:
        """The replies, or what failed (the database, or a fault of ours)."""
        try:
            return self._in_transaction(messages)
        except Exception as exc:
            return exc

    def _forget_old_acks(self) -> None:
        """Duplicate keys are kept 30 days (rule 2); older ones go, once an hour."""
        now = time.monotonic()
        if now - self._forgotten_at < 3600:
            return
        self._forgotten_at = now
        try:
            with self.writer.transaction():
                self.writer.forget_acks()
        except psycopg.Error:
            log.warning("old IEES duplicate keys could not be removed; will try again")

    def _in_transaction(self, messages: list[_Message]) -> list[Reply]:
        self._run()
        with self.writer.transaction():
            return self._apply_batch(messages)

    def _failed(self, message: _Message, exc: Exception) -> Reply:
        """A message the database would not take: dead-lettered and answered AE 207."""
        # The type only: a database error's text can quote values of the message (PII).
        log.error("an IEES message could not be applied (%s)", type(exc).__name__)
        error = ErrorDetail(
            "MSH^1", 207, "E", diagnostic="the message could not be applied; kept for replay"
        )
        header = (
            message.parsed.header
            if message.parsed
            else (message.error.header if message.error else None)
        )
        reply = ack(header, "AE", [error])
        try:
            with self.writer.transaction():
                self.writer.dead_letter("hl7v2", message.payload, "application error (207)", "AE")
        except psycopg.Error as exc:
            raise FeedUnavailable("the message can be neither applied nor kept") from exc
        return Reply(reply, "AE", False)

    def _apply_batch(self, messages: list[_Message]) -> list[Reply]:
        writer = self.writer
        mapped = [m.mapped for m in messages if m.mapped is not None]
        people = {m.patient_id for m in mapped} | {
            m.retired_patient_id for m in mapped if m.retired_patient_id
        }
        writer.lock_keys(people)
        stored_acks = writer.stored_acks([k for m in messages if (k := m.duplicate_key)])
        persons = writer.persons(sorted(people))
        work = _Work(writer)
        work.prefetch((r["resourceType"], r["id"]) for m in mapped for r in m.resources)
        # What the messages will read and change in place, read once under its locks: the
        # people (a merge, a retired record) and their households.
        work.preload(
            [("Patient", p) for p in people]
            + [("Group", g.group_id) for m in mapped for g in m.memberships]
            + [("Group", g) for p in persons.values() for g in p.groups]
        )
        changed_persons: dict[str, PersonState] = {}
        new_acks: list[tuple[tuple[str, str, str], bytes]] = []
        replies: list[Reply] = []
        for message in messages:
            key = message.duplicate_key
            if key is not None and key in stored_acks:
                replies.append(
                    Reply(_with_notice(stored_acks[key]), _code(stored_acks[key]), False)
                )
                continue
            reply = self._one(message, work, persons, changed_persons)
            # Only an accepted message is a duplicate's original: one refused (AE, AR) may be
            # corrected and sent again under its MSH-10, and is then judged again.
            if key is not None and reply.code == "AA":
                stored_acks[key] = reply.ack
                new_acks.append((key, reply.ack))
            replies.append(reply)
        self._flush(work)
        writer.save_persons(changed_persons)
        writer.remember_acks(new_acks)
        return replies

    def _one(
        self,
        message: _Message,
        work: _Work,
        persons: dict[str, PersonState],
        changed: dict[str, PersonState],
    ) -> Reply:
        if message.error is not None:
            error = message.error
            self.writer.dead_letter("hl7v2", message.payload, str(error), error.ack_code)
            return Reply(ack(error), error.ack_code, False)
        parsed, mapped = message.parsed, message.mapped
        assert parsed is not None and mapped is not None
        state = persons.get(mapped.patient_id)
        if state is not None and mapped.event_time < state.event_time:
            return Reply(
                ack(parsed, "AA", [stale_warning(parsed, state.event_time_text)]), "AA", False
            )
        if mapped.merge is None and _retired(work.current(("Patient", mapped.patient_id))):
            # Merged into another IndividualID (rule 6): a late message for the retired one
            # must not bring it back. Refused, kept, and the sender told which key is gone.
            detail = ErrorDetail(
                "PID^1^3^1",
                204,
                "E",
                "RETIRED-ID",
                "IndividualID was merged into another; send updates for the survivor",
            )
            self.writer.dead_letter("hl7v2", message.payload, "retired IndividualID (204)", "AE")
            return Reply(ack(parsed, "AE", [detail]), "AE", False)
        mark = work.mark()
        try:
            notices = self._apply(mapped, parsed.event_time_text, work, persons, changed)
        except _Refused as refused:
            work.rollback(mark)
            detail = ErrorDetail(
                "MSH^1",
                207,
                "E",
                diagnostic=refusal_reason(refused.key[0], refused.issues),
            )
            self.writer.dead_letter("hl7v2", message.payload, f"{refused.key[0]} refused", "AE")
            return Reply(ack(parsed, "AE", [detail]), "AE", False)
        return Reply(ack(parsed, "AA", notices), "AA", True)

    # -- snapshots -----------------------------------------------------------------------------

    def apply_snapshot(
        self,
        snapshot: Snapshot,
        *,
        max_ended: float = 0.05,
        force: bool = False,
        batch_size: int = 500,
    ) -> SnapshotSummary:
        """Apply an NDJSON or CSV snapshot (README "Batch alternative"): each person as an
        A31 would be applied (older than what is stored: not applied); in full mode, the
        people the file does not list are ended the day before its date, unless that would end
        more than ``max_ended`` of the active enrollments (a truncated or wrong file), which
        raises SnapshotRefused before anything is written unless ``force``; then the merges."""
        writer = self.writer
        summary = SnapshotSummary(persons=len(snapshot.persons))
        listed = {m.patient_id for m in snapshot.persons}
        known = writer.all_persons()
        states = writer.persons(known)
        newer = {
            p for p, state in states.items() if state.event_time.date() > snapshot.snapshot_date
        }
        absent: list[str] = []
        if snapshot.mode == "full":
            # Rule 3 holds for files too: a person updated since the snapshot's date is not
            # ended by it (the file was cut before, or arrived late).
            absent = sorted(set(known) - listed - newer)
            summary.newer = len(set(known) - listed) - len(absent)
        # The safety valve counts every enrollment the file would end: those of the people it
        # does not list, and those its people no longer list (a truncated eligibility.csv).
        active = sum(len(state.programs) for state in states.values())
        ending = sum(len(states[p].programs) for p in absent if p in states)
        for mapped in snapshot.persons:
            state = states.get(mapped.patient_id)
            if state is not None and mapped.current_program_ids is not None:
                if mapped.event_time >= state.event_time:
                    ending += len(set(state.programs) - mapped.current_program_ids)
        if active and ending / active > max_ended and not force:
            raise SnapshotRefused(
                f"the snapshot would end {ending} of {active} enrollments"
                f" ({ending / active:.0%}, more than {max_ended:.0%}): check the file,"
                " or load it with --force"
            )
        self._run()
        for chunk in chunked(snapshot.persons, batch_size):
            with writer.transaction():
                writer.lock_keys({m.patient_id for m in chunk})
                persons = writer.persons(sorted({m.patient_id for m in chunk}))
                work = _Work(writer)
                work.prefetch((r["resourceType"], r["id"]) for m in chunk for r in m.resources)
                changed: dict[str, PersonState] = {}
                for mapped in chunk:
                    state = persons.get(mapped.patient_id)
                    if state is not None and mapped.event_time < state.event_time:
                        summary.stale += 1
                        continue
                    if _retired(work.current(("Patient", mapped.patient_id))):
                        summary.rejected += 1
                        reason = "retired IndividualID (merged into another)"
                        summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
                        continue
                    mark = work.mark()
                    try:
                        self._apply(mapped, snapshot.file_id, work, persons, changed)
                    except _Refused as refused:
                        work.rollback(mark)
                        summary.rejected += 1
                        reason = refusal_reason(refused.key[0], refused.issues)
                        summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
                        continue
                    summary.applied += 1
                _count(summary, self._flush(work))
                writer.save_persons(changed)
        end = snapshot.absent_end_date
        for chunk in chunked(absent, batch_size):
            with writer.transaction():
                writer.lock_keys(chunk)
                persons = writer.persons(list(chunk))
                work = _Work(writer)
                changed = {}
                for pid in chunk:
                    state = persons.get(pid)
                    if state is None:
                        continue
                    for reference in state.programs:
                        self._change(work, _key(reference), lambda b: end_program(b, end))
                    for reference in state.related or ():
                        self._change(work, _key(reference), lambda b: end_related_person(b, end))
                    for group in state.groups:
                        me = f"Patient/{pid}"
                        self._change(
                            work, ("Group", group), lambda b, me=me: end_member(b, me, end)
                        )
                    changed[pid] = PersonState(state.event_time, state.event_time_text, (), (), ())
                    summary.ended_persons += 1
                _count(summary, self._flush(work))
                writer.save_persons(changed)
        for merge in snapshot.merges:
            with writer.transaction():
                survivor_id = patient_id(merge.surviving_id)
                writer.lock_keys({survivor_id, patient_id(merge.retired_id)})
                persons = writer.persons([survivor_id, patient_id(merge.retired_id)])
                work = _Work(writer)
                survivor = work.current(("Patient", survivor_id))
                if survivor is None:
                    summary.rejected += 1
                    reason = "merge: the surviving individual is not in the file"
                    summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
                    continue
                changed = {}
                try:
                    self._merge_into(
                        survivor,
                        work.state(("Patient", survivor_id)).content_hash or "",
                        merge.retired_id,
                        work,
                        persons,
                        changed,
                    )
                except _Refused as refused:
                    summary.rejected += 1
                    reason = "merge: " + refusal_reason(refused.key[0], refused.issues)
                    summary.reasons[reason] = summary.reasons.get(reason, 0) + 1
                    continue
                summary.merges += 1
                _count(summary, self._flush(work))
                writer.save_persons(changed)
        summary.provenance = list(self.provenance)
        return summary

    # -- what a person's record does -------------------------------------------------------------

    def _apply(
        self,
        mapped: MappedMessage,
        event_time_text: str,
        work: _Work,
        persons: dict[str, PersonState],
        changed: dict[str, PersonState],
    ) -> list[ErrorDetail]:
        """Apply one person's record (a message, or a snapshot person); the notices for its
        ACK. Raises _Refused when the server refuses a resource it would write."""
        notices: list[ErrorDetail] = []
        if mapped.merge is not None:
            notices.extend(self._merge(mapped, work, persons, changed))
        else:
            self._upsert(mapped, work)
            self._end_missing(mapped, persons.get(mapped.patient_id), work)
        previous = persons.get(mapped.patient_id)  # after a merge: the retired lists folded in
        state = PersonState(
            mapped.event_time,
            event_time_text,
            tuple(sorted(mapped.current_program_ids))
            if mapped.current_program_ids is not None
            else (previous.programs if previous else ()),
            tuple(sorted(mapped.current_related_person_ids))
            if mapped.current_related_person_ids is not None
            else (previous.related if previous else None),
            tuple(sorted({m.group_id for m in mapped.memberships}))
            if mapped.merge is None
            else (previous.groups if previous else ()),
        )
        persons[mapped.patient_id] = changed[mapped.patient_id] = state
        return notices

    def _upsert(self, mapped: MappedMessage, work: _Work) -> None:
        for body in mapped.resources:
            key = (body["resourceType"], body["id"])
            if body["resourceType"] == "Group":
                merged = merge_member(work.current(key), body)
                work.put(merged, content_hash(merged))
                continue
            digest = content_hash(body)
            if work.unchanged(key, digest):
                continue
            if body["resourceType"] == "Patient":
                body = keep_merge_links(body, work.current(key))
            work.put(body, digest)

    def _end_missing(
        self, mapped: MappedMessage, previous: PersonState | None, work: _Work
    ) -> None:
        """Rules 4 and 5: what the person's last record listed and this one does not."""
        if previous is None:
            return
        end = mapped.end_date
        if mapped.current_program_ids is not None:
            for reference in set(previous.programs) - mapped.current_program_ids:
                self._change(work, _key(reference), lambda b: end_program(b, end))
        if mapped.current_related_person_ids is not None and previous.related is not None:
            for reference in set(previous.related) - mapped.current_related_person_ids:
                self._change(work, _key(reference), lambda b: end_related_person(b, end))
        current_groups = {m.group_id for m in mapped.memberships}
        me = f"Patient/{mapped.patient_id}"
        for group in set(previous.groups) - current_groups:
            self._change(work, ("Group", group), lambda b: end_member(b, me, end))

    def _change(self, work: _Work, key: Key, how: Any) -> None:
        body = work.current(key)
        if body is None:
            return
        changed = how(body)
        if changed is not None:
            work.put(changed, "")  # never equal to a mapped hash: the next mapping rewrites it

    def _merge(
        self,
        mapped: MappedMessage,
        work: _Work,
        persons: dict[str, PersonState],
        changed: dict[str, PersonState],
    ) -> list[ErrorDetail]:
        """Rule 6 for an A40: the retired IndividualID merged into the survivor (``mapped``)."""
        assert mapped.merge is not None
        (patient,) = [r for r in mapped.resources if r["resourceType"] == "Patient"]
        survivor = keep_merge_links(patient, work.current(("Patient", mapped.patient_id)))
        return self._merge_into(
            survivor, content_hash(patient), mapped.merge.retired_id, work, persons, changed
        )

    def _merge_into(
        self,
        survivor: dict[str, Any],
        survivor_hash: str,
        retired_individual_id: str,
        work: _Work,
        persons: dict[str, PersonState],
        changed: dict[str, PersonState],
    ) -> list[ErrorDetail]:
        survivor_id = survivor["id"]
        retired_id = patient_id(retired_individual_id)
        retired = work.current(("Patient", retired_id))
        if retired is None or _retired(retired):
            # 6(c) and 6(d): nothing to merge (or merged already); the survivor as stated.
            work.put(survivor, survivor_hash)
            if retired is None:
                log.warning("IEES merge: the retired individual is not known (no-op)")
                return [merge_noop_warning()]
            return []
        work.put(take_over(survivor, retired_id, retired_individual_id), survivor_hash)
        work.put(retire_patient(retired, survivor_id), "")
        old, new = f"Patient/{retired_id}", f"Patient/{survivor_id}"
        referrers = set(self.writer.referrers("Patient", retired_id)) | set(work.pending)
        for key in sorted(referrers):
            if key[0] == "Patient":
                continue  # links between Patients record the merge itself
            body = work.current(key)
            moved = repoint(body, old, new) if body is not None else None
            if moved is not None:
                remember = work.state(key).content_hash is not None or key in work.pending
                work.put(moved, "", remember=remember)
        gone = persons.get(retired_id)
        if gone is not None:
            mine = persons.get(survivor_id)
            changed[survivor_id] = persons[survivor_id] = PersonState(
                mine.event_time if mine else gone.event_time,
                mine.event_time_text if mine else gone.event_time_text,
                tuple(sorted({*(mine.programs if mine else ()), *gone.programs})),
                tuple(sorted({*((mine.related or ()) if mine else ()), *(gone.related or ())})),
                tuple(sorted({*(mine.groups if mine else ()), *gone.groups})),
            )
        return []

    def _flush(self, work: _Work) -> Written | None:
        if not work.pending:
            return None
        run_id = self._run()
        self._provenances += 1
        provenance_id = f"feed-{FEED}-{run_id}-{self._provenances}"

        def trace(targets: list[str]) -> dict[str, Any]:
            body = provenance(FEED, run_id, "IEES", targets, now_millis())
            return {**body, "id": provenance_id}

        written = self.writer.write(
            list(work.pending.values()), run_id, checked=True, provenance=trace
        )
        if written.changed:
            self.provenance.append(f"Provenance/{provenance_id}")
        return written


def _retired(patient: dict[str, Any] | None) -> bool:
    """A Patient a merge retired: inactive and ``replaced-by`` another."""
    return bool(
        patient
        and patient.get("active") is False
        and any(link.get("type") == "replaced-by" for link in patient.get("link", []))
    )


def _count(summary: SnapshotSummary, written: Written | None) -> None:
    if written is not None:
        summary.created += written.counts.created
        summary.updated += written.counts.updated
        summary.unchanged += written.counts.unchanged


def _key(reference: str) -> Key:
    resource_type, _, id = reference.partition("/")
    return (resource_type, id)


def _with_notice(original: bytes) -> bytes:
    """A stored ACK answering a resend: as it was, plus the informational ERR (rule 2)."""
    notice = ack(None, "AA", [duplicate_notice()]).split(b"\r")
    err = [segment for segment in notice if segment.startswith(b"ERR|")]
    return original.rstrip(b"\r") + b"\r" + b"\r".join(err) + b"\r"


def _code(reply: bytes) -> str:
    for segment in reply.split(b"\r"):
        if segment.startswith(b"MSA|"):
            return segment.split(b"|")[1].decode("ascii", "replace")
    return "AA"
