"""The 211 taxonomy -> SDOH domain crosswalk: which SDOHCC category a feed's code falls in.

The table below is derived from the project's research crosswalk,
``shared/feeds/hsds/taxonomies/sdoh-domain-crosswalk.csv`` (authored by the project, CC0; see
``research/feeds.md`` section 3.3). It holds codes only: AIRS/211 LA County taxonomy codes are
identifiers, and their licensed names are never shipped (the display a feed gives is used at
runtime instead). Open Eligibility ids are matched exactly; AIRS codes by prefix at a segment
boundary, the longest prefix first, so ``BD-1800.2000-640`` falls under ``BD-1800.2000``. The
categories are the SDOHCC ones
(http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes).
"""

from __future__ import annotations

import re

__all__ = ["SDOHCC_SYSTEM", "is_airs_code", "sdoh_categories", "sdohcc_display"]

SDOHCC_SYSTEM = (
    "http://hl7.org/fhir/us/sdoh-clinicalcare/CodeSystem/SDOHCC-CodeSystemTemporaryCodes"
)

# An AIRS code: two letters, a dash, four digits, then ".nnnn", "-nnn", ".nn" segments.
_AIRS = re.compile(r"^[A-Z]{2}-\d{4}(?:[.-]\d+)*$")

_DISPLAYS: dict[str, str] = {
    "food-insecurity": "Food Insecurity",
    "housing-instability": "Housing Instability",
    "homelessness": "Homelessness",
    "inadequate-housing": "Inadequate Housing",
    "transportation-insecurity": "Transportation Insecurity",
    "utility-insecurity": "Utility Insecurity",
    "financial-insecurity": "Financial Insecurity",
    "material-hardship": "Material Hardship",
    "employment-status": "Employment Status",
    "educational-attainment": "Educational Attainment",
    "intimate-partner-violence": "Intimate Partner Violence",
    "elder-abuse": "Elder Abuse",
    "social-connection": "Social Connection",
    "stress": "Stress",
    "health-insurance-coverage-status": "Health Insurance Coverage Status",
    "medical-cost-burden": "Medical Cost Burden",
    "digital-access": "Digital Access",
    "digital-literacy": "Digital Literacy",
    "language-access": "Language Access",
    "veteran-status": "Veteran Status",
    "incarceration-status": "Incarceration Status",
    "personal-health-literacy": "Personal Health Literacy",
}

_AIRS_PREFIXES: dict[str, str] = {
    "BD-1800": "food-insecurity",
    "BD-1800.2000": "food-insecurity",
    "BD-1800.2250": "food-insecurity",
    "BD-5000": "food-insecurity",
    "BD-5000.1500": "food-insecurity",
    "BD-5000.3500": "food-insecurity",
    "BD-5000.8300": "food-insecurity",
    "NL-6000.2000": "food-insecurity",
    "NL-6000.2000-220": "food-insecurity",
    "NL-6000.9500": "food-insecurity",
    "LH-2700.6000": "food-insecurity",
    "BH-3800": "housing-instability",
    "BH-3800.7000": "housing-instability",
    "BH-3800.5000": "housing-instability",
    "BH-3900": "housing-instability",
    "BH-3900.3100": "housing-instability",
    "BH-7000.4600": "housing-instability",
    "FT-4500.1800": "housing-instability",
    "BH-1800": "homelessness",
    "BH-1800.8500": "homelessness",
    "BH-1800.8500-185": "homelessness",
    "BH-1800.3500": "homelessness",
    "BH-8600": "homelessness",
    "BH-3000.1800-950": "inadequate-housing",
    "PH-3300.2750-250": "inadequate-housing",
    "JP-6500.6500": "inadequate-housing",
    "BT-4500": "transportation-insecurity",
    "BT-4500.6500-500": "transportation-insecurity",
    "BT-4500.6500-280": "transportation-insecurity",
    "BT-4500.4700-500": "transportation-insecurity",
    "BT-8300": "transportation-insecurity",
    "BT-8300.1000-400": "transportation-insecurity",
    "BV-8900.9300": "utility-insecurity",
    "BV-8900.9300-180": "utility-insecurity",
    "BV-8900.9300-250": "utility-insecurity",
    "BV-8900.9300-950": "utility-insecurity",
    "BV-8900.9220": "utility-insecurity",
    "NL-1000.8500": "financial-insecurity",
    "NL-1000.8500-850": "financial-insecurity",
    "NT-8900": "financial-insecurity",
    "DM-6500": "financial-insecurity",
    "DM-2000": "financial-insecurity",
    "DT-8800.9300-930": "financial-insecurity",
    "BM-6500.1500": "material-hardship",
    "BM-6500.1500-150": "material-hardship",
    "BM-3000.2000-250": "material-hardship",
    "BM-6500.6500-650": "material-hardship",
    "ND-3500.3600": "employment-status",
    "ND-6500": "employment-status",
    "ND-2000": "employment-status",
    "ND-9000": "employment-status",
    "FT-1000.8900": "employment-status",
    "HH-0500.2500-250": "educational-attainment",
    "HH-0500.0500": "educational-attainment",
    "HH-4500.0500": "educational-attainment",
    "HL-8700": "educational-attainment",
    "BH-1800.1500-100": "intimate-partner-violence",
    "RP-1500.1400-200": "intimate-partner-violence",
    "FN-1500.9100-180": "intimate-partner-violence",
    "FT-3000.1750": "intimate-partner-violence",
    "PN-8100.0200-180": "intimate-partner-violence",
    "PH-6500.0500-050": "elder-abuse",
    "PH-6500.0500-180": "elder-abuse",
    "FT-2450": "elder-abuse",
    "PH-1400": "social-connection",
    "TC-5500.8000": "social-connection",
    "PN-8100": "social-connection",
    "RP-1400": "stress",
    "RP-1500": "stress",
    "RP-1500.1400": "stress",
    "PH-6200.8400": "stress",
    "NL-5000.5000": "health-insurance-coverage-status",
    "NL-5000.5000-520": "health-insurance-coverage-status",
    "NL-5000.8000-150": "health-insurance-coverage-status",
    "LH-3000": "health-insurance-coverage-status",
    "LH-3500": "health-insurance-coverage-status",
    "LH-5100": "medical-cost-burden",
    "LH-5100.6500": "medical-cost-burden",
    "LH-5100.1700": "medical-cost-burden",
    "LH-6700.6300": "medical-cost-burden",
    "BM-6000.1500": "digital-access",
    "TI-1800.6500-150": "digital-access",
    "BV-8900.1700-850": "digital-access",
    "PL-7400.1500": "digital-literacy",
    "PH-3500": "language-access",
    "PH-3500.4500": "language-access",
    "PH-3500.8000": "language-access",
    "FT-1000.9000": "veteran-status",
    "ND-6500.9200": "veteran-status",
    "LN-9000": "veteran-status",
    "FF-1900": "incarceration-status",
    "ND-6500.1950": "incarceration-status",
    "LH-2700": "personal-health-literacy",
    "LH-2700.1700": "personal-health-literacy",
}

