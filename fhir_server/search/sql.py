"""Build one SQL statement, with bound parameters only, for a parsed search.

Each clause becomes an EXISTS semi-join on its typed index table; values of one clause are ORed
inside it, clauses are ANDed. A chained clause is a semi-join on ``idx_reference`` joined to the
referenced ``resource`` row, with the rest of the chain applied to that row; ``_has`` is the
same join the other way, from the references that point at the row. A composite joins the rows
of its components on their element ordinal, so all components match one element. Pages are
keyset-based on the sort keys and the immutable ``rid``, so a page boundary never skips or
repeats a match while others write.
http://hl7.org/fhir/R4/search.html

The statement is written as text with named parameters (``%(p0)s``) rather than built as a
SQLAlchemy Core expression: building and compiling the Core tree cost about 2.5 ms a search,
half of a search's whole budget, while this builder takes tens of microseconds. Every value a
client sends is a bound parameter; only table and column names from this module enter the text.
The same statement text for the same shape of query lets psycopg prepare it once per connection.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from fhir_server.core.errors import InvalidRequest
from fhir_server.search.extract import composite_code
from fhir_server.search.parse import (
    Clause,
    CompositeValue,
    DateValue,
    MissingValue,
    NearValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchRequest,
    SortKey,
    StringValue,
    TextValue,
    TokenValue,
    UriValue,
    near_route,
)

__all__ = [
    "Cursor",
    "Sql",
    "build_count",
    "build_ids",
    "build_search",
    "decode_cursor",
    "encode_cursor",
    "great_circle_km",
]

_TABLES = {
    "string": "idx_string",
    "token": "idx_token",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
    "reference": "idx_reference",
}
# The column a sort key orders by, per parameter type (dates: low ascending, high descending).
_SORT_COLUMNS = {
    "string": "norm",
    "token": "code",
    "number": "value",
    "quantity": "value",
    "uri": "value",
    "reference": "target_id",
}
_ESCAPE = " ESCAPE '\\'"
# The Earth's mean radius (IUGG), for great-circle distances.
_EARTH_KM = 6371.0088
# Full-text search configuration: 'simple' lower-cases words and neither stems them nor drops
# stop words, so names, codes and words of any language match as typed ('english' would stem
# "Dawning" to "dawn" and drop "no" or "a"). It is named in every query and in the writes, so
# the server's default_text_search_config cannot change what matches.
_TS_CONFIG = "'simple'"


@dataclass(frozen=True, slots=True)
class Sql:
    """Statement text with named placeholders, and the values bound to them."""

    text: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the sort values and rid of the row next to it, and which way to go."""

    values: tuple[Any, ...]
    rid: int
    backwards: bool = False


@dataclass(frozen=True, slots=True)
class _Row:
    """The resource row a clause applies to: a table alias with a ``rid`` (and ``id`` when it is
    a ``resource`` row), the SQL of its resource type, and how deeply it is nested."""

    alias: str
    type_sql: str
    depth: int = 0


@dataclass
class _Params:
    values: dict[str, Any] = field(default_factory=dict)

    def __call__(self, value: Any) -> str:
        name = f"p{len(self.values)}"
        self.values[name] = value
        return f"%({name})s"


def encode_cursor(cursor: Cursor) -> str:
    def tag(v: Any) -> Any:
        if isinstance(v, datetime):
            return {"t": v.isoformat()}
        if isinstance(v, Decimal):
            return {"n": str(v)}
        return v

    raw = orjson.dumps([[tag(v) for v in cursor.values], cursor.rid, cursor.backwards])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


_KIND_TYPES: dict[str, tuple[type, ...]] = {
    "date": (datetime,),
    "lastUpdated": (datetime,),
    "number": (Decimal,),
    "quantity": (Decimal,),
    "near": (float,),
}


