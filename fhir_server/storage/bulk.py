"""Bulk writes with COPY: the same stored bytes, versions and index rows as single writes.

Two halves, so that the CPU-heavy one can run in worker processes:

- :class:`BatchEncoder` (no connection) turns validated resources into the COPY lines of every
  table: the canonical body (``canonical_resource``, as a create stores it), the first history
  row, the index rows, the Patient-compartment rows and the full-text row. Index rows come from
  the same extractors as a single write (``Indexer``), through a cache: most search parameters
  read one top-level element, and values such as a category, a code or a profile repeat across
  resources.
- :class:`BulkWriter` (one connection) writes encoded batches. A resource whose id is new is
  copied as it is; one whose id exists becomes a new version as an update would make it
  (http://hl7.org/fhir/R4/http.html#update), set-based through staging tables, and an update
  that changes nothing makes no new version. Into an empty database it loads in one transaction
  with the secondary indexes dropped and rebuilt at the end: PostgreSQL sorts once instead of
  descending a btree per row (at a million resources, 35 s instead of 39 s for the token value
  index, 9 s instead of 19 s for its rid index), and the load is all or nothing.

``load_new_resources`` is the older insert-only loader of dicts, kept for the REST benchmark.
"""

from __future__ import annotations

import itertools
import operator
import re
import uuid
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
import psycopg
from fhirpathpy.models import models

from fhir_server.core.errors import InvalidResource
from fhir_server.search.extract import (
    RESOURCE_TYPES,
    IndexExtractor,
    ReferenceRow,
    ResourceIndex,
    UriRow,
    extract_text,
    patient_compartment_ids,
)
from fhir_server.search.registry import SearchParam, SearchRegistry, split_union
from fhir_server.storage.repository import (
    INDEX_LAYOUT,
    Indexer,
    check_resource,
    format_instant,
    index_rows,
    now_millis,
)

__all__ = [
    "TABLES",
    "BatchEncoder",
    "BulkResult",
    "BulkWriter",
    "EncodedBatch",
    "WriteCounts",
    "load_new_resources",
    "new_id",
]

# Every table a resource writes to, with the columns its COPY lines hold, in this order.
TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("resource", ("resource_type", "id", "rid", "version_id", "last_updated", "deleted", "body")),
    (
        "resource_history",
        ("resource_type", "id", "version_id", "seq", "last_updated", "method", "deleted", "body"),
    ),
    *(
        (table, ("resource_type", "rid", "param", *columns))
        for table, columns in INDEX_LAYOUT.values()
    ),
    ("compartment", ("resource_type", "rid", "compartment_type", "compartment_id")),
    # Its lines hold the texts; the writer turns them into tsvectors (search.html#text).
    ("idx_text", ("resource_type", "rid", "narrative", "content")),
)
_RESOURCE, _HISTORY, _COMPARTMENT, _TEXT = 0, 1, len(TABLES) - 2, len(TABLES) - 1
_INDEX_TABLE = {name: 2 + i for i, name in enumerate(INDEX_LAYOUT)}  # ResourceIndex field -> table


def new_id() -> str:
    """A server-assigned id, as a create assigns it."""
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """COPY text lines of a batch of resources for every table of ``TABLES``.

    ``ends[i * len(TABLES) + t]`` is where resource ``i``'s lines in table ``t`` end, so that a
    writer can take any subset of the resources apart. The lines assume each resource is new:
    version 1, its reserved ``rid`` and history ``seq``.
    """

    keys: tuple[tuple[str, str], ...]  # (resource type, id) of each resource
    lines: tuple[bytes, ...]
    ends: array[int]

    def __len__(self) -> int:
        return len(self.keys)

    def select(self, table: int, positions: Iterable[int]) -> bytes:
        """The lines of the resources at ``positions`` in table ``table``."""
        ends, text, stride = self.ends, self.lines[table], len(TABLES)
        return b"".join(
            text[(ends[(i - 1) * stride + table] if i else 0) : ends[i * stride + table]]
            for i in positions
        )


