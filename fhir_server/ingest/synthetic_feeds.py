"""Deterministic synthetic state feeds for the benchmarks: a 211 HSDS directory and IEES HL7.

Both are in the exact shapes the mappers read, large, and seeded: the same arguments give the
same bytes. Everything is fictional: ``555-01xx`` phones, "Example" streets, ``00-`` EINs,
IndividualIDs and case numbers starting with 9 (``feeds/iees/README.md``).

* ``write_hsds_directory``: an HSDS 3.1 JSON directory as a 211's API export gives it
  (https://docs.openreferral.org/en/latest/hsds/api_reference.html): ``taxonomies.json`` and
  ``taxonomy_terms.json`` (lists), then pages (``{"total_items", ..., "contents": [...]}``) of
  ``organization_list_full_NNNN.json`` (organizations with their phones, identifiers,
  programs and locations, each location with its address, phones, hours) and
  ``service_list_full_NNNN.json`` (services with phones, schedules, languages, areas,
  required documents, taxonomy ``attributes`` and ``service_at_locations`` naming their
  location by ``location_id``). Planted problems, and only these: a few services name an
  organization the feed does not have (``missing-organization``) and a few physical
  locations have no coordinates (``no-coordinates``). ``changed`` and ``dropped`` derive a
  later export of the same base, for the reload and "missing from a full load" figures.
* ``iter_iees_messages``: HL7 v2.5.1 ADT messages of the KY-IEES-PERSON-ELIG profile, one A28
  per person (households of 1-6 sharing a case number), then A31 updates; ``write_iees_file``
  writes them MLLP-framed (``0x0B message 0x1C 0x0D``) one after another into one file: the
  shape of a batch of messages, and what an MLLP replay reads.

CLI::

    python -m fhir_server.ingest.synthetic_feeds hsds OUTDIR --services 50000 [--seed 1]
        [--changed 0.1] [--dropped 0.05]
    python -m fhir_server.ingest.synthetic_feeds iees OUTFILE --persons 10000 [--updates 2000]
        [--seed 1] [--start-control-id 1]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from random import Random
from typing import Any

from mappers.iees.records import AGENCIES, PROGRAMS

__all__ = [
    "HsdsCounts",
    "iter_iees_messages",
    "main",
    "write_hsds_directory",
    "write_iees_file",
]

Json = dict[str, Any]

# --- places -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Place:
    """A town the sites cluster around; ``spread`` (degrees) is wide for rural counties."""

    city: str
    county: str
    fips: str
    postal_code: str
    latitude: float
    longitude: float
    area_code: str
    utc_offset: str  # standard time: Eastern -05:00, Central -06:00 (HSDS has no DST)
    weight: int
    spread: float


_PLACES = (
    _Place("Louisville", "Jefferson", "21111", "40202", 38.25, -85.76, "502", "-05:00", 30, 0.06),
    _Place("Lexington", "Fayette", "21067", "40507", 38.04, -84.50, "859", "-05:00", 18, 0.05),
    _Place("Bowling Green", "Warren", "21227", "42101", 36.99, -86.44, "270", "-06:00", 8, 0.04),
    _Place("Covington", "Kenton", "21117", "41011", 39.05, -84.51, "859", "-05:00", 5, 0.03),
    _Place("Owensboro", "Daviess", "21059", "42301", 37.77, -87.11, "270", "-06:00", 4, 0.04),
    _Place("Paducah", "McCracken", "21145", "42001", 37.08, -88.60, "270", "-06:00", 3, 0.04),
    _Place("Frankfort", "Franklin", "21073", "40601", 38.20, -84.87, "502", "-05:00", 3, 0.03),
    _Place("Elizabethtown", "Hardin", "21093", "42701", 37.69, -85.86, "270", "-05:00", 3, 0.04),
    _Place("Richmond", "Madison", "21151", "40475", 37.75, -84.29, "859", "-05:00", 2, 0.04),
    _Place("Hopkinsville", "Christian", "21047", "42240", 36.87, -87.49, "270", "-06:00", 2, 0.04),
    _Place("Ashland", "Boyd", "21019", "41101", 38.48, -82.64, "606", "-05:00", 2, 0.04),
    _Place("Somerset", "Pulaski", "21199", "42501", 37.09, -84.60, "606", "-05:00", 2, 0.05),
    _Place("Hazard", "Perry", "21193", "41701", 37.25, -83.19, "606", "-05:00", 2, 0.12),
    _Place("Pikeville", "Pike", "21195", "41501", 37.48, -82.52, "606", "-05:00", 2, 0.12),
    _Place("London", "Laurel", "21125", "40741", 37.13, -84.08, "606", "-05:00", 2, 0.12),
    _Place("Harlan", "Harlan", "21095", "40831", 36.84, -83.32, "606", "-05:00", 1, 0.10),
    _Place("Morehead", "Rowan", "21205", "40351", 38.18, -83.43, "606", "-05:00", 1, 0.12),
    _Place("Murray", "Calloway", "21035", "42071", 36.61, -88.31, "270", "-06:00", 1, 0.05),
    _Place("Glasgow", "Barren", "21009", "42141", 37.00, -85.91, "270", "-06:00", 1, 0.10),
    _Place("Campbellsville", "Taylor", "21217", "42718", 37.34, -85.34, "270", "-05:00", 1, 0.10),
    _Place("Maysville", "Mason", "21161", "41056", 38.64, -83.74, "606", "-05:00", 1, 0.08),
    _Place("Jackson", "Breathitt", "21025", "41339", 37.55, -83.38, "606", "-05:00", 1, 0.12),
    _Place("Madisonville", "Hopkins", "21107", "42431", 37.33, -87.50, "270", "-06:00", 1, 0.10),
    _Place("Danville", "Boyle", "21021", "40422", 37.65, -84.77, "859", "-05:00", 1, 0.08),
)
_PLACE_WEIGHTS = [place.weight for place in _PLACES]
# Kentucky's bounding box: sites are clamped into it, so Feed(bounds=...) reports nothing.
_KENTUCKY = (36.50, -89.57, 39.14, -81.97)  # south, west, north, east

# fmt: off
_STREETS = ("Main", "Market", "Oak", "Maple", "Broadway", "Church", "Mill", "Spring", "Walnut",
            "Chestnut", "Liberty", "High", "Elm", "Center", "Park", "River", "Hill", "College")
# fmt: on
_STREET_KINDS = ("St", "Ave", "Rd", "Pike", "Blvd", "Ln")


def _street(rng: Random) -> str:
    return f"{rng.randint(10, 9899)} Example {rng.choice(_STREETS)} {rng.choice(_STREET_KINDS)}"


def _phone_number(rng: Random, area_code: str) -> str:
    return f"{area_code}-555-01{rng.randint(0, 99):02d}"


# --- the taxonomy -------------------------------------------------------------------------------

_AIRS = ("AIRS/211 LA County Taxonomy", "https://211taxonomy.org/")
_OPEN_ELIGIBILITY = ("Open Eligibility", "http://openeligibility.org")
_SDOHCC = (
    "SDOHCC SDOH Category",
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes",
)
_LOCAL = ("KY 211 Local Categories", "")  # a publisher's own list, with no URI
_TAXONOMIES = (_AIRS, _OPEN_ELIGIBILITY, _SDOHCC, _LOCAL)

# AIRS top levels with labels of our own (the licensed AIRS names are never shipped).
_AIRS_TOPS = {
    "B": "Basic needs",
    "D": "Money and consumer help",
    "F": "Legal help",
    "H": "Education",
    "L": "Health care",
    "N": "Income and jobs",
    "P": "Family and community life",
    "R": "Mental health and recovery",
    "T": "Community organizations",
    "Y": "Who is served",
}


@dataclass(frozen=True, slots=True)
class _Offer:
    """A kind of service: its name, codes (AIRS, Open Eligibility or None, SDOHCC domain or
    None: a code the crosswalk does not know maps to no domain) and who it is for."""

    name: str
    airs: str
    open_eligibility: str | None
    domain: str | None
    about: str
    weight: int = 3
    minimum_age: int | None = None
    documents: tuple[str, ...] = ()


# fmt: off
_OFFERS = (
    _Offer("Food Pantry", "BD-1800.2000", "1130", "food-insecurity",
           "Free groceries once a month for households in need.", 10, None,
           ("Photo ID", "Proof of Kentucky address")),
    _Offer("Emergency Food Boxes", "BD-1800", "1128", "food-insecurity",
           "Three-day emergency food boxes, no appointment needed.", 5),
    _Offer("Community Meal", "BD-5000.8300", "1129", "food-insecurity",
           "Hot meals served to anyone who comes.", 4),
    _Offer("Home Delivered Meals", "BD-5000.3500", "1131", "food-insecurity",
           "Meals delivered at home to older adults who cannot cook.", 3, 60),
    _Offer("SNAP Application Assistance", "NL-6000.2000-220", "1133", "food-insecurity",
           "Help applying for SNAP food benefits through kynect.", 3),
    _Offer("WIC Nutrition Program", "NL-6000.9500", "1134", "food-insecurity",
           "Food benefits and nutrition advice for pregnant women and young children.", 2),
    _Offer("Rent Payment Assistance", "BH-3800.7000", "1136", "housing-instability",
           "One-time help with past-due rent to prevent eviction.", 5, 18,
           ("Lease", "Eviction notice")),
    _Offer("Emergency Shelter", "BH-1800.8500", "1121", "homelessness",
           "Overnight shelter beds and case management.", 3, 18),
    _Offer("Transitional Housing", "BH-8600", "1135", "homelessness",
           "Up to 24 months of housing with support services.", 2, 18),
    _Offer("Home Repair Program", "BH-3000.1800-950", "1145", "inadequate-housing",
           "Repairs that keep homes safe for low-income homeowners.", 2, 18),
    _Offer("Eviction Prevention Legal Aid", "FT-4500.1800", "1137", "housing-instability",
           "Free legal advice for tenants facing eviction.", 2, 18),
    _Offer("Utility Payment Assistance", "BV-8900.9300-180", "1138", "utility-insecurity",
           "Help with overdue electric, gas and water bills.", 4, 18, ("Utility bill",)),
    _Offer("Energy Assistance (LIHEAP)", "BV-8900.9300-250", "1244", "utility-insecurity",
           "Seasonal heating and cooling assistance.", 3, 18, ("Utility bill",)),
    _Offer("Medical Transportation", "BT-4500.6500-500", "1172", "transportation-insecurity",
           "Rides to medical appointments for Medicaid members.", 3),
    _Offer("Bus Fare Assistance", "BT-8300.1000-400", "1173", "transportation-insecurity",
           "Bus passes for job seekers and medical visits.", 2),
    _Offer("Free Tax Preparation", "DT-8800.9300-930", "1113", "financial-insecurity",
           "Free tax return preparation for low-income filers.", 2),
    _Offer("Financial Coaching", "DM-6500", "1107", "financial-insecurity",
           "One-on-one budgeting and credit coaching.", 2, 18),
    _Offer("Job Readiness Training", "ND-6500", "1364", "employment-status",
           "Resume, interview and workplace skills classes.", 3, 16),
    _Offer("Career Center Services", "ND-2000", "1358", "employment-status",
           "Job search help and referrals to employers.", 2, 16),
    _Offer("GED Classes", "HH-0500.2500-250", "1109", "educational-attainment",
           "Free adult education classes and GED testing.", 2, 16),
    _Offer("Health Coverage Enrollment Help", "NL-5000.5000", "1202",
           "health-insurance-coverage-status",
           "A kynector helps you apply for Medicaid, KCHIP or a health plan.", 3),
    _Offer("Prescription Assistance", "LH-6700.6300", "1199", "medical-cost-burden",
           "Help paying for prescription medicines.", 2),
    _Offer("Clothing Closet", "BM-6500.1500-150", "1104", "material-hardship",
           "Free clothing and shoes for all ages.", 3),
    _Offer("Domestic Violence Crisis Services", "RP-1500.1400-200", "1123",
           "intimate-partner-violence", "Safety planning, advocacy and crisis counseling.", 2),
    _Offer("Senior Center Activities", "PH-1400", "1108", "social-connection",
           "Activities, classes and company for older adults.", 2, 60),
    _Offer("Interpretation Services", "PH-3500", None, "language-access",
           "Spoken and written interpretation for residents with limited English.", 1),
    _Offer("Public Computer Access", "TI-1800.6500-150", None, "digital-access",
           "Free computer and internet use with staff help.", 1),
    _Offer("Mental Health Counseling", "RP-6400.8000", None, None,
           "Counseling for individuals and families, sliding-scale fees.", 3),
    _Offer("Substance Use Recovery Support", "RX-8450", None, None,
           "Peer support and referrals to treatment.", 2, 18),
    _Offer("Dental Clinic", "LV-8000", None, None, "Low-cost dental care.", 2),
    _Offer("Legal Advice Clinic", "FT-3200", None, None, "Free civil legal advice by appointment.",
           1, 18),
)
# fmt: on
_OFFER_WEIGHTS = [offer.weight for offer in _OFFERS]
# fmt: off
_POPULATIONS = (("YB-8000", "Older adults"), ("YF-5000", "Families with children"),
                ("YV-3000", "Veterans"), ("YJ-8750", "Young adults"))
_LOCAL_TERMS = (("KY-LOCAL-01", "Walk-ins welcome"), ("KY-LOCAL-02", "Faith-based provider"),
                ("KY-LOCAL-03", "Serves rural counties"))
# fmt: on
_SDOH_DISPLAYS = {
    offer.domain: offer.domain.replace("-", " ").title() for offer in _OFFERS if offer.domain
}
# fmt: off
_LANGUAGES = (("es", "Spanish", 30), ("ar", "Arabic", 4), ("sw", "Swahili", 3), ("ne", "Nepali", 3),
              ("bs", "Bosnian", 3), ("vi", "Vietnamese", 2))
# fmt: on

# --- HSDS --------------------------------------------------------------------------------------

_PAGE_SIZE = 1000
_MISSING_ORGANIZATION_SHARE = 0.002  # of services: they name an organization not in the feed
_NO_COORDINATES_SHARE = 0.01  # of physical locations
_NAMESPACE = uuid.UUID("3b8f2d0e-5c1a-5b7e-8f42-6d0c9e1a7b35")
_EXPORTED = dt.date(2025, 6, 1)


@dataclass(frozen=True, slots=True)
class HsdsCounts:
    """What ``write_hsds_directory`` wrote, so a benchmark or test can check the mapping.

    ``services`` is the number written (the base less ``dropped``); ``changed_ids`` and
    ``dropped_ids`` are the HSDS service ids changed and left out relative to the base.
    ``missing_organization`` services (written) name an organization the feed does not have;
    ``without_coordinates`` physical locations have no latitude/longitude.
    """

    organizations: int
    locations: int
    services: int
    service_at_locations: int
    taxonomy_terms: int
    missing_organization: int
    without_coordinates: int
    changed: int
    dropped: int
    files: int
    changed_ids: tuple[str, ...] = field(repr=False)
    dropped_ids: tuple[str, ...] = field(repr=False)


class _Ids:
    """Stable UUIDv5 ids: (seed, kind, index) always gives the same id, whatever was dropped."""

    def __init__(self, seed: int) -> None:
        self._prefix = f"{seed}\x1f"

    def __call__(self, kind: str, *parts: object) -> str:
        key = self._prefix + kind + "".join(f"\x1f{part}" for part in parts)
        return str(uuid.uuid5(_NAMESPACE, key))


@dataclass(slots=True)
class _Site:
    id: str
    place: _Place
    physical: bool


@dataclass(slots=True)
class _Org:
    """What the services need of an organization, kept after its JSON is written."""

    id: str
    name: str
    slug: str
    place: _Place
    sites: list[_Site]
    programs: list[str]
    services: int


@dataclass(slots=True)
class _Tally:
    organizations: int = 0
    locations: int = 0
    services: int = 0
    service_at_locations: int = 0
    missing_organization: int = 0
    without_coordinates: int = 0
    files: int = 0


def write_hsds_directory(
    path: Path, services: int, *, seed: int = 1, changed: float = 0.0, dropped: float = 0.0
) -> HsdsCounts:
    """Write a synthetic 211 directory of about ``services`` services into ``path``.

    ``path`` is created; it must hold no ``.json`` file yet (``read_feed`` reads every one).
    ``changed`` (a fraction) of the base's services get a new name, description or phone;
    ``dropped`` are left out; the two sets are disjoint and their sizes are rounded. The base
    (ids, content, planted problems) depends only on ``services`` and ``seed``.
    """
    if services < 0:
        raise ValueError("services must be >= 0")
    for name, share in (("changed", changed), ("dropped", dropped)):
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"{name} is a fraction between 0 and 1")
    path.mkdir(parents=True, exist_ok=True)
    if any(path.glob("*.json")):
        raise FileExistsError(f"{path} already holds JSON files; use an empty directory")
    dropped_set = _sample(f"dropped:{seed}", range(services), round(services * dropped))
    kept = [index for index in range(services) if index not in dropped_set]
    changed_set = _sample(f"changed:{seed}", kept, min(len(kept), round(services * changed)))
    orphans = _sample(
        f"orphans:{seed}", range(services), math.ceil(services * _MISSING_ORGANIZATION_SHARE)
    )
    ids = _Ids(seed)
    rng = Random(f"hsds:{seed}")
    tally = _Tally()
    terms = _write_taxonomy(path, tally)
    organizations = _write_organizations(path, rng, ids, services, tally)
    changes = _Changes(Random(f"changes:{seed}"), changed_set)
    _write_services(
        path, rng, ids, organizations, terms, orphans, dropped_set, changes, len(kept), tally
    )
    return HsdsCounts(
        organizations=tally.organizations,
        locations=tally.locations,
        services=tally.services,
        service_at_locations=tally.service_at_locations,
        taxonomy_terms=len(terms.all),
        missing_organization=tally.missing_organization,
        without_coordinates=tally.without_coordinates,
        changed=len(changed_set),
        dropped=len(dropped_set),
        files=tally.files,
        changed_ids=tuple(ids("service", index) for index in sorted(changed_set)),
        dropped_ids=tuple(ids("service", index) for index in sorted(dropped_set)),
    )


def _sample(key: str, population: Sequence[int], k: int) -> frozenset[int]:
    return frozenset(Random(key).sample(population, k)) if k else frozenset()


def _dump(path: Path, document: Any, tally: _Tally) -> None:
    text = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    path.write_text(text + "\n", encoding="utf-8")
    tally.files += 1


def _page(contents: list[Json], number: int, pages: int, total: int) -> Json:
    """An HSDS API Page (openapi.json ``Page``) holding ``contents``."""
    return {
        "total_items": total,
        "total_pages": pages,
        "page_number": number,
        "size": len(contents),
        "first_page": number == 1,
        "last_page": number == pages,
        "empty": not contents,
        "contents": contents,
    }


class _Pager:
    """Writes ``<stem>_NNNN.json`` pages of a known total as their items arrive."""

    def __init__(self, directory: Path, stem: str, total: int, tally: _Tally) -> None:
        self.directory, self.stem, self.total, self.tally = directory, stem, total, tally
        self.pages = max(1, math.ceil(total / _PAGE_SIZE))
        self.number = 0
        self.items: list[Json] = []

    def add(self, item: Json) -> None:
        self.items.append(item)
        if len(self.items) == _PAGE_SIZE:
            self.flush()

    def flush(self) -> None:
        self.number += 1
        name = f"{self.stem}_{self.number:04d}.json"
        page = _page(self.items, self.number, self.pages, self.total)
        _dump(self.directory / name, page, self.tally)
        self.items = []

    def close(self) -> None:
        if self.items or self.number == 0:
            self.flush()


@dataclass(slots=True)
class _Terms:
    """The taxonomy_term objects by (taxonomy, code), as services' attributes nest them."""

    by_code: dict[tuple[str, str], Json]
    all: list[Json]