def decode_cursor(text: str, kinds: Sequence[str]) -> Cursor:
    """The cursor of a next/previous link; refused unless every value fits its sort key."""

    def untag(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"t"} and isinstance(v["t"], str):
            moment = datetime.fromisoformat(v["t"])
            if moment.tzinfo is None:
                raise ValueError("naive time")
            return moment
        if isinstance(v, dict) and set(v) == {"n"} and isinstance(v["n"], str):
            number = Decimal(v["n"])
            if not number.is_finite():
                raise ValueError("not finite")
            return number
        if v is None or (isinstance(v, str) and "\x00" not in v):
            return v
        if type(v) is float and math.isfinite(v):
            return v
        raise ValueError("bad value")

    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        values, rid, backwards = orjson.loads(raw)
        if type(rid) is not int or not 0 <= rid < 2**63 or not isinstance(values, list):
            raise ValueError("bad shape")
        if len(values) != len(kinds):
            raise ValueError("bad arity")
        decoded = tuple(untag(v) for v in values)
        for value, kind in zip(decoded, kinds, strict=True):
            if value is not None and not isinstance(value, _KIND_TYPES.get(kind, (str,))):
                raise ValueError("value does not fit its sort key")
        return Cursor(decoded, rid, backwards is True)
    except (ValueError, TypeError, ArithmeticError, orjson.JSONDecodeError):
        raise InvalidRequest("the paging cursor is not valid for this search") from None


def _matches(
    request: SearchRequest, p: _Params, *, defaults: bool = True, skip: Clause | None = None
) -> str:
    """The WHERE condition on ``r`` (the resource table) for all clauses of the request but
    ``skip`` (one another part of the statement answers), and the server's default clauses
    unless ``defaults`` is false."""
    row = _Row("r", p(request.resource_type))
    conditions = [f"r.resource_type = {row.type_sql}", "NOT r.deleted"]
    if request.compartment is not None:
        kind, id = request.compartment
        conditions.append(
            "EXISTS (SELECT 1 FROM compartment c WHERE c.resource_type = r.resource_type"
            f" AND c.rid = r.rid AND c.compartment_type = {p(kind)}"
            f" AND c.compartment_id = {p(id)})"
        )
    conditions.extend(_clause(row, clause, p) for clause in request.clauses if clause is not skip)
    if defaults:
        conditions.extend(_clause(row, clause, p) for clause in request.defaults)
    return " AND ".join(conditions)


def build_ids(request: SearchRequest, limit: int) -> Sql:
    """Ids of up to ``limit`` matches, for conditional interactions.

    The server's default clauses (``SearchRequest.defaults``) are left out: the criteria of a
    conditional create or update must see every resource, or it would create a duplicate of one
    the defaults hide.
    """
    p = _Params()
    where = _matches(request, p, defaults=False)
    return Sql(f"SELECT r.id FROM resource r WHERE {where} LIMIT {p(limit)}", p.values)


def build_count(request: SearchRequest) -> Sql:
    p = _Params()
    return Sql(f"SELECT count(*) FROM resource r WHERE {_matches(request, p)}", p.values)


def build_search(request: SearchRequest, cursor: Cursor | None) -> Sql:
    """Rows (rid, id, version_id, last_updated, body, sort values...) of one page plus one more.

    Nearest first (a near search without ``_sort``, or ``_sort=near``) takes its own shape,
    ``_nearest_first``: measuring every match to sort them all costs tens of milliseconds in a
    city, where a 10-mile circle holds thousands of services.
    """
    p = _Params()
    rings = _rings(request)
    backwards = cursor is not None and cursor.backwards
    order = []
    if rings is not None:
        inner = _nearest_first(request, rings, p)
        order.append("q.ring DESC" if backwards else "q.ring ASC")
    else:
        sorts = "".join(
            f", {_sort_expression(request, key, p)} AS s{i}" for i, key in enumerate(request.sort)
        )
        inner = (
            f"SELECT r.rid, r.id, r.version_id, r.last_updated, r.body{sorts}"
            f" FROM resource r WHERE {_matches(request, p)}"
        )
    # (column, descending, nulls last): a backwards page walks the same order in reverse.
    keys = [
        (f"q.s{i}", key.descending != backwards, not backwards)
        for i, key in enumerate(request.sort)
    ]
    order += [
        f"{col} {'DESC' if desc else 'ASC'} NULLS {'LAST' if nulls_last else 'FIRST'}"
        for col, desc, nulls_last in keys
    ]
    order.append("q.rid DESC" if backwards else "q.rid ASC")
    where = f" WHERE {_after(keys, cursor, p)}" if cursor is not None else ""
    return Sql(
        f"SELECT q.* FROM ({inner}) q{where} ORDER BY {', '.join(order)}"
        f" LIMIT {p(request.count + 1)}",
        p.values,
    )