class BatchEncoder:
    """Turns validated resources into COPY lines: what a create of each would write."""

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self._rows = _IndexRowCache(indexer)

    def encode(
        self,
        resources: Sequence[dict[str, Any]],
        rids: Sequence[int],
        seqs: Sequence[int],
        now: datetime,
    ) -> EncodedBatch:
        """``resources`` must be valid (``check_resource``) and have ids; one rid and seq each."""
        out: list[list[bytes]] = [[] for _ in TABLES]
        ends = array("q")
        sizes = [0] * len(TABLES)
        keys = []
        stamp = _copy_text(now)
        instant = format_instant(now)
        extract = self._rows.extract
        resource_lines, history_lines = out[_RESOURCE], out[_HISTORY]
        compartment_lines, text_lines = out[_COMPARTMENT], out[_TEXT]
        for body, rid, seq in zip(resources, rids, seqs, strict=True):
            resource_type, id = body["resourceType"], body["id"]
            keys.append((resource_type, id))
            stored = _canonical(resource_type, id, instant, body)
            text = orjson.dumps(stored)
            if b"\\" in text:
                text = text.replace(b"\\", b"\\\\")
            type_id = f"{resource_type}\t{id}".encode()
            line = b"%s\t%d\t1\t%s\tf\t%s\n" % (type_id, rid, stamp, text)
            resource_lines.append(line)
            sizes[_RESOURCE] += len(line)
            line = b"%s\t1\t%d\t%s\tPOST\tf\t%s\n" % (type_id, seq, stamp, text)
            history_lines.append(line)
            sizes[_HISTORY] += len(line)
            prefix = b"%s\t%d" % (resource_type.encode(), rid)
            width = len(prefix)
            suffixes, patients = extract(resource_type, id, stored)
            for table, suffix in suffixes:
                # Two items, joined with the rest of the table's lines at the end.
                lines = out[table]
                lines.append(prefix)
                lines.append(suffix)
                sizes[table] += width + len(suffix)
            if patients:
                for patient in sorted(patients):
                    line = b"%s\tPatient\t%s\n" % (prefix, _escape(patient).encode())
                    compartment_lines.append(line)
                    sizes[_COMPARTMENT] += len(line)
            narrative, content = extract_text(stored)
            line = b"%s\t%s\t%s\n" % (prefix, _copy_text(narrative), _copy_text(content))
            text_lines.append(line)
            sizes[_TEXT] += len(line)
            ends.extend(sizes)
        return EncodedBatch(tuple(keys), tuple(b"".join(lines) for lines in out), ends)


def _canonical(resource_type: str, id: str, instant: str, body: dict[str, Any]) -> dict[str, Any]:
    """``canonical_resource(resource_type, id, 1, now, body)`` with ``now`` formatted once per
    batch (tests/fhir_server/ingest/test_ndjson.py holds the two equal)."""
    meta = body.get("meta") or {}
    out: dict[str, Any] = {
        "resourceType": resource_type,
        "id": id,
        "meta": {
            "versionId": "1",
            "lastUpdated": instant,
            **{k: v for k, v in meta.items() if k not in _SERVER_META},
        },
    }
    for key, value in body.items():
        if key not in out:
            out[key] = value
    return out


_SERVER_META = frozenset({"versionId", "lastUpdated"})


# --- index rows, cached per group of top-level elements ---------------------------------------

_R4: dict[str, Any] = models["r4"]
_CHOICES: dict[str, list[str]] = _R4["choiceTypePaths"]
# Entries kept per group, and over all: past either bound, that cache (or all) starts again.
_GROUP_MAX = 5_000
_CACHE_MAX = 50_000
# After this many lookups of one group, a group that hits less than 1 in 10 is no longer cached:
# ids, timestamps and the like are unique and would only push out the useful entries.
_PROBATION = 2_000


@dataclass(slots=True)
class _Group:
    """Search parameters that read only some top-level elements of a resource type."""

    params: list[SearchParam]
    extractor: IndexExtractor
    # When the group is _id alone: its token line up to the code (the id), as _line writes it.
    id_head: bytes | None = None
    cached: bool = True
    misses: int = 0
    hits: int = 0
    cache: dict[Any, tuple[tuple[tuple[int, bytes], ...], tuple[ReferenceRow, ...]]] = field(
        default_factory=dict
    )


