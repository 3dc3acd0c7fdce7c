"""Deterministic synthetic Kentucky SDOH population (FHIR R4 dicts) for the demo and benchmarks."""

from __future__ import annotations

import datetime as _dt
import unicodedata
from bisect import bisect
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from random import Random
from typing import Any, TypeVar

__all__ = [
    "DEMO_PATIENTS",
    "INDIVIDUAL_ID_SYSTEM",
    "MEDICAID_ID_SYSTEM",
    "count_by_type",
    "demo_population",
    "generate_population",
]

Resource = dict[str, Any]
_T = TypeVar("_T")

DEMO_PATIENTS = 50
INDIVIDUAL_ID_SYSTEM = "https://kynect.ky.gov/fhir/sid/individual-id"
MEDICAID_ID_SYSTEM = "https://chfs.ky.gov/fhir/sid/medicaid-id"

# --- code systems and profiles ------------------------------------------------------------------

_SCT = "http://snomed.info/sct"
_LOINC = "http://loinc.org"
_ICD10 = "http://hl7.org/fhir/sid/icd-10-cm"
_NPI = "http://hl7.org/fhir/sid/us-npi"
_NUCC = "http://nucc.org/provider-taxonomy"
_SDOHCC_CS = "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
_OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
_USCORE_CAT = "http://hl7.org/fhir/us/core/CodeSystem/us-core-category"
_USCORE_COND_CAT = "http://hl7.org/fhir/us/core/CodeSystem/condition-category"
_COND_CLINICAL = "http://terminology.hl7.org/CodeSystem/condition-clinical"
_COND_VER = "http://terminology.hl7.org/CodeSystem/condition-ver-status"
_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_CDC_RACE = "urn:oid:2.16.840.1.113883.6.238"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
_ORG_TYPE = "http://terminology.hl7.org/CodeSystem/organization-type"
_TASK_CODE = "http://hl7.org/fhir/CodeSystem/task-code"
_GOAL_ACH = "http://terminology.hl7.org/CodeSystem/goal-achievement"
_BCP47 = "urn:ietf:bcp:47"

_SDOHCC = "http://hl7.org/fhir/us/sdoh-clinicalcare/StructureDefinition/"
_USCORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
_P_PATIENT = _USCORE + "us-core-patient"
_P_ORG = _USCORE + "us-core-organization"
_P_PRACTITIONER = _USCORE + "us-core-practitioner"
_P_ROLE = _SDOHCC + "SDOHCC-practitionerrole"
_P_LOCATION = _SDOHCC + "SDOHCC-Location"
_P_HCS = _SDOHCC + "SDOHCC-HealthcareService"
_P_OBS = _SDOHCC + "SDOHCC-ObservationScreeningResponse"
_P_CONDITION = _SDOHCC + "SDOHCC-Condition"
_P_GOAL = _SDOHCC + "SDOHCC-Goal"
_P_SR = _SDOHCC + "SDOHCC-ServiceRequest"
_P_TASK = _SDOHCC + "SDOHCC-TaskForReferralManagement"
_P_PROCEDURE = _SDOHCC + "SDOHCC-Procedure"
_P_CONSENT = _SDOHCC + "SDOHCC-Consent"
_APPOINTMENT_EXT = _SDOHCC + "SDOHCC-ExtensionHealthcareServiceTelecomAppointment"
_PERTAINS_TO_GOAL = "http://hl7.org/fhir/StructureDefinition/resource-pertainsToGoal"


def _meta(profile: str) -> Resource:
    # HTEST marks every resource as synthetic test data (searchable with _tag=HTEST).
    return {
        "profile": [profile],
        "tag": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason",
                "code": "HTEST",
                "display": "test health data",
            }
        ],
    }


def _coding(system: str, code: str, display: str) -> Resource:
    return {"system": system, "code": code, "display": display}


def _cc(system: str, code: str, display: str) -> Resource:
    return {"coding": [{"system": system, "code": code, "display": display}]}


def _ref(rtype: str, rid: str, display: str | None = None) -> Resource:
    if display is None:
        return {"reference": f"{rtype}/{rid}"}
    return {"reference": f"{rtype}/{rid}", "display": display}


# --- SDOH domains --------------------------------------------------------------------------------

FOOD = "food-insecurity"
HOUSING = "housing-instability"
HOMELESS = "homelessness"
TRANSPORT = "transportation-insecurity"

_DOMAIN_DISPLAY = {
    FOOD: "Food Insecurity",
    HOUSING: "Housing Instability",
    HOMELESS: "Homelessness",
    TRANSPORT: "Transportation Insecurity",
}


def _domain_cc(domain: str) -> Resource:
    return _cc(_SDOHCC_CS, domain, _DOMAIN_DISPLAY[domain])


# Condition.code codings per domain: (system, code, display).
_CONDITION_CODES: dict[str, tuple[tuple[tuple[str, str, str], ...], ...]] = {
    FOOD: (((_SCT, "733423003", "Food insecurity"), (_ICD10, "Z59.41", "Food insecurity")),),
    HOUSING: (
        (
            (_SCT, "1156191002", "Housing instability"),
            (_ICD10, "Z59.811", "Housing instability, housed, with risk of homelessness"),
        ),
        (
            (_SCT, "1156191002", "Housing instability"),
            (_ICD10, "Z59.819", "Housing instability, housed unspecified"),
        ),
    ),
    HOMELESS: (
        ((_SCT, "32911000", "Homeless"), (_ICD10, "Z59.01", "Sheltered homelessness")),
        ((_SCT, "32911000", "Homeless"), (_ICD10, "Z59.02", "Unsheltered homelessness")),
    ),
    TRANSPORT: (((_ICD10, "Z59.82", "Transportation insecurity"),),),
}
_CONDITION_TEXT = {
    FOOD: "Food insecurity",
    HOUSING: "Housing instability",
    HOMELESS: "Homelessness",
    TRANSPORT: "Transportation insecurity",
}

# ServiceRequest.code (SNOMED CT) per domain.
_REFERRAL_CODES: dict[str, tuple[tuple[str, str], ...]] = {
    FOOD: (
        ("467771000124109", "Assistance with application for food pantry program"),
        ("713109004", "Referral to community meals service"),
        ("467681000124101", "Assistance with application for Summer Food Service Program"),
    ),
    HOUSING: (
        ("710911006", "Referral to housing service"),
        ("225340009", "Housing assessment"),
    ),
    HOMELESS: (
        ("710911006", "Referral to housing service"),
        ("308440001", "Referral to social worker"),
    ),
    TRANSPORT: (
        ("428632005", "Transportation request"),
        ("410365006", "Transportation case management"),
        ("462481000124102", "Referral to Community Action Agency program"),
    ),
}

# Goal.description text per domain, plus (measure, target answer) LOINC pairs.
_GOALS: dict[str, tuple[tuple[str, str, str] | None, str, tuple[str, str], tuple[str, str]]] = {
    FOOD: (
        (_SCT, "1078229009", "Food security"),
        "Food security",
        ("88124-3", "Food insecurity risk [HVS]"),
        ("LA19983-8", "No risk"),
    ),
    HOUSING: (
        None,
        "Has stable housing for the next 12 months",
        ("71802-3", "Housing status"),
        ("LA31993-1", "I have a steady place to live"),
    ),
    HOMELESS: (
        None,
        "Moves into safe, stable housing",
        ("71802-3", "Housing status"),
        ("LA31993-1", "I have a steady place to live"),
    ),
    TRANSPORT: (
        None,
        "Has reliable transportation to medical appointments and work",
        (
            "93030-5",
            "Has lack of transportation kept you from medical appointments, meetings, work, "
            "or from getting things needed for daily living",
        ),
        ("LA32-8", "No"),
    ),
}