def _after(keys: Sequence[tuple[str, bool, bool]], cursor: Cursor, p: _Params) -> str:
    """Rows strictly after the cursor in the order given by ``keys`` then rid."""
    alternatives: list[str] = []
    equal_so_far: list[str] = []
    for (col, desc, nulls_last), value in zip(keys, cursor.values, strict=True):
        if value is None:
            after = f"{col} IS NOT NULL" if not nulls_last else "FALSE"
        else:
            beyond = f"{col} {'<' if desc else '>'} {p(value)}"
            after = f"({beyond} OR {col} IS NULL)" if nulls_last else beyond
        alternatives.append(" AND ".join([*equal_so_far, after]))
        equal_so_far.append(f"{col} IS NULL" if value is None else f"{col} = {p(value)}")
    beyond_rid = f"q.rid {'<' if cursor.backwards else '>'} {p(cursor.rid)}"
    alternatives.append(" AND ".join([*equal_so_far, beyond_rid]))
    return "(" + " OR ".join(f"({a})" for a in alternatives) + ")"


# Nearest first walks out from the point in rings whose outer radii are these fractions of the
# near distance, and stops at the ring that fills the page: a city's first page reads a few
# hundred positions, not thousands. Each ring reads its whole disc again, which costs at most a
# fifteenth more than one disc when the page needs every ring.
_RING_FRACTIONS = (1 / 64, 1 / 16, 1 / 4, 1.0)


@dataclass(frozen=True, slots=True)
class _Ring:
    """Resources whose distance is in (inner, outer] km, and the box that holds that disc."""

    inner: float
    outer: float
    box: tuple[float, float, float, float]  # south, north, west, east


def _rings(request: SearchRequest) -> tuple[Clause, NearValue, list[_Ring]] | None:
    """The near clause, its point and the rings of a nearest-first search; None when the search
    is not ordered nearest first, or is not a plain disc (several points, or a disc across the
    antimeridian or a pole, whose boxes ``_near`` draws in pieces)."""
    if not request.sort or request.sort[0].kind != "near" or request.sort[0].descending:
        return None
    clause, route = next(
        ((c, r) for c in request.clauses if (r := near_route(c)) is not None), (None, None)
    )
    if clause is None or route is None or len(route[1].values) != 1:
        return None
    point = route[1].values[0]
    assert isinstance(point, NearValue)
    rings = []
    inner = -1.0
    for fraction in _RING_FRACTIONS:
        outer = point.distance_km * fraction
        if outer <= inner:
            continue
        box = _box(point, outer)
        if box is None:
            return None
        rings.append(_Ring(inner, outer, box))
        inner = outer
    return clause, point, rings


def _box(point: NearValue, km: float) -> tuple[float, float, float, float] | None:
    """South, north, west, east of a disc, or None when it reaches a pole or the antimeridian."""
    degrees = math.degrees(km / _EARTH_KM)
    south, north = point.latitude - degrees - 1e-9, point.latitude + degrees + 1e-9
    if south <= -90 or north >= 90:
        return None
    ratio = math.sin(km / _EARTH_KM) / math.cos(math.radians(point.latitude))
    span = math.degrees(math.asin(min(1.0, ratio))) + 1e-9
    west, east = point.longitude - span, point.longitude + span
    if span >= 90 or west < -180 or east > 180:
        return None
    return south, north, west, east


