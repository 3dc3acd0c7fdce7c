"""``POST /$load-hsds`` and ``POST /$load-iees``: the state feeds pushed over HTTP.

``$load-iees`` takes HL7 v2 (``x-application/hl7-v2+er7``, also ``application/hl7-v2`` and
``text/plain``): one message, or several one after another or MLLP-framed. They go through the
same pipeline as the MLLP listener (group commit, duplicates, stale messages, merges, dead
letters) and the answer is 200 with the ACKs, one per message in order, as the same media type:
the ACK is the HL7 answer whatever it says. An IEES snapshot (``application/x-ndjson``) is
applied whole and answered with a ``Parameters`` of counts; one refused as a whole (no trailer,
counts that differ, or more than 5% of the enrollments ending, unless ``force=true``) is a 422
and is kept as a dead letter.

``$load-hsds`` takes one HSDS 3.x JSON document (``application/json``: an object, a list, or
an API page) or a zip of a feed directory (``application/zip``: JSON files or a tabular data
package), for the feed named by ``feed`` (required: ids derive from it). ``mode=full`` makes
inactive what the feed no longer lists; it is the default for a zip, and ``partial`` for a
JSON document, which usually carries a few records. The answer is a ``Parameters`` of counts.

Both run in a worker thread on a connection of their own; the request waits for the result.
"""

from __future__ import annotations

import asyncio
import io
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from fhir_server.api import rest
from fhir_server.api.formats import render_resource
from fhir_server.api.parameters import OperationParameters
from fhir_server.api.state import AppState
from fhir_server.conformance import Conformance, parse_required_profiles
from fhir_server.core.errors import (
    InvalidRequest,
    PayloadTooLarge,
    ServiceUnavailable,
    UnprocessableEntity,
    UnsupportedMediaType,
)
from fhir_server.ingest.hsds import FeedError, load_hsds
from fhir_server.ingest.iees import FeedUnavailable, IeesApplier, SnapshotRefused
from fhir_server.ingest.iees_files import split_messages
from fhir_server.ingest.iees_pipeline import IeesPipeline
from fhir_server.storage.database import libpq_url
from mappers.iees import InvalidSnapshot, map_snapshot, parse_ndjson

__all__ = ["close_feeds", "routes"]

_HL7 = {"x-application/hl7-v2+er7", "application/hl7-v2", "application/edi-hl7v2", "text/plain"}
_NDJSON = {"application/x-ndjson", "application/ndjson", "application/fhir+ndjson"}
_ZIP = {"application/zip", "application/x-zip-compressed"}
_JSON = {"application/json", "application/fhir+json"}
_FEED_NAME_MAX = 64
_ZIP_MEMBERS = 10_000


def _media(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _conninfo(state: AppState) -> str:
    url = state.settings.database_url
    assert url is not None  # create_app refuses to start without one
    return libpq_url(url)


def _conformance(state: AppState) -> Conformance:
    settings = state.settings
    return Conformance.bundled(
        unknown_profiles=settings.unknown_profiles,
        required=parse_required_profiles(settings.required_profiles),
    )


async def _body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"the body is larger than {limit} bytes")
    return bytes(raw)


async def _pipeline(state: AppState) -> IeesPipeline:
    async with state.feeds_lock:
        if state.iees_pipeline is None:
            pipeline = IeesPipeline(_conninfo(state), _conformance(state))
            await pipeline.start()
            state.iees_pipeline = pipeline
        pipeline = state.iees_pipeline
    assert isinstance(pipeline, IeesPipeline)
    return pipeline


async def close_feeds(state: AppState) -> None:
    """At shutdown: finish the messages in flight, close the pipeline's connection."""
    pipeline = state.iees_pipeline
    if isinstance(pipeline, IeesPipeline):
        await pipeline.close()
        state.iees_pipeline = None


async def load_iees(request: Request) -> Response:
    state = rest._state(request)
    media = _media(request)
    if media in _HL7:
        raw = await _body(request, state.settings.max_body_bytes)
        messages = split_messages(raw)
        if not messages:
            raise InvalidRequest("the body holds no HL7 v2 message")
        pipeline = await _pipeline(state)
        try:
            acks = await pipeline.messages_in_order(messages)
        except FeedUnavailable:
            raise ServiceUnavailable(
                "the feed cannot take messages now; nothing was applied, send them again"
            ) from None
        return Response(b"".join(acks), media_type="x-application/hl7-v2+er7")
    if media in _NDJSON:
        raw = await _body(request, state.settings.max_import_bytes)
        parameters = OperationParameters.from_query(request)
        force = parameters.string("force") == "true"
        summary = await asyncio.to_thread(_apply_snapshot, state, raw, force)
        return render_resource(request, _parameters(summary))
    raise UnsupportedMediaType(
        "$load-iees takes HL7 v2 (x-application/hl7-v2+er7) or an NDJSON snapshot"
        " (application/x-ndjson)"
    )