def _write_taxonomy(directory: Path, tally: _Tally) -> _Terms:
    ids = _Ids(0)  # the vocabulary is the same for every seed
    taxonomies = [
        {
            "id": ids("taxonomy", name),
            "name": name,
            "description": f"{name} (codes only; labels written for this synthetic feed).",
            **({"uri": uri} if uri else {}),
            "version": "synthetic",
        }
        for name, uri in _TAXONOMIES
    ]
    taxonomy_ids = {item["name"]: item["id"] for item in taxonomies}
    terms: list[Json] = []
    by_code: dict[tuple[str, str], Json] = {}

    def add(taxonomy: str, code: str, name: str, parent: str | None = None) -> None:
        if (taxonomy, code) in by_code:
            return
        term = {
            "id": ids("taxonomy_term", taxonomy, code),
            "code": code,
            "name": name,
            "description": name,
            "taxonomy": taxonomy,
            "taxonomy_id": taxonomy_ids[taxonomy],
            **({"parent_id": by_code[(taxonomy, parent)]["id"]} if parent else {}),
            "language": "en",
        }
        terms.append(term)
        by_code[(taxonomy, code)] = term

    for top, label in _AIRS_TOPS.items():
        add(_AIRS[0], top, label)
    for offer in _OFFERS:
        add(_AIRS[0], offer.airs, offer.name, offer.airs[0])
        if offer.open_eligibility:
            add(_OPEN_ELIGIBILITY[0], offer.open_eligibility, offer.name)
        if offer.domain:
            add(_SDOHCC[0], offer.domain, _SDOH_DISPLAYS[offer.domain])
    for code, name in _POPULATIONS:
        add(_AIRS[0], code, name, "Y")
    for code, name in _LOCAL_TERMS:
        add(_LOCAL[0], code, name)
    _dump(directory / "taxonomies.json", taxonomies, tally)
    _dump(directory / "taxonomy_terms.json", terms, tally)
    return _Terms(by_code, terms)