# --- screening instruments ------------------------------------------------------------------------

_HVS_PANEL = ("88121-9", "Hunger Vital Sign [HVS]")
_HVS_Q1 = (
    "88122-7",
    "Within the past 12 months we worried whether our food would run out before we got money "
    "to buy more [U.S. FSS]",
)
_HVS_Q2 = (
    "88123-5",
    "Within the past 12 months the food we bought just didn't last and we didn't have money "
    "to get more [U.S. FSS]",
)
_HVS_RISK = ("88124-3", "Food insecurity risk [HVS]")
_OFTEN = ("LA28397-0", "Often true")
_SOMETIMES = ("LA6729-3", "Sometimes true")
_NEVER = ("LA28398-8", "Never true")
_DONT_KNOW = ("LA15775-2", "Don't know/refused")
_AT_RISK = ("LA19952-3", "At risk")
_NO_RISK = ("LA19983-8", "No risk")

# Per latent food-risk level: answer weights for each Hunger Vital Sign question.
_HVS_ANSWERS = (_OFTEN, _SOMETIMES, _NEVER, _DONT_KNOW)
_HVS_WEIGHTS = ((0.0, 0.04, 0.95, 0.01), (0.1, 0.6, 0.3, 0.0), (0.6, 0.35, 0.05, 0.0))

_HOUSING_Q = ("71802-3", "Housing status")
_STEADY = ("LA31993-1", "I have a steady place to live")
_WORRIED = (
    "LA31994-9",
    "I have a place to live today, but I am worried about losing it in the future",
)
_NOT_STEADY = (
    "LA31995-6",
    "I do not have a steady place to live (I am temporarily staying with others, in a hotel, "
    "in a shelter, living outside on the street, on a beach, in a car, abandoned building, "
    "bus or train station, or in a park)",
)
_TRANSPORT_Q = _GOALS[TRANSPORT][2]
_TRANSPORT_ANSWERS = (
    ("LA30133-5", "Yes, it has kept me from medical appointments or from getting my medications"),
    (
        "LA30134-3",
        "Yes, it has kept me from non-medical meetings, appointments, work, or from getting "
        "things that I need",
    ),
    ("LA32-8", "No"),
    ("LA30122-8", "I choose not to answer this question"),
)

# --- Kentucky geography --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _City:
    name: str
    county: str
    region: str  # Area Development District, as locals call it (used in organisation names)
    central: bool  # Central time (western Kentucky) rather than Eastern
    area_code: str
    lat: float
    lon: float
    weight: int
    zips: tuple[str, ...]


# fmt: off
_CITIES = tuple(
    _City(*row)
    for row in (
        ("Louisville", "Jefferson", "Kentuckiana", False, "502", 38.2527, -85.7585, 60,
         ("40203", "40208", "40210", "40211", "40212", "40214", "40215", "40216", "40218")),
        ("Lexington", "Fayette", "Bluegrass", False, "859", 38.0406, -84.5037, 32,
         ("40502", "40503", "40505", "40508", "40511", "40517")),
        ("Bowling Green", "Warren", "Barren River", True, "270", 36.9685, -86.4808, 8,
         ("42101", "42103", "42104")),
        ("Owensboro", "Daviess", "Green River", True, "270", 37.7719, -87.1112, 6,
         ("42301", "42303")),
        ("Covington", "Kenton", "Northern Kentucky", False, "859", 39.0837, -84.5086, 4,
         ("41011", "41014")),
        ("Richmond", "Madison", "Bluegrass", False, "859", 37.7479, -84.2947, 4, ("40475",)),
        ("Georgetown", "Scott", "Bluegrass", False, "502", 38.2098, -84.5588, 3, ("40324",)),
        ("Florence", "Boone", "Northern Kentucky", False, "859", 38.9989, -84.6266, 3,
         ("41042",)),
        ("Hopkinsville", "Christian", "Pennyrile", True, "270", 36.8656, -87.4886, 3,
         ("42240",)),
        ("Nicholasville", "Jessamine", "Bluegrass", False, "859", 37.8806, -84.5730, 3,
         ("40356",)),
        ("Elizabethtown", "Hardin", "Lincoln Trail", False, "270", 37.6940, -85.8591, 3,
         ("42701",)),
        ("Henderson", "Henderson", "Green River", True, "270", 37.8362, -87.5900, 3, ("42420",)),
        ("Frankfort", "Franklin", "Bluegrass", False, "502", 38.2009, -84.8733, 3, ("40601",)),
        ("Independence", "Kenton", "Northern Kentucky", False, "859", 38.9431, -84.5441, 2,
         ("41051",)),
        ("Jeffersontown", "Jefferson", "Kentuckiana", False, "502", 38.1942, -85.5644, 2,
         ("40299",)),
        ("Paducah", "McCracken", "Purchase", True, "270", 37.0834, -88.6000, 3,
         ("42001", "42003")),
        ("Radcliff", "Hardin", "Lincoln Trail", False, "270", 37.8404, -85.9491, 2, ("40160",)),
        ("Ashland", "Boyd", "Tri-State", False, "606", 38.4784, -82.6379, 2, ("41101",)),
        ("Madisonville", "Hopkins", "Pennyrile", True, "270", 37.3281, -87.4989, 2, ("42431",)),
        ("Murray", "Calloway", "Purchase", True, "270", 36.6103, -88.3148, 2, ("42071",)),
        ("Erlanger", "Kenton", "Northern Kentucky", False, "859", 39.0167, -84.6008, 2,
         ("41018",)),
        ("Winchester", "Clark", "Bluegrass", False, "859", 37.9901, -84.1797, 2, ("40391",)),
        ("Danville", "Boyle", "Bluegrass", False, "859", 37.6456, -84.7722, 2, ("40422",)),
        ("Shelbyville", "Shelby", "Kentuckiana", False, "502", 38.2120, -85.2236, 2, ("40065",)),
        ("Glasgow", "Barren", "Barren River", True, "270", 36.9959, -85.9119, 2, ("42141",)),
        ("Berea", "Madison", "Bluegrass", False, "859", 37.5687, -84.2963, 1, ("40403",)),
        ("Bardstown", "Nelson", "Lincoln Trail", False, "502", 37.8092, -85.4669, 1, ("40004",)),
        ("Somerset", "Pulaski", "Lake Cumberland", False, "606", 37.0920, -84.6041, 2,
         ("42501", "42503")),
        ("Campbellsville", "Taylor", "Lake Cumberland", False, "270", 37.3434, -85.3419, 1,
         ("42718",)),
        ("Morehead", "Rowan", "Gateway", False, "606", 38.1840, -83.4327, 1, ("40351",)),
        ("Maysville", "Mason", "Buffalo Trace", False, "606", 38.6412, -83.7444, 1, ("41056",)),
        ("Pikeville", "Pike", "Big Sandy", False, "606", 37.4793, -82.5188, 2, ("41501",)),
        ("Prestonsburg", "Floyd", "Big Sandy", False, "606", 37.6657, -82.7710, 1, ("41653",)),
        ("Paintsville", "Johnson", "Big Sandy", False, "606", 37.8145, -82.8071, 1, ("41240",)),
        ("Inez", "Martin", "Big Sandy", False, "606", 37.8659, -82.5385, 1, ("41224",)),
        ("Hazard", "Perry", "Kentucky River", False, "606", 37.2498, -83.1932, 2, ("41701",)),
        ("Whitesburg", "Letcher", "Kentucky River", False, "606", 37.1184, -82.8268, 1,
         ("41858",)),
        ("Jackson", "Breathitt", "Kentucky River", False, "606", 37.5532, -83.3835, 1,
         ("41339",)),
        ("London", "Laurel", "Cumberland Valley", False, "606", 37.1290, -84.0833, 2, ("40741",)),
        ("Corbin", "Whitley", "Cumberland Valley", False, "606", 36.9487, -84.0969, 1,
         ("40701",)),
        ("Middlesboro", "Bell", "Cumberland Valley", False, "606", 36.6084, -83.7166, 1,
         ("40965",)),
        ("Harlan", "Harlan", "Cumberland Valley", False, "606", 36.8431, -83.3219, 1, ("40831",)),
        ("Manchester", "Clay", "Cumberland Valley", False, "606", 37.1537, -83.7619, 1,
         ("40962",)),
        ("Mayfield", "Graves", "Purchase", True, "270", 36.7417, -88.6367, 1, ("42066",)),
        ("Fulton", "Fulton", "Purchase", True, "270", 36.5043, -88.8742, 1, ("42041",)),
        ("Russellville", "Logan", "Barren River", True, "270", 36.8451, -86.8872, 1, ("42276",)),
    )
)
# fmt: on
_CITY_CUM = list(accumulate(c.weight for c in _CITIES))
_LAT_RANGE = (36.5, 39.1)
_LON_RANGE = (-89.5, -81.9)

