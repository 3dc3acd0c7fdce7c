"""The SearchParameter resources stored, each with the state of its newest reindex job, and the
search registry they give: the built-in parameters with the active definitions added, each
*pending* (refused for search, with the reason) until its reindex job has completed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from fhir_server.search.custom import InvalidDefinition, params_from_definition
from fhir_server.search.registry import SearchParam, SearchRegistry

__all__ = [
    "SEARCH_PARAMETER_CHANNEL",
    "StoredDefinition",
    "build_registry",
    "load_definitions",
    "load_definitions_sync",
    "status_path",
]

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
    ORDER BY (params ->> 'versionId')::int DESC, created_at DESC LIMIT 1
) j ON true
WHERE r.resource_type = 'SearchParameter' AND NOT r.deleted
ORDER BY r.id
"""


async def load_definitions(conn: Any) -> list[StoredDefinition]:
    """Every current SearchParameter resource, ordered by id."""
    return _definitions(await (await conn.execute(_DEFINITIONS)).fetchall())


def load_definitions_sync(conn: Any) -> list[StoredDefinition]:
    """:func:`load_definitions` on a synchronous connection (the bulk loader's)."""
    return _definitions(conn.execute(_DEFINITIONS).fetchall())


def _definitions(rows: Sequence[Any]) -> list[StoredDefinition]:
    return [
        StoredDefinition(id, version, orjson.loads(body), job_id, state, error, job_version)
        for id, version, body, job_id, state, error, job_version in rows
    ]


def status_path(job_id: str) -> str:
    """Where a reindex job's progress is polled, relative to the FHIR base."""
    return f"$reindex-poll-status/{job_id}"


def build_registry(base: SearchRegistry, definitions: Sequence[StoredDefinition]) -> SearchRegistry:
    """``base`` with the active stored definitions, each pending until its reindex completed."""
    added: list[SearchParam] = []
    # Composites name their components by canonical URL, which may be another custom
    # parameter's: resolve plain parameters first.
    ordered = sorted(definitions, key=lambda d: d.body.get("type") == "composite")
    for definition in ordered:
        body = definition.body
        if body.get("status") != "active":
            continue  # draft and retired definitions are not searched (searchparameter.html)
        try:
            params = params_from_definition(body, base.with_params(added))
        except InvalidDefinition as exc:
            added.extend(_refused(definition, str(exc), base.with_params(added)))
            continue
        except Exception as exc:  # one odd definition must not keep the server from starting
            reason = f"unexpected {type(exc).__name__}"
            added.extend(_refused(definition, reason, base.with_params(added)))
            continue
        pending = _pending(definition)
        added.extend(p if pending is None else replace(p, pending=pending) for p in params)
    return base.with_params(added)


def _pending(definition: StoredDefinition) -> str | None:
    where = f"SearchParameter/{definition.id}"
    if definition.job_id is None:
        return f"{where} has no reindex job; update it to index it"
    watch = f"see GET [base]/{status_path(definition.job_id)}"
    if definition.job_state == "failed":
        return f"indexing {where} failed: {definition.job_error}"
    if definition.job_state == "cancelled":
        return f"indexing {where} was cancelled; update it to index it again"
    if definition.job_state != "completed" or definition.job_version != definition.version_id:
        return f"{where} is being indexed ({watch})"
    return None


def _refused(
    definition: StoredDefinition, reason: str, registry: SearchRegistry
) -> list[SearchParam]:
    """Placeholders that make a search with the parameter say why it cannot be used.

    Never in place of a parameter ``registry`` has: a definition that cannot be indexed leaves
    the built-in (or earlier) parameter of that code as it was.
    """
    code = definition.body.get("code")
    bases = definition.body.get("base")
    if not isinstance(code, str) or not isinstance(bases, list):
        return []
    pending = f"SearchParameter/{definition.id} cannot be indexed: {reason}"
    return [
        SearchParam(code=code, resource_type=b, type="special", expression=None, pending=pending)
        for b in bases
        if isinstance(b, str) and registry.get(b, code) is None
    ]
