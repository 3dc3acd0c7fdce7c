"""What a feed load needs from the database before it writes: the search registry (with the
custom SearchParameters stored) and the profiles and terminology (with the stored ones), so
feed resources are indexed and validated as a REST write would index and validate them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import psycopg

from fhir_server.conformance import Conformance
from fhir_server.core.errors import Issue
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.conformance import load_definitions_sync as load_conformance_sync
from fhir_server.storage.feeds import FeedWriter
from fhir_server.storage.repository import Indexer, format_instant
from fhir_server.storage.search_parameters import build_registry, load_definitions_sync

__all__ = ["open_writer", "provenance", "refusal_reason"]


def open_writer(
    conninfo: str, feed: str, conformance: Conformance | None = None, *, durable: bool = True
) -> FeedWriter:
    """A FeedWriter for ``feed`` that indexes and validates as the server does."""
    with psycopg.connect(conninfo) as conn:
        definitions = load_definitions_sync(conn)
        stored = load_conformance_sync(conn)
    registry = build_registry(SearchRegistry.load_default(), definitions)
    checked = conformance or Conformance.bundled()
    if stored:
        checked = checked.with_definitions(stored)
    return FeedWriter(conninfo, feed, Indexer(registry), checked, durable=durable)


FEED_RUN_SYSTEM = "https://sdoh-fhir.org/fhir/sid/feed-run"


def provenance(
    feed: str,
    run_id: int,
    what: str,
    targets: list[str],
    recorded: datetime,
    *,
    activity: str = "UPDATE",
) -> dict[str, Any]:
    """The Provenance of one load: the versions it wrote (``Type/id/_history/n``), the feed
    and run as the source entity, this server's loader as the assembler."""
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target} for target in targets],
        "recorded": format_instant(recorded),
        "activity": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation",
                    "code": activity,
                }
            ]
        },
        "agent": [
            {
                "type": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/"
                            "provenance-participant-type",
                            "code": "assembler",
                        }
                    ]
                },
                "who": {"display": f"sdoh-fhir {what} loader"},
            }
        ],
        "entity": [
            {
                "role": "source",
                "what": {
                    "identifier": {"system": FEED_RUN_SYSTEM, "value": f"{feed}/run/{run_id}"},
                    "display": f"{what} feed {feed}, run {run_id}",
                },
            }
        ],
    }


def refusal_reason(resource_type: str, issues: Sequence[Issue]) -> str:
    """Why the server refused a feed's resource, with no values (summaries, ACKs, dead
    letters): the type, the first issue's code and where it is."""
    if not issues:
        return f"{resource_type}: refused"
    first = issues[0]
    where = first.expression[0] if first.expression else resource_type
    return f"{resource_type}: {first.code} at {where}"