@dataclass(slots=True)
class _TypeRows:
    """One resource type's parameters: groups keyed by the elements they read, and the rest."""

    groups: list[_Group]
    group_of: dict[str, int]  # element name (choice base, no "_") -> index in groups
    choice_base: dict[str, str]  # JSON key of a choice (valueQuantity) -> its base (value)
    direct: IndexExtractor | None  # parameters that may read anything: run on the whole resource
    registry: SearchRegistry
    key_group: dict[str, int] = field(default_factory=dict)  # JSON key -> group index, or -1
    # The parameters of every group no longer cached, extracted in one call per resource.
    residue: IndexExtractor | None = None
    # The keys of a resource, in order -> (group index, the keys it reads) of each group present.
    shapes: dict[tuple[str, ...], tuple[tuple[int, tuple[str, ...]], ...]] = field(
        default_factory=dict
    )

    def plan_shape(self, shape: tuple[str, ...]) -> tuple[tuple[int, tuple[str, ...]], ...]:
        """The groups that a resource with these keys (in this order) has elements of."""
        present: dict[int, list[str]] = {}
        for key in shape:
            found = self.key_group.get(key)
            if found is None:
                found = self.key_group[key] = _group_of_key(self, key)
            if found >= 0:
                present.setdefault(found, []).append(key)
        plan = tuple((index, tuple(keys)) for index, keys in present.items())
        if len(self.shapes) >= _SHAPES_MAX:
            self.shapes.clear()
        self.shapes[shape] = plan
        return plan

    def residue_extractor(self) -> IndexExtractor:
        if self.residue is None:
            params = [p for group in self.groups if not group.cached for p in group.params]
            self.residue = IndexExtractor(params, registry=self.registry)
        return self.residue


class _IndexRowCache:
    """``Indexer.extract`` as COPY line suffixes, with the rows of each element group cached.

    A parameter whose expression is a union of paths rooted at top-level elements (``T.member``
    followed by members, ``ofType``/``as``, ``resolve()`` and ``where`` filters that do not
    leave the element) gives rows that depend on those elements alone. Parameters reading the
    same elements form a group, and a group's rows are extracted once per distinct value of its
    elements, from a resource holding only those elements. Every other parameter (and any whose
    expression this does not recognize) runs on the whole resource, uncached. The rows are the
    same as ``Indexer.extract`` gives (tests/fhir_server/ingest/test_ndjson.py compares them).
    """

    def __init__(self, indexer: Indexer) -> None:
        self.indexer = indexer
        self._types: dict[str, _TypeRows] = {}
        self._size = 0

    def extract(
        self, resource_type: str, id: str, body: Mapping[str, Any]
    ) -> tuple[list[tuple[int, bytes]], frozenset[str]]:
        """(table, COPY line after ``resource_type\\trid``) of every index row, and the Patients
        whose compartment the resource is in."""
        rows = self._types.get(resource_type)
        if rows is None:
            rows = self._types[resource_type] = _plan(resource_type, self.indexer.registry)
        plan = rows.shapes.get(shape := tuple(body))
        if plan is None:
            plan = rows.plan_shape(shape)
        suffixes: list[tuple[int, bytes]] = []
        refs: list[ReferenceRow] = []
        groups = rows.groups
        residue: list[str] = []
        for index, keys in plan:
            group = groups[index]
            if group.id_head is not None and keys == _ID_KEYS and type(body["id"]) is str:
                # _id: one token row with the id as code, and ids are never seen twice.
                code = _copy_text(body["id"][:_TEXT_MAX])
                suffixes.append((_TOKENS, group.id_head + code + _ID_TAIL))
                continue
            if not group.cached:
                residue.extend(keys)
                continue
            cache_key: Any
            if len(keys) == 1:
                value = body[keys[0]]
                part = value if type(value) is str else orjson.dumps(value, option=_SORTED)
                cache_key = (index, keys[0], part)
            else:
                cache_key = (index, orjson.dumps({k: body[k] for k in keys}, option=_SORTED))
            entry = group.cache.get(cache_key)
            if entry is not None:
                group.hits += 1
                suffixes.extend(entry[0])
                refs.extend(entry[1])
                continue
            sub = {"resourceType": resource_type, **{k: body[k] for k in keys}}
            entry = _entry(group.extractor.extract(sub))
            self._remember(rows, group, cache_key, entry)
            suffixes.extend(entry[0])
            refs.extend(entry[1])
        if residue:
            sub = {"resourceType": resource_type, **{k: body[k] for k in residue}}
            entry = _entry(rows.residue_extractor().extract(sub))
            suffixes.extend(entry[0])
            refs.extend(entry[1])
        if rows.direct is not None:
            direct = _entry(rows.direct.extract(body))
            suffixes.extend(direct[0])
            refs.extend(direct[1])
        patients = patient_compartment_ids(
            resource_type, id, refs, self.indexer.compartment_params(resource_type)
        )
        return suffixes, patients

    def _remember(self, rows: _TypeRows, group: _Group, key: Any, entry: Any) -> None:
        group.misses += 1
        if group.misses >= _PROBATION:
            if group.hits * 10 < group.misses:
                group.cached = False
                self._size -= len(group.cache)
                group.cache.clear()
                rows.residue = None
                return
            group.misses = group.hits = 0
        if len(group.cache) >= _GROUP_MAX:
            self._size -= len(group.cache)
            group.cache.clear()
        if self._size >= _CACHE_MAX:
            for rows in self._types.values():
                for other in rows.groups:
                    other.cache.clear()
            self._size = 0
        group.cache[key] = entry
        self._size += 1


