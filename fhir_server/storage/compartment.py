"""A Patient's compartment across resource types: ``Patient/{id}/*`` and ``Patient/$everything``.

http://hl7.org/fhir/R4/compartmentdefinition-patient.html and
http://hl7.org/fhir/R4/patient-operation-everything.html. The compartment rows written with each
resource (the Patient itself included) give the members; pages are ordered by resource type and
rid, and continue from a cursor on that pair, so paging is stable while others write.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_server.core.errors import InvalidRequest
from fhir_server.storage.repository import StoredResource

__all__ = ["CompartmentPage", "compartment_page"]


@dataclass(frozen=True, slots=True)
class CompartmentPage:
    resources: tuple[StoredResource, ...]
    next_cursor: str | None


async def compartment_page(
    conn: Any,
    patient_id: str | None,
    *,
    types: Sequence[str] = (),
    since: datetime | None = None,
    count: int,
    cursor: str | None = None,
) -> CompartmentPage:
    """One page of the resources in Patient ``patient_id``'s compartment (None: any Patient's)."""
    where = ["NOT r.deleted"]
    params: dict[str, Any] = {"limit": count + 1}
    if patient_id is not None:
        where.append(
            "EXISTS (SELECT 1 FROM compartment c WHERE c.resource_type = r.resource_type"
            " AND c.rid = r.rid AND c.compartment_type = 'Patient'"
            " AND c.compartment_id = %(patient)s)"
        )
        params["patient"] = patient_id
    else:
        where.append(
            "EXISTS (SELECT 1 FROM compartment c WHERE c.resource_type = r.resource_type"
            " AND c.rid = r.rid AND c.compartment_type = 'Patient')"
        )
    if types:
        where.append("r.resource_type = ANY(%(types)s)")
        params["types"] = list(types)
    if since is not None:
        where.append("r.last_updated >= %(since)s")
        params["since"] = since
    if cursor is not None:
        after_type, after_rid = _decode(cursor)
        where.append("(r.resource_type, r.rid) > (%(after_type)s, %(after_rid)s)")
        params |= {"after_type": after_type, "after_rid": after_rid}
    text = (
        "SELECT r.resource_type, r.rid, r.id, r.version_id, r.last_updated, r.body"
        f" FROM resource r WHERE {' AND '.join(where)}"
        " ORDER BY r.resource_type, r.rid LIMIT %(limit)s"
    )
    rows = await (await conn.execute(text, params)).fetchall()
    more = len(rows) > count
    rows = rows[:count]
    resources = tuple(
        StoredResource(resource_type, id, version_id, last_updated, False, body.encode())
        for resource_type, _, id, version_id, last_updated, body in rows
    )
    next_cursor = f"{rows[-1][0]}~{rows[-1][1]}" if more and rows else None
    return CompartmentPage(resources, next_cursor)


_CURSOR = re.compile(r"([A-Za-z]{1,64})~([0-9]{1,18})")


def _decode(cursor: str) -> tuple[str, int]:
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise InvalidRequest("the _cursor is not one this server gave")
    return match.group(1), int(match.group(2))
