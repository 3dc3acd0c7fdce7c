"""How a message changes what is stored (feeds/iees/README.md processing rules 4-6), as pure
functions of stored and mapped resources: the server reads, calls these, and writes.

Each returns a new dict (the inputs are never changed), or None when nothing would change.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from mappers.iees.fhir import _SDOHCC_CODES, INDIVIDUAL_ID_SYSTEM

__all__ = [
    "end_member",
    "end_program",
    "end_related_person",
    "keep_merge_links",
    "merge_member",
    "repoint",
    "retire_patient",
    "take_over",
]


def merge_member(stored: dict[str, Any] | None, mapped: dict[str, Any]) -> dict[str, Any]:
    """The household Group as stored, with the mapped Group's members put in place (matched
    by ``entity.reference``; new ones appended) and its other elements taken from the mapped
    one (rule 5: members are upserted from every message of the case)."""
    if stored is None:
        members = list(mapped.get("member", []))
    else:
        members = list(stored.get("member", []))
        for member in mapped.get("member", []):
            reference = member["entity"]["reference"]
            for position, old in enumerate(members):
                if old.get("entity", {}).get("reference") == reference:
                    members[position] = member
                    break
            else:
                members.append(member)
    merged = {k: v for k, v in mapped.items() if k not in {"member", "quantity", "meta"}}
    if stored is not None and stored.get("meta"):
        kept = {k: stored["meta"][k] for k in ("tag", "security") if stored["meta"].get(k)}
        if kept:
            merged["meta"] = kept
    merged["quantity"] = sum(1 for m in members if not m.get("inactive"))
    merged["member"] = members
    return merged


def end_member(group: dict[str, Any], reference: str, end: dt.date) -> dict[str, Any] | None:
    """The household Group with ``reference``'s membership ended at ``end`` (the person is
    no longer on the case, rule 5: ``member.period.end`` and ``inactive``). None when the
    person is not an active member."""
    members = []
    changed = False
    for member in group.get("member", []):
        if member.get("entity", {}).get("reference") == reference and not member.get("inactive"):
            period = dict(member.get("period") or {})
            if not period.get("end") or period["end"][:10] > end.isoformat():
                period["end"] = end.isoformat()
            if period.get("start") and period["start"][:10] > period["end"][:10]:
                period["end"] = period["start"][:10]  # never ended before it began
            member = {**member, "period": period, "inactive": True}
            changed = True
        members.append(member)
    if not changed:
        return None
    quantity = sum(1 for m in members if not m.get("inactive"))
    return {**group, "member": members, "quantity": quantity}


def end_program(body: dict[str, Any], end: dt.date) -> dict[str, Any] | None:
    """A Coverage or program-enrollment Observation the person's latest message no longer
    lists (rule 4): ended at ``end`` (an earlier end stays), Coverage ``cancelled``,
    Observation ``not-enrolled``. None when it is ended already."""
    text = end.isoformat()
    if body["resourceType"] == "Coverage":
        period = dict(body.get("period") or {})
        if body.get("status") == "cancelled" and period.get("end"):
            return None
        if not period.get("end") or period["end"][:10] > text:
            period["end"] = text
        if period.get("start") and period["start"][:10] > period["end"][:10]:
            period["end"] = period["start"][:10]  # never ended before it began
        return {**body, "status": "cancelled", "period": period}
    period = dict(body.get("effectivePeriod") or {})
    coding = (body.get("valueCodeableConcept") or {}).get("coding") or [{}]
    if coding[0].get("code") == "not-enrolled" and period.get("end"):
        return None
    if not period.get("end") or period["end"][:10] > text:
        period["end"] = text
    if period.get("start") and period["start"][:10] > period["end"][:10]:
        period["end"] = period["start"][:10]  # never ended before it began
    value = {
        "coding": [{"system": _SDOHCC_CODES, "code": "not-enrolled", "display": "Not Enrolled"}]
    }
    return {**body, "effectivePeriod": period, "valueCodeableConcept": value}


def end_related_person(body: dict[str, Any], end: dt.date) -> dict[str, Any] | None:
    """A household co-member the latest message no longer lists (rule 5): the co-membership
    ends (``active`` false, ``period.end``); the kinship stays. None when ended already."""
    if body.get("active") is False:
        return None
    period = dict(body.get("period") or {})
    if not period.get("end") or period["end"][:10] > end.isoformat():
        period["end"] = end.isoformat()
    if period.get("start") and period["start"][:10] > period["end"][:10]:
        period["end"] = period["start"][:10]  # never ended before it began
    return {**body, "active": False, "period": period}


def retire_patient(body: dict[str, Any], survivor_id: str) -> dict[str, Any]:
    """The retired Patient of a merge (rule 6a): inactive, ``replaced-by`` the survivor."""
    link = {"other": {"reference": f"Patient/{survivor_id}"}, "type": "replaced-by"}
    links = [entry for entry in body.get("link", []) if entry.get("type") != "replaced-by"]
    return {**body, "active": False, "link": [*links, link]}


def take_over(
    survivor: dict[str, Any], retired_id: str, retired_individual_id: str
) -> dict[str, Any]:
    """The surviving Patient of a merge (rule 6a): ``link`` ``replaces`` the retired one, and
    the retired IndividualID kept as an ``old`` identifier."""
    links = list(survivor.get("link", []))
    link = {"other": {"reference": f"Patient/{retired_id}"}, "type": "replaces"}
    if link not in links:
        links.append(link)
    identifiers = list(survivor.get("identifier", []))
    if not any(
        i.get("system") == INDIVIDUAL_ID_SYSTEM and i.get("value") == retired_individual_id
        for i in identifiers
    ):
        identifiers.append(
            {
                "use": "old",
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "PI"}
                    ]
                },
                "system": INDIVIDUAL_ID_SYSTEM,
                "value": retired_individual_id,
            }
        )
    return {**survivor, "active": True, "link": links, "identifier": identifiers}


def keep_merge_links(mapped: dict[str, Any], stored: dict[str, Any] | None) -> dict[str, Any]:
    """A mapped Patient with what merges added to the stored one (links, old identifiers)
    and the server-side tags: a later message does not undo a merge."""
    if not stored:
        return mapped
    out = dict(mapped)
    if stored.get("link"):
        out["link"] = stored["link"]
        if any(link.get("type") == "replaced-by" for link in stored["link"]):
            out["active"] = False
    old = [i for i in stored.get("identifier", []) if i.get("use") == "old"]
    if old:
        current = out.get("identifier", [])
        out["identifier"] = [*current, *(i for i in old if i not in current)]
    meta = stored.get("meta") or {}
    kept = {k: meta[k] for k in ("tag", "security") if meta.get(k)}
    if kept:
        out["meta"] = {**(out.get("meta") or {}), **kept}
    return out


def repoint(body: dict[str, Any], old: str, new: str) -> dict[str, Any] | None:
    """``body`` with every reference to ``old`` ("Patient/x") made to ``new`` (rule 6a), and
    a Group's members that thereby name one person twice folded into one. None if ``body``
    does not refer to ``old``."""
    changed = False

    def walk(value: Any) -> Any:
        nonlocal changed
        if isinstance(value, dict):
            if value.get("reference") == old:
                changed = True
                return {**value, "reference": new}
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    out = walk(body)
    if not changed:
        return None
    if out.get("resourceType") == "Group" and out.get("member"):
        out["member"] = _fold_members(out["member"])
        out["quantity"] = sum(1 for m in out["member"] if not m.get("inactive"))
    return out


def _fold_members(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One member entry per person: an active entry wins over an inactive one."""
    by_reference: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for member in members:
        reference = member.get("entity", {}).get("reference", "")
        found = by_reference.get(reference)
        if found is None:
            by_reference[reference] = member
            order.append(reference)
        elif found.get("inactive") and not member.get("inactive"):
            by_reference[reference] = member
    return [by_reference[r] for r in order]
