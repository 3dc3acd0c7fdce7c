"""Build one SQL statement (bound parameters only) for a parsed search.

Each clause becomes an EXISTS semi-join on its typed index table; values of one clause are ORed
inside it, clauses are ANDed. Pages are keyset-based on the sort keys and the immutable ``rid``,
so a page boundary never skips or repeats a match while others write.
http://hl7.org/fhir/R4/search.html
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

from fhir_server.core.errors import InvalidRequest
from fhir_server.core.schema import INDEX_TABLES, resource
from fhir_server.search.parse import (
    Clause,
    DateValue,
    MissingValue,
    NumberValue,
    QuantityValue,
    ReferenceValue,
    SearchRequest,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
)

__all__ = [
    "Cursor",
    "build_count",
    "build_ids",
    "build_search",
    "decode_cursor",
    "encode_cursor",
    "matches",
]

r = resource.alias("r")
_DIALECT = PGDialect_psycopg()


def compile_sql(statement: Any) -> tuple[str, dict[str, Any]]:
    """SQL text and bound parameters for psycopg (pyformat); values are never inlined."""
    compiled = statement.compile(dialect=_DIALECT, compile_kwargs={"render_postcompile": True})
    return str(compiled), dict(compiled.params)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page starts: the sort values and rid of the row next to it, and which way to go."""

    values: tuple[Any, ...]
    rid: int
    backwards: bool = False


def encode_cursor(cursor: Cursor) -> str:
    def tag(v: Any) -> Any:
        if isinstance(v, datetime):
            return {"t": v.isoformat()}
        if isinstance(v, Decimal):
            return {"n": str(v)}
        return v

    raw = orjson.dumps([[tag(v) for v in cursor.values], cursor.rid, cursor.backwards])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, arity: int) -> Cursor:
    def untag(v: Any) -> Any:
        if isinstance(v, dict) and set(v) == {"t"}:
            return datetime.fromisoformat(v["t"])
        if isinstance(v, dict) and set(v) == {"n"}:
            return Decimal(v["n"])
        if v is None or isinstance(v, str | int):
            return v
        raise ValueError("bad value")

    try:
        values, rid, backwards = orjson.loads(
            base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        )
        if not isinstance(rid, int) or not isinstance(values, list) or len(values) != arity:
            raise ValueError("bad shape")
        return Cursor(tuple(untag(v) for v in values), rid, bool(backwards))
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidRequest("the paging cursor is not valid for this search") from None


def matches(request: SearchRequest) -> ColumnElement[bool]:
    """The WHERE condition on ``r`` for all clauses of the request."""
    conditions: list[ColumnElement[bool]] = [
        r.c.resource_type == request.resource_type,
        r.c.deleted.is_(False),
    ]
    conditions.extend(_clause(request.resource_type, clause) for clause in request.clauses)
    return and_(*conditions)


def build_ids(request: SearchRequest, limit: int) -> Select[Any]:
    """Ids of up to ``limit`` matches, for conditional interactions."""
    return select(r.c.id).where(matches(request)).limit(limit)


def build_count(request: SearchRequest) -> Select[Any]:
    return select(func.count()).select_from(r).where(matches(request))


def build_search(request: SearchRequest, cursor: Cursor | None) -> Select[Any]:
    """Rows (rid, id, version_id, last_updated, body, sort values...) of one page plus one more."""
    sort_columns = [
        _sort_expression(request.resource_type, key).label(f"s{i}")
        for i, key in enumerate(request.sort)
    ]
    inner = (
        select(r.c.rid, r.c.id, r.c.version_id, r.c.last_updated, r.c.body, *sort_columns)
        .where(matches(request))
        .subquery("q")
    )
    backwards = cursor is not None and cursor.backwards
    keys = [
        (inner.c[f"s{i}"], key.descending != backwards, not backwards)
        for i, key in enumerate(request.sort)
    ]
    order = [
        (col.desc() if desc else col.asc()).nulls_last()
        if nulls_last
        else (col.desc() if desc else col.asc()).nulls_first()
        for col, desc, nulls_last in keys
    ]
    order.append(inner.c.rid.desc() if backwards else inner.c.rid.asc())
    query = select(inner).order_by(*order).limit(request.count + 1)
    if cursor is not None:
        query = query.where(_after(keys, cursor, inner.c.rid))
    return query


def _after(keys: Sequence[tuple[Any, bool, bool]], cursor: Cursor, rid: Any) -> ColumnElement[bool]:
    """Rows strictly after the cursor in the order given by ``keys`` then rid."""
    alternatives: list[ColumnElement[bool]] = []
    equal_so_far: list[ColumnElement[bool]] = []
    for (col, desc, nulls_last), value in zip(keys, cursor.values, strict=True):
        if value is None:
            after = col.is_not(None) if not nulls_last else false()
        else:
            beyond = col < value if desc else col > value
            after = or_(beyond, col.is_(None)) if nulls_last else beyond
        alternatives.append(and_(*equal_so_far, after))
        equal_so_far.append(col.is_(None) if value is None else col == value)
    beyond_rid = rid < cursor.rid if cursor.backwards else rid > cursor.rid
    alternatives.append(and_(*equal_so_far, beyond_rid))
    return or_(*alternatives)