# Organization names: "<Place> <kind>" or "<word> <kind>", made unique with a county or number.
# fmt: off
_ORG_WORDS = ("New Hope", "Bluegrass", "Cumberland", "Commonwealth", "Good Shepherd", "Unity",
              "Harvest", "Riverside", "Lighthouse", "Pathways", "Open Door", "Kentucky River",
              "Green River", "Appalachian", "Heartland", "Crossroads", "St. Vincent", "Grace",
              "Mountain", "Pennyrile")
_ORG_KINDS = ("Community Action Agency", "Food Bank", "Family Services", "Community Ministries",
              "Housing Authority", "Health Department", "Senior Services", "Legal Aid",
              "Outreach Center", "Recovery Center", "Neighborhood Center", "Workforce Center",
              "Public Library", "Free Clinic", "Salvation Corps", "Community Foundation")
# fmt: on
_SIZES = (1, 2, 3, 4, 5, 6, 8, 12, 20)
_SIZE_WEIGHTS = (30, 22, 15, 10, 8, 6, 5, 3, 1)


def _organization_sizes(rng: Random, services: int) -> list[int]:
    """Services per organization: about 3.5 on average, a few large agencies."""
    sizes: list[int] = []
    left = services
    while left > 0:
        size = min(left, rng.choices(_SIZES, _SIZE_WEIGHTS)[0])
        sizes.append(size)
        left -= size
    return sizes