_SORTED = orjson.OPT_SORT_KEYS
_SHAPES_MAX = 1_000  # key sequences remembered per resource type
_ID_KEYS = ("id",)


def _group_of_key(rows: _TypeRows, key: str) -> int:
    if key == "resourceType":
        return -1
    name = key[1:] if key.startswith("_") else key
    name = rows.choice_base.get(name, name)
    return rows.group_of.get(name, -1)


def _entry(index: ResourceIndex) -> tuple[tuple[tuple[int, bytes], ...], tuple[ReferenceRow, ...]]:
    return (
        tuple(
            (table, _line(get(row)))
            for table, field, get in _FIELDS
            for row in getattr(index, field)
        ),
        index.references,
    )


def _longest_indexed_text() -> int:
    """How much of a long text ``index_rows`` keeps (btree keys have a size limit)."""
    probe = ResourceIndex(uris=(UriRow("p", "x" * 100_000),))
    return len(index_rows("Basic", 0, probe)["uris"][0][3])


_TEXT_MAX = _longest_indexed_text()
# (table, ResourceIndex field, the values of a row in COPY column order after resource_type, rid)
_FIELDS = tuple(
    (_INDEX_TABLE[name], name, operator.attrgetter("param", *columns))
    for name, (_, columns) in INDEX_LAYOUT.items()
)
_TOKENS = _INDEX_TABLE["tokens"]
# The rest of an _id token line after its code: text, type_system, type_code and ord, all null.
_ID_TAIL = b"\t\\N\t\\N\t\\N\t\\N\n"
assert INDEX_LAYOUT["tokens"][1] == ("system", "code", "text", "type_system", "type_code", "ord")


def _line(values: tuple[Any, ...]) -> bytes:
    """``\tvalue\tvalue...\n``: an index row after its resource_type and rid, as index_rows
    writes it."""
    fields = []
    for value in values:
        if value is None:
            fields.append(b"\\N")
        elif type(value) is str and len(value) > _TEXT_MAX:
            fields.append(_copy_text(value[:_TEXT_MAX]))
        else:
            fields.append(_copy_text(value))
    return b"\t" + b"\t".join(fields) + b"\n"


def _plan(resource_type: str, registry: SearchRegistry) -> _TypeRows:
    """Group the type's parameters by the top-level elements they read."""
    params = list(registry.for_type(resource_type).values())
    reads: dict[str, frozenset[str] | None] = {p.code: _reads(p, registry) for p in params}
    # Union-find over element names: a parameter reading several ties them into one group.
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for names in reads.values():
        if names:
            first, *rest = sorted(names)
            for other in rest:
                parent[find(other)] = find(first)
    members: dict[str, list[SearchParam]] = {}
    direct = []
    for param in params:
        names = reads[param.code]
        if names is None:
            direct.append(param)
        elif names:
            members.setdefault(find(next(iter(names))), []).append(param)
    groups: list[_Group] = []
    group_of: dict[str, int] = {}
    for root, group_params in members.items():
        for name in parent:
            if find(name) == root:
                group_of[name] = len(groups)
        only = group_params[0] if len(group_params) == 1 else None
        id_head = (
            b"\t" + _copy_text(only.code) + b"\t\\N\t"
            if only is not None
            and only.type == "token"
            and only.expression == f"{resource_type}.id"
            else None
        )
        groups.append(
            _Group(group_params, IndexExtractor(group_params, registry=registry), id_head)
        )
    choice_base = {
        base + suffix: base
        for path, suffixes in _CHOICES.items()
        if path.startswith(resource_type + ".") and path.count(".") == 1
        for base in (path.split(".", 1)[1],)
        for suffix in suffixes
    }
    return _TypeRows(
        groups,
        group_of,
        choice_base,
        IndexExtractor(direct, registry=registry) if direct else None,
        registry,
    )