_STREETS = (
    "Main St", "Broadway", "Maple Ave", "Church St", "Walnut St", "Chestnut St", "Poplar St",
    "High St", "Market St", "Elm St", "Oak St", "Cedar St", "College St", "Mill St", "Depot St",
    "Water St", "Bardstown Rd", "Shelbyville Rd", "Dixie Hwy", "Preston Hwy", "Nicholasville Rd",
    "Richmond Rd", "Versailles Rd", "Tates Creek Rd", "Old Frankfort Pike", "Lexington Rd",
    "Russellville Rd", "Scottsville Rd", "Frederica St", "Kentucky Ave", "Cumberland Ave",
    "Big Sandy Rd", "Mayo Trl", "Coal Hollow Rd", "Laurel Fork Rd", "Rockcastle St",
    "Licking Pike", "Green River Rd", "Ohio St", "Jefferson St",
)  # fmt: skip

# --- names ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NameGroup:
    weight: int
    race: tuple[str, str]  # OMB race category (CDC code, display)
    hispanic: bool
    languages: tuple[tuple[str, str], ...]  # non-English preferred languages (code, display)
    family: tuple[str, ...]
    female: tuple[str, ...]
    male: tuple[str, ...]


_WHITE = ("2106-3", "White")
_BLACK = ("2054-5", "Black or African American")
_ASIAN = ("2028-9", "Asian")

_COMMON_FAMILY = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
    "Anderson", "Thomas", "Moore", "Martin", "Jackson", "Thompson", "White", "Harris", "Clark",
    "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright", "Scott", "Hill", "Green",
    "Adams", "Baker", "Nelson", "Carter", "Mitchell", "Turner", "Phillips", "Campbell", "Parker",
    "Evans", "Collins", "Stewart", "Morris", "Reed", "Cook", "Morgan", "Bell", "Murphy",
    "Bailey", "Cooper", "Howard", "Ward", "Brooks", "Bennett", "Gray", "Hughes", "Price",
    "Sanders", "Patterson", "Hall", "O'Brien", "McDaniel",
)  # fmt: skip
_APPALACHIAN_FAMILY = (
    "Combs", "Caudill", "Slone", "Sizemore", "Hatfield", "McCoy", "Napier", "Begley", "Couch",
    "Gabbard", "Noble", "Stacy", "Mullins", "Osborne", "Blevins", "Hensley", "Whitaker",
    "Bowling", "Spencer", "Prater", "Tackett", "Little", "Adkins", "Fugate", "Ritchie",
)  # fmt: skip
_AMERICAN_FEMALE = (
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica", "Sarah",
    "Karen", "Ashley", "Amanda", "Brittany", "Crystal", "Tiffany", "Heather", "Kayla", "Destiny",
    "Brooklyn", "Emma", "Olivia", "Ava", "Harper", "Madison", "Loretta", "Naomi", "Zoë", "Chloé",
    "Renée", "Aaliyah", "Imani", "Keisha", "Jasmine", "Shelby", "Savannah", "Bethany",
)  # fmt: skip
_AMERICAN_MALE = (
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Mark", "Donald", "Steven", "Paul",
    "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "Timothy", "Jason", "Ryan", "Jacob", "Eric",
    "Justin", "Brandon", "Bobby", "Billy", "Jesse", "Dustin", "Cody", "Tyler", "Hunter", "Wyatt",
    "Elijah", "Isaiah", "DeShawn", "Malik", "Jamal", "Terrence", "André",
)  # fmt: skip

_NAME_GROUPS = (
    _NameGroup(62, _WHITE, False, (), _COMMON_FAMILY + _APPALACHIAN_FAMILY, _AMERICAN_FEMALE,
               _AMERICAN_MALE),
    _NameGroup(14, _BLACK, False, (), _COMMON_FAMILY, _AMERICAN_FEMALE, _AMERICAN_MALE),
    _NameGroup(
        8, _WHITE, True, (("es", "Spanish"),),
        ("García", "Hernández", "Martínez", "López", "González", "Pérez", "Sánchez", "Rodríguez",
         "Ramírez", "Núñez", "Gómez", "Díaz", "Cruz", "Reyes", "Ortiz", "Jiménez"),
        ("María", "Sofía", "Lucía", "Guadalupe", "Mónica", "Ana", "Valeria", "Ximena", "Inés",
         "Beatriz", "Rocío"),
        ("José", "Jesús", "Raúl", "Andrés", "Tomás", "Joaquín", "Ángel", "Nicolás", "Luis",
         "Carlos", "Julián", "Martín"),
    ),
    _NameGroup(
        3, _ASIAN, False, (("vi", "Vietnamese"),),
        ("Nguyen", "Tran", "Le", "Pham", "Huynh", "Vo", "Đặng"),
        ("Linh", "Mai", "Thảo", "Ngọc", "Hương", "Lan"),
        ("Minh", "Huy", "Quang", "Đức", "Tuấn", "Bảo"),
    ),
    _NameGroup(
        4, _BLACK, False, (("so", "Somali"), ("sw", "Swahili"), ("fr", "French")),
        ("Mohamed", "Hassan", "Abdi", "Ali", "Osman", "Mukendi", "Ntumba", "Kabongo", "Mbala"),
        ("Fatuma", "Amina", "Hodan", "Asha", "Hawa", "Neema", "Grâce", "Bénédicte"),
        ("Abdirahman", "Hassan", "Mohamed", "Jean-Paul", "Emmanuel", "Célestin", "Didier"),
    ),
    _NameGroup(
        2, _ASIAN, False, (("ne", "Nepali"),),
        ("Gurung", "Rai", "Subedi", "Tamang", "Adhikari", "Dahal"),
        ("Bishnu", "Sita", "Gita", "Laxmi", "Pabitra"),
        ("Bikash", "Ram", "Dil", "Krishna", "Hari"),
    ),
    _NameGroup(
        3, _WHITE, False, (("bs", "Bosnian"), ("uk", "Ukrainian")),
        ("Popović", "Hodžić", "Begić", "Kovalenko", "Müller", "Nowak", "Søndergaard", "Öztürk"),
        ("Amra", "Selma", "Zoë", "Oksana", "Ljiljana", "Anaïs", "Noémie", "Siobhán"),
        ("Emir", "Dženan", "Björn", "Zoltán", "François", "Oleksandr", "Jürgen"),
    ),
)  # fmt: skip
_NAME_CUM = list(accumulate(g.weight for g in _NAME_GROUPS))