_OPEN_ELIGIBILITY: dict[str, tuple[str, ...]] = {
    "1102": ("food-insecurity",),
    "1103": ("housing-instability",),
    "1104": ("material-hardship",),
    "1105": ("transportation-insecurity",),
    "1107": ("financial-insecurity",),
    "1108": ("social-connection",),
    "1109": ("educational-attainment",),
    "1110": ("employment-status",),
    "1113": ("financial-insecurity",),
    "1116": ("housing-instability",),
    "1119": ("utility-insecurity",),
    "1120": ("food-insecurity",),
    "1121": ("homelessness",),
    "1123": ("intimate-partner-violence",),
    "1124": ("intimate-partner-violence",),
    "1128": ("food-insecurity",),
    "1129": ("food-insecurity",),
    "1130": ("food-insecurity",),
    "1131": ("food-insecurity",),
    "1132": ("food-insecurity",),
    "1133": ("food-insecurity",),
    "1134": ("food-insecurity",),
    "1135": ("homelessness",),
    "1136": ("housing-instability",),
    "1137": ("housing-instability",),
    "1138": ("utility-insecurity",),
    "1142": ("housing-instability",),
    "1145": ("inadequate-housing",),
    "1172": ("transportation-insecurity",),
    "1173": ("transportation-insecurity",),
    "1175": ("transportation-insecurity",),
    "1199": ("medical-cost-burden",),
    "1202": ("health-insurance-coverage-status",),
    "1239": ("health-insurance-coverage-status",),
    "1243": ("housing-instability",),
    "1244": ("utility-insecurity",),
    "1254": ("transportation-insecurity",),
    "1256": ("financial-insecurity",),
    "1258": ("food-insecurity",),
    "1261": ("financial-insecurity", "employment-status"),
    "1268": ("health-insurance-coverage-status",),
    "1358": ("employment-status",),
    "1364": ("employment-status",),
    "20007": ("veteran-status",),
    "20015": ("incarceration-status",),
}


def is_airs_code(code: str) -> bool:
    """Whether ``code`` has the shape of an AIRS/211 taxonomy code (``BD-1800.2000-640``)."""
    return bool(_AIRS.match(code))


def sdohcc_display(code: str) -> str | None:
    """The SDOHCC display of a domain code, or None for a code outside the domains."""
    return _DISPLAYS.get(code)


def sdoh_categories(code: str, *, open_eligibility: bool = False) -> tuple[str, ...]:
    """The SDOHCC domain codes of a feed's taxonomy code (() when the crosswalk has none).

    ``open_eligibility`` says the code is an Open Eligibility id; otherwise only codes shaped
    like AIRS codes are looked up, so another taxonomy's "1102" never matches by accident.
    """
    if open_eligibility:
        return _OPEN_ELIGIBILITY.get(code, ())
    if not is_airs_code(code):
        return ()
    prefix = code
    while prefix:
        found = _AIRS_PREFIXES.get(prefix)
        if found:
            return (found,)
        cut = max(prefix.rfind("."), prefix.rfind("-", 3))
        if cut <= 2:
            return ()
        prefix = prefix[:cut]
    return ()
