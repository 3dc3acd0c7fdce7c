"""Who published a feed: the identifier systems and FHIR ids of its records.

Every mapped resource carries the feed's own id in ``identifier`` and gets a FHIR id that is a
pure function of (feed, HSDS object, feed id), so a reload is an upsert by id and two feeds
can never collide.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass

__all__ = ["Bounds", "Feed"]

# Fixed for ever: changing it would give every stored directory resource a new id.
_NAMESPACE = uuid.UUID("6f0e9a5c-0b8f-5f8e-9d35-3f2d1c1f8a10")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_BASE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s]+")


@dataclass(frozen=True, slots=True)
class Bounds:
    """A latitude/longitude box the feed's sites are expected in (a state, a region)."""

    south: float
    west: float
    north: float
    east: float

    def contains(self, latitude: float, longitude: float) -> bool:
        return self.south <= latitude <= self.north and self.west <= longitude <= self.east


@dataclass(frozen=True, slots=True)
class Feed:
    """An HSDS publisher.

    ``name`` is a short stable key ("ky-211"); it seeds the FHIR ids, so it must never change
    for a feed. ``base`` is the URI the identifier systems hang from
    (``https://211.example.org/hsds`` gives ``https://211.example.org/hsds/service-id``);
    without it they are ``urn:sdoh-fhir:hsds:<name>:service-id``. ``bounds``, when given,
    makes a site whose valid coordinates fall outside it a reported problem.
    """

    name: str
    base: str | None = None
    bounds: Bounds | None = None

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError("a feed name is 1-64 letters, digits, '.', '_' or '-'")
        if self.base is not None and not _BASE.fullmatch(self.base):
            raise ValueError("a feed base is an absolute URI with no whitespace")

    def system(self, hsds_object: str) -> str:
        """The identifier system of this feed's ids for one HSDS object (``service`` ...)."""
        if self.base:
            return f"{self.base.rstrip('/')}/{hsds_object}-id"
        return f"urn:sdoh-fhir:hsds:{self.name}:{hsds_object}-id"

    def taxonomy_system(self, taxonomy_name: str) -> str:
        """A code system for a taxonomy the feed names but gives no URI for."""
        slug = re.sub(r"[^a-z0-9]+", "-", taxonomy_name.lower()).strip("-") or "local"
        if self.base:
            return f"{self.base.rstrip('/')}/taxonomy/{slug}"
        return f"urn:sdoh-fhir:hsds:{self.name}:taxonomy:{slug}"

    def resource_id(self, hsds_object: str, feed_id: str) -> str:
        """The FHIR id of a record: a UUIDv5 of (feed name, object, feed id)."""
        return _resource_id(self.name, hsds_object, feed_id)


@functools.lru_cache(maxsize=1 << 18)
def _resource_id(name: str, hsds_object: str, feed_id: str) -> str:
    # Cached: a record's id is asked for again by every reference to it.
    return str(uuid.uuid5(_NAMESPACE, f"{name}\x1f{hsds_object}\x1f{feed_id}"))