class _Names:
    """Organization names that no two organizations share, even once punctuation is gone
    (the mapper reports look-alike names as possible duplicates)."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def make(self, rng: Random, place: _Place) -> str:
        kind = rng.choice(_ORG_KINDS)
        first = place.city if rng.random() < 0.5 else rng.choice(_ORG_WORDS)
        name = f"{first} {kind}"
        if self._plain(name) in self._taken:
            name = f"{first} {kind} of {place.county} County"
        number = 2
        base = name
        while self._plain(name) in self._taken:
            name = f"{base} {number}"
            number += 1
        self._taken.add(self._plain(name))
        return name

    @staticmethod
    def _plain(name: str) -> str:
        return "".join(ch for ch in name.lower() if ch.isalnum())


def _slug(name: str) -> str:
    words = "".join(ch if ch.isalnum() else " " for ch in name.lower()).split()
    return "-".join(words)[:40].strip("-")


def _place(rng: Random) -> _Place:
    return rng.choices(_PLACES, _PLACE_WEIGHTS)[0]


def _coordinates(rng: Random, place: _Place) -> tuple[float, float]:
    south, west, north, east = _KENTUCKY
    limit = 2.5 * place.spread
    d_lat = max(-limit, min(limit, rng.gauss(0.0, place.spread)))
    d_lon = max(-limit, min(limit, rng.gauss(0.0, place.spread * 1.25)))
    latitude = min(north, max(south, place.latitude + d_lat))
    longitude = min(east, max(west, place.longitude + d_lon))
    return round(latitude, 6), round(longitude, 6)


def _weekly(
    rng: Random, ids: _Ids, owner_key: str, owner: tuple[str, str], offset: str
) -> list[Json]:
    """One or two RRULE-style weekly schedules (HSDS 3.x ``schedule``) with a UTC offset."""
    pattern = rng.random()
    if pattern < 0.08:
        rules = [("MO,TU,WE,TH,FR,SA,SU", "00:00", "23:59", "Open 24 hours")]
    elif pattern < 0.6:
        opens, closes = rng.choice((("08:00", "16:30"), ("09:00", "17:00"), ("08:30", "17:00")))
        rules = [("MO,TU,WE,TH,FR", opens, closes, f"Weekdays {opens}-{closes}")]
    elif pattern < 0.85:
        days = rng.choice(("TU,TH", "MO,WE,FR", "WE", "TU,WE,TH"))
        rules = [(days, "10:00", "14:00", f"{days} 10:00-14:00")]
    else:
        rules = [
            ("MO,TU,WE,TH,FR", "09:00", "17:00", "Weekdays 09:00-17:00"),
            ("SA", "09:00", "12:00", "Saturday 09:00-12:00"),
        ]
    schedules = []
    for number, (days, opens, closes, words) in enumerate(rules):
        schedules.append(
            {
                "id": ids("schedule", owner_key, number),
                owner[0]: owner[1],
                "freq": "WEEKLY",
                "wkst": "MO",
                "byday": days,
                "opens_at": f"{opens}:00{offset}",
                "closes_at": f"{closes}:00{offset}",
                "description": words,
            }
        )
    return schedules


def _write_organizations(
    directory: Path, rng: Random, ids: _Ids, services: int, tally: _Tally
) -> list[_Org]:
    sizes = _organization_sizes(rng, services)
    pager = _Pager(directory, "organization_list_full", len(sizes), tally)
    names = _Names()
    organizations = []
    for number, size in enumerate(sizes):
        organization, json_item = _organization(rng, ids, names, number, size, tally)
        organizations.append(organization)
        pager.add(json_item)
    pager.close()
    tally.organizations = len(sizes)
    return organizations


def _organization(
    rng: Random, ids: _Ids, names: _Names, number: int, size: int, tally: _Tally
) -> tuple[_Org, Json]:
    org_id = ids("organization", number)
    place = _place(rng)
    name = names.make(rng, place)
    slug = _slug(name)
    item: Json = {
        "id": org_id,
        "name": name,
        "description": f"{name} serves residents of {place.county} County and nearby counties.",
        "email": f"info@{slug}.example.org",
        "website": f"https://{slug}.example.org",
        "tax_status": "501(c)(3)",
        "legal_status": "Nonprofit corporation",
        "year_incorporated": rng.randint(1935, 2022),
    }
    if rng.random() < 0.1:
        item["alternate_name"] = "".join(word[0] for word in name.split() if word[0].isupper())
    if rng.random() < 0.8:
        item["organization_identifiers"] = [
            {
                "id": ids("organization_identifier", number),
                "organization_id": org_id,
                "identifier_scheme": "US-EIN",
                "identifier_type": "EIN",
                "identifier": f"00-{number + 1:07d}",  # unique, and no real EIN starts with 00
            }
        ]
    item["phones"] = [
        {
            "id": ids("organization_phone", number),
            "organization_id": org_id,
            "number": _phone_number(rng, place.area_code),
            "type": "voice",
        }
    ]
    programs = []
    if size >= 2 and rng.random() < 0.25:
        program_id = ids("program", number)
        programs.append(program_id)
        item["programs"] = [
            {
                "id": program_id,
                "organization_id": org_id,
                "name": f"{rng.choice(('Family Stability', 'Healthy Aging', 'Self-Sufficiency'))}"
                " Program",
                "description": "A grant-funded program run by the organization.",
            }
        ]
    sites, locations = _locations(rng, ids, number, org_id, name, place, size, tally)
    item["locations"] = locations
    return _Org(org_id, name, slug, place, sites, programs, size), item


def _locations(
    rng: Random,
    ids: _Ids,
    number: int,
    org_id: str,
    org_name: str,
    home: _Place,
    size: int,
    tally: _Tally,
) -> tuple[list[_Site], list[Json]]:
    """1-3 physical sites (most near the organization's town), sometimes a virtual helpline."""
    count = 1 if size == 1 else rng.choices((1, 2, 3), (55, 30, 15))[0]
    sites: list[_Site] = []
    locations: list[Json] = []
    for site_number in range(count):
        place = home if site_number == 0 or rng.random() < 0.6 else _place(rng)
        location_id = ids("location", number, site_number)
        location: Json = {
            "id": location_id,
            "location_type": "physical",
            "organization_id": org_id,
            "name": org_name if count == 1 else f"{org_name} - {place.city} Site {site_number + 1}",
            "description": f"{org_name} in {place.city}, {place.county} County.",
        }
        latitude, longitude = _coordinates(rng, place)
        if rng.random() < _NO_COORDINATES_SHARE:
            tally.without_coordinates += 1  # waits for geocoding: the mapper reports it
        else:
            location["latitude"], location["longitude"] = latitude, longitude
        location["addresses"] = [
            {
                "id": ids("address", number, site_number),
                "location_id": location_id,
                "address_1": _street(rng),
                "city": place.city,
                "region": f"{place.county} County",
                "state_province": "KY",
                "postal_code": place.postal_code,
                "country": "US",
                "address_type": "physical",
            }
        ]
        if rng.random() < 0.3:
            location["phones"] = [
                {
                    "id": ids("location_phone", number, site_number),
                    "location_id": location_id,
                    "number": _phone_number(rng, place.area_code),
                    "type": "voice",
                }
            ]
        if rng.random() < 0.6:
            key = f"location:{number}:{site_number}"
            location["schedules"] = _weekly(
                rng, ids, key, ("location_id", location_id), place.utc_offset
            )
        if rng.random() < 0.4:
            location["accessibility"] = [
                {
                    "id": ids("accessibility", number, site_number),
                    "location_id": location_id,
                    "description": rng.choice(
                        ("Wheelchair accessible entrance", "Ramp at side door", "Elevator")
                    ),
                }
            ]
        locations.append(location)
        sites.append(_Site(location_id, place, True))
    if rng.random() < 0.03:
        location_id = ids("location", number, "virtual")
        locations.append(
            {
                "id": location_id,
                "location_type": "virtual",
                "organization_id": org_id,
                "name": f"{org_name} Helpline",
                "url": f"https://{_slug(org_name)}.example.org/help",
            }
        )
        sites.append(_Site(location_id, home, False))
    tally.locations += len(locations)
    return sites, locations


class _Changes:
    """Edits of the services chosen as changed, from their own random stream so the base
    stream, and so every unchanged service, stays byte-identical."""

    def __init__(self, rng: Random, chosen: frozenset[int]) -> None:
        self.rng, self.chosen = rng, chosen

    def apply(self, index: int, service: Json) -> None:
        if index not in self.chosen:
            return
        kind = self.rng.choice(("name", "description", "phone"))
        if kind == "name":
            service["name"] += f" - {self.rng.choice(('Expanded', 'Walk-In', 'Evening', 'North'))}"
        elif kind == "description":
            service["description"] += " Please call ahead: hours have changed."
        else:
            phone = service["phones"][0]
            area, _, last = phone["number"].rpartition("-01")
            new_last = (int(last) + self.rng.randint(1, 99)) % 100
            phone["number"] = f"{area}-01{new_last:02d}"
        service["last_modified"] = f"{_EXPORTED + dt.timedelta(days=20)}T12:00:00Z"


def _write_services(
    directory: Path,
    rng: Random,
    ids: _Ids,
    organizations: list[_Org],
    terms: _Terms,
    orphans: frozenset[int],
    dropped: frozenset[int],
    changes: _Changes,
    written: int,
    tally: _Tally,
) -> None:
    pager = _Pager(directory, "service_list_full", written, tally)
    index = 0
    for organization in organizations:
        for number in range(organization.services):
            service = _service(
                rng, ids, index, organization, terms, orphan=index in orphans, first=number == 0
            )
            if index not in dropped:
                changes.apply(index, service)
                tally.services += 1
                tally.service_at_locations += len(service.get("service_at_locations", ()))
                tally.missing_organization += index in orphans
                pager.add(service)
            index += 1
    pager.close()


def _service(
    rng: Random,
    ids: _Ids,
    index: int,
    organization: _Org,
    terms: _Terms,
    *,
    orphan: bool,
    first: bool,
) -> Json:
    """One service with everything nested that a full API export nests under it."""
    offer = rng.choices(_OFFERS, _OFFER_WEIGHTS)[0]
    service_id = ids("service", index)
    place = organization.place
    status = rng.choices(("active", "inactive", "temporarily closed"), (96, 2, 2))[0]
    # An orphan names an organization the publisher deleted: it has no row in the feed.
    org_id = ids("deleted-organization", index) if orphan else organization.id
    name = offer.name if rng.random() < 0.7 else f"{offer.name} - {place.city}"
    service: Json = {"id": service_id, "organization_id": org_id}
    if organization.programs and not orphan and rng.random() < 0.5:
        service["program_id"] = organization.programs[0]
    service.update(
        {
            "name": name,
            "description": f"{offer.about} Offered by {organization.name} in {place.city}.",
            "url": f"https://{organization.slug}.example.org/services/{index}",
            "email": f"services@{organization.slug}.example.org",
            "status": status,
            "application_process": rng.choice(
                (
                    "Call to schedule an appointment.",
                    "Walk in during open hours.",
                    "Apply online or by phone.",
                    "Referral from a caseworker required.",
                )
            ),
            "fees_description": rng.choice(("Free.", "Free.", "Sliding scale by income.")),
            "eligibility_description": rng.choice(
                (
                    f"Residents of {place.county} County.",
                    "Kentucky residents.",
                    "Household income at or below 200% of the federal poverty level.",
                    "Anyone in need.",
                )
            ),
            "assured_date": str(_EXPORTED - dt.timedelta(days=rng.randint(0, 365))),
            "last_modified": f"{_EXPORTED - dt.timedelta(days=rng.randint(0, 365))}T12:00:00Z",
        }
    )
    if offer.minimum_age is not None:
        service["minimum_age"] = offer.minimum_age
    if status == "temporarily closed":
        service["alert"] = "Temporarily closed for renovation; call for the nearest site."
    if rng.random() < 0.2:
        service["interpretation_services"] = "Telephone interpreters available."
    service["phones"] = [
        {
            "id": ids("service_phone", index),
            "service_id": service_id,
            "number": _phone_number(rng, place.area_code),
            "type": "voice",
        }
    ]
    if rng.random() < 0.9:
        service["schedules"] = _weekly(
            rng, ids, f"service:{index}", ("service_id", service_id), place.utc_offset
        )
    service["service_areas"] = [
        {
            "id": ids("service_area", index),
            "service_id": service_id,
            "name": f"{place.county} County",
            "description": f"Serves {place.county} County.",
        }
    ]
    service["languages"] = _languages(rng, ids, index, service_id)
    if offer.documents:
        service["required_documents"] = [
            {"id": ids("required_document", index, n), "service_id": service_id, "document": doc}
            for n, doc in enumerate(offer.documents)
        ]
    service["attributes"] = _attributes(rng, ids, index, service_id, offer, terms)
    links = _site_links(rng, ids, index, service_id, organization, first=first)
    if links:
        service["service_at_locations"] = links
    return service


def _languages(rng: Random, ids: _Ids, index: int, service_id: str) -> list[Json]:
    spoken = [("en", "English")]
    spoken += [(code, name) for code, name, share in _LANGUAGES if rng.random() * 100 < share]
    return [
        {"id": ids("language", index, code), "service_id": service_id, "name": name, "code": code}
        for code, name in spoken
    ]


def _attributes(
    rng: Random, ids: _Ids, index: int, service_id: str, offer: _Offer, terms: _Terms
) -> list[Json]:
    """Taxonomy links: the AIRS code always, often Open Eligibility, sometimes an SDOHCC
    category, a target population or a local category (which maps to no domain)."""
    chosen: list[tuple[str, str, str]] = [(_AIRS[0], offer.airs, "service_type")]
    if offer.open_eligibility and rng.random() < 0.7:
        chosen.append((_OPEN_ELIGIBILITY[0], offer.open_eligibility, "service_type"))
    if offer.domain and rng.random() < 0.25:
        chosen.append((_SDOHCC[0], offer.domain, "sdoh_category"))
    if rng.random() < 0.2:
        chosen.append((_AIRS[0], rng.choice(_POPULATIONS)[0], "target_population"))
    if rng.random() < 0.1:
        chosen.append((_LOCAL[0], rng.choice(_LOCAL_TERMS)[0], "local_category"))
    attributes = []
    for number, (taxonomy, code, link_type) in enumerate(chosen):
        term = terms.by_code[(taxonomy, code)]
        attributes.append(
            {
                "id": ids("attribute", index, number),
                "link_id": service_id,
                "link_type": link_type,
                "link_entity": "service",
                "taxonomy_term_id": term["id"],
                "taxonomy_term": {
                    key: term[key] for key in ("id", "code", "name", "taxonomy", "taxonomy_id")
                },
            }
        )
    return attributes


def _site_links(
    rng: Random, ids: _Ids, index: int, service_id: str, organization: _Org, *, first: bool
) -> list[Json]:
    """The service's sites: most at one, some at two or all; a few (delivery, hotlines) none."""
    physical = [site for site in organization.sites if site.physical]
    roll = rng.random()
    if roll < 0.05:
        sites: list[_Site] = []
    elif roll < 0.75 or len(physical) == 1:
        sites = [rng.choice(physical)]
    elif roll < 0.95:
        sites = rng.sample(physical, 2)
    else:
        sites = physical
    if first:  # the organization's first service is also offered on its helpline, if any
        sites = sites + [site for site in organization.sites if not site.physical]
    return [
        {
            "id": ids("service_at_location", index, site.id),
            "service_id": service_id,
            "location_id": site.id,
        }
        for site in sites
    ]


# --- IEES ---------------------------------------------------------------------------------------

# fmt: off
_FAMILIES = ("SMITH", "JOHNSON", "WILLIAMS", "BROWN", "JONES", "GARCIA", "MILLER", "DAVIS",
             "RODRIGUEZ", "MARTINEZ", "HERNANDEZ", "LOPEZ", "WILSON", "ANDERSON", "THOMAS",
             "TAYLOR", "MOORE", "JACKSON", "MARTIN", "LEE", "THOMPSON", "WHITE", "HARRIS", "CLARK",
             "LEWIS", "ROBINSON", "WALKER", "YOUNG", "ALLEN", "KING", "WRIGHT", "SCOTT", "HILL",
             "GREEN", "ADAMS", "BAKER", "NELSON", "CAMPBELL", "MITCHELL", "COLLINS", "SPENCER",
             "HOWARD", "BEGIC", "NGUYEN", "HASSAN", "GURUNG", "EXAMPLEMAN")
_GIVEN_F = ("MARY", "PATRICIA", "JENNIFER", "LINDA", "ELIZABETH", "SARAH", "JESSICA", "ASHLEY",
            "EMILY", "AMANDA", "MARIA", "SOFIA", "AMINA", "EMMA", "OLIVIA", "AVA", "MIA", "HARPER",
            "LAYLA", "ZOE", "BROOKLYN", "NORA")
_GIVEN_M = ("JAMES", "ROBERT", "JOHN", "MICHAEL", "DAVID", "WILLIAM", "RICHARD", "JOSEPH", "THOMAS",
            "CHRISTOPHER", "DANIEL", "LUCAS", "MATEO", "OMAR", "LIAM", "NOAH", "ELIJAH", "OLIVER",
            "HENRY", "WYATT", "CALEB", "JACKSON")
_RACES = ((("2106-3", "White"), 80), (("2054-5", "Black or African American"), 10),
          (("2028-9", "Asian"), 2), (("2131-1", "Other Race"), 8))
_LANGS = ((("eng", "English"), 92), (("spa", "Spanish"), 5), (("ara", "Arabic"), 1),
          (("swa", "Swahili"), 1), (("nep", "Nepali"), 1))
_RELATION_NAMES = {"SEL": "Self", "SPO": "Spouse", "DOM": "Domestic partner", "CHD": "Child",
                   "MTH": "Mother", "FTH": "Father", "SIB": "Sibling", "PAR": "Parent",
                   "GRP": "Grandparent", "OTH": "Other"}
_X12_RELATION = {"SEL": "18^Self", "SPO": "01^Spouse", "DOM": "53^Life Partner", "MTH": "19^Child",
                 "FTH": "19^Child", "CHD": "G8^Other Relationship"}
# fmt: on
_HOUSEHOLD_SIZES = ((1, 28), (2, 33), (3, 15), (4, 13), (5, 6), (6, 5))
_START = dt.datetime(2025, 7, 1, 6, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=-4)))
_MSH = "MSH|^~\\&|IEES|KY_CHFS|SDOH_FHIR|KYNECT_RESOURCES|"
_MSH_TAIL = "|P|2.5.1|||||USA|UNICODE UTF-8|||KY-IEES-PERSON-ELIG^KYSDOH"
_MLLP_START, _MLLP_END = b"\x0b", b"\x1c\r"


