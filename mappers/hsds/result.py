"""What a mapping run hands the loader: resources with their feed keys, and problems."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["MappedResource", "MappingResult", "Problem", "content_hash"]


def content_hash(resource: dict[str, Any]) -> str:
    """SHA-256 of the resource's canonical JSON (sorted keys): equal content, equal hash.

    The loader compares it with the stored one to skip unchanged records without parsing
    them; it covers only what the mapper produces, never server-side ``meta`` or tags.
    """
    return hashlib.sha256(orjson.dumps(resource, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True, slots=True)
class MappedResource:
    """One FHIR resource, with the HSDS record it came from.

    ``id`` is the resource's FHIR id (deterministic from feed, object and feed id); the
    ``identifier`` whose system is ``Feed.system(hsds_object)`` carries ``feed_id``.
    """

    resource_type: str
    id: str
    hsds_object: str
    feed_id: str
    resource: dict[str, Any]
    content_hash: str


@dataclass(frozen=True, slots=True)
class Problem:
    """A record mapped with what it had, or skipped, and why; ids only, never names.

    ``code`` is one of: ``missing-id``, ``missing-name``, ``missing-organization``,
    ``missing-location``, ``missing-parent-organization``, ``no-coordinates``,
    ``invalid-coordinates``, ``outside-area``, ``missing-status``, ``unknown-status``,
    ``unlinkable-row``, ``unknown-taxonomy-term``, ``unparsed-schedule``,
    ``possible-duplicate``, ``duplicate-id``, ``empty-required-field``.
    """

    kind: str
    feed_id: str
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class MappingResult:
    """Resources in an order where referenced ones come first, and the problems found.

    Order: every Organization (parents before their children), then every Location, then
    every HealthcareService; each group in the feed's order.
    """

    feed: str
    resources: tuple[MappedResource, ...]
    problems: tuple[Problem, ...]
    counts: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts of resources by type and of problems by code (no ids, no names)."""
        return {
            "feed": self.feed,
            "resources": dict(Counter(item.resource_type for item in self.resources)),
            "problems": dict(Counter(problem.code for problem in self.problems)),
            "records": dict(self.counts),
        }