def _nearest_first(
    request: SearchRequest, rings: tuple[Clause, NearValue, list[_Ring]], p: _Params
) -> str:
    """Matches ring by ring (the ``ring`` column), each with its distance as ``s0``.

    Per ring, a lateral subquery goes from the positions in the ring's box through the chain's
    references back to the resources searched, keeping each one's nearest distance; the other
    clauses apply to those resources only. The rings come from a function scan WITH ORDINALITY,
    which the planner knows is ordered, so ``ORDER BY ring, s0`` is an incremental sort that
    runs the next ring only while the page is not full.
    """
    clause, point, ring_list = rings
    key = request.sort[0]
    assert key.param is not None
    distance = _distance("i", point, p)
    columns = zip(*((g.inner, g.outer, *g.box) for g in ring_list), strict=True)
    arrays = ", ".join(f"{p(list(column))}::float8[]" for column in columns)
    tables = ["idx_geo i"]
    conditions = [
        f"i.param = {p(key.param.code)}",
        "i.lat BETWEEN g.south AND g.north",
        "i.lon BETWEEN g.west AND g.east",
        f"{distance} <= g.outer_km",
    ]
    row = "i"  # the positions are the searched resources' own, unless a chain leads to them
    for n, (code, targets) in reversed(list(enumerate(key.via, 1))):
        target, ref = f"m{n}", f"n{n}"
        tables.append(
            f"JOIN resource {target} ON {target}.resource_type = {row}.resource_type"
            f" AND {target}.rid = {row}.rid"
            f" JOIN idx_reference {ref} ON {ref}.target_type = {target}.resource_type"
            f" AND {ref}.target_id = {target}.id"
        )
        conditions += [
            _one_of(f"{target}.resource_type", targets, p),
            f"NOT {target}.deleted",
            f"{ref}.param = {p(code)}",
            f"{ref}.url IS NULL",
        ]
        row = ref
    searched = p(request.resource_type)
    conditions.append(f"{row}.resource_type = {searched}")
    others = "".join(
        f", {_sort_expression(request, k, p)} AS s{i}" for i, k in enumerate(request.sort) if i > 0
    )
    return (
        f"SELECT r.rid, r.id, r.version_id, r.last_updated, r.body, d.s0{others}, g.n AS ring"
        f" FROM ROWS FROM (unnest({arrays})) WITH ORDINALITY"
        " AS g(inner_km, outer_km, south, north, west, east, n)"
        f" CROSS JOIN LATERAL (SELECT {row}.rid, min({distance}) AS s0"
        f" FROM {' '.join(tables)} WHERE {' AND '.join(conditions)}"
        f" GROUP BY {row}.rid HAVING min({distance}) > g.inner_km) d"
        f" JOIN resource r ON r.resource_type = {searched} AND r.rid = d.rid"
        f" WHERE {_matches(request, p, skip=clause)}"
    )


def _one_of(column: str, values: tuple[str, ...], p: _Params) -> str:
    return (
        f"{column} = {p(values[0])}" if len(values) == 1 else f"{column} = ANY({p(list(values))})"
    )


def _sort_expression(request: SearchRequest, key: SortKey, p: _Params) -> str:
    if key.kind == "near":
        return _nearest(key, p)
    if key.kind == "id":
        return "r.id"
    if key.kind == "lastUpdated":
        return "r.last_updated"
    if key.kind == "date":
        column = "high" if key.descending else "low"
    else:
        column = _SORT_COLUMNS[key.kind]
    aggregate = "max" if key.descending else "min"
    return (
        f"(SELECT {aggregate}(i.{column}) FROM {_TABLES[key.kind]} i"
        f" WHERE i.resource_type = r.resource_type AND i.rid = r.rid AND i.param = {p(key.code)})"
    )


def _clause(row: _Row, clause: Clause, p: _Params) -> str:
    if clause.kind == "id":
        ids = [v.code for v in clause.values if isinstance(v, TokenValue) and v.code]
        return f"{row.alias}.id = ANY({p(ids)})"
    if clause.kind == "lastUpdated":
        updated = f"{row.alias}.last_updated"
        return (
            "("
            + " OR ".join(
                _date_range(updated, f"{updated} + interval '1 millisecond'", v, p)
                for v in clause.values
                if isinstance(v, DateValue)
            )
            + ")"
        )
    if clause.kind == "chain":
        return _chain(row, clause, p)
    if clause.kind == "has":
        return _has(row, clause, p)
    if clause.kind == "composite":
        return _composite(row, clause, p)
    if clause.kind == "near":
        return _near(row, clause, p)
    if clause.kind == "text":
        return _text(row, clause, p)
    if clause.kind == "list":
        return _list(row, clause, p)
    rows = (
        f"SELECT 1 FROM {_TABLES[clause.kind]} i WHERE i.resource_type = {row.type_sql}"
        f" AND i.rid = {row.alias}.rid AND i.param = {p(clause.code)}"
    )
    first = clause.values[0]
    if isinstance(first, MissingValue):
        return f"NOT EXISTS ({rows})" if first.missing else f"EXISTS ({rows})"
    build = _BUILDERS[clause.kind]
    condition = " OR ".join(f"({build(clause.modifier, v, p, 'i')})" for v in clause.values)
    if clause.modifier in ("not", "not-in"):
        return f"NOT EXISTS ({rows} AND ({condition}))"
    return f"EXISTS ({rows} AND ({condition}))"