# --- dates ---------------------------------------------------------------------------------------

_START = _dt.date(2023, 1, 1)
_END = _dt.date(2026, 10, 31)  # last day any clinical event happens
_LAST = (_END - _START).days


def _dst(year: int) -> tuple[_dt.date, _dt.date]:
    """US daylight saving time: second Sunday in March to first Sunday in November."""
    march1 = _dt.date(year, 3, 1)
    start = march1 + _dt.timedelta(days=(6 - march1.weekday()) % 7 + 7)
    nov1 = _dt.date(year, 11, 1)
    return start, nov1 + _dt.timedelta(days=(6 - nov1.weekday()) % 7)


def _build_days() -> tuple[list[str], list[tuple[str, str]]]:
    days: list[str] = []
    offsets: list[tuple[str, str]] = []  # (Eastern, Central)
    for n in range(_LAST + 400):  # slack for follow-up dates past _END before clamping
        d = _START + _dt.timedelta(days=n)
        start, end = _dst(d.year)
        summer = start <= d < end
        days.append(d.isoformat())
        offsets.append(("-04:00", "-05:00") if summer else ("-05:00", "-06:00"))
    return days, offsets


_DAYS, _OFFSETS = _build_days()


def _when(day: int, minute: int, central: bool) -> str:
    """FHIR dateTime for a day index (from 2023-01-01) and minute of the day, Kentucky local."""
    return f"{_DAYS[day]}T{minute // 60:02d}:{minute % 60:02d}:00{_OFFSETS[day][central]}"


# --- organisations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _OrgKind:
    key: str
    type_code: tuple[str, str]
    type_text: str
    domains: tuple[str, ...]
    names: tuple[str, ...]  # templates: {city}, {region}, {county}
    services: tuple[tuple[str, str, str], ...]  # (domain, service name, service type text)


_CLINIC = _OrgKind(
    "clinic",
    ("prov", "Healthcare Provider"),
    "Primary care clinic",
    (),
    (
        "{city} Family Health Center",
        "{region} Community Health Clinic",
        "{county} County Primary Care",
        "{city} Community Health Center",
    ),
    (),
)
_ORG_KINDS = {
    k.key: k
    for k in (
        _CLINIC,
        _OrgKind(
            "food_bank", ("cg", "Community Group"), "Community-based organization", (FOOD,),
            ("{region} Food Bank", "{city} Area Food Bank"),
            ((FOOD, "Mobile food pantry", "Food pantry"),),
        ),
        _OrgKind(
            "pantry", ("cg", "Community Group"), "Community-based organization", (FOOD,),
            ("{city} Community Food Pantry", "{county} County Christian Food Pantry",
             "{city} Community Kitchen"),
            ((FOOD, "Emergency food pantry", "Food pantry"),),
        ),
        _OrgKind(
            "housing_authority", ("govt", "Government"), "Public housing agency",
            (HOUSING, HOMELESS),
            ("Housing Authority of {city}", "{county} County Housing Authority"),
            ((HOUSING, "Rental assistance and Housing Choice Vouchers", "Rent assistance"),
             (HOMELESS, "Rapid re-housing", "Homeless services")),
        ),
        _OrgKind(
            "shelter", ("cg", "Community Group"), "Community-based organization", (HOMELESS,),
            ("{city} Rescue Mission", "{city} Emergency Shelter", "{region} Family Shelter"),
            ((HOMELESS, "Emergency shelter", "Emergency shelter"),),
        ),
        _OrgKind(
            "transit", ("cg", "Community Group"), "Community-based organization", (TRANSPORT,),
            ("{region} Rural Transit", "{city} Ride Connection"),
            ((TRANSPORT, "Non-emergency medical transportation", "Transportation"),),
        ),
        _OrgKind(
            "community_action", ("cg", "Community Group"), "Community action agency",
            (FOOD, HOUSING, TRANSPORT),
            ("{region} Community Action Council", "{county} County Community Action Agency"),
            ((FOOD, "Commodity food distribution", "Food pantry"),
             (HOUSING, "Eviction prevention assistance", "Rent assistance"),
             (TRANSPORT, "Ride to work and medical appointments", "Transportation")),
        ),
    )
}  # fmt: skip
# Order in which kinds are created, so even a small population has every kind of partner.
_KIND_CYCLE = (
    "clinic", "food_bank", "housing_authority", "community_action", "clinic", "transit",
    "shelter", "pantry", "clinic", "community_action", "pantry", "clinic", "shelter",
    "food_bank", "transit", "clinic", "pantry", "housing_authority",
)  # fmt: skip

_ROLES_CLINIC = (
    ("207Q00000X", "Family Medicine Physician", "MD"),
    ("363LF0000X", "Nurse Practitioner, Family", "APRN"),
    ("1041C0700X", "Social Worker, Clinical", "LCSW"),
)
_ROLE_CBO = ("172V00000X", "Community Health Worker", "")


def _npi(n: int) -> str:
    """A valid 10-digit NPI (Luhn check digit over the 80840 prefix) for a 9-digit base."""
    digits = f"80840{n:09d}"
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return f"{n:09d}{(10 - total % 10) % 10}"


@dataclass(slots=True)
class _Org:
    id: str
    name: str
    kind: _OrgKind
    city: _City
    role_ids: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Network:
    """The shared, non-patient part of the population: who refers and who receives referrals."""

    clinics: list[_Org] = field(default_factory=list)
    cbos_by_domain: dict[str, list[_Org]] = field(default_factory=dict)
    cbo_role_ids: list[str] = field(default_factory=list)
    # Nearest organisations, per (city, domain or "" for clinics); filled on first use.
    _near: dict[tuple[str, str], list[_Org]] = field(default_factory=dict)

    def near(self, city: _City, domain: str) -> list[_Org]:
        key = (city.name, domain)
        found = self._near.get(key)
        if found is None:
            orgs = self.cbos_by_domain[domain] if domain else self.clinics
            found = self._near[key] = sorted(orgs, key=lambda o: _distance(city, o.city))[:4]
        return found


def _distance(a: _City, b: _City) -> float:
    # Equirectangular approximation; at Kentucky's latitude a degree of longitude is ~0.79 of one
    # of latitude. Good enough to rank partners by proximity, as kynect resources search does.
    return (a.lat - b.lat) ** 2 + ((a.lon - b.lon) * 0.79) ** 2


def _ascii(text: str) -> str:
    # For e-mail local parts: "Zoë O'Brien" -> "zoeobrien".
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum() or ch == ".")


def _pick(rng: Random, cum: Sequence[float], items: Sequence[_T]) -> _T:
    return items[bisect(cum, rng.random() * cum[-1])]


def _phone(rng: Random, area_code: str) -> str:
    # 555-01xx is the block reserved for fictional use.
    return f"({area_code}) 555-01{rng.randrange(100):02d}"


