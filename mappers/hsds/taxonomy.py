"""A service's taxonomy terms as HealthcareService category, type and characteristic.

As the HSD IG and research/feeds.md section 2.2 map them: each linked term (with the code and
display the feed gives) is a ``type``; the top of its hierarchy, when the feed has one, a
``category``; every SDOH domain the crosswalk finds, an SDOHCC ``category`` coding (SDOHCC
STU3 HealthcareServiceForReferralManagement). AIRS target-population codes (``Y...``) say
who is served, not what: they go to ``characteristic``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mappers.hsds.crosswalk import SDOHCC_SYSTEM, is_airs_code, sdoh_categories, sdohcc_display
from mappers.hsds.elements import code as normal_code
from mappers.hsds.elements import compact, uri_or_none
from mappers.hsds.feed import Feed
from mappers.hsds.tables import Row, Tables

__all__ = ["Coded", "ServiceCodes", "code_service"]


@dataclass(frozen=True, slots=True)
class Coded:
    system: str
    code: str
    display: str

    def concept(self) -> dict[str, Any]:
        return {
            "coding": [compact({"system": self.system, "code": self.code, "display": self.display})]
        }


@dataclass(slots=True)
class ServiceCodes:
    """The codes of one service, de-duplicated, in a stable order."""

    categories: list[Coded] = field(default_factory=list)
    types: list[Coded] = field(default_factory=list)
    characteristics: list[Coded] = field(default_factory=list)
    domains: set[str] = field(default_factory=set)
    unknown_terms: list[str] = field(default_factory=list)

    def category(self) -> list[dict[str, Any]]:
        feed = [coded.concept() for coded in _unique(self.categories)]
        sdoh = [
            Coded(SDOHCC_SYSTEM, code, sdohcc_display(code) or "").concept()
            for code in sorted(self.domains)
        ]
        return feed + sdoh


def code_service(tables: Tables, feed: Feed, service_id: str) -> ServiceCodes:
    """The category, type, characteristic and SDOH domains of the service's attributes."""
    codes = ServiceCodes()
    terms = tables.by_id("taxonomy_term")
    # Thousands of services share a few thousand terms: code each term once per feed.
    coded_terms: dict[str, ServiceCodes] = tables.derived(("coded-terms", feed), dict)
    for attribute in tables.children("attribute", "link_id", service_id):
        if attribute.get("link_entity", "service") not in ("", "service"):
            continue
        term_id = attribute.get("taxonomy_term_id", "")
        term = terms.get(term_id)
        if term is None:
            codes.unknown_terms.append(term_id)
            continue
        term_codes = coded_terms.get(term_id)
        if term_codes is None:
            term_codes = coded_terms[term_id] = _code_term(tables, feed, term)
        codes.categories += term_codes.categories
        codes.types += term_codes.types
        codes.characteristics += term_codes.characteristics
        codes.domains |= term_codes.domains
    codes.types = _unique(codes.types)
    codes.characteristics = _unique(codes.characteristics)
    return codes


def _code_term(tables: Tables, feed: Feed, term: Row) -> ServiceCodes:
    codes = ServiceCodes()
    system, vocabulary = _system(tables, feed, term)
    code = normal_code(term.get("code") or term.get("id", ""))
    coded = Coded(system, code, term.get("name", ""))
    if system == SDOHCC_SYSTEM:
        if sdohcc_display(code):
            codes.domains.add(code)
        return codes
    if is_airs_code(code) and code.startswith("Y"):
        codes.characteristics.append(coded)
        return codes
    codes.types.append(coded)
    codes.domains.update(sdoh_categories(code, open_eligibility=vocabulary == "open-eligibility"))
    top = _top(tables, feed, term)
    if top is not None:
        codes.categories.append(top)
    return codes


def _system(tables: Tables, feed: Feed, term: Row) -> tuple[str, str]:
    """(code system, vocabulary kind) of a term: the taxonomy's URI, else one of the feed's."""
    taxonomy = tables.by_id("taxonomy").get(term.get("taxonomy_id", ""), {})
    name = taxonomy.get("name") or term.get("taxonomy", "")
    uri = uri_or_none(taxonomy.get("uri", "")) or ""
    if not uri and name.startswith(("http://", "https://", "urn:")):
        uri = uri_or_none(name) or ""
    lowered = f"{name} {uri}".lower()
    kind = "open-eligibility" if "openeligibility" in lowered.replace(" ", "") else "other"
    if uri.rstrip("/") == SDOHCC_SYSTEM:
        return SDOHCC_SYSTEM, "sdohcc"
    return (uri or feed.taxonomy_system(name)), kind


def _top(tables: Tables, feed: Feed, term: Row) -> Coded | None:
    """The root of the term's hierarchy as the feed gives it; None for a root term.

    1.x feeds name a parent they have no row for (Miami: ``parent_id`` "B", ``parent_name``
    "Basic Needs"): that parent is the root.
    """
    terms = tables.by_id("taxonomy_term")
    current, seen = term, {term.get("id", "")}
    while current.get("parent_id"):
        parent = terms.get(current["parent_id"])
        if parent is None:
            system, _ = _system(tables, feed, current)
            parent_code = normal_code(current["parent_id"])
            return Coded(system, parent_code, current.get("parent_name", ""))
        if parent.get("id", "") in seen:
            break  # a cycle in the feed's hierarchy: stop at the last new term
        seen.add(parent.get("id", ""))
        current = parent
    if current is term:
        return None
    system, _ = _system(tables, feed, current)
    top_code = normal_code(current.get("code") or current.get("id", ""))
    return Coded(system, top_code, current.get("name", ""))


def _unique(items: list[Coded]) -> list[Coded]:
    seen: set[tuple[str, str]] = set()
    unique = []
    for item in items:
        if (item.system, item.code) not in seen:
            seen.add((item.system, item.code))
            unique.append(item)
    return unique