def _needs_resource_row(clause: Clause) -> bool:
    """Whether a clause reads the resource row itself, not only its ``rid``."""
    return clause.kind in {"id", "lastUpdated", "has", "list"}


def _chain(row: _Row, clause: Clause, p: _Params) -> str:
    """References of ``row`` through ``clause.code`` to a live local resource matching the rest.

    Only relative references are followed (``url IS NULL``): an absolute URL names a resource on
    another server. One EXISTS per group of target types; a group of one binds its type, which
    lets the planner use the ``resource`` primary key and the typed index keys directly.
    """
    depth = row.depth + 1
    ref, target = f"c{depth}", f"t{depth}"
    code = p(clause.code)
    alternatives = []
    for types, inner in clause.nested:
        if len(types) == 1:
            target_row = _Row(target, p(types[0]), depth)
            target_type = f"{ref}.target_type = {target_row.type_sql}"
        else:
            target_row = _Row(target, f"{target}.resource_type", depth)
            target_type = f"{ref}.target_type = ANY({p(list(types))})"
        alternatives.append(
            f"EXISTS (SELECT 1 FROM idx_reference {ref} JOIN resource {target}"
            f" ON {target}.resource_type = {ref}.target_type AND {target}.id = {ref}.target_id"
            f" WHERE {ref}.resource_type = {row.type_sql} AND {ref}.rid = {row.alias}.rid"
            f" AND {ref}.param = {code} AND {ref}.url IS NULL AND {target_type}"
            f" AND NOT {target}.deleted AND {_clause(target_row, inner, p)})"
        )
    return alternatives[0] if len(alternatives) == 1 else "(" + " OR ".join(alternatives) + ")"


def _has(row: _Row, clause: Clause, p: _Params) -> str:
    """Resources of another type that refer to ``row`` through ``clause.code`` and match the rest.

    A deleted resource has no index rows (the repository drops them on delete), so a reference
    row stands for a live source; the source's ``resource`` row is joined only when the rest
    reads it (``_id``, ``_lastUpdated``, a nested ``_has``).
    """
    depth = row.depth + 1
    ((source_type,), inner), *_ = clause.nested
    ref = f"h{depth}"
    source_row = _Row(ref, p(source_type), depth)
    join = ""
    if _needs_resource_row(inner):
        source = f"s{depth}"
        source_row = _Row(source, source_row.type_sql, depth)
        join = (
            f" JOIN resource {source} ON {source}.resource_type = {ref}.resource_type"
            f" AND {source}.rid = {ref}.rid AND NOT {source}.deleted"
        )
    return (
        f"EXISTS (SELECT 1 FROM idx_reference {ref}{join}"
        f" WHERE {ref}.resource_type = {source_row.type_sql} AND {ref}.param = {p(clause.code)}"
        f" AND {ref}.target_id = {row.alias}.id AND {ref}.target_type = {row.type_sql}"
        f" AND {ref}.url IS NULL AND {_clause(source_row, inner, p)})"
    )


def _composite(row: _Row, clause: Clause, p: _Params) -> str:
    """Rows of every component under one element ordinal, each matching its part of a value."""
    values = [v for v in clause.values if isinstance(v, CompositeValue)]
    kinds = [kind for kind, _ in values[0].parts]
    aliases = ["i", *(f"j{n}" for n in range(1, len(kinds)))]
    joins = "".join(
        f" JOIN {_TABLES[kind]} {alias} ON {alias}.resource_type = i.resource_type"
        f" AND {alias}.rid = i.rid AND {alias}.param = {p(composite_code(clause.code, n))}"
        f" AND {alias}.ord = i.ord"
        for n, (kind, alias) in enumerate(zip(kinds, aliases, strict=True))
        if n > 0
    )
    condition = " OR ".join(
        "("
        + " AND ".join(
            f"({_BUILDERS[kind](None, part, p, alias)})"
            for (kind, part), alias in zip(value.parts, aliases, strict=True)
        )
        + ")"
        for value in values
    )
    return (
        f"EXISTS (SELECT 1 FROM {_TABLES[kinds[0]]} i{joins}"
        f" WHERE i.resource_type = {row.type_sql} AND i.rid = {row.alias}.rid"
        f" AND i.param = {p(composite_code(clause.code, 0))} AND ({condition}))"
    )