@dataclass(slots=True)
class _Household:
    case_number: str
    address: str  # XAD, as sent in PID-11 and NK1-4
    area_code: str
    phone: str  # the last 7 digits
    members: list[_Person] = field(default_factory=list)


@dataclass(slots=True)
class _Person:
    individual_id: str
    medicaid_id: str
    role: str  # head, partner, child, relative
    family: str
    given: str
    middle: str
    sex: str
    birth: dt.date
    race: tuple[str, str]
    ethnicity: tuple[str, str]
    language: tuple[str, str]
    marital: str
    email: str
    household: _Household
    programs: dict[str, tuple[dt.date, dt.date]] = field(default_factory=dict)

    @property
    def xpn(self) -> str:
        return f"{self.family}^{self.given}^{self.middle}^^^^L"


def iter_iees_messages(
    persons: int, *, seed: int = 1, updates: int = 0, start_control_id: int = 1
) -> Iterator[bytes]:
    """HL7 v2.5.1 ADT messages (CR-separated segments, no MLLP framing), in send order.

    First one A28 per person, household by household; then ``updates`` A31s for persons
    drawn at random (the household moved, its phone changed, or one of the person's programs
    ended or started), each carrying the person's complete current state. MSH-10 is
    ``IEES<n>`` counting from ``start_control_id``; EVN-6 grows with every message, so each
    is later than the person's previous one. Households are held in memory (about 1 kB per
    person). IndividualIDs are ``910000000 + n`` and case numbers ``9200000000 + n``,
    the same for every seed.
    """
    if persons < 0 or updates < 0:
        raise ValueError("persons and updates must be >= 0")
    rng = Random(f"iees:{seed}")
    people = _households(rng, persons)
    clock = _START
    control = start_control_id
    for person in people:
        clock += dt.timedelta(seconds=rng.randint(1, 3))
        yield _message(person, "A28", clock, control)
        control += 1
    for _ in range(updates if people else 0):
        clock += dt.timedelta(seconds=rng.randint(60, 3600))  # updates trickle in over days
        person = rng.choice(people)
        _update(rng, person, clock.date())
        yield _message(person, "A31", clock, control)
        control += 1


