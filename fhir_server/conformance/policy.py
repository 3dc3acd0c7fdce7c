"""The profiles a write must conform to, and the check.

A resource is validated against every profile its ``meta.profile`` names that the server knows
(http://hl7.org/fhir/R4/resource.html#Meta: a claim of conformance), and against the profiles
the operator requires for its type (``RequiredProfile``: e.g. every Task with code ``fulfill`` is
an SDOHCC referral Task). A claimed profile the server does not know is accepted unless the
operator says otherwise (``unknown_profiles = "error"``): the open world of FHIR, where most
senders claim US Core or IG profiles a receiver may not hold.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fhirpathpy
import orjson

from fhir_server.core.errors import Issue, UnprocessableEntity
from profiles.fhirpath_syntax import check_syntax
from profiles.validator import (
    InvalidDefinition,
    ProfileRegistry,
    ValidationIssue,
    Validator,
)
from terminology import Terminology

__all__ = ["Conformance", "RequiredProfile", "UNKNOWN_PROFILE_MODES", "parse_required_profiles"]

_log = logging.getLogger(__name__)

UNKNOWN_PROFILE_MODES = ("ignore", "error")

# The conformance resources that change what this module knows when they are written.
DEFINITION_TYPES = frozenset({"StructureDefinition", "CodeSystem", "ValueSet", "ConceptMap"})


@dataclass(frozen=True, slots=True)
class RequiredProfile:
    """Every resource of ``resource_type`` (for which ``when``, a FHIRPath, is true) must conform
    to ``profile``, whatever it claims."""

    resource_type: str
    profile: str
    when: str | None = None
    _test: Callable[..., Any] | None = field(default=None, compare=False, repr=False)

    def applies(self, body: Mapping[str, Any]) -> bool:
        if self._test is None:
            return True
        try:
            result = self._test(body)
        except Exception:  # a condition that cannot be evaluated on this resource: the profile
            return True  # applies (failing closed: otherwise odd content would escape it)
        return result == [True]


def parse_required_profiles(text: str) -> tuple[RequiredProfile, ...]:
    """The ``SDOH_FHIR_REQUIRED_PROFILES`` setting: a JSON list of
    ``{"resourceType": ..., "profile": ..., "when": <FHIRPath, optional>}``.

    Raises ``ValueError`` saying what is wrong (the server refuses to start with it)."""
    if not text.strip():
        return ()
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"required profiles: not JSON ({exc})") from None
    if not isinstance(items, list):
        raise ValueError("required profiles: a JSON list of objects is expected")
    rules: list[RequiredProfile] = []
    for position, item in enumerate(items):
        where = f"required profiles[{position}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: an object is expected")
        resource_type, profile, when = (
            item.get("resourceType"),
            item.get("profile"),
            item.get("when"),
        )
        if not isinstance(resource_type, str) or not isinstance(profile, str):
            raise ValueError(f"{where}: 'resourceType' and 'profile' are strings")
        if when is not None and not isinstance(when, str):
            raise ValueError(f"{where}: 'when' is a FHIRPath expression, a string")
        test = None
        if when:
            try:
                check_syntax(when)
                test = fhirpathpy.compile(when, None)
            except Exception as exc:
                raise ValueError(f"{where}: 'when' is {exc}") from None
        rules.append(RequiredProfile(resource_type, profile, when, test))
    return tuple(rules)


class Conformance:
    """This process's profiles and terminology, and the policy that applies them to writes."""

    def __init__(
        self,
        profiles: ProfileRegistry,
        terminology: Terminology,
        *,
        unknown_profiles: str = "ignore",
        required: Sequence[RequiredProfile] = (),
    ) -> None:
        if unknown_profiles not in UNKNOWN_PROFILE_MODES:
            raise ValueError(f"unknown_profiles must be one of {', '.join(UNKNOWN_PROFILE_MODES)}")
        self.profiles = profiles
        self.terminology = terminology
        self.unknown_profiles = unknown_profiles
        self.required = tuple(required)
        self.validator = Validator(profiles, terminology)
        self._required_by_type: dict[str, tuple[RequiredProfile, ...]] = {}
        for rule in self.required:
            self._required_by_type[rule.resource_type] = (
                *self._required_by_type.get(rule.resource_type, ()),
                rule,
            )

    @classmethod
    def bundled(cls, **policy: Any) -> Conformance:
        """The profiles and terminology the server ships, nothing posted."""
        return cls(ProfileRegistry.bundled(), Terminology.bundled(), **policy)

    def with_definitions(self, definitions: Iterable[Mapping[str, Any]]) -> Conformance:
        """The bundled content with these stored conformance resources added.

        A stored definition that cannot be used is skipped (it was checked when written; an
        older server version may have stored it)."""
        by_type: dict[str, list[Mapping[str, Any]]] = {}
        for definition in definitions:
            if not _bundled_url(definition):  # stored before that was refused: never shadows
                by_type.setdefault(str(definition.get("resourceType")), []).append(definition)
        profiles = ProfileRegistry.bundled()
        structures = _parents_first(by_type.get("StructureDefinition", []))
        try:
            profiles = profiles.extended(structures)
        except Exception:  # one of them cannot be used: add them one by one, skipping it
            for definition in structures:
                try:
                    profiles = profiles.extended([definition])
                except Exception as exc:
                    _log.warning(
                        "conformance: StructureDefinition/%s skipped: %s",
                        definition.get("id"),
                        type(exc).__name__,
                    )
        terminology = Terminology.bundled()
        for kind in ("CodeSystem", "ValueSet", "ConceptMap"):
            for definition in by_type.get(kind, ()):
                try:
                    terminology = terminology.extended([definition])
                except Exception as exc:
                    _log.warning(
                        "conformance: %s/%s skipped: %s",
                        kind,
                        definition.get("id"),
                        type(exc).__name__,
                    )
        return Conformance(
            profiles,
            terminology,
            unknown_profiles=self.unknown_profiles,
            required=self.required,
        )

    # -- writes ----------------------------------------------------------------------------------

    def profiles_for(self, resource_type: str, body: Mapping[str, Any]) -> list[str]:
        """The profiles a write of ``body`` must conform to: claimed and required, in order."""
        urls: list[str] = []
        meta = body.get("meta")
        if isinstance(meta, dict):
            claimed = meta.get("profile")
            if isinstance(claimed, list):
                urls.extend(url for url in claimed if isinstance(url, str))
        for rule in self._required_by_type.get(resource_type, ()):
            if rule.applies(body) and rule.profile not in urls:
                urls.append(rule.profile)
        return urls

    def claims_unknown(self, resource_type: str, body: Mapping[str, Any]) -> bool:
        """Whether ``body`` must conform to a profile this process does not know (yet)."""
        return bool(self.unknown_claims(resource_type, body))

    def unknown_claims(self, resource_type: str, body: Mapping[str, Any]) -> list[str]:
        """The profiles ``body`` must conform to that this process does not know (yet)."""
        return [u for u in self.profiles_for(resource_type, body) if not self.profiles.known(u)]

    def unknown_required(self) -> list[str]:
        """Required profiles this server does not know: it must not start (they would be
        enforced by nothing)."""
        return [r.profile for r in self.required if not self.profiles.known(r.profile)]

    def check_write(self, resource_type: str, body: Mapping[str, Any]) -> None:
        """Raise ``UnprocessableEntity`` (422) with the issues if ``body`` breaks a profile it
        must conform to, or is a definition the server cannot use."""
        errors: list[Issue] = []
        required = {r.profile for r in self._required_by_type.get(resource_type, ())}
        for url in self.profiles_for(resource_type, body):
            if not self.profiles.known(url):
                if self.unknown_profiles == "error" or url in required:
                    errors.append(
                        Issue(
                            "error",
                            "not-supported",
                            f"the profile {url} is not known to this server",
                            (f"{resource_type}.meta.profile",),
                        )
                    )
                continue
            errors.extend(
                i
                for i in self._validate(resource_type, body, url)
                if i.severity in ("error", "fatal")
            )
        if resource_type in DEFINITION_TYPES:
            errors.extend(self._check_definition(resource_type, body))
        if errors:
            raise UnprocessableEntity(
                f"the {resource_type} does not conform to its profiles", issues=tuple(errors)
            )

    def _check_definition(self, resource_type: str, body: Mapping[str, Any]) -> list[Issue]:
        """A StructureDefinition, CodeSystem, ValueSet or ConceptMap this server could not use
        is refused when written, rather than ignored when it is needed; so is one with the url of
        a definition the server ships (it would change what every bundled profile means)."""
        if _bundled_url(body):
            return [
                Issue(
                    "error",
                    "business-rule",
                    f"{body.get('url')} is a definition this server ships; it cannot be replaced"
                    " (give yours another canonical url)",
                    (f"{resource_type}.url",),
                )
            ]
        if resource_type == "StructureDefinition":
            try:
                trial = self.profiles.extended([body])
                url = body.get("url")
                if isinstance(url, str):
                    trial.known(url)
                    trial.type_of(url)
            except InvalidDefinition as exc:
                return [Issue("error", "invalid", f"the {resource_type} cannot be used: {exc}")]
            except Exception:  # anything else it trips over: refused, never stored to fail later
                return [Issue("error", "invalid", f"the {resource_type} cannot be used")]
            return []
        return [
            Issue("error", "invalid", f"the {resource_type} cannot be used: {problem}")
            for problem in self.terminology.problems(dict(body))
        ]

    def _validate(
        self, resource_type: str, body: Mapping[str, Any], url: str, *, must_support: bool = False
    ) -> list[Issue]:
        try:
            found = self.validator.validate(body, url, must_support=must_support)
        except InvalidDefinition as exc:  # a stored definition this version cannot compile
            return [
                Issue(
                    "error",
                    "processing",
                    f"the profile {url} cannot be used: {exc}",
                    (f"{resource_type}.meta.profile",),
                )
            ]
        return [_issue(i) for i in found]

    # -- $validate -------------------------------------------------------------------------------

    def validate(
        self,
        resource_type: str,
        body: Mapping[str, Any],
        *,
        profile: str | None = None,
        must_support: bool = False,
    ) -> list[Issue]:
        """The issues of ``body`` against ``profile`` (or those it must conform to), errors,
        warnings and information alike; unknown profiles are information."""
        urls = [profile] if profile else self.profiles_for(resource_type, body)
        issues: list[Issue] = []
        for url in urls:
            if not self.profiles.known(url):
                severity = "error" if profile or self.unknown_profiles == "error" else "information"
                issues.append(
                    Issue(
                        severity,
                        "not-supported" if severity == "error" else "informational",
                        f"the profile {url} is not known to this server; the resource was"
                        " checked against the base specification only",
                        (f"{resource_type}.meta.profile",),
                    )
                )
                continue
            issues.extend(self._validate(resource_type, body, url, must_support=must_support))
        if resource_type in DEFINITION_TYPES:
            issues.extend(self._check_definition(resource_type, body))
        return issues