def _near(row: _Row, clause: Clause, p: _Params) -> str:
    """A position within one value's distance: a bounding box the btree on (resource_type,
    param, lat, lon) can range-scan, then the exact great-circle distance.

    cube/earthdistance would give a GiST index, but earthdistance is not a trusted extension
    (CREATE EXTENSION needs a superuser), and a hosted PostgreSQL may not allow it.
    """
    alternatives = []
    for value in clause.values:
        assert isinstance(value, NearValue)
        box = [f"({_distance('i', value, p)}) <= {p(value.distance_km)}"]
        degrees = math.degrees(value.distance_km / _EARTH_KM)
        low, high = value.latitude - degrees - 1e-9, value.latitude + degrees + 1e-9
        box.append(f"i.lat BETWEEN {p(max(low, -90.0))} AND {p(min(high, 90.0))}")
        if -90 < low and high < 90:
            # The circle's widest longitude span, with no pole inside it
            # (http://janmatuschek.de/LatitudeLongitudeBoundingCoordinates).
            ratio = math.sin(value.distance_km / _EARTH_KM) / math.cos(math.radians(value.latitude))
            span = math.degrees(math.asin(min(1.0, ratio))) + 1e-9
            west, east = value.longitude - span, value.longitude + span
            if span >= 90:
                pass  # a quarter of the globe: not worth a longitude condition
            elif west < -180:
                box.append(f"(i.lon >= {p(west + 360)} OR i.lon <= {p(east)})")
            elif east > 180:
                box.append(f"(i.lon >= {p(west)} OR i.lon <= {p(east - 360)})")
            else:
                box.append(f"i.lon BETWEEN {p(west)} AND {p(east)}")
        alternatives.append("(" + " AND ".join(box) + ")")
    return (
        f"EXISTS (SELECT 1 FROM idx_geo i WHERE i.resource_type = {row.type_sql}"
        f" AND i.rid = {row.alias}.rid AND i.param = {p(clause.code)}"
        f" AND ({' OR '.join(alternatives)}))"
    )


def _nearest(key: SortKey, p: _Params) -> str:
    """The distance of ``r``'s nearest position from the key's point: its own (``Location``),
    or that of the nearest resource it reaches through the key's chain (``location.near``).

    The nearest of all reached, not only of those within the near distance: when any is within
    it, the nearest is too.
    """
    assert key.point is not None and key.param is not None  # parse_search binds them
    joins: list[str] = []
    conditions: list[str] = []
    row = "r"
    for n, (code, types) in enumerate(key.via, 1):
        ref, target = f"n{n}", f"m{n}"
        first = "FROM" if n == 1 else "JOIN"
        on = (
            ""
            if n == 1
            else f" ON {ref}.resource_type = {row}.resource_type AND {ref}.rid = {row}.rid"
        )
        joins.append(
            f"{first} idx_reference {ref}{on} JOIN resource {target}"
            f" ON {target}.resource_type = {ref}.target_type AND {target}.id = {ref}.target_id"
        )
        if n == 1:
            conditions += [f"{ref}.resource_type = r.resource_type", f"{ref}.rid = r.rid"]
        target_type = (
            f"{ref}.target_type = {p(types[0])}"
            if len(types) == 1
            else f"{ref}.target_type = ANY({p(list(types))})"
        )
        conditions += [
            f"{ref}.param = {p(code)}",
            f"{ref}.url IS NULL",
            target_type,
            f"NOT {target}.deleted",
        ]
        row = target
    if joins:
        joins.append(
            f"JOIN idx_geo i ON i.resource_type = {row}.resource_type AND i.rid = {row}.rid"
        )
    else:
        joins.append("FROM idx_geo i")
        conditions += ["i.resource_type = r.resource_type", "i.rid = r.rid"]
    conditions.append(f"i.param = {p(key.param.code)}")
    return (
        f"(SELECT min({_distance('i', key.point, p)}) {' '.join(joins)}"
        f" WHERE {' AND '.join(conditions)})"
    )


def _distance(a: str, point: NearValue, p: _Params) -> str:
    """Haversine distance in km from ``point`` to the row ``a``'s lat/lon."""
    lat, lon = p(point.latitude), p(point.longitude)
    return (
        f"2 * {_EARTH_KM} * asin(least(1, sqrt("
        f"power(sin(radians({a}.lat - {lat}) / 2), 2) + cos(radians({lat}))"
        f" * cos(radians({a}.lat)) * power(sin(radians({a}.lon - {lon}) / 2), 2))))"
    )