def _address(rng: Random, city: _City, use: str | None = None) -> Resource:
    line = [f"{rng.randrange(100, 9900)} {rng.choice(_STREETS)}"]
    if rng.random() < 0.2:
        unit = f"Suite {rng.randrange(1, 4)}00" if use == "work" else f"Apt {rng.randrange(1, 40)}"
        line.append(unit + ("" if use == "work" else rng.choice("ABCD")))
    address: Resource = {
        "line": line,
        "city": city.name,
        "district": f"{city.county} County",
        "state": "KY",
        "postalCode": rng.choice(city.zips),
        "country": "US",
    }
    if use:
        address["use"] = use
    return address


def _position(rng: Random, city: _City) -> Resource:
    lat = min(max(city.lat + rng.uniform(-0.03, 0.03), _LAT_RANGE[0]), _LAT_RANGE[1])
    lon = min(max(city.lon + rng.uniform(-0.03, 0.03), _LON_RANGE[0]), _LON_RANGE[1])
    return {"longitude": round(lon, 5), "latitude": round(lat, 5)}


def _person_name(rng: Random) -> tuple[_NameGroup, str, list[str], str]:
    group = _pick(rng, _NAME_CUM, _NAME_GROUPS)
    gender = "female" if rng.random() < 0.53 else "male"
    given = [rng.choice(group.female if gender == "female" else group.male)]
    return group, rng.choice(group.family), given, gender


def _shared(rng: Random, n_orgs: int, net: _Network) -> Iterator[Resource]:
    """Organizations with their Locations, HealthcareServices, Practitioners and roles."""
    used_names: set[str] = set()
    npi_base = 100_000_000 + rng.randrange(50_000_000)
    npi_count = 0
    prac_n = 0
    hcs_n = 0
    loc_n = 0
    for i in range(n_orgs):
        kind = _ORG_KINDS[_KIND_CYCLE[i % len(_KIND_CYCLE)]]
        city = _pick(rng, _CITY_CUM, _CITIES)
        name = rng.choice(kind.names).format(city=city.name, region=city.region, county=city.county)
        if name in used_names:
            name = f"{name} – {city.name} Site {i + 1}"
        used_names.add(name)
        org = _Org(f"org-{i + 1:04d}", name, kind, city)
        address = _address(rng, city, "work")
        npi_count += 1
        slug = _ascii(name)[:32]
        yield {
            "resourceType": "Organization",
            "id": org.id,
            "meta": _meta(_P_ORG),
            "identifier": [{"system": _NPI, "value": _npi(npi_base + npi_count * 7919)}],
            "active": True,
            "type": [{"coding": [_coding(_ORG_TYPE, *kind.type_code)], "text": kind.type_text}],
            "name": name,
            "telecom": [
                {"system": "phone", "value": _phone(rng, city.area_code), "use": "work"},
                {"system": "url", "value": f"https://{slug}.example.org", "use": "work"},
            ],
            "address": [address],
        }
        loc_n += 1
        loc_id = f"loc-{loc_n:04d}"
        yield {
            "resourceType": "Location",
            "id": loc_id,
            "meta": _meta(_P_LOCATION),
            "status": "active",
            "name": f"{name} – {city.name}",
            "mode": "instance",
            "telecom": [{"system": "phone", "value": _phone(rng, city.area_code), "use": "work"}],
            "address": {**address, "line": list(address["line"])},
            "position": _position(rng, city),
            "managingOrganization": _ref("Organization", org.id, name),
        }
        service_ids: list[str] = []
        for domain, service_name, service_type in kind.services:
            hcs_n += 1
            hcs_id = f"hcs-{hcs_n:04d}"
            service_ids.append(hcs_id)
            yield {
                "resourceType": "HealthcareService",
                "id": hcs_id,
                "meta": _meta(_P_HCS),
                "active": True,
                "providedBy": _ref("Organization", org.id, name),
                "category": [_domain_cc(domain)],
                "type": [{"text": service_type}],
                "location": [_ref("Location", loc_id)],
                "name": service_name,
                "telecom": [
                    {
                        "extension": [{"url": _APPOINTMENT_EXT, "valueBoolean": True}],
                        "system": "phone",
                        "value": _phone(rng, city.area_code),
                        "use": "work",
                    }
                ],
                "availableTime": [
                    {
                        "daysOfWeek": ["mon", "tue", "wed", "thu", "fri"],
                        "availableStartTime": "09:00:00",
                        "availableEndTime": "16:30:00",
                    }
                ],
            }
        roles = _ROLES_CLINIC if kind is _CLINIC else (_ROLE_CBO,)
        for code, display, suffix in roles:
            prac_n += 1
            prac_id = f"prac-{prac_n:04d}"
            _, family, given, gender = _person_name(rng)
            human: Resource = {"use": "official", "family": family, "given": given}
            if suffix:
                human["suffix"] = [suffix]
            email = _ascii(f"{given[0]}.{family}")
            npi_count += 1
            practitioner: Resource = {
                "resourceType": "Practitioner",
                "id": prac_id,
                "meta": _meta(_P_PRACTITIONER),
                "identifier": [{"system": _NPI, "value": _npi(npi_base + npi_count * 7919)}],
                "active": True,
                "name": [human],
                "gender": gender,
                "telecom": [
                    {"system": "email", "value": f"{email}@{slug}.example.org", "use": "work"}
                ],
            }
            yield practitioner
            role_id = f"role-{prac_n:04d}"
            org.role_ids.append(role_id)
            role: Resource = {
                "resourceType": "PractitionerRole",
                "id": role_id,
                "meta": _meta(_P_ROLE),
                "active": True,
                "practitioner": _ref("Practitioner", prac_id, f"{given[0]} {family}"),
                "organization": _ref("Organization", org.id, name),
                "code": [
                    {
                        "coding": [_coding(_NUCC, code, display)],
                        "text": "kynector" if kind is not _CLINIC and i % 2 else display,
                    }
                ],
                "location": [_ref("Location", loc_id)],
                "telecom": [
                    {"system": "phone", "value": _phone(rng, city.area_code), "use": "work"}
                ],
            }
            if service_ids:
                role["healthcareService"] = [_ref("HealthcareService", s) for s in service_ids]
            yield role
        if kind is _CLINIC:
            net.clinics.append(org)
        else:
            net.cbo_role_ids.extend(org.role_ids)
            for domain in kind.domains:
                net.cbos_by_domain.setdefault(domain, []).append(org)


# --- patients ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Referral:
    sr_id: str
    task_id: str
    domain: str
    condition_id: str
    goal_id: str | None
    performer: _Org
    requester_id: str
    day: int
    minute: int
    status: str
    code: tuple[str, str]
    priority: str


_TASK_STATUS = ("requested", "accepted", "in-progress", "completed", "rejected", "cancelled")
_TASK_CUM = list(accumulate((14, 12, 16, 42, 9, 7)))
_RETRY_CUM = _TASK_CUM[:4]  # a second referral after a rejection is not rejected again
_REJECT_REASONS = (
    "Rejected - at capacity",
    "Resident is outside our service area",
    "Resident does not meet program eligibility",
)
_CANCEL_REASONS = (
    "Resident no longer needs the service",
    "Unable to reach resident after three attempts",
    "Duplicate referral",
)