def _bundled_url(definition: Mapping[str, Any]) -> bool:
    """Whether ``definition`` has the canonical url of one the server ships."""
    url = definition.get("url")
    if not isinstance(url, str):
        return False
    kind = definition.get("resourceType")
    if kind == "StructureDefinition":
        return url in _bundled_profile_urls()
    terminology = Terminology.bundled()
    if kind == "CodeSystem":
        return terminology.code_system(url) is not None
    if kind == "ValueSet":
        return terminology.value_set(url) is not None
    if kind == "ConceptMap":
        return terminology.concept_map(url) is not None
    return False


@functools.cache
def _bundled_profile_urls() -> frozenset[str]:
    return frozenset(ProfileRegistry.bundled().urls())


def _parents_first(definitions: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """StructureDefinitions, each after the one it derives from when that is among them."""
    by_url = {d.get("url"): d for d in definitions}
    placed: list[Mapping[str, Any]] = []
    seen: set[int] = set()

    def place(definition: Mapping[str, Any], depth: int = 0) -> None:
        if id(definition) in seen or depth > 50:
            return
        parent = by_url.get(definition.get("baseDefinition"))
        if parent is not None and parent is not definition:
            place(parent, depth + 1)
        if id(definition) not in seen:
            seen.add(id(definition))
            placed.append(definition)

    for definition in definitions:
        place(definition)
    return placed


def _issue(issue: ValidationIssue) -> Issue:
    return Issue(
        issue.severity,
        issue.code,
        issue.message,
        (issue.expression,) if issue.expression else (),
    )