def great_circle_km(point: NearValue, latitude: float, longitude: float) -> float:
    """The distance ``_distance`` computes in SQL, in Python (the location-distance extension)."""
    lat1, lat2 = math.radians(point.latitude), math.radians(latitude)
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1)
        * math.cos(lat2)
        * math.sin(math.radians(longitude - point.longitude) / 2) ** 2
    )
    return 2 * _EARTH_KM * math.asin(min(1.0, math.sqrt(h)))


def _text(row: _Row, clause: Clause, p: _Params) -> str:
    """Full text: ``_text`` over the narrative, ``_content`` over every string of the resource."""
    column = "narrative" if clause.code == "_text" else "content"
    condition = " OR ".join(
        f"i.{column} @@ websearch_to_tsquery({_TS_CONFIG}, {p(v.text)})"
        for v in clause.values
        if isinstance(v, TextValue)
    )
    return (
        f"EXISTS (SELECT 1 FROM idx_text i WHERE i.resource_type = {row.type_sql}"
        f" AND i.rid = {row.alias}.rid AND ({condition}))"
    )


def _list(row: _Row, clause: Clause, p: _Params) -> str:
    """An item of one of the Lists: the List's ``item`` references (List.entry.item) to it."""
    ids = [v.id for v in clause.values if isinstance(v, ReferenceValue)]
    return (
        "EXISTS (SELECT 1 FROM resource l JOIN idx_reference li"
        " ON li.resource_type = l.resource_type AND li.rid = l.rid"
        f" WHERE l.resource_type = 'List' AND l.id = ANY({p(ids)}) AND NOT l.deleted"
        f" AND li.param = 'item' AND li.url IS NULL AND li.target_type = {row.type_sql}"
        f" AND li.target_id = {row.alias}.id)"
    )


def _string(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, StringValue)
    if modifier == "exact":
        return f"{a}.value = {p(value.raw)}"
    if modifier == "contains":
        return f"{a}.norm LIKE {p('%' + _like_escape(value.norm) + '%')}{_ESCAPE}"
    return f"{a}.norm LIKE {p(_like_escape(value.norm) + '%')}{_ESCAPE}"


def _token(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, TokenValue)
    if value.text is not None:
        return f"{a}.text LIKE {p(_like_escape(value.text) + '%')}{_ESCAPE}"
    if value.pairs is not None or value.systems:
        return _code_set(value, p, a)
    parts = []
    if value.code is not None:
        parts.append(f"{a}.code = {p(value.code)}")
    if value.system == "":
        parts.append(f"{a}.system IS NULL")
    elif value.system is not None:
        parts.append(f"{a}.system = {p(value.system)}")
    if modifier == "of-type":
        if value.type_system is not None:
            parts.append(f"{a}.type_system = {p(value.type_system)}")
        if value.type_code is not None:
            parts.append(f"{a}.type_code = {p(value.type_code)}")
    return " AND ".join(parts) or "TRUE"


def _code_set(value: TokenValue, p: _Params, a: str) -> str:
    """Any code of whole systems, or one of the (system, code) pairs, but not the excluded."""
    alternatives = []
    if value.systems:
        whole = f"{a}.system = ANY({p(list(value.systems))})"
        if value.excluded:
            whole += f" AND NOT ({_pairs(value.excluded, value.folded, p, a)})"
        alternatives.append(f"({whole})")
    if value.pairs:
        alternatives.append(_pairs(value.pairs, value.folded, p, a))
    return " OR ".join(f"({x})" for x in alternatives) or "FALSE"


def _pairs(pairs: tuple[tuple[str, str], ...], folded: tuple[str, ...], p: _Params, a: str) -> str:
    """One of the (system, code) pairs; codes of ``folded`` systems compare without case."""
    exact = [(s, c) for s, c in pairs if s not in folded]
    loose = [(s, c.lower()) for s, c in pairs if s in folded]
    alternatives = []
    if exact:
        # The code first: it leads the token index after the parameter.
        systems, codes = [s for s, _ in exact], [c for _, c in exact]
        alternatives.append(
            f"({a}.code = ANY({p(codes)}) AND ({a}.system, {a}.code) IN"
            f" (SELECT * FROM unnest({p(systems)}::text[], {p(codes)}::text[])))"
        )
    if loose:
        systems, codes = [s for s, _ in loose], [c for _, c in loose]
        alternatives.append(
            f"(({a}.system, lower({a}.code)) IN"
            f" (SELECT * FROM unnest({p(systems)}::text[], {p(codes)}::text[])))"
        )
    return " OR ".join(alternatives) or "FALSE"