def _sort_expression(resource_type: str, key: SortKey) -> Any:
    if key.kind == "id":
        return r.c.id
    if key.kind == "lastUpdated":
        return r.c.last_updated
    table = INDEX_TABLES[key.kind]
    column = {
        "string": table.c.get("norm"),
        "token": table.c.get("code"),
        "date": table.c.get("high" if key.descending else "low"),
        "number": table.c.get("value"),
        "quantity": table.c.get("value"),
        "uri": table.c.get("value"),
        "reference": table.c.get("target_id"),
    }[key.kind]
    assert column is not None
    aggregate = func.max(column) if key.descending else func.min(column)
    return (
        select(aggregate)
        .where(_owned(table, resource_type), table.c.param == key.code)
        .scalar_subquery()
    )


def _owned(table: Table, resource_type: str) -> ColumnElement[bool]:
    return and_(table.c.resource_type == resource_type, table.c.rid == r.c.rid)


def _clause(resource_type: str, clause: Clause) -> ColumnElement[bool]:
    if clause.kind == "id":
        ids = [v.code for v in clause.values if isinstance(v, TokenValue) and v.code]
        return r.c.id.in_(ids)
    if clause.kind == "lastUpdated":
        lu = r.c.last_updated
        one_ms = timedelta(milliseconds=1)
        return or_(
            *(_date_range(lu, lu + one_ms, v) for v in clause.values if isinstance(v, DateValue))
        )
    table = INDEX_TABLES[clause.kind]
    rows = select(literal(1)).where(_owned(table, resource_type), table.c.param == clause.code)
    first = clause.values[0]
    if isinstance(first, MissingValue):
        return not_(exists(rows)) if first.missing else exists(rows)
    build = _BUILDERS[clause.kind]
    condition = or_(*(build(table, clause, v) for v in clause.values))
    if clause.modifier == "not":
        return not_(exists(rows.where(condition)))
    return exists(rows.where(condition))


def _string(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, StringValue)
    if clause.modifier == "exact":
        return table.c.value == value.raw
    if clause.modifier == "contains":
        return table.c.norm.like("%" + _like_escape(value.norm) + "%", escape="\\")
    return table.c.norm.like(_like_escape(value.norm) + "%", escape="\\")


def _token(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, TokenValue)
    if value.text is not None:
        return table.c.text.like(_like_escape(value.text) + "%", escape="\\")
    parts: list[ColumnElement[bool]] = []
    if value.code is not None:
        parts.append(table.c.code == value.code)
    if value.system == "":
        parts.append(table.c.system.is_(None))
    elif value.system is not None:
        parts.append(table.c.system == value.system)
    if clause.modifier == "of-type":
        if value.type_system is not None:
            parts.append(table.c.type_system == value.type_system)
        if value.type_code is not None:
            parts.append(table.c.type_code == value.type_code)
    return and_(true(), *parts)


def _reference(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, ReferenceValue)
    if clause.modifier == "identifier":
        parts = [table.c.identifier_value == value.identifier_value]
        if value.identifier_system is not None:
            parts.append(table.c.identifier_system == value.identifier_system)
        return and_(*parts)
    if value.url is not None:
        return table.c.url == value.url
    parts = [table.c.target_id == value.id]
    if value.type is not None:
        parts.append(table.c.target_type == value.type)
    return and_(*parts)


def _uri(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, UriValue)
    if clause.modifier == "below":
        return table.c.value.like(_like_escape(value.value) + "%", escape="\\")
    if clause.modifier == "above":
        return literal(value.value).like(
            func.replace(
                func.replace(func.replace(table.c.value, "\\", "\\\\"), "%", "\\%"), "_", "\\_"
            )
            + "%",
            escape="\\",
        )
    return table.c.value == value.value


def _date(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, DateValue)
    return _date_range(table.c.low, table.c.high, value)


def _date_range(low: Any, high: Any, value: DateValue) -> ColumnElement[bool]:
    """FHIR date comparison of a stored half-open range [low, high) with the value's range."""
    pl, ph = value.low, value.high
    contained = and_(low >= pl, high <= ph)
    match value.prefix:
        case "eq":
            return contained
        case "ne":
            return not_(contained)
        case "gt":
            return high > ph
        case "lt":
            return low < pl
        case "ge":
            return or_(high > ph, contained)
        case "le":
            return or_(low < pl, contained)
        case "sa":
            return low >= ph
        case "eb":
            return high <= pl
        case _:  # ap: overlaps the value widened by 10% of its distance from now, at least a day
            now = datetime.now(pl.tzinfo)
            widen = max(abs(now - pl) / 10, timedelta(days=1))
            return and_(low < ph + widen, high > pl - widen)


def _number(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, NumberValue | QuantityValue)
    column = table.c.value
    match value.prefix:
        case "eq":
            return and_(column >= value.low, column < value.high)
        case "ne":
            return or_(column < value.low, column >= value.high)
        case "gt" | "sa":
            return column > value.value
        case "lt" | "eb":
            return column < value.value
        case "ge":
            return column >= value.value
        case "le":
            return column <= value.value
        case _:  # ap: within 10% of the value
            margin = abs(value.value) / 10
            return and_(column >= value.value - margin, column <= value.value + margin)


def _quantity(table: Table, clause: Clause, value: Any) -> ColumnElement[bool]:
    assert isinstance(value, QuantityValue)
    parts = [_number(table, clause, value)]
    if value.code is not None:
        parts.append(
            or_(
                table.c.code == value.code, and_(table.c.code.is_(None), table.c.unit == value.code)
            )
            if value.system is None
            else table.c.code == value.code
        )
    if value.system is not None:
        parts.append(table.c.system == value.system)
    return and_(*parts)


_BUILDERS: dict[str, Callable[[Table, Clause, Any], ColumnElement[bool]]] = {
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
