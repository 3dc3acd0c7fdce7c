"""Loading a 211 resource directory (HSDS) into the server: ``sdoh-fhir load hsds PATH`` and
``POST /$load-hsds``.

``mappers.hsds`` maps the feed to Organizations, Locations and HealthcareServices with ids
that do not change between loads; this module writes them as an idempotent upsert
(``fhir_server.storage.feeds.FeedWriter``), in transactions of ``batch_size`` resources, so
the server keeps answering while a directory loads:

* a record whose mapped content and stored version are what the last load wrote is skipped
  (``unchanged``) without being read; a changed one becomes a new version;
* server-side ``meta.tag`` and ``meta.security`` of a stored resource (the onboarded-partner
  flag ``PARTNER_TAG``, say) are kept: the feed never states them;
* in a full load (the default), every record of the feed that the load no longer lists is
  made inactive (Organization and HealthcareService ``active`` false, Location ``status``
  inactive), never deleted; one that comes back is active again;
* a record the mapper reports (a service whose organization is missing, a location without
  coordinates) is loaded with what it has, and the problem is counted in the summary; a
  resource the server refuses (invalid, or against a required profile) is not written and is
  counted with its reason;
* each transaction that changed something writes, in it, a Provenance naming the feed and
  the run, whose targets are the versions it wrote (``FEED_RUN_SYSTEM``): a load cut short
  leaves none untraced; every load leaves a ``feed_run`` row with its counts;
* a full load that would make more than a fifth of the feed's records inactive (an empty or
  cut-short export) is refused before anything is written, unless forced.

Only one load of a feed runs at a time (a session advisory lock).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.conformance import Conformance
from fhir_server.ingest.feed_context import open_writer, provenance, refusal_reason
from fhir_server.storage.feeds import FeedWriter, Key, Pending, Written, chunked
from fhir_server.storage.repository import now_millis
from mappers.hsds import Feed, InvalidHsds, MappedResource, MappingResult, map_directory

__all__ = [
    "PARTNER_TAG",
    "FeedError",
    "FeedProgress",
    "FeedSummary",
    "load_hsds",
    "load_mapping",
]

# The onboarded-partner designation ("KY Partner"): state staff set it on an Organization
# (a PUT with this tag in meta.tag); reloads keep it. Search: Organization?_tag=<system>|<code>.
PARTNER_TAG = {
    "system": "https://kynect.example.org/fhir/CodeSystem/organization-designation",
    "code": "ky-partner",
    "display": "KY Partner",
}
HSDS_TYPES = ("Organization", "Location", "HealthcareService")


class FeedError(RuntimeError):
    """The load cannot start or go on (unreadable feed, another load of it running)."""


@dataclass(frozen=True, slots=True)
class FeedProgress:
    done: int
    total: int
    seconds: float


@dataclass
class FeedSummary:
    """What a load did; reasons and problems by code only (no names, no identifiers)."""

    feed: str
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    inactivated: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # rejected, by reason
    problems: Counter[str] = field(default_factory=Counter)  # loaded with what they had
    seconds: float = 0.0
    run_id: int | None = None
    provenance: list[str] = field(default_factory=list)

    def add(self, written: Written) -> None:
        self.created += written.counts.created
        self.updated += written.counts.updated
        self.unchanged += written.counts.unchanged
        self.rejected += len(written.refused)
        for refused in written.refused:
            self.reasons[refusal_reason(refused.key[0], refused.issues)] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "feed": self.feed,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "inactivated": self.inactivated,
            "rejected": self.rejected,
            "rejectedReasons": dict(self.reasons),
            "problems": dict(self.problems),
            "seconds": round(self.seconds, 3),
            "run": self.run_id,
            "provenance": self.provenance,
        }


def load_hsds(
    conninfo: str,
    path: Path,
    *,
    feed: str,
    full: bool = True,
    conformance: Conformance | None = None,
    on_progress: Callable[[FeedProgress], None] | None = None,
    batch_size: int = 1000,
    max_inactivated: float = 0.2,
    force: bool = False,
) -> FeedSummary:
    """Map the HSDS feed at ``path`` (a file or directory) and load it as feed ``feed``.

    ``feed`` names the source (say ``ky-211``) and must never change for one source: the
    resource ids derive from it. Raises FeedError when the feed cannot be read.
    """
    started = time.monotonic()
    try:
        result = map_directory(path, feed=Feed(feed))
    except InvalidHsds as exc:
        raise FeedError(f"the HSDS feed cannot be read: {exc}") from None
    except OSError as exc:
        raise FeedError(f"cannot read {path}: {exc.strerror or exc}") from None
    return load_mapping(
        conninfo,
        result,
        full=full,
        max_inactivated=max_inactivated,
        force=force,
        conformance=conformance,
        on_progress=on_progress,
        batch_size=batch_size,
        started=started,
    )


def load_mapping(
    conninfo: str,
    result: MappingResult,
    *,
    full: bool = True,
    conformance: Conformance | None = None,
    on_progress: Callable[[FeedProgress], None] | None = None,
    batch_size: int = 1000,
    started: float | None = None,
    max_inactivated: float = 0.2,
    force: bool = False,
) -> FeedSummary:
    """Load an HSDS mapping (see ``load_hsds``). A full load that would make more than
    ``max_inactivated`` of the feed's active records inactive (an empty or cut-short export)
    is refused with FeedError before anything is written, unless ``force``."""
    started = time.monotonic() if started is None else started
    summary = FeedSummary(result.feed)
    summary.problems.update(problem.code for problem in result.problems)
    writer = open_writer(conninfo, f"hsds:{result.feed}", conformance, durable=False)
    try:
        if not writer.try_lock_feed():
            raise FeedError(f"another load of the HSDS feed {result.feed!r} is running")
        writer.analyze()
        mapped = {(item.resource_type, item.id) for item in result.resources}
        active = [key for key, inactive in writer.feed_keys(HSDS_TYPES).items() if not inactive]
        missing = [key for key in active if key not in mapped] if full else []
        if active and len(missing) / len(active) > max_inactivated and not force:
            raise FeedError(
                f"the feed would make {len(missing)} of its {len(active)} active records"
                f" inactive ({len(missing) / len(active):.0%}, more than"
                f" {max_inactivated:.0%}): check the feed, or load it with --force"
            )
        summary.run_id = run_id = writer.start_run("hsds")
        total = len(result.resources)
        done = 0
        last_report = time.monotonic()
        for chunk in chunked(result.resources, batch_size):
            with writer.transaction():
                written, skipped = _upsert(writer, chunk, run_id)
                summary.provenance += _write_provenance(writer, result.feed, run_id, written)
            summary.add(written)
            summary.unchanged += skipped
            done += len(chunk)
            if on_progress is not None and time.monotonic() - last_report >= 1.0:
                last_report = time.monotonic()
                on_progress(FeedProgress(done, total, last_report - started))
        if full:
            summary.inactivated, ids = _inactivate_missing(
                writer, sorted(missing), result.feed, run_id, batch_size
            )
            summary.provenance += ids
        if summary.created + summary.inactivated > 1000:
            writer.analyze()  # for the next load, and the IEES feed's lookups
        summary.seconds = time.monotonic() - started
        writer.finish_run(run_id, summary.as_dict(), ",".join(summary.provenance) or None)
        writer.finish()
    finally:
        writer.close()
    if on_progress is not None:
        on_progress(FeedProgress(total, total, summary.seconds))
    return summary


def _upsert(
    writer: FeedWriter, chunk: Sequence[MappedResource], run_id: int
) -> tuple[Written, int]:
    """Write the records of ``chunk`` that changed; how many were skipped as unchanged."""
    keys = [(item.resource_type, item.id) for item in chunk]
    states = writer.states(keys)
    todo = [
        item
        for item, key in zip(chunk, keys, strict=True)
        if states[key].inactive or not states[key].unchanged(item.content_hash)
    ]
    existing = [(i.resource_type, i.id) for i in todo if states[(i.resource_type, i.id)].version]
    writer.lock_resources(existing)  # what is read under the lock is what the write replaces
    stored = writer.bodies(existing)
    pending = [
        Pending(
            _keep_server_meta(item.resource, stored.get((item.resource_type, item.id))),
            item.content_hash,
        )
        for item in todo
    ]
    return writer.write(pending, run_id), len(chunk) - len(todo)


def _keep_server_meta(mapped: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """``mapped`` with the stored resource's tags and security labels (the feed states none)."""
    if not stored:
        return mapped
    old = stored.get("meta") or {}
    kept = {k: old[k] for k in ("tag", "security") if old.get(k)}
    if not kept:
        return mapped
    return {**mapped, "meta": {**(mapped.get("meta") or {}), **kept}}