def _reads(param: SearchParam, registry: SearchRegistry) -> frozenset[str] | None:
    """The top-level elements a parameter's rows depend on: empty when it has no expression to
    evaluate (so no rows), None when they may depend on anything."""
    if not param.expression:
        return frozenset()
    names: set[str] = set()
    if param.type == "composite":
        components = registry.components(param)
        if not components:
            return frozenset()
        relative = [
            part for component in components for part in split_union(component.expression or "")
        ]
        for part in split_union(param.expression):
            if part.strip() == param.resource_type:
                # The resource itself: the components' relative paths name the elements.
                members = [_part_member(inner, None) for inner in relative]
                if not all(members):
                    return None
                names.update(m for m in members if m)
                continue
            member = _part_member(part, param.resource_type)
            if member is None or not all(_part_member(inner, None) for inner in relative):
                return None
            if member:
                names.add(member)
        return frozenset(names)
    for part in split_union(param.expression):
        member = _part_member(part, param.resource_type)
        if member is None:
            return None
        if member:
            names.add(member)
    return frozenset(names)


_IDENT = re.compile(r"\(*\s*([A-Za-z]\w*)")
# What may follow the first member so that the path stays inside it.
_LOCAL = re.compile(
    r"(?:\s*\)"
    r"|\.[a-z]\w*"
    r"|\.(?:ofType|as)\(\w+\)"
    r"|\.(?:first|last|resolve)\(\)"
    r"|\s+(?:as|is)\s+\w+"
    r"|\.where\((?P<inner>[^()%]*(?:\(\)[^()%]*)*)\))*"
)
_WHERE = re.compile(r"\.where\(([^()%]*(?:\(\)[^()%]*)*)\)")
_ABSOLUTE = re.compile(r"[A-Z]\w*\s*\.")


def _part_member(part: str, resource_type: str | None) -> str | None:
    """The top-level element one union part starts from ('' if it cannot apply to the type).

    With ``resource_type`` None the part is relative (a composite component): it starts with
    the member itself. None when the part may read more than that element.
    """
    text = part.strip()
    root = _IDENT.match(text)
    if root is None:
        return None
    rest = text[root.end() :]
    if resource_type is None:
        member = root[1]
        if not member[:1].islower():
            return None
    elif root[1] != resource_type:
        return "" if root[1] in RESOURCE_TYPES else None
    else:
        step = re.match(r"\.([a-z]\w*)", rest)
        if step is None:
            return None
        member, rest = step[1], rest[step.end() :]
    if _LOCAL.fullmatch(rest) is None:
        return None
    if any(_ABSOLUTE.search(inner) for inner in _WHERE.findall(rest)):
        return None
    return member


# --- COPY text ----------------------------------------------------------------------------------

_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _escape(text: str) -> str:
    return (
        text.translate(_ESCAPES)
        if ("\\" in text or "\t" in text or "\n" in text or "\r" in text)
        else text
    )


def _copy_text(value: Any) -> bytes:
    """One field of a COPY text line (http://www.postgresql.org/docs/current/sql-copy.html)."""
    if value is None:
        return b"\\N"
    if type(value) is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            value = value.translate(_ESCAPES)
        return value.encode()
    if value is True or value is False:
        return b"t" if value else b"f"
    if isinstance(value, datetime):
        return value.isoformat().encode()
    if isinstance(value, int | Decimal):
        return str(value).encode()
    raise TypeError(f"no COPY text for {type(value).__name__}")


