"""Code systems, value sets, concept maps, and the terminology operations' logic.

Pure Python: imports nothing of this project, reads only its bundled JSON (``content/``).
"""

from terminology.errors import (
    ExpansionTooLarge,
    InvalidDefinition,
    TerminologyError,
    UnknownCode,
    UnknownCodeSystem,
    UnknownConceptMap,
    UnknownValueSet,
    UnsupportedFilter,
)
from terminology.results import (
    CodeMatch,
    Coding,
    Concept,
    Dependency,
    Designation,
    Expansion,
    Lookup,
    Property,
    Translation,
    Validation,
)
from terminology.service import DEFAULT_EXPANSION_LIMIT, Terminology

__all__ = [
    "DEFAULT_EXPANSION_LIMIT",
    "CodeMatch",
    "Coding",
    "Concept",
    "Dependency",
    "Designation",
    "Expansion",
    "ExpansionTooLarge",
    "InvalidDefinition",
    "Lookup",
    "Property",
    "TerminologyError",
    "Terminology",
    "Translation",
    "UnknownCode",
    "UnknownCodeSystem",
    "UnknownConceptMap",
    "UnknownValueSet",
    "UnsupportedFilter",
    "Validation",
]