def write_iees_file(
    path: Path, persons: int, *, seed: int = 1, updates: int = 0, start_control_id: int = 1
) -> int:
    """Write ``iter_iees_messages`` MLLP-framed (``0x0B msg 0x1C 0x0D``) into one file;
    the number of messages. Split it on ``0x1C 0x0D``; HL7 never uses those bytes."""
    count = 0
    with path.open("wb") as handle:
        for message in iter_iees_messages(
            persons, seed=seed, updates=updates, start_control_id=start_control_id
        ):
            handle.write(_MLLP_START + message + _MLLP_END)
            count += 1
    return count


def _households(rng: Random, persons: int) -> list[_Person]:
    people: list[_Person] = []
    number = 0
    while len(people) < persons:
        size = min(persons - len(people), _weighted(rng, _HOUSEHOLD_SIZES))
        place = _place(rng)
        household = _Household(
            case_number=str(9_200_000_000 + number),
            address=_xad(rng, place),
            area_code=place.area_code,
            phone=f"55501{rng.randint(0, 99):02d}",
        )
        _members(rng, household, size, len(people))
        _enroll(rng, household)
        people.extend(household.members)
        number += 1
    return people


def _weighted(rng: Random, table: Sequence[tuple[Any, int]]) -> Any:
    return rng.choices([value for value, _ in table], [weight for _, weight in table])[0]


