"""``_include`` and ``_revinclude``: http://hl7.org/fhir/R4/search.html#include.

Parsed against the registry into `Include`s, and compiled into one set-based statement per
include and round: the references of the whole page are joined at once, never a query per match.
``:iterate`` repeats the includes over what the previous round added, until a round adds nothing
or the rounds run out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from fhir_server.search.registry import SearchRegistry
from fhir_server.search.sql import Sql

__all__ = [
    "INCLUDE_PARAMS",
    "Include",
    "InvalidInclude",
    "build_include",
    "parse_includes",
    "split_includes",
]

INCLUDE_PARAMS = frozenset({"_include", "_revinclude"})
# Rounds of :iterate after the first; a cap that cuts a result short says so in the Bundle.
MAX_ITERATIONS = 4


class InvalidInclude(ValueError):
    """An _include or _revinclude value that names no reference parameter."""


@dataclass(frozen=True, slots=True)
class Include:
    """Follow ``param`` of ``source_type`` resources forward (include) or backward (revinclude).

    ``target_type`` narrows the resources reached (``Observation:subject:Patient``); ``param``
    ``*`` means every reference parameter of the source type.
    """

    source_type: str
    params: tuple[str, ...]
    target_type: str | None
    reverse: bool
    iterate: bool
    text: str

    @property
    def name(self) -> str:
        modifier = ":iterate" if self.iterate else ""
        return f"{'_revinclude' if self.reverse else '_include'}{modifier}={self.text}"


def split_includes(
    items: Sequence[tuple[str, str]],
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(the include items, every other item), the order of each kept."""
    includes = [(k, v) for k, v in items if k.split(":")[0] in INCLUDE_PARAMS]
    rest = [(k, v) for k, v in items if k.split(":")[0] not in INCLUDE_PARAMS]
    return includes, rest


def parse_includes(
    resource_type: str, items: Iterable[tuple[str, str]], registry: SearchRegistry
) -> tuple[Include, ...]:
    """The includes of a search on ``resource_type``; `InvalidInclude` says what is wrong."""
    parsed = []
    for key, value in items:
        name, _, modifier = key.partition(":")
        if modifier not in {"", "iterate", "recurse"}:
            raise InvalidInclude(f"{name} takes no modifier :{modifier}")
        reverse = name == "_revinclude"
        iterate = modifier in {"iterate", "recurse"}
        parsed.append(_parse_one(resource_type, value, reverse, iterate, registry))
    return tuple(parsed)


def _parse_one(
    resource_type: str, value: str, reverse: bool, iterate: bool, registry: SearchRegistry
) -> Include:
    # A bare * is every reference of the type searched (or, reversed, every reference to it).
    parts = [resource_type, "*"] if value == "*" and not reverse else value.split(":")
    if len(parts) not in {2, 3} or not all(parts):
        raise InvalidInclude(
            f"{value!r} is not [source type]:[parameter] or [source type]:[parameter]:[target type]"
        )
    source_type, code = parts[0], parts[1]
    target_type = parts[2] if len(parts) == 3 else None
    if source_type not in registry.resource_types():
        raise InvalidInclude(f"{source_type!r} in {value!r} is not a resource type")
    if not reverse and not iterate and source_type != resource_type:
        raise InvalidInclude(
            f"_include={value} starts from {source_type}, but the search is on {resource_type};"
            " use _include:iterate to follow included resources"
        )
    if code == "*":
        params = tuple(
            p.code
            for p in registry.for_type(source_type).values()
            if p.type == "reference" and p.pending is None
        )
    else:
        param = registry.get(source_type, code)
        if param is None or param.type != "reference":
            raise InvalidInclude(f"{source_type} has no reference search parameter {code!r}")
        if param.pending is not None:
            raise InvalidInclude(f"{source_type}:{code} cannot be used yet: {param.pending}")
        if target_type is not None and param.targets and target_type not in param.targets:
            raise InvalidInclude(f"{source_type}:{code} never refers to a {target_type}")
        params = (code,)
    if target_type is not None and target_type not in registry.resource_types():
        raise InvalidInclude(f"{target_type!r} in {value!r} is not a resource type")
    return Include(source_type, params, target_type, reverse, iterate, value)


_ROW = "t.rid, t.resource_type, t.id, t.version_id, t.last_updated, t.body"


def build_include(include: Include, keys: Sequence[tuple[str, str]], limit: int) -> Sql:
    """Resources reached from ``keys`` (type, id) through ``include``, at most ``limit``."""
    types = [t for t, _ in keys]
    ids = [i for _, i in keys]
    params: dict[str, object] = {
        "source": include.source_type,
        "params": list(include.params),
        "types": types,
        "ids": ids,
        "limit": limit,
    }
    target = ""
    if include.target_type is not None:
        target = " AND i.target_type = %(target)s"
        params["target"] = include.target_type
    if include.reverse:
        # Resources of the source type whose parameter points at one of the keys.
        text = (
            f"SELECT {_ROW} FROM resource t"
            " WHERE t.resource_type = %(source)s AND NOT t.deleted AND t.rid IN ("
            " SELECT i.rid FROM idx_reference i"
            " JOIN unnest(%(types)s::text[], %(ids)s::text[]) AS k(type, id)"
            " ON i.target_type = k.type AND i.target_id = k.id"
            " WHERE i.resource_type = %(source)s AND i.param = ANY(%(params)s)"
            f" AND i.url IS NULL{target})"
            " ORDER BY t.rid LIMIT %(limit)s"
        )
    else:
        # What the keys of the source type point at through the parameter.
        text = (
            f"SELECT {_ROW} FROM resource t JOIN ("
            " SELECT DISTINCT i.target_type, i.target_id FROM resource s"
            " JOIN unnest(%(types)s::text[], %(ids)s::text[]) AS k(type, id)"
            " ON s.resource_type = k.type AND s.id = k.id"
            " JOIN idx_reference i ON i.resource_type = s.resource_type AND i.rid = s.rid"
            f" AND i.param = ANY(%(params)s) AND i.url IS NULL{target}"
            " WHERE s.resource_type = %(source)s) r"
            " ON t.resource_type = r.target_type AND t.id = r.target_id AND NOT t.deleted"
            " ORDER BY t.rid LIMIT %(limit)s"
        )
    return Sql(text, params)
