"""The profiles a write must conform to, and the check.

A resource is validated against every profile its ``meta.profile`` names that the server knows
(http://hl7.org/fhir/R4/resource.html#Meta: a claim of conformance), and against the profiles
the operator requires for its type (``RequiredProfile``: e.g. every Task with code ``fulfill`` is
an SDOHCC referral Task). A claimed profile the server does not know is accepted unless the
operator says otherwise (``unknown_profiles = "error"``): the open world of FHIR, where most
senders claim US Core or IG profiles a receiver may not hold.
"""

from __future__ import annotations

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
        except Exception:  # a condition that cannot be evaluated on this resource: not met
            return False
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
            by_type.setdefault(str(definition.get("resourceType")), []).append(definition)
        profiles = ProfileRegistry.bundled()
        for definition in by_type.get("StructureDefinition", ()):
            try:
                profiles = profiles.extended([definition])
            except InvalidDefinition:
                continue
        terminology_resources = [
            d for t in ("CodeSystem", "ValueSet", "ConceptMap") for d in by_type.get(t, ())
        ]
        terminology = Terminology.bundled()
        if terminology_resources:
            terminology = terminology.extended(terminology_resources)
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
        return any(not self.profiles.known(u) for u in self.profiles_for(resource_type, body))

    def check_write(self, resource_type: str, body: Mapping[str, Any]) -> None:
        """Raise ``UnprocessableEntity`` (422) with the issues if ``body`` breaks a profile it
        must conform to, or is a definition the server cannot use."""
        errors: list[Issue] = []
        for url in self.profiles_for(resource_type, body):
            if not self.profiles.known(url):
                if self.unknown_profiles == "error":
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
        is refused when written, rather than ignored when it is needed."""
        if resource_type == "StructureDefinition":
            try:
                self.profiles.extended([body])
            except InvalidDefinition as exc:
                return [Issue("error", "invalid", f"the {resource_type} cannot be used: {exc}")]
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


def _issue(issue: ValidationIssue) -> Issue:
    return Issue(
        issue.severity,
        issue.code,
        issue.message,
        (issue.expression,) if issue.expression else (),
    )
