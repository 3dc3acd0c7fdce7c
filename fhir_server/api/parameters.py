"""An operation's input parameters, from the query string or a ``Parameters`` body.

http://hl7.org/fhir/R4/operations.html#request: a GET (or a POST of a form) carries primitive
parameters in the URL; a POST carries a ``Parameters`` resource, whose parameters may also be
complex types (``valueCoding``), resources (``resource``) or nested ``part``s.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.requests import Request

from fhir_server.api import rest
from fhir_server.api.formats import read_body
from fhir_server.core.errors import InvalidRequest

__all__ = ["OperationParameters"]

_INTEGER = re.compile(r"[0-9]{1,9}")
# No operation here takes parameters nested deeper than a few parts.
_MAX_DEPTH = 8

_PRIMITIVES = (
    "valueString",
    "valueCode",
    "valueUri",
    "valueUrl",
    "valueCanonical",
    "valueId",
    "valueDateTime",
    "valueDate",
    "valueMarkdown",
    "valueOid",
    "valueUuid",
)


class OperationParameters:
    """Each named parameter's values, in order: strings for primitives, dicts otherwise."""

    def __init__(self, values: Mapping[str, Sequence[Any]]) -> None:
        self._values = values

    @classmethod
    async def of(cls, request: Request) -> OperationParameters:
        """The query parameters, with those of the ``Parameters`` body of a POST."""
        parameters = cls.from_query(request)
        if request.method == "POST":
            raw = await rest._raw_body(request)
            if raw.strip():
                body = read_body(request.headers.get("content-type"), raw)
                parameters = parameters.merged(cls.from_resource(body))
        return parameters

    @classmethod
    def from_query(cls, request: Request) -> OperationParameters:
        values: dict[str, list[Any]] = {}
        for name, value in request.query_params.multi_items():
            if not name.startswith("_"):
                values.setdefault(name, []).append(value)
        return cls(values)

    def merged(self, other: OperationParameters) -> OperationParameters:
        values = {name: list(items) for name, items in self._values.items()}
        for name, items in other._values.items():
            values.setdefault(name, []).extend(items)
        return OperationParameters(values)

    @classmethod
    def from_resource(cls, body: Any) -> OperationParameters:
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise InvalidRequest("the body must be a Parameters resource")
        return cls(_parameters(body.get("parameter"), "Parameters.parameter"))

    def _single(self, name: str) -> Any:
        values = self._values.get(name, ())
        if len(values) > 1:
            raise InvalidRequest(f"the parameter {name!r} may be given once")
        return values[0] if values else None

    def string(self, name: str) -> str | None:
        """The single value of a primitive parameter; 400 for several, or a complex value."""
        value = self._single(name)
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"the parameter {name!r} must be a primitive value")
        return value

    def integer(self, name: str, *, minimum: int = 0) -> int | None:
        """A non-negative integer below a billion (a count, an offset)."""
        text = self.string(name)
        if text is None:
            return None
        if not _INTEGER.fullmatch(text) or int(text) < minimum:
            raise InvalidRequest(
                f"the parameter {name!r} must be an integer from {minimum} to 999999999"
            )
        return int(text)

    def boolean(self, name: str) -> bool | None:
        text = self.string(name)
        if text is None:
            return None
        if text not in ("true", "false"):
            raise InvalidRequest(f"the parameter {name!r} must be true or false")
        return text == "true"

    def complex(self, name: str) -> dict[str, Any] | None:
        """The single value of a complex parameter (a Coding, a resource)."""
        value = self._single(name)
        if value is not None and not isinstance(value, dict):
            raise InvalidRequest(f"the parameter {name!r} must be a complex value or a resource")
        return value

    def parts(self, name: str) -> list[OperationParameters]:
        """The nested parts of each value of ``name``."""
        found = []
        for value in self._values.get(name, ()):
            if not isinstance(value, OperationParameters):
                raise InvalidRequest(f"the parameter {name!r} must have parts")
            found.append(value)
        return found


def _parameters(items: Any, where: str, depth: int = 0) -> dict[str, list[Any]]:
    if items is None:
        return {}
    if depth > _MAX_DEPTH:
        raise InvalidRequest(f"parameters nest more than {_MAX_DEPTH} parts deep")
    if not isinstance(items, list):
        raise InvalidRequest(f"{where} must be an array")
    values: dict[str, list[Any]] = {}
    for position, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"{where}[{position}] must be an object with a name")
        values.setdefault(item["name"], []).append(_value(item, f"{where}[{position}]", depth))
    return values


def _value(item: dict[str, Any], where: str, depth: int) -> Any:
    if "part" in item:
        return OperationParameters(_parameters(item["part"], f"{where}.part", depth + 1))
    if "resource" in item:
        if not isinstance(item["resource"], dict):
            raise InvalidRequest(f"{where}.resource must be a resource")
        return item["resource"]
    for key, value in item.items():
        if not key.startswith("value"):
            continue
        if key in _PRIMITIVES:
            if not isinstance(value, str):
                raise InvalidRequest(f"{where}.{key} must be a string")
            return value
        if key == "valueBoolean":
            if not isinstance(value, bool):
                raise InvalidRequest(f"{where}.valueBoolean must be true or false")
            return "true" if value else "false"
        if key in ("valueInteger", "valuePositiveInt", "valueUnsignedInt"):
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidRequest(f"{where}.{key} must be an integer")
            return str(value)
        if not isinstance(value, dict):
            raise InvalidRequest(f"{where}.{key} must be an object")
        return value
    raise InvalidRequest(f"{where} has no value")