def _inactive(body: dict[str, Any]) -> dict[str, Any]:
    if body["resourceType"] == "Location":
        return {**body, "status": "inactive"}
    return {**body, "active": False}


def _inactivate_missing(
    writer: FeedWriter, missing: Sequence[Key], feed: str, run_id: int, batch_size: int
) -> tuple[int, list[str]]:
    """Make inactive the feed's records this full load no longer lists: how many changed,
    and the Provenance written with them."""
    count = 0
    ids: list[str] = []
    for chunk in chunked(missing, batch_size):
        with writer.transaction():
            writer.lock_resources(chunk)
            states = writer.states(chunk)
            bodies = writer.bodies(chunk)
            pending = [
                Pending(_inactive(bodies[key]), states[key].content_hash or "", inactive=True)
                for key in chunk
                if key in bodies
            ]
            written = writer.write(pending, run_id)
            ids += _write_provenance(writer, feed, run_id, written)
        count += len(written.changed)
    return count, ids


def _write_provenance(writer: FeedWriter, feed: str, run_id: int, written: Written) -> list[str]:
    """The Provenance of what one batch changed, in its transaction; its id, if any."""
    if not written.changed:
        return []
    targets = [f"{t}/{i}/_history/{written.versions[(t, i)]}" for t, i in written.changed]
    body = provenance(f"hsds:{feed}", run_id, "HSDS", targets, now_millis())
    body["id"] = f"feed-run-{run_id}-{uuid.uuid4().hex[:12]}"
    writer.write([Pending(body, "")], run_id, remember=False)
    return [f"Provenance/{body['id']}"]