def _xad(rng: Random, place: _Place) -> str:
    line = f"{rng.randint(10, 9899)} EXAMPLE {rng.choice(_STREETS).upper()} RD"
    unit = f"APT {rng.randint(1, 40)}" if rng.random() < 0.3 else ""
    return f"{line}^{unit}^{place.city.upper()}^KY^{place.postal_code}^USA^H^^{place.fips}"


def _members(rng: Random, household: _Household, size: int, first: int) -> None:
    """A head, then a partner (often), children, and sometimes the head's parent."""
    roles = ["head"]
    if size >= 2 and rng.random() < 0.6:
        roles.append("partner")
    if size >= 3 and rng.random() < 0.15:
        roles.append("relative")
    roles += ["child"] * (size - len(roles))
    family = rng.choice(_FAMILIES)
    race = _weighted(rng, _RACES)
    ethnicity = (
        ("2135-2", "Hispanic or Latino")
        if rng.random() < 0.05
        else ("2186-5", "Not Hispanic or Latino")
    )
    language = _weighted(rng, _LANGS)
    head_age = rng.randint(22, 68)
    for offset, role in enumerate(roles):
        sex = rng.choice("FM")
        age = {
            "head": head_age,
            "partner": max(19, head_age + rng.randint(-6, 6)),
            "relative": head_age + rng.randint(20, 30),
            "child": rng.randint(0, min(17, max(0, head_age - 18))),
        }[role]
        birth = dt.date(2025 - age, rng.randint(1, 12), rng.randint(1, 28))
        given = rng.choice(_GIVEN_F if sex == "F" else _GIVEN_M)
        adult = role != "child"
        index = first + offset
        household.members.append(
            _Person(
                individual_id=str(910_000_000 + index),
                medicaid_id=str(98_100_000_000 + index),
                role=role,
                family=family,
                given=given,
                middle=rng.choice("ABCDEJLMRT") if adult else "",
                sex=sex,
                birth=birth,
                race=race,
                ethnicity=ethnicity,
                language=language,
                marital=(
                    "M^Married^HL70002"
                    if role in ("head", "partner") and len(roles) > 1 and "partner" in roles
                    else "S^Single^HL70002"
                )
                if adult
                else "",
                email=f"{given}.{family}{index}@example.com".lower()
                if adult and rng.random() < 0.4
                else "",
                household=household,
            )
        )


def _year_from(start: dt.date) -> tuple[dt.date, dt.date]:
    return start, start.replace(year=start.year + 1) - dt.timedelta(days=1)


def _enroll(rng: Random, household: _Household) -> None:
    """Programs: SNAP (whole case), KTAP and CCAP (cases with children), Medicaid or KCHIP
    per person; everyone ends up in at least one, so every message names the case."""
    children = any(member.role == "child" for member in household.members)
    shared: list[str] = []
    if rng.random() < 0.6:
        shared.append("SNAP")
    if children and rng.random() < 0.12:
        shared.append("KTAP")
    if children and rng.random() < 0.1:
        shared.append("CCAP")
    for member in household.members:
        for program in shared:
            member.programs[program] = _year_from(dt.date(2025, rng.randint(1, 6), 1))
        if member.role == "child" and rng.random() < 0.8:
            health = "KCHIP" if rng.random() < 0.4 else "MEDICAID"
            member.programs[health] = _year_from(dt.date(2025, 1, 1))
        elif member.role != "child" and (rng.random() < 0.55 or not member.programs):
            member.programs["MEDICAID"] = _year_from(dt.date(2025, rng.randint(1, 6), 1))
        if not member.programs:
            member.programs["MEDICAID"] = _year_from(dt.date(2025, 1, 1))


def _update(rng: Random, person: _Person, today: dt.date) -> None:
    """A change in IEES: the household moved, its phone changed, or a program ended/started."""
    kind = rng.choice(("address", "phone", "program"))
    household = person.household
    if kind == "address":
        household.address = _xad(rng, _place(rng))
    elif kind == "phone":
        household.phone = f"55501{(int(household.phone[-2:]) + rng.randint(1, 99)) % 100:02d}"
    else:
        yesterday = today - dt.timedelta(days=1)
        running = [p for p, (start, end) in person.programs.items() if start <= yesterday < end]
        if running and rng.random() < 0.5:
            program = rng.choice(sorted(running))
            person.programs[program] = (person.programs[program][0], yesterday)
            return
        current = {p for p, (_, end) in person.programs.items() if end >= today}
        candidates = [p for p in _eligible(person) if p not in current]
        if current & {"MEDICAID", "KCHIP"}:  # one health program at a time
            candidates = [p for p in candidates if PROGRAMS[p].category != "HEALTH"]
        if not candidates:
            household.phone = f"55501{(int(household.phone[-2:]) + 1) % 100:02d}"
            return
        month_start = (today.replace(day=1) + dt.timedelta(days=32)).replace(day=1)
        person.programs[rng.choice(candidates)] = _year_from(month_start)