def _reference(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, ReferenceValue)
    if modifier == "identifier":
        parts = [f"{a}.identifier_value IS NOT NULL"]
        if value.identifier_value is not None:
            parts.append(f"{a}.identifier_value = {p(value.identifier_value)}")
        if value.identifier_system is not None:
            parts.append(f"{a}.identifier_system = {p(value.identifier_system)}")
        return " AND ".join(parts)
    if value.url is not None:
        return f"{a}.url = {p(value.url)}"
    # A relative reference: rows of absolute references to other servers carry a url too.
    parts = [f"{a}.target_id = {p(value.id)}", f"{a}.url IS NULL"]
    if value.type is not None:
        parts.append(f"{a}.target_type = {p(value.type)}")
    return " AND ".join(parts)


def _uri(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, UriValue)
    if modifier == "below":
        return f"{a}.value LIKE {p(_like_escape(value.value) + '%')}{_ESCAPE}"
    if modifier == "above":
        # The stored uri is a prefix of the one searched for.
        return f"starts_with({p(value.value)}, {a}.value)"
    return f"{a}.value = {p(value.value)}"


def _date(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, DateValue)
    return _date_range(f"{a}.low", f"{a}.high", value, p)


def _date_range(low: str, high: str, value: DateValue, p: _Params) -> str:
    """FHIR date comparison of a stored half-open range [low, high) with the value's range."""
    pl, ph = value.low, value.high
    contained = f"({low} >= {p(pl)} AND {high} <= {p(ph)})"
    match value.prefix:
        case "eq":
            return contained
        case "ne":
            return f"NOT {contained}"
        case "gt":
            return f"{high} > {p(ph)}"
        case "lt":
            return f"{low} < {p(pl)}"
        case "ge":
            return f"({high} > {p(ph)} OR {contained})"
        case "le":
            return f"({low} < {p(pl)} OR {contained})"
        case "sa":
            return f"{low} >= {p(ph)}"
        case "eb":
            return f"{high} <= {p(pl)}"
        case _:  # ap: overlaps the value widened by 10% of its distance from now, at least a day
            now = datetime.now(pl.tzinfo)
            widen = max(abs(now - pl) / 10, timedelta(days=1))
            return f"({low} < {p(ph + widen)} AND {high} > {p(pl - widen)})"


def _number(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, NumberValue | QuantityValue)
    match value.prefix:
        case "eq":
            return f"({a}.value >= {p(value.low)} AND {a}.value < {p(value.high)})"
        case "ne":
            return f"({a}.value < {p(value.low)} OR {a}.value >= {p(value.high)})"
        case "gt" | "sa":
            return f"{a}.value > {p(value.value)}"
        case "lt" | "eb":
            return f"{a}.value < {p(value.value)}"
        case "ge":
            return f"{a}.value >= {p(value.value)}"
        case "le":
            return f"{a}.value <= {p(value.value)}"
        case _:  # ap: within 10% of the value
            margin = abs(value.value) / 10
            low, high = p(value.value - margin), p(value.value + margin)
            return f"({a}.value >= {low} AND {a}.value <= {high})"


def _quantity(modifier: str | None, value: Any, p: _Params, a: str) -> str:
    assert isinstance(value, QuantityValue)
    parts = [_number(modifier, value, p, a)]
    if value.code is not None:
        if value.system is None:
            # Without a system, the code may match a coded unit or the human-readable unit.
            code = p(value.code)
            parts.append(f"({a}.code = {code} OR ({a}.code IS NULL AND {a}.unit = {code}))")
        else:
            parts.append(f"{a}.code = {p(value.code)}")
    if value.system is not None:
        parts.append(f"{a}.system = {p(value.system)}")
    return " AND ".join(parts)


# One predicate builder per parameter type: (modifier, value, params, index-row alias) -> SQL.
_BUILDERS: dict[str, Callable[[str | None, Any, _Params, str], str]] = {
    "string": _string,
    "token": _token,
    "reference": _reference,
    "uri": _uri,
    "date": _date,
    "number": _number,
    "quantity": _quantity,
}


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
