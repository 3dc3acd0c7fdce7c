"""The conformance resources stored on the server: StructureDefinitions, CodeSystems, ValueSets
and ConceptMaps posted by clients or installed from packages (``sdoh-fhir profiles install``)."""

from __future__ import annotations

from typing import Any

import orjson

__all__ = [
    "CONFORMANCE_CHANNEL",
    "CONFORMANCE_TYPES",
    "load_definitions",
    "load_definitions_sync",
    "stored_versions",
]

# Notified (by a trigger: migration 0008) when one of these types is written or deleted: every
# server process then reloads its profiles and terminology.
CONFORMANCE_CHANNEL = "sdoh_fhir_conformance"
CONFORMANCE_TYPES = ("StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap")

_VERSIONS = (
    "SELECT resource_type, id, version_id FROM resource"
    " WHERE resource_type = ANY(%s) AND NOT deleted ORDER BY resource_type, id"
)
_BODIES = (
    "SELECT body FROM resource WHERE resource_type = ANY(%s) AND NOT deleted"
    " ORDER BY resource_type, last_updated, id"
)


async def stored_versions(conn: Any) -> list[tuple[str, str, int]]:
    """(type, id, version) of every current conformance resource: what says whether to reload."""
    rows = await (await conn.execute(_VERSIONS, (list(CONFORMANCE_TYPES),))).fetchall()
    return [(t, i, v) for t, i, v in rows]


async def load_definitions(conn: Any) -> list[dict[str, Any]]:
    """Every current conformance resource, oldest first (a later one of the same url wins)."""
    rows = await (await conn.execute(_BODIES, (list(CONFORMANCE_TYPES),))).fetchall()
    return [orjson.loads(body) for (body,) in rows]


def load_definitions_sync(conn: Any) -> list[dict[str, Any]]:
    """:func:`load_definitions` on a synchronous connection (the bulk loader's)."""
    return [orjson.loads(body) for (body,) in conn.execute(_BODIES, (list(CONFORMANCE_TYPES),))]