def _eligible(person: _Person) -> list[str]:
    children = any(member.role == "child" for member in person.household.members)
    if person.role == "child":
        return ["SNAP", "MEDICAID", "KCHIP"]
    return ["SNAP", "MEDICAID"] + (["KTAP", "CCAP"] if children else [])


def _relationship(person: _Person, other: _Person) -> str:
    """HL70063: what ``other`` is to ``person`` (NK1-3), and the head to a member (IN1-17)."""
    if person is other:
        return "SEL"
    pair = (person.role, other.role)
    if "relative" in pair:
        return {
            ("head", "relative"): "PAR",
            ("relative", "head"): "CHD",
            ("child", "relative"): "GRP",
        }.get(pair, "OTH")
    if pair in (("head", "partner"), ("partner", "head")):
        return "SPO"
    if other.role == "child":
        return "SIB" if person.role == "child" else "CHD"
    if person.role == "child":
        return "MTH" if other.sex == "F" else "FTH"
    return "OTH"


def _segment(name: str, fields: dict[int, str]) -> str:
    values = [""] * (max(fields) + 1)
    values[0] = name
    for number, value in fields.items():
        values[number] = value
    return "|".join(values)


def _stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y%m%d%H%M%S%z")


def _message(person: _Person, event: str, clock: dt.datetime, control: int) -> bytes:
    household = person.household
    recorded = _stamp(clock)
    head = household.members[0]
    segments = [
        f"{_MSH}{recorded}||ADT^{event}^ADT_A05|IEES{control:012d}{_MSH_TAIL}",
        f"EVN|{event}|{recorded}||||{_stamp(clock - dt.timedelta(seconds=5))}",
        _pid(person),
    ]
    others = [member for member in household.members if member is not person]
    for number, other in enumerate(others, start=1):
        relation = _relationship(person, other)
        segments.append(
            _segment(
                "NK1",
                {
                    1: str(number),
                    2: other.xpn,
                    3: f"{relation}^{_RELATION_NAMES[relation]}^HL70063",
                    4: household.address,
                    15: other.sex,
                    16: other.birth.strftime("%Y%m%d"),
                    33: f"{other.individual_id}^^^KYIEES^PI",
                },
            )
        )
    segments.append("PV1|1|N")
    for number, (program, (start, end)) in enumerate(sorted(person.programs.items()), start=1):
        segments += _insurance(person, head, number, program, start, end)
    return ("\r".join(segments) + "\r").encode("utf-8")


def _pid(person: _Person) -> str:
    household = person.household
    identifiers = f"{person.individual_id}^^^KYIEES^PI"
    if person.medicaid_id and _health(person):
        identifiers += f"~{person.medicaid_id}^^^KYMEDICAID^MA"
    telecom = f"^PRN^PH^^1^{household.area_code}^{household.phone}"
    if person.email:
        telecom += f"~^NET^Internet^{person.email}"
    return _segment(
        "PID",
        {
            1: "1",
            3: identifiers,
            5: person.xpn,
            7: person.birth.strftime("%Y%m%d"),
            8: person.sex,
            10: f"{person.race[0]}^{person.race[1]}^CDCREC",
            11: household.address,
            13: telecom,
            15: f"{person.language[0]}^{person.language[1]}^ISO6392",
            16: person.marital,
            22: f"{person.ethnicity[0]}^{person.ethnicity[1]}^CDCREC",
        },
    )


def _health(person: _Person) -> bool:
    return any(PROGRAMS[program].category == "HEALTH" for program in person.programs)


def _insurance(
    person: _Person, head: _Person, number: int, program: str, start: dt.date, end: dt.date
) -> list[str]:
    """IN1 (and IN2 for a health program) as the profile's samples write them."""
    info = PROGRAMS[program]
    case = person.household.case_number
    relation = _relationship(person, head)
    health = info.category == "HEALTH"
    aid = {
        "KCHIP": "KCHIP-III",
        "MEDICAID": "MAGI-CHILD" if person.role == "child" else "MAGI-ADULT",
    }.get(program, "")
    in1 = _segment(
        "IN1",
        {
            1: str(number),
            2: f"{info.code}^{info.name}^KYPROG",
            3: f"{info.agency}^^^KYCHFS^XX",
            4: AGENCIES[info.agency],
            8: case,
            9: f"IEES CASE {case}",
            12: start.strftime("%Y%m%d"),
            13: end.strftime("%Y%m%d"),
            15: info.category,
            16: head.xpn,
            17: f"{relation}^{_RELATION_NAMES[relation]}^HL70063",
            18: head.birth.strftime("%Y%m%d"),
            35: aid,
            36: person.medicaid_id if health else "",
            49: f"{head.individual_id}^^^KYIEES^PI",
        },
    )
    if not health:
        return [in1]
    in2 = _segment(
        "IN2",
        {
            7: head.xpn,
            8: case,
            61: f"{person.medicaid_id}^^^KYMEDICAID^MA",
            72: f"{_X12_RELATION.get(relation, 'G8^Other Relationship')}^X12REL",
        },
    )
    return [in1, in2]


# --- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m fhir_server.ingest.synthetic_feeds hsds|iees ...``; prints a JSON summary."""
    parser = argparse.ArgumentParser(
        prog="python -m fhir_server.ingest.synthetic_feeds",
        description="Write deterministic synthetic state feeds for the benchmarks.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    hsds = commands.add_parser("hsds", help="an HSDS 3.1 JSON directory (211 API export pages)")
    hsds.add_argument("outdir", type=Path, help="an empty or new directory")
    hsds.add_argument("--services", type=int, required=True)
    hsds.add_argument("--seed", type=int, default=1)
    hsds.add_argument("--changed", type=float, default=0.0, help="fraction of services edited")
    hsds.add_argument("--dropped", type=float, default=0.0, help="fraction of services left out")
    iees = commands.add_parser(
        "iees", help="IEES HL7 v2 ADT messages, MLLP-framed (0x0B msg 0x1C 0x0D) in one file"
    )
    iees.add_argument("outfile", type=Path)
    iees.add_argument("--persons", type=int, required=True)
    iees.add_argument("--updates", type=int, default=0)
    iees.add_argument("--seed", type=int, default=1)
    iees.add_argument("--start-control-id", type=int, default=1)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    summary: dict[str, Any]
    if args.command == "hsds":
        counts = write_hsds_directory(
            args.outdir, args.services, seed=args.seed, changed=args.changed, dropped=args.dropped
        )
        summary = {key: value for key, value in asdict(counts).items() if not key.endswith("_ids")}
    else:
        messages = write_iees_file(
            args.outfile,
            args.persons,
            seed=args.seed,
            updates=args.updates,
            start_control_id=args.start_control_id,
        )
        summary = {"messages": messages, "persons": args.persons, "updates": args.updates}
    summary["seconds"] = round(time.perf_counter() - began, 3)
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
