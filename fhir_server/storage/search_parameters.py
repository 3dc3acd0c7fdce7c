"""The SearchParameter resources stored, each with the state of its newest reindex job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["SEARCH_PARAMETER_CHANNEL", "StoredDefinition", "load_definitions"]

# Notified (by triggers: migration 0007) when a SearchParameter is written or a reindex job
# starts or ends: every server process then reloads its search parameters.
SEARCH_PARAMETER_CHANNEL = "sdoh_fhir_search_parameters"


@dataclass(frozen=True, slots=True)
class StoredDefinition:
    id: str
    version_id: int
    body: dict[str, Any]
    # The newest reindex job of this SearchParameter (queued, running, completed, failed or
    # cancelled) and the version it indexes.
    job_id: str | None
    job_state: str | None
    job_error: str | None
    job_version: int | None


_DEFINITIONS = """
SELECT r.id, r.version_id, r.body, j.id::text, j.state, j.error, (j.params ->> 'versionId')::int
FROM resource r
LEFT JOIN LATERAL (
    SELECT id, state, error, params FROM job
    WHERE kind = 'reindex' AND params ->> 'searchParameter' = r.id
    ORDER BY created_at DESC LIMIT 1
) j ON true
WHERE r.resource_type = 'SearchParameter' AND NOT r.deleted
ORDER BY r.id
"""


async def load_definitions(conn: Any) -> list[StoredDefinition]:
    """Every current SearchParameter resource, ordered by id."""
    rows = await (await conn.execute(_DEFINITIONS)).fetchall()
    return [
        StoredDefinition(id, version, orjson.loads(body), job_id, state, error, job_version)
        for id, version, body, job_id, state, error, job_version in rows
    ]