def _apply_snapshot(state: AppState, raw: bytes, force: bool) -> dict[str, Any]:
    applier = IeesApplier(_conninfo(state), _conformance(state))
    try:
        try:
            snapshot = map_snapshot(parse_ndjson(raw))
            result = applier.apply_snapshot(snapshot, force=force)
        except (InvalidSnapshot, SnapshotRefused) as exc:
            with applier.writer.transaction():
                applier.writer.dead_letter("iees-snapshot", raw, str(exc), None)
            raise UnprocessableEntity(f"the snapshot is refused: {exc}") from None
    finally:
        applier.close()
    return {
        "persons": result.persons,
        "applied": result.applied,
        "stale": result.stale,
        "endedPersons": result.ended_persons,
        "merges": result.merges,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "rejected": result.rejected,
    }


async def load_hsds_operation(request: Request) -> Response:
    state = rest._state(request)
    media = _media(request)
    parameters = OperationParameters.from_query(request)
    feed = parameters.string("feed")
    if (
        not feed
        or len(feed) > _FEED_NAME_MAX
        or not feed.replace("-", "").replace("_", "").isalnum()
    ):
        raise InvalidRequest(
            "feed is required: the feed's name (letters, digits, '-' and '_'), which resource"
            " ids derive from"
        )
    mode = parameters.string("mode")
    if mode not in (None, "full", "partial"):
        raise InvalidRequest("mode is full or partial")
    if media not in _JSON | _ZIP:
        raise UnsupportedMediaType(
            "$load-hsds takes an HSDS JSON document (application/json) or a zip of a feed"
            " (application/zip)"
        )
    raw = await _body(request, state.settings.max_import_bytes)
    full = (mode or ("full" if media in _ZIP else "partial")) == "full"
    force = parameters.string("force") == "true"
    summary = await asyncio.to_thread(_load_hsds, state, raw, media in _ZIP, feed, full, force)
    return render_resource(request, _parameters(summary))


def _load_hsds(
    state: AppState, raw: bytes, is_zip: bool, feed: str, full: bool, force: bool
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sdoh-hsds-") as folder:
        root = Path(folder)
        if is_zip:
            _extract(raw, root, state.settings.max_import_bytes)
            path = root
        else:
            path = root / "feed.json"
            path.write_bytes(raw)
        try:
            summary = load_hsds(
                _conninfo(state),
                path,
                feed=feed,
                full=full,
                force=force,
                conformance=_conformance(state),
            )
        except FeedError as exc:
            raise UnprocessableEntity(str(exc)) from None
    return summary.as_dict()


def _extract(raw: bytes, root: Path, limit: int) -> None:
    """Unzip into ``root``, refusing paths that leave it and more than ``limit`` bytes; a zip
    that cannot be extracted is the client's error (400), whatever broke."""
    try:
        _unzip(raw, root, limit)
    except (InvalidRequest, PayloadTooLarge):
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError):
        raise InvalidRequest(
            "the zip cannot be extracted (damaged, encrypted or odd names)"
        ) from None


def _unzip(raw: bytes, root: Path, limit: int) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise InvalidRequest("the body is not a zip file") from None
    members = archive.infolist()
    if len(members) > _ZIP_MEMBERS:
        raise InvalidRequest(f"the zip holds more than {_ZIP_MEMBERS} files")
    total = 0
    for member in members:
        if member.is_dir():
            continue
        target = (root / member.filename).resolve()
        if not target.is_relative_to(root.resolve()) or target == root.resolve():
            raise InvalidRequest("the zip holds a path outside its own folder")
        total += member.file_size
        if total > limit:
            raise PayloadTooLarge(f"the zip expands to more than {limit} bytes")
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(member) as source, target.open("wb") as out:
            written = 0
            while chunk := source.read(1 << 20):
                written += len(chunk)
                if written > member.file_size:  # a lying header: stop at what it declared
                    raise InvalidRequest("the zip is damaged")
                out.write(chunk)
    # A zip of a folder: load the folder that holds the feed.
    entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    if len(entries) == 1 and entries[0].is_dir():
        for child in entries[0].iterdir():
            child.rename(root / child.name)
        entries[0].rmdir()


def _parameters(summary: dict[str, Any]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    for name, value in summary.items():
        if isinstance(value, bool) or value is None:
            continue
        if isinstance(value, int):
            parts.append({"name": name, "valueInteger": value})
        elif isinstance(value, float):
            parts.append({"name": name, "valueDecimal": value})
        elif isinstance(value, str):
            parts.append({"name": name, "valueString": value})
        elif isinstance(value, dict) and value:
            parts.append(
                {
                    "name": name,
                    "part": [
                        {"name": str(k), "valueInteger": int(v)} for k, v in sorted(value.items())
                    ],
                }
            )
        elif isinstance(value, list) and value:
            parts.extend({"name": name, "valueString": str(v)} for v in value)
    return {"resourceType": "Parameters", "parameter": parts}


routes = [
    Route("/$load-hsds", load_hsds_operation, methods=["POST"]),
    Route("/$load-iees", load_iees, methods=["POST"]),
]