def _observation(
    oid: str,
    pid: str,
    domains: Sequence[str],
    code: tuple[str, str],
    effective: str,
    performer: Resource,
) -> Resource:
    category = [
        _cc(_OBS_CAT, "social-history", "Social History"),
        _cc(_OBS_CAT, "survey", "Survey"),
        _cc(_USCORE_CAT, "sdoh", "SDOH"),
    ]
    category.extend(_domain_cc(d) for d in domains)
    return {
        "resourceType": "Observation",
        "id": oid,
        "meta": _meta(_P_OBS),
        "status": "final",
        "category": category,
        "code": _cc(_LOINC, *code),
        "subject": _ref("Patient", pid),
        "effectiveDateTime": effective,
        "issued": effective,
        "performer": [performer],
    }


def _answer(obs: Resource, answer: tuple[str, str], positive: bool) -> Resource:
    obs["valueCodeableConcept"] = _cc(_LOINC, *answer)
    if positive:
        obs["interpretation"] = [_cc(_INTERP, "POS", "Positive")]
    return obs


def _patient(rng: Random, n: int, net: _Network, id_offset: int) -> Iterator[Resource]:
    pid = f"pat-{n:06d}"
    city = _pick(rng, _CITY_CUM, _CITIES)
    central = city.central
    group, family, given, gender = _person_name(rng)
    if rng.random() < 0.3:
        given.append(rng.choice(group.female if gender == "female" else group.male))
    age_roll = rng.random()
    if age_roll < 0.18:
        birth_year = rng.randrange(2008, 2024)
    elif age_roll < 0.85:
        birth_year = rng.randrange(1960, 2008)
    else:
        birth_year = rng.randrange(1930, 1960)
    human: Resource = {"use": "official", "family": family, "given": given}
    if gender == "male" and rng.random() < 0.04:
        human["suffix"] = [rng.choice(("Jr.", "Sr.", "III"))]
    individual_id = f"1{(n * 387_420_489 + id_offset) % 1_000_000_000:09d}"
    identifiers: list[Resource] = [
        {
            "use": "usual",
            "type": {"text": "kynect Individual ID"},
            "system": INDIVIDUAL_ID_SYSTEM,
            "value": individual_id,
        }
    ]
    medicaid = rng.random() < 0.45
    if medicaid:
        identifiers.append(
            {
                "use": "secondary",
                "type": _cc(_V2_0203, "MA", "Patient Medicaid number"),
                "system": MEDICAID_ID_SYSTEM,
                "value": f"{(n * 48_271 + id_offset * 3) % 10_000_000_000:010d}",
            }
        )
    telecom: list[Resource] = [
        {
            "system": "phone",
            "value": _phone(rng, city.area_code),
            "use": "mobile" if rng.random() < 0.8 else "home",
        }
    ]
    if rng.random() < 0.4:
        local = _ascii(f"{given[0]}.{family}")
        telecom.append({"system": "email", "value": f"{local}{n % 97}@example.com"})
    race: list[Resource] = [
        {"url": "ombCategory", "valueCoding": _coding(_CDC_RACE, *group.race)},
        {"url": "text", "valueString": group.race[1]},
    ]
    ethnicity = (
        ("2135-2", "Hispanic or Latino") if group.hispanic else ("2186-5", "Not Hispanic or Latino")
    )
    clinic = _clinic_for(rng, net, city)
    patient: Resource = {
        "resourceType": "Patient",
        "id": pid,
        "meta": _meta(_P_PATIENT),
        "extension": [
            {"url": _USCORE + "us-core-race", "extension": race},
            {
                "url": _USCORE + "us-core-ethnicity",
                "extension": [
                    {"url": "ombCategory", "valueCoding": _coding(_CDC_RACE, *ethnicity)},
                    {"url": "text", "valueString": ethnicity[1]},
                ],
            },
        ],
        "identifier": identifiers,
        "active": True,
        "name": [human],
        "telecom": telecom,
        "gender": gender,
        "birthDate": f"{birth_year}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}",
        "address": [_address(rng, city, "home")],
        "generalPractitioner": [_ref("Organization", clinic.id, clinic.name)],
    }
    if group.languages and rng.random() < 0.6:
        lang = rng.choice(group.languages)
        patient["communication"] = [
            {"language": {"coding": [_coding(_BCP47, *lang)], "text": lang[1]}, "preferred": True}
        ]
    yield patient

    # Screenings: one to three visits, each with the Hunger Vital Sign and often the AHC housing
    # and PRAPARE transportation questions. A latent need level per domain drives the answers.
    food_level = _pick(rng, _FOOD_LEVEL_CUM, (0, 1, 2))
    housing_level = _pick(rng, _HOUSING_LEVEL_CUM, (0, 1, 2))
    transport_need = rng.random() < 0.22
    visits = 1 + (rng.random() < 0.4) + (rng.random() < 0.12)
    day = rng.randrange(0, _LAST - 120)
    obs_n = 0
    # domain -> (first positive day, minute, evidence observation id, last negative day or None)
    found: dict[str, list[Any]] = {}

    def positive(domain: str, at: int, minute: int, evidence: str) -> None:
        entry = found.get(domain)
        if entry is None:
            found[domain] = [at, minute, evidence, None]
        else:
            entry[3] = None

    def negative(domain: str, at: int) -> None:
        entry = found.get(domain)
        if entry is not None and entry[3] is None:
            entry[3] = at

    patient_performer = rng.random() < 0.35  # self-screened in the kynect resources portal
    for _visit in range(visits):
        if day > _LAST:
            break
        minute = rng.randrange(8 * 60, 17 * 60)
        effective = _when(day, minute, central)
        performer = (
            _ref("Patient", pid)
            if patient_performer
            else _ref("PractitionerRole", rng.choice(clinic.role_ids))
        )
        ids = []
        weights = _HVS_CUMS[food_level]
        a1 = _pick(rng, weights, _HVS_ANSWERS)
        a2 = _pick(rng, weights, _HVS_ANSWERS)
        at_risk = a1 in (_OFTEN, _SOMETIMES) or a2 in (_OFTEN, _SOMETIMES)
        for code, answer in ((_HVS_Q1, a1), (_HVS_Q2, a2)):
            obs_n += 1
            oid = f"obs-{n:06d}-{obs_n:02d}"
            ids.append(oid)
            yield _answer(
                _observation(oid, pid, (FOOD,), code, effective, performer),
                answer,
                answer in (_OFTEN, _SOMETIMES),
            )
        obs_n += 1
        risk_id = f"obs-{n:06d}-{obs_n:02d}"
        ids.append(risk_id)
        risk = _observation(risk_id, pid, (FOOD,), _HVS_RISK, effective, performer)
        risk["derivedFrom"] = [_ref("Observation", ids[0]), _ref("Observation", ids[1])]
        yield _answer(risk, _AT_RISK if at_risk else _NO_RISK, at_risk)
        obs_n += 1
        panel = _observation(
            f"obs-{n:06d}-{obs_n:02d}", pid, (FOOD,), _HVS_PANEL, effective, performer
        )
        panel["hasMember"] = [_ref("Observation", i) for i in ids]
        yield panel
        if at_risk:
            positive(FOOD, day, minute, risk_id)
        else:
            negative(FOOD, day)

        if rng.random() < 0.6:
            roll = rng.random()
            if housing_level == 0:
                answer = _STEADY if roll < 0.95 else _WORRIED
            elif housing_level == 1:
                answer = _WORRIED if roll < 0.75 else _STEADY
            else:
                answer = _NOT_STEADY if roll < 0.7 else _WORRIED
            domains = (HOUSING, HOMELESS) if answer is _NOT_STEADY else (HOUSING,)
            obs_n += 1
            oid = f"obs-{n:06d}-{obs_n:02d}"
            yield _answer(
                _observation(oid, pid, domains, _HOUSING_Q, effective, performer),
                answer,
                answer is not _STEADY,
            )
            if answer is _NOT_STEADY:
                positive(HOMELESS, day, minute, oid)
            elif answer is _WORRIED:
                positive(HOUSING, day, minute, oid)
                negative(HOMELESS, day)
            else:
                negative(HOUSING, day)
                negative(HOMELESS, day)

        if rng.random() < 0.6:
            roll = rng.random()
            if transport_need:
                answer = _TRANSPORT_ANSWERS[0 if roll < 0.5 else 1 if roll < 0.85 else 2]
            else:
                answer = _TRANSPORT_ANSWERS[2 if roll < 0.96 else 3]
            yes = answer in _TRANSPORT_ANSWERS[:2]
            obs_n += 1
            oid = f"obs-{n:06d}-{obs_n:02d}"
            yield _answer(
                _observation(oid, pid, (TRANSPORT,), _TRANSPORT_Q, effective, performer),
                answer,
                yes,
            )
            if yes:
                positive(TRANSPORT, day, minute, oid)
            elif answer is _TRANSPORT_ANSWERS[2]:
                negative(TRANSPORT, day)
        day += rng.randrange(60, 330)

    # Conditions, goals and referrals for the needs found.
    conditions: list[Resource] = []
    goals: list[Resource] = []
    referrals: list[_Referral] = []
    cond_n = goal_n = ref_n = 0
    for domain in _DOMAIN_ORDER:
        entry = found.get(domain)
        if entry is None or rng.random() < 0.15:
            continue
        onset_day, onset_minute, evidence, resolved_day = entry
        cond_n += 1
        cond_id = f"cond-{n:06d}-{cond_n}"
        onset = _when(onset_day, onset_minute, central)
        confirmed = rng.random() < 0.7
        codings = rng.choice(_CONDITION_CODES[domain])
        condition: Resource = {
            "resourceType": "Condition",
            "id": cond_id,
            "meta": _meta(_P_CONDITION),
            "clinicalStatus": _cc(
                _COND_CLINICAL,
                *(("resolved", "Resolved") if resolved_day is not None else ("active", "Active")),
            ),
            "verificationStatus": _cc(
                _COND_VER,
                *(("confirmed", "Confirmed") if confirmed else ("unconfirmed", "Unconfirmed")),
            ),
            "category": [
                _cc(_USCORE_COND_CAT, "health-concern", "Health Concern"),
                _cc(_USCORE_CAT, "sdoh", "SDOH"),
                _domain_cc(domain),
            ],
            "code": {
                "coding": [_coding(*c) for c in codings],
                "text": _CONDITION_TEXT[domain],
            },
            "subject": _ref("Patient", pid),
            "recordedDate": onset,
            "evidence": [{"detail": [_ref("Observation", evidence)]}],
        }
        if rng.random() < 0.7:
            condition["onsetDateTime"] = onset
        else:
            condition["onsetPeriod"] = {"start": onset}
        if resolved_day is not None:
            condition["abatementDateTime"] = _DAYS[resolved_day]
        if confirmed:
            condition["asserter"] = _ref("PractitionerRole", rng.choice(clinic.role_ids))
        conditions.append(condition)

        goal_id = None
        if rng.random() < 0.55:
            goal_n += 1
            goal_id = f"goal-{n:06d}-{goal_n}"
            goal_coding, goal_text, measure, target = _GOALS[domain]
            description: Resource = {"text": goal_text}
            if goal_coding is not None:
                description["coding"] = [_coding(*goal_coding)]
            achieved = resolved_day is not None
            goal: Resource = {
                "resourceType": "Goal",
                "id": goal_id,
                "meta": _meta(_P_GOAL),
                "lifecycleStatus": "completed" if achieved else "active",
                "achievementStatus": _cc(
                    _GOAL_ACH,
                    *(("achieved", "Achieved") if achieved else rng.choice(_GOAL_PROGRESS)),
                ),
                "category": [_domain_cc(domain)],
                "description": description,
                "subject": _ref("Patient", pid),
                "startDate": _DAYS[onset_day],
                "target": [
                    {
                        "measure": _cc(_LOINC, *measure),
                        "detailCodeableConcept": _cc(_LOINC, *target),
                        "dueDate": _DAYS[onset_day + rng.randrange(90, 365)],
                    }
                ],
                "statusDate": _DAYS[resolved_day if achieved else onset_day],
                "expressedBy": _ref("Patient", pid),
                "addresses": [_ref("Condition", cond_id)],
            }
            goals.append(goal)

        if rng.random() < 0.8:
            ref_day = min(onset_day + rng.randrange(0, 8), _LAST)
            status = _pick(rng, _TASK_CUM, _TASK_STATUS)
            if resolved_day is not None and status != "completed" and rng.random() < 0.6:
                status = "completed"
            attempts = 1 if status != "rejected" or rng.random() < 0.4 else 2
            performer_org = None
            for attempt in range(attempts):
                ref_n += 1
                performer_org = _cbo_for(rng, net, city, domain, performer_org)
                if attempt:
                    ref_day = min(ref_day + rng.randrange(1, 10), _LAST)
                    status = _pick(rng, _RETRY_CUM, _TASK_STATUS[:4])
                referrals.append(
                    _Referral(
                        sr_id=f"sr-{n:06d}-{ref_n}",
                        task_id=f"task-{n:06d}-{ref_n}",
                        domain=domain,
                        condition_id=cond_id,
                        goal_id=goal_id,
                        performer=performer_org,
                        requester_id=(
                            rng.choice(clinic.role_ids)
                            if rng.random() < 0.8 or not net.cbo_role_ids
                            else rng.choice(net.cbo_role_ids)
                        ),
                        day=ref_day,
                        minute=rng.randrange(8 * 60, 17 * 60),
                        status=status,
                        code=rng.choice(_REFERRAL_CODES[domain]),
                        priority=(
                            "urgent" if domain == HOMELESS or rng.random() < 0.1 else "routine"
                        ),
                    )
                )

    yield from conditions
    yield from goals

    consent_id = None
    if (referrals and rng.random() < 0.7) or (not referrals and rng.random() < 0.08):
        consent_id = f"consent-{n:06d}"
        first = min(referrals, key=lambda r: r.day) if referrals else None
        c_day = first.day if first else min(day, _LAST)
        c_minute = max(first.minute - rng.randrange(5, 60), 8 * 60) if first else 10 * 60
        provision: Resource = {
            "type": "permit",
            "period": {"start": _DAYS[c_day], "end": _DAYS[c_day + 365]},
            "action": [_cc(_CONSENT_ACTION, "disclose", "Disclose")],
        }
        recipients = list(dict.fromkeys(r.performer.id for r in referrals))
        if recipients:
            provision["actor"] = [
                {
                    "role": _cc(_PARTICIPATION, "IRCP", "information recipient"),
                    "reference": _ref("Organization", org_id),
                }
                for org_id in recipients
            ]
        how = rng.choice(("verbal acknowledgement", "email", "text message"))
        yield {
            "resourceType": "Consent",
            "id": consent_id,
            "meta": _meta(_P_CONSENT),
            "status": "active",
            "scope": _cc(_CONSENT_SCOPE, "patient-privacy", "Privacy Consent"),
            "category": [_cc(_ACT_CODE, "IDSCL", "information disclosure")],
            "patient": _ref("Patient", pid),
            "dateTime": _when(c_day, c_minute, central),
            "organization": [_ref("Organization", clinic.id, clinic.name)],
            "sourceAttachment": {
                "contentType": "text/plain",
                "title": f"Consent to share resident record, given by {how}",
            },
            "policyRule": _cc(_CONSENT_POLICY, "hipaa-auth", "HIPAA Authorization"),
            "provision": provision,
        }

    for ref in referrals:
        yield from _referral(rng, ref, pid, central, consent_id)