# --- writing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteCounts:
    """What one batch did. ``deferred``: positions left for a second pass (initial load only)."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    deferred: tuple[int, ...] = ()


def _content_sql(body: str) -> str:
    """A JSONB body without id, meta.versionId and meta.lastUpdated: what an update compares."""
    meta = f"(COALESCE({body} -> 'meta', '{{}}') - 'versionId' - 'lastUpdated')"
    return (
        f"(({body} - 'id' - 'meta') || CASE WHEN {meta} = '{{}}' THEN '{{}}'::jsonb"
        f" ELSE jsonb_build_object('meta', {meta}) END)"
    )


_STAGE = {table: f"load_{table}" for table, _ in TABLES}
_STAGE_COLUMNS = {
    "load_map": "resource_type text, id text, new_rid bigint, old_rid bigint, version_id integer",
    "load_idx_text": "resource_type text, rid bigint, narrative text, content text",
}
# idx_text rows from their staged texts, with the REST write's tsvectors.
_TEXT_ROWS = (
    "INSERT INTO idx_text (resource_type, rid, narrative, content)"
    " SELECT s.resource_type, {rid}, to_tsvector('simple', s.narrative),"
    " to_tsvector('simple', s.content) FROM load_idx_text s"
)
_EXISTING = (
    "SELECT r.resource_type, r.id FROM unnest(%s::text[], %s::text[]) AS k (t, i)"
    " JOIN resource r ON r.resource_type = k.t AND r.id = k.i"
)
# Each staged resource's version in the body (written as 1) becomes its new version number.
_VERSIONED = (
    """regexp_replace({0}.body, '"versionId":"1"', '"versionId":"' || m.version_id || '"')"""
)
_UPSERT = [
    # The same per-resource lock as an update takes, in one order, so no deadlock.
    "SELECT count(pg_advisory_xact_lock(hashtextextended(k.resource_type || '/' || k.id, 0)))"
    " FROM (SELECT resource_type, id FROM load_resource ORDER BY 1, 2) k",
    "INSERT INTO load_map (resource_type, id, new_rid, old_rid, version_id)"
    " SELECT s.resource_type, s.id, s.rid, r.rid, r.version_id + 1"
    " FROM load_resource s JOIN resource r ON r.resource_type = s.resource_type AND r.id = s.id"
    " CROSS JOIN LATERAL (SELECT s.body::jsonb AS new, r.body::jsonb AS old) b"
    f" WHERE r.deleted OR {_content_sql('b.old')} IS DISTINCT FROM {_content_sql('b.new')}",
    "UPDATE resource r SET version_id = m.version_id, last_updated = s.last_updated,"
    f" deleted = false, body = {_VERSIONED.format('s')}"
    " FROM load_map m JOIN load_resource s ON s.resource_type = m.resource_type"
    " AND s.rid = m.new_rid WHERE r.resource_type = m.resource_type AND r.id = m.id",
    "INSERT INTO resource_history"
    " (resource_type, id, version_id, seq, last_updated, method, deleted, body)"
    " SELECT h.resource_type, h.id, m.version_id, h.seq, h.last_updated, 'PUT', false,"
    f" {_VERSIONED.format('h')}"
    " FROM load_resource_history h JOIN load_map m"
    " ON h.resource_type = m.resource_type AND h.id = m.id",
    *(
        f"DELETE FROM {table} x USING load_map m"
        " WHERE x.resource_type = m.resource_type AND x.rid = m.old_rid"
        for table, _ in TABLES[2:]
    ),
    *(
        f"INSERT INTO {table} ({', '.join(columns)})"
        f" SELECT s.resource_type, m.old_rid, {', '.join(f's.{c}' for c in columns[2:])}"
        f" FROM {_STAGE[table]} s JOIN load_map m"
        " ON s.resource_type = m.resource_type AND s.rid = m.new_rid"
        for table, columns in TABLES[2:-1]
    ),
    _TEXT_ROWS.format(rid="m.old_rid")
    + " JOIN load_map m ON s.resource_type = m.resource_type AND s.rid = m.new_rid",
]


class BulkWriter:
    """Writes encoded batches on a connection of its own.

    ``start()`` decides how. Into an empty database (unless ``initial=False``) it takes every
    resource table for itself in one transaction (ACCESS EXCLUSIVE: other sessions wait until
    ``finish()``), truncates them so PostgreSQL can skip the WAL (``wal_level = minimal``) and
    copy frozen rows, and drops the secondary indexes, which ``finish()`` rebuilds. A resource
    whose id is already in the load is then not written but deferred
    (``WriteCounts.deferred``) to a second pass after ``finish()``, with ``start(initial=False)``.
    Otherwise each batch is one transaction: new ids are copied, existing ones become new
    versions as an update makes them (identical content: no new version), several occurrences of
    one id in order.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.initial = False
        self._conn: psycopg.Connection[Any] | None = None
        self._indexes: list[tuple[str, str, str, str | None]] = []
        self._staged: set[str] = set()

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            self._conn = psycopg.connect(self.conninfo, autocommit=True, options="-c timezone=UTC")
            # A crash may lose the last batches' commits, never corrupt: the load is re-runnable.
            self._conn.execute("SET synchronous_commit = off")
        return self._conn

    def start(self, *, initial: bool = True) -> bool:
        """Begin writing; True when this is an initial load (see the class docstring)."""
        self.initial = False
        if not initial:
            return False
        conn = self.conn
        conn.execute("BEGIN")
        try:
            conn.execute("SET LOCAL lock_timeout = '10s'")
            conn.execute(f"LOCK TABLE {', '.join(t for t, _ in TABLES)} IN ACCESS EXCLUSIVE MODE")
            row = conn.execute(
                "SELECT EXISTS (SELECT FROM resource) OR EXISTS (SELECT FROM resource_history)"
            ).fetchone()
        except psycopg.errors.LockNotAvailable:
            conn.execute("ROLLBACK")
            return False
        if row is None or row[0]:
            conn.execute("ROLLBACK")
            return False
        conn.execute("SET LOCAL lock_timeout = 0")
        conn.execute(f"TRUNCATE {', '.join(t for t, _ in TABLES)}")
        self._indexes = self._secondary_indexes()
        for table, name, _, constraint in self._indexes:
            if constraint is not None:
                conn.execute(
                    psycopg.sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                        psycopg.sql.Identifier(table), psycopg.sql.Identifier(name)
                    )
                )
            else:
                conn.execute(psycopg.sql.SQL("DROP INDEX {}").format(psycopg.sql.Identifier(name)))
        self.initial = True
        return True

    def reserve(self, n: int) -> tuple[list[int], list[int]]:
        """``n`` new resource rids and history seqs."""
        row = self.conn.execute(
            "SELECT array_agg(nextval('resource_rid_seq')),"
            " array_agg(nextval('resource_history_seq')) FROM generate_series(1, %s)",
            (n,),
        ).fetchone()
        assert row is not None
        return list(row[0] or ()), list(row[1] or ())

    def write(self, batch: EncodedBatch) -> WriteCounts:
        """Write one batch: a transaction of its own, except in an initial load."""
        generations: list[list[int]] = []
        seen: dict[tuple[str, str], int] = {}
        for position, key in enumerate(batch.keys):
            generation = seen[key] = seen.get(key, -1) + 1
            if generation == len(generations):
                generations.append([])
            generations[generation].append(position)
        if not generations:
            return WriteCounts()
        if self.initial:
            first = generations[0]
            existing = self._existing([batch.keys[i] for i in first])
            new = [i for i in first if batch.keys[i] not in existing]
            self._copy(batch, new, len(new) == len(batch))
            deferred = sorted({*range(len(batch))} - set(new))
            return WriteCounts(created=len(new), deferred=tuple(deferred))
        for attempt in itertools.count():
            try:
                with self.conn.transaction():
                    return self._write_versions(batch, generations)
            except psycopg.errors.UniqueViolation:
                # A concurrent create took one of the ids between the lookup and the copy: the
                # retry sees it and makes a new version.
                if attempt >= 3:
                    raise
        raise AssertionError("unreachable")

    def _write_versions(self, batch: EncodedBatch, generations: list[list[int]]) -> WriteCounts:
        created = updated = unchanged = 0
        for generation in generations:
            existing = self._existing([batch.keys[i] for i in generation])
            new = [i for i in generation if batch.keys[i] not in existing]
            old = [i for i in generation if batch.keys[i] in existing]
            self._copy(batch, new, len(new) == len(batch))
            created += len(new)
            if old:
                changed = self._upsert(batch, old)
                updated += changed
                unchanged += len(old) - changed
        return WriteCounts(created, updated, unchanged)

    def finish(self) -> None:
        """Commit; after an initial load, rebuild the dropped indexes first and analyze."""
        if self._conn is None:
            return
        conn = self._conn
        if self.initial:
            # More does not help: at a million resources, idx_token_value (11.8 million rows)
            # took 39 s with 1 GB, 43 s with 4 GB (no sorting in files) and 44 s with one
            # parallel worker instead of two.
            conn.execute("SET LOCAL maintenance_work_mem = '1GB'")
            for table, name, definition, constraint in self._indexes:
                if constraint is not None:
                    conn.execute(
                        psycopg.sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} ").format(
                            psycopg.sql.Identifier(table), psycopg.sql.Identifier(name)
                        )
                        + psycopg.sql.SQL(constraint)
                    )
                else:
                    conn.execute(psycopg.sql.SQL(definition))
            conn.execute(f"ANALYZE {', '.join(t for t, _ in TABLES)}")
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute("COMMIT")
            self.initial = False
        else:
            # Asynchronous commits so far: one synchronous one makes them all durable.
            with conn.transaction():
                conn.execute("SET LOCAL synchronous_commit = on")
                conn.execute("SELECT pg_current_xact_id()")

    def close(self) -> None:
        """Close the connection; an unfinished initial load is rolled back."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self._staged.clear()

    def _secondary_indexes(self) -> list[tuple[str, str, str, str | None]]:
        """(table, index, CREATE INDEX, constraint definition or None) of each index to drop.

        The resource primary key stays: the load looks ids up in it.
        """
        rows = self.conn.execute(
            "SELECT t.relname, i.relname, pg_get_indexdef(x.indexrelid),"
            " pg_get_constraintdef(c.oid)"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_class t ON t.oid = x.indrelid"
            " LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.contype IN ('p', 'u')"
            " WHERE t.relname = ANY(%s) AND t.relnamespace = current_schema()::regnamespace"
            " ORDER BY t.relname, i.relname",
            ([t for t, _ in TABLES],),
        ).fetchall()
        return [
            (table, name, definition, constraint)
            for table, name, definition, constraint in rows
            if name != "resource_pkey"
        ]

    def _existing(self, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        if not keys:
            return set()
        types, ids = zip(*keys, strict=True)
        return {
            (t, i) for t, i in self.conn.execute(_EXISTING, (list(types), list(ids))).fetchall()
        }

    def _copy(self, batch: EncodedBatch, positions: list[int], whole: bool) -> None:
        if not positions:
            return
        freeze = " (FREEZE)" if self.initial else ""
        with self.conn.cursor() as cursor:
            for table, (name, columns) in enumerate(TABLES):
                data = batch.lines[table] if whole else batch.select(table, positions)
                if not data:
                    continue
                if table == _TEXT:
                    self._stage(("load_idx_text",))
                    with cursor.copy("COPY load_idx_text FROM STDIN") as copy:
                        copy.write(data)
                    cursor.execute(_TEXT_ROWS.format(rid="s.rid"))
                    cursor.execute("TRUNCATE load_idx_text")
                    continue
                with cursor.copy(f"COPY {name} ({', '.join(columns)}) FROM STDIN{freeze}") as copy:
                    copy.write(data)

    def _stage(self, names: Sequence[str]) -> None:
        """Create the session's staging tables (emptied at each commit) the first time."""
        for name in names:
            if name in self._staged:
                continue
            columns = _STAGE_COLUMNS.get(name)
            source = f"({columns})" if columns else f"(LIKE {name.removeprefix('load_')})"
            self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} {source} ON COMMIT DELETE ROWS"
            )
            self._staged.add(name)

    def _upsert(self, batch: EncodedBatch, positions: list[int]) -> int:
        """Existing ids as new versions, set-based; how many changed (the rest are unchanged)."""
        conn = self.conn
        self._stage(("load_map", *_STAGE.values()))
        conn.execute(f"TRUNCATE load_map, {', '.join(_STAGE.values())}")
        with conn.cursor() as cursor:
            for position, (name, columns) in enumerate(TABLES):
                data = batch.select(position, positions)
                if data:
                    with cursor.copy(
                        f"COPY {_STAGE[name]} ({', '.join(columns)}) FROM STDIN"
                    ) as copy:
                        copy.write(data)
            changed = 0
            for statement in _UPSERT:
                cursor.execute(statement)
                if statement.startswith("INSERT INTO load_map"):
                    changed = cursor.rowcount
        return changed


# --- the older loader ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BulkResult:
    stored: int
    rejected: int


def _batches(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def load_new_resources(
    conninfo: str,
    resources: Iterable[dict[str, Any]],
    indexer: Indexer,
    *,
    batch_size: int = 5000,
) -> BulkResult:
    """Validate, index and COPY resources that do not exist yet; one transaction per batch."""
    stored = rejected = 0
    encoder = BatchEncoder(indexer)
    writer = BulkWriter(conninfo)
    try:
        for batch in _batches(resources, batch_size):
            rows = []
            for body in batch:
                try:
                    check_resource(body["resourceType"], body)
                except InvalidResource:
                    rejected += 1
                    continue
                rows.append(body)
            if not rows:
                continue
            rids, seqs = writer.reserve(len(rows))
            encoded = encoder.encode(rows, rids, seqs, now_millis())
            with writer.conn.transaction():
                writer._copy(encoded, list(range(len(encoded))), True)
            stored += len(rows)
        writer.finish()
    finally:
        writer.close()
    return BulkResult(stored, rejected)
