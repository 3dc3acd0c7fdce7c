"""Errors of the terminology engine; every message is safe to show a client.

TerminologyError
├── UnknownCodeSystem    the code system (or that version of it) is not held here
├── UnknownValueSet      the value set is not held here (also: one it imports)
├── UnknownConceptMap    the concept map is not held here
├── UnknownCode          a code the operation needs is not in its code system ($subsumes)
├── ExpansionTooLarge    the value set cannot be enumerated, or has more codes than the limit
├── UnsupportedFilter    a compose filter operator (or property) this engine does not implement
└── InvalidDefinition    a CodeSystem, ValueSet or ConceptMap breaks a rule the engine relies on
                         (include with neither system nor valueSet, import cycle, bad regex)

Messages quote canonical URLs and codes (shortened when long), never displays or other text a
client sent. The server maps them to OperationOutcomes; nothing here knows about HTTP.
"""

from __future__ import annotations

__all__ = [
    "ExpansionTooLarge",
    "InvalidDefinition",
    "TerminologyError",
    "UnknownCode",
    "UnknownCodeSystem",
    "UnknownConceptMap",
    "UnknownValueSet",
    "UnsupportedFilter",
    "quote",
]

_QUOTE_LIMIT = 80


def quote(value: object) -> str:
    """A code or URL for a message: repr-quoted and cut short, so a message stays readable."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > _QUOTE_LIMIT:
        text = text[: _QUOTE_LIMIT - 3] + "..."
    return repr(text)


def _canonical(url: str, version: str | None) -> str:
    return quote(url if version is None else f"{url}|{version}")


class TerminologyError(Exception):
    """Base of every error raised by the terminology engine."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownCodeSystem(TerminologyError):
    def __init__(self, url: str, version: str | None = None) -> None:
        super().__init__(f"CodeSystem {_canonical(url, version)} is not known here")
        self.url = url
        self.version = version


class UnknownValueSet(TerminologyError):
    def __init__(self, url: str, version: str | None = None, *, imported_by: str | None = None):
        what = f"ValueSet {_canonical(url, version)}"
        if imported_by is None:
            message = f"{what} is not known here"
        else:
            message = f"ValueSet {quote(imported_by)} imports {what}, which is not known here"
        super().__init__(message)
        self.url = url
        self.version = version


class UnknownConceptMap(TerminologyError):
    def __init__(self, url: str, version: str | None = None, *, reason: str | None = None):
        super().__init__(reason or f"ConceptMap {_canonical(url, version)} is not known here")
        self.url = url
        self.version = version


class UnknownCode(TerminologyError):
    def __init__(self, system: str, code: str, *, partial: bool = False) -> None:
        message = f"Code {quote(code)} is not in CodeSystem {quote(system)}"
        if partial:
            message = (
                f"Code {quote(code)} is not among the codes of CodeSystem {quote(system)} "
                "held here (only part of that code system is held)"
            )
        super().__init__(message)
        self.system = system
        self.code = code


class ExpansionTooLarge(TerminologyError):
    """The value set cannot be enumerated here, or has more codes than the caller's limit."""


class UnsupportedFilter(TerminologyError):
    """A compose filter this engine does not implement; the message names the operator."""


class InvalidDefinition(TerminologyError):
    """A terminology resource breaks a rule the engine relies on; the message says which."""