def _clinic_for(rng: Random, net: _Network, city: _City) -> _Org:
    # Mostly the nearest clinic, sometimes the next nearest, now and then one across the state.
    roll = rng.random()
    if roll < 0.92:
        near = net.near(city, "")
        return near[0 if roll < 0.75 or len(near) < 2 else 1]
    return rng.choice(net.clinics)


def _cbo_for(rng: Random, net: _Network, city: _City, domain: str, previous: _Org | None) -> _Org:
    # Mostly the nearest partner serving the domain; a retry goes to a different one.
    choices = net.near(city, domain)
    if previous is not None:
        choices = [c for c in choices if c is not previous] or choices
    roll = rng.random()
    return choices[min(0 if roll < 0.6 else 1 if roll < 0.85 else 2, len(choices) - 1)]


def _referral(
    rng: Random, ref: _Referral, pid: str, central: bool, consent_id: str | None
) -> Iterator[Resource]:
    authored = _when(ref.day, ref.minute, central)
    status = ref.status
    org = ref.performer
    accepted_day = min(ref.day + rng.randrange(0, 4), _LAST)
    done_day = min(accepted_day + rng.randrange(2, 45), _LAST)
    sr: Resource = {
        "resourceType": "ServiceRequest",
        "id": ref.sr_id,
        "meta": _meta(_P_SR),
        "status": (
            "completed"
            if status == "completed"
            else "revoked"
            if status == "cancelled"
            else "active"
        ),
        "intent": "order",
        "category": [
            _cc(_SCT, "410606002", "Social service procedure"),
            _domain_cc(ref.domain),
        ],
        "priority": ref.priority,
        "code": _cc(_SCT, *ref.code),
        "subject": _ref("Patient", pid),
        "authoredOn": authored,
        "requester": _ref("PractitionerRole", ref.requester_id),
        "performer": [_ref("Organization", org.id, org.name)],
        "reasonReference": [_ref("Condition", ref.condition_id)],
    }
    if ref.goal_id is not None:
        sr["extension"] = [{"url": _PERTAINS_TO_GOAL, "valueReference": _ref("Goal", ref.goal_id)}]
    if consent_id is not None:
        sr["supportingInfo"] = [_ref("Consent", consent_id)]
    yield sr

    task: Resource = {
        "resourceType": "Task",
        "id": ref.task_id,
        "meta": _meta(_P_TASK),
        "status": status,
        "intent": "order",
        "priority": ref.priority,
        "code": _cc(_TASK_CODE, "fulfill", "Fulfill the focal request"),
        "focus": _ref("ServiceRequest", ref.sr_id),
        "for": _ref("Patient", pid),
        "authoredOn": authored,
        "lastModified": authored,
        "requester": _ref("PractitionerRole", ref.requester_id),
        "owner": _ref("Organization", org.id, org.name),
    }
    minute = min(ref.minute + 90, 23 * 60)
    if status in ("accepted", "in-progress", "completed"):
        task["executionPeriod"] = {"start": _when(accepted_day, minute, central)}
        task["lastModified"] = _when(accepted_day, minute, central)
    if status == "completed":
        proc_id = f"proc-{ref.sr_id[3:]}"
        performed = _when(done_day, minute, central)
        code = (
            ("710925007", "Provision of food")
            if ref.code[0] == "467771000124109" and rng.random() < 0.5
            else ref.code
        )
        yield {
            "resourceType": "Procedure",
            "id": proc_id,
            "meta": _meta(_P_PROCEDURE),
            "basedOn": [_ref("ServiceRequest", ref.sr_id)],
            "status": "completed",
            "category": {
                "coding": [
                    _coding(_SCT, "410606002", "Social service procedure"),
                    _coding(_SDOHCC_CS, ref.domain, _DOMAIN_DISPLAY[ref.domain]),
                ]
            },
            "code": _cc(_SCT, *code),
            "subject": _ref("Patient", pid),
            "performedDateTime": performed,
            "performer": [{"actor": _ref("Organization", org.id, org.name)}],
            "reasonReference": [_ref("Condition", ref.condition_id)],
        }
        task["executionPeriod"]["end"] = performed
        task["lastModified"] = performed
        task["statusReason"] = {"text": "Service provided"}
        task["output"] = [
            {
                "type": _cc(_SDOHCC_CS, "resulting-activity", "Resulting Activity"),
                "valueReference": _ref("Procedure", proc_id),
            }
        ]
    elif status in ("rejected", "cancelled"):
        reasons = _REJECT_REASONS if status == "rejected" else _CANCEL_REASONS
        task["statusReason"] = {"text": rng.choice(reasons)}
        task["lastModified"] = _when(accepted_day, minute, central)
    yield task


