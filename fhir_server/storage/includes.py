"""The resources ``_include`` and ``_revinclude`` add to a page of matches.

One statement per include and round (set-based over the whole page, never one per match); rounds
after the first follow only ``:iterate`` includes, from what the round before added. A page never
carries more than ``limit`` included resources; what a cap left out is reported, never dropped
silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhir_server.search.include import MAX_ITERATIONS, Include, build_include
from fhir_server.storage.repository import StoredResource

__all__ = ["Included", "fetch_included"]


@dataclass(frozen=True, slots=True)
class Included:
    resources: tuple[StoredResource, ...]
    # What was left out, one message each (the cap on resources, or on :iterate rounds).
    warnings: tuple[str, ...]


async def fetch_included(
    conn: Any, includes: Sequence[Include], matches: Sequence[StoredResource], limit: int
) -> Included:
    seen = {(m.resource_type, m.id) for m in matches}
    frontier = list(seen)
    found: list[StoredResource] = []
    warnings: list[str] = []
    for round_ in range(1 + MAX_ITERATIONS):
        active = [i for i in includes if round_ == 0 or i.iterate]
        if not active or not frontier:
            break
        if round_ == MAX_ITERATIONS:
            warnings.append(
                f"_include:iterate stopped after {MAX_ITERATIONS} rounds; "
                "resources further along were not included"
            )
            break
        added: list[tuple[str, str]] = []
        for include in active:
            keys = _keys(include, frontier)
            if not keys:
                continue
            room = limit - len(found)
            sql = build_include(include, keys, room + 1)
            rows = await (await conn.execute(sql.text, sql.params)).fetchall()
            for _, resource_type, id, version_id, last_updated, body in rows:
                if (resource_type, id) in seen:
                    continue
                if len(found) >= limit:
                    warnings.append(
                        f"{include.name}: more than {limit} resources are included on one page; "
                        "those past the limit were left out (use a smaller _count)"
                    )
                    return Included(tuple(found), tuple(warnings))
                seen.add((resource_type, id))
                added.append((resource_type, id))
                found.append(
                    StoredResource(
                        resource_type, id, version_id, last_updated, False, body.encode()
                    )
                )
        frontier = added
    return Included(tuple(found), tuple(warnings))


def _keys(include: Include, frontier: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    if include.reverse:
        if include.target_type is None:
            return list(frontier)
        return [k for k in frontier if k[0] == include.target_type]
    return [k for k in frontier if k[0] == include.source_type]