_DOMAIN_ORDER = (FOOD, HOUSING, HOMELESS, TRANSPORT)
_FOOD_LEVEL_CUM = list(accumulate((55, 30, 15)))
_HOUSING_LEVEL_CUM = list(accumulate((72, 20, 8)))
_HVS_CUMS = [list(accumulate(w)) for w in _HVS_WEIGHTS]
_GOAL_PROGRESS = (
    ("in-progress", "In Progress"),
    ("improving", "Improving"),
    ("no-progress", "No Progress"),
)
_CONSENT_ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
_CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
_CONSENT_POLICY = "http://terminology.hl7.org/CodeSystem/consentpolicycodes"
_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


# --- public API ----------------------------------------------------------------------------------


def generate_population(n_patients: int, *, seed: int = 1) -> Iterator[Resource]:
    """Yields FHIR R4 resources (plain dicts, each with resourceType and a client-assigned id) in
    dependency order: referenced resources before the resources that reference them.

    The shared network (Organizations, Locations, HealthcareServices, Practitioners,
    PractitionerRoles) comes first, then each patient with their screenings, Conditions, Goals,
    Consent and referrals (ServiceRequest, Procedure when completed, Task). Only
    ``random.Random(seed)`` is used, so the same arguments give identical output; resources are
    built one patient at a time, so a million of them stream in constant memory.
    """
    if n_patients < 0:
        raise ValueError("n_patients must be >= 0")
    return _generate(n_patients, seed)


def _generate(n_patients: int, seed: int) -> Iterator[Resource]:
    rng = Random(seed)
    net = _Network()
    n_orgs = min(max(len(_KIND_CYCLE), n_patients // 200), 500)
    yield from _shared(rng, n_orgs, net)
    id_offset = rng.randrange(1_000_000_000)
    for n in range(1, n_patients + 1):
        yield from _patient(rng, n, net, id_offset)


def demo_population() -> list[Resource]:
    """The small population ``sdoh-fhir serve --demo`` loads (50 patients, about 700 resources)."""
    return list(generate_population(DEMO_PATIENTS, seed=1))


def count_by_type(resources: Iterable[Resource]) -> dict[str, int]:
    """Number of resources per resourceType, sorted by type name."""
    counts = Counter(r["resourceType"] for r in resources)
    return dict(sorted(counts.items()))
