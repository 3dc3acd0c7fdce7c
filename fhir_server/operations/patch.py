"""The patch interaction's engine: JSON Patch and FHIRPath Patch applied to a resource's JSON.

http://hl7.org/fhir/R4/http.html#patch: a malformed patch document is a 400 (InvalidRequest);
a well-formed patch that cannot be applied to this resource is a 422 (UnprocessableEntity).
Both functions return a new dict and change neither the resource nor the patch. Messages name
the operation by its position and its path, never resource content. Whether the result is a
valid resource (and keeps its type and id) is the caller's check.

- JSON Patch: RFC 6902 (https://www.rfc-editor.org/rfc/rfc6902), paths are RFC 6901 pointers.
- FHIRPath Patch: http://hl7.org/fhir/R4/fhirpatch.html. Paths use a FHIRPath subset: the
  resource type as the first step, element names (a choice element by its base name),
  indexers ``[n]``, ``first()``, ``last()``, ``where(criterion)`` (the criterion is evaluated
  by fhirpathpy on each candidate) and ``ofType(Type)``; any other function is refused (400).
  Element definitions come from the R4 model tables that ship with fhirpathpy.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirpathpy import evaluate
from fhirpathpy.models import models

from fhir_server.core.errors import InvalidRequest, UnprocessableEntity

__all__ = ["apply_fhirpath_patch", "apply_json_patch", "is_repeating"]

_QUOTE_MAX = 200


class _Malformed(Exception):
    """The patch itself is wrong, whatever the resource (400)."""


class _NotApplicable(Exception):
    """The patch is well formed but cannot be applied to this resource (422)."""


def _label(dialect: str, number: int, operation: str, path: str) -> str:
    quoted = path if len(path) <= _QUOTE_MAX else f"{path[:_QUOTE_MAX]}..."
    return f"{dialect} operation {number} ({operation}) at {quoted!r}"


# --- JSON Patch (RFC 6902) ------------------------------------------------------------------

_JSON_OPERATIONS = ("add", "remove", "replace", "move", "copy", "test")
_NEEDS_VALUE = frozenset({"add", "replace", "test"})
_NEEDS_FROM = frozenset({"move", "copy"})
_ARRAY_INDEX = re.compile(r"0|[1-9][0-9]*")
_BAD_ESCAPE = re.compile(r"~(?![01])")
_ABSENT = object()

_Pointer = tuple[str, ...]
_Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class _JsonOperation:
    number: int
    op: str
    path_text: str
    path: _Pointer
    source: _Pointer  # "from", for move and copy
    value: Any  # a copy of the operation's value; _ABSENT unless add, replace or test

    @property
    def label(self) -> str:
        return _label("JSON Patch", self.number, self.op, self.path_text)


def apply_json_patch(resource: dict[str, Any], document: Any) -> dict[str, Any]:
    """Apply a JSON Patch document (RFC 6902 section 4) to a copy of ``resource``.

    Every operation is checked before any is applied, so a malformed document is a 400 even
    when an earlier operation would fail. ``test`` compares JSON values (section 4.6):
    ``1`` equals ``1.0``, and no number equals a boolean.
    """
    if not isinstance(document, list):
        raise InvalidRequest("a JSON Patch document must be a JSON array of operations")
    operations = [_parse_json_operation(number, raw) for number, raw in enumerate(document)]
    patched = copy.deepcopy(resource)
    for operation in operations:
        try:
            patched = _JSON_APPLY[operation.op](patched, operation)
        except _NotApplicable as exc:
            raise UnprocessableEntity(f"{operation.label}: {exc}") from None
    return patched


def _parse_json_operation(number: int, raw: Any) -> _JsonOperation:
    if not isinstance(raw, dict):
        raise InvalidRequest(f"JSON Patch operation {number} is not a JSON object")
    op, path_text = raw.get("op"), raw.get("path")
    if op not in _JSON_OPERATIONS:
        raise InvalidRequest(
            f"JSON Patch operation {number}: 'op' must be one of {', '.join(_JSON_OPERATIONS)}"
        )
    if not isinstance(path_text, str):
        raise InvalidRequest(f"JSON Patch operation {number} ({op}): 'path' must be a string")
    label = _label("JSON Patch", number, op, path_text)
    try:
        path = _parse_pointer(path_text)
        source = _parse_source(op, raw)
    except _Malformed as exc:
        raise InvalidRequest(f"{label}: {exc}") from None
    if op in _NEEDS_VALUE and "value" not in raw:
        raise InvalidRequest(f"{label}: 'value' is required")
    if op == "move" and len(source) < len(path) and path[: len(source)] == source:
        raise InvalidRequest(f"{label}: a location cannot be moved into one of its children")
    value = copy.deepcopy(raw["value"]) if op in _NEEDS_VALUE else _ABSENT
    return _JsonOperation(number, op, path_text, path, source, value)


def _parse_source(op: str, raw: dict[str, Any]) -> _Pointer:
    if op not in _NEEDS_FROM:
        return ()
    source = raw.get("from")
    if not isinstance(source, str):
        raise _Malformed("'from' must be a string")
    return _parse_pointer(source)


def _parse_pointer(text: str) -> _Pointer:
    """An RFC 6901 JSON _Pointer as its reference tokens, with ``~1`` and ``~0`` decoded."""
    if text == "":
        return ()
    if not text.startswith("/"):
        raise _Malformed("a JSON _Pointer is empty or starts with '/'")
    tokens = text[1:].split("/")
    if any(_BAD_ESCAPE.search(token) for token in tokens):
        raise _Malformed("'~' in a JSON _Pointer must be followed by 0 or 1")
    return tuple(token.replace("~1", "/").replace("~0", "~") for token in tokens)


def _json_get(document: Any, path: _Pointer) -> Any:
    target = document
    for token in path:
        if isinstance(target, dict):
            if token not in target:
                raise _NotApplicable("the path does not exist")
            target = target[token]
        elif isinstance(target, list):
            target = target[_array_index(token, len(target), allow_end=False)]
        else:
            raise _NotApplicable("the path does not exist")
    return target


def _array_index(token: str, length: int, *, allow_end: bool) -> int:
    """A reference token as an array index (RFC 6901 section 4; ``-`` is past the end)."""
    if token == "-" and allow_end:
        return length
    if not _ARRAY_INDEX.fullmatch(token):
        raise _NotApplicable("the path does not exist (not an array index)")
    index = int(token)
    if index > length or (index == length and not allow_end):
        raise _NotApplicable("the array index is out of range")
    return index


def _json_add(document: _Document, path: _Pointer, value: Any) -> _Document:
    if not path:
        return _whole_document(value)
    parent, token = _json_get(document, path[:-1]), path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(token, len(parent), allow_end=True), value)
    else:
        raise _NotApplicable("the parent of the path is not an object or array")
    return document


def _whole_document(value: Any) -> _Document:
    if not isinstance(value, dict):
        raise _NotApplicable("the whole document can only become another JSON object")
    return value


def _json_remove(document: _Document, path: _Pointer) -> Any:
    """Remove the value at ``path`` and return it."""
    if not path:
        raise _NotApplicable("the whole document cannot be removed")
    parent, token = _json_get(document, path[:-1]), path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise _NotApplicable("the path does not exist")
        return parent.pop(token)
    if isinstance(parent, list):
        return parent.pop(_array_index(token, len(parent), allow_end=False))
    raise _NotApplicable("the path does not exist")


def _json_replace(document: _Document, path: _Pointer, value: Any) -> _Document:
    if not path:
        return _whole_document(value)
    parent, token = _json_get(document, path[:-1]), path[-1]
    if isinstance(parent, dict) and token in parent:
        parent[token] = value
    elif isinstance(parent, list):
        parent[_array_index(token, len(parent), allow_end=False)] = value
    else:
        raise _NotApplicable("the path does not exist")
    return document


def _json_equal(left: Any, right: Any) -> bool:
    """JSON equality (RFC 6902 section 4.6): numbers by value, never equal to booleans."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left == right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return left == right
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_json_equal(left[k], right[k]) for k in left)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_json_equal, left, right))
    return type(left) is type(right) and left == right


def _op_add(document: _Document, operation: _JsonOperation) -> _Document:
    return _json_add(document, operation.path, operation.value)


def _op_remove(document: _Document, operation: _JsonOperation) -> _Document:
    _json_remove(document, operation.path)
    return document


def _op_replace(document: _Document, operation: _JsonOperation) -> _Document:
    return _json_replace(document, operation.path, operation.value)


def _op_move(document: _Document, operation: _JsonOperation) -> _Document:
    if operation.source == operation.path:
        _json_get(document, operation.source)
        return document
    return _json_add(document, operation.path, _json_remove(document, operation.source))


def _op_copy(document: _Document, operation: _JsonOperation) -> _Document:
    value = copy.deepcopy(_json_get(document, operation.source))
    return _json_add(document, operation.path, value)


def _op_test(document: _Document, operation: _JsonOperation) -> _Document:
    if not _json_equal(_json_get(document, operation.path), operation.value):
        raise _NotApplicable("the test failed: the value differs")
    return document


_JSON_APPLY: dict[str, Callable[[_Document, _JsonOperation], _Document]] = {
    "add": _op_add,
    "remove": _op_remove,
    "replace": _op_replace,
    "move": _op_move,
    "copy": _op_copy,
    "test": _op_test,
}


# --- Element definitions (the R4 model tables of fhirpathpy) ---------------------------------

_R4 = models["r4"]
_PATH_TYPES: dict[str, str] = _R4["path2Type"]
_CHOICE_TYPES: dict[str, list[str]] = _R4["choiceTypePaths"]
_DEFINED_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
# Paths with children of their own: datatypes, resources and backbone elements.
_OWNERS = frozenset(path.rpartition(".")[0] for path in _PATH_TYPES)
# The datatypes a Parameters value[x] (so a patch value) may have, as JSON suffixes.
_VALUE_TYPES = frozenset(_CHOICE_TYPES["Parameters.parameter.value"])
_STRING_PRIMITIVES = frozenset(
    """Base64Binary Canonical Code Date DateTime Id Instant Markdown Oid String Time Uri Url
    Uuid""".split()
)
_INTEGER_PRIMITIVES = frozenset({"Integer", "PositiveInt", "UnsignedInt"})
_PRIMITIVES = _STRING_PRIMITIVES | _INTEGER_PRIMITIVES | {"Boolean", "Decimal"}
_ANONYMOUS = "BackboneElement"  # the type of a backbone (or other unnamed) element

# Elements that repeat wherever R4 defines them: in every resource, backbone element and datatype.
_ALWAYS_REPEATING = frozenset(
    """addresses adjudication agent answer attributeEstimate benefit careTeam characteristic
    communication concept contained coverageArea daysOfWeek designation diagnosis editor endorser
    entry eventHistory extension filter goal group ingredient input instantiates insurance library
    modifierExtension note noteNumber parameter participant policy processNote programCode related
    relatedArtifact relatesTo relevantHistory replaces reviewer section securityLabel
    securityLabelNumber serviceCategory specialty subDetail subSite supportingInfo telecom udi
    useContext""".split()
)

# The other repeating elements, by the path that defines their owner, for the general-purpose
# datatypes and the resources this server centres on (SDOH Clinical Care and the referral
# workflow). Elsewhere only _ALWAYS_REPEATING is known. The tests check both tables against the
# R4B models.
_REPEATING: dict[str, frozenset[str]] = {
    owner: frozenset(names.split())
    for owner, names in {
        "Address": "line",
        "CodeableConcept": "coding",
        "HumanName": "given prefix suffix",
        "Meta": "profile security tag",
        "Signature": "type",
        "Timing": "event",
        "Timing.repeat": "dayOfWeek timeOfDay when",
        "Contributor": "contact",
        "DataRequirement": "codeFilter dateFilter mustSupport profile sort",
        "DataRequirement.codeFilter": "code",
        "TriggerDefinition": "data",
        "Dosage": "additionalInstruction doseAndRate",
        "Patient": "address contact generalPractitioner identifier link name photo",
        "Patient.contact": "relationship",
        "Observation": "basedOn category component derivedFrom focus hasMember identifier "
        "interpretation partOf performer referenceRange",
        "Observation.component": "interpretation referenceRange",
        "Observation.referenceRange": "appliesTo",
        "Condition": "bodySite category evidence identifier stage",
        "Condition.evidence": "code detail",
        "Condition.stage": "assessment",
        "ServiceRequest": "basedOn bodySite category identifier instantiatesCanonical "
        "instantiatesUri locationCode locationReference orderDetail performer reasonCode "
        "reasonReference specimen",
        "Task": "basedOn identifier output partOf performerType",
        "Task.restriction": "recipient",
        "Consent": "category identifier organization performer verification",
        "Consent.provision": "action actor class code data provision purpose",
        "QuestionnaireResponse": "basedOn item partOf",
        "QuestionnaireResponse.item": "item",
        "QuestionnaireResponse.item.answer": "item",
        "Questionnaire": "code contact derivedFrom identifier item jurisdiction subjectType",
        "Questionnaire.item": "answerOption code enableWhen initial item",
        "Organization": "address alias contact endpoint identifier type",
        "Location": "alias endpoint hoursOfOperation identifier type",
        "HealthcareService": "availableTime category eligibility endpoint identifier location "
        "notAvailable program referralMethod serviceProvisionCode type",
        "Group": "identifier member",
        "RelatedPerson": "address identifier name photo relationship",
        "Coverage": "class contract costToBeneficiary identifier payor",
        "Coverage.costToBeneficiary": "exception",
        "Goal": "category identifier outcomeCode outcomeReference target",
        "Procedure": "basedOn bodySite complication complicationDetail focalDevice followUp "
        "identifier instantiatesCanonical instantiatesUri partOf performer reasonCode "
        "reasonReference report usedCode usedReference",
        "Practitioner": "address identifier name photo qualification",
        "Practitioner.qualification": "identifier",
        "PractitionerRole": "availableTime code endpoint healthcareService identifier location "
        "notAvailable",
        "Encounter": "account appointment basedOn classHistory episodeOfCare identifier location "
        "reasonCode reasonReference statusHistory type",
        "Encounter.hospitalization": "dietPreference specialArrangement specialCourtesy",
        "Encounter.participant": "type",
        "CarePlan": "activity basedOn category contributor identifier instantiatesCanonical "
        "instantiatesUri partOf",
        "CarePlan.activity": "outcomeCodeableConcept outcomeReference progress",
        "CarePlan.activity.detail": "instantiatesCanonical instantiatesUri performer reasonCode "
        "reasonReference",
        "CareTeam": "category identifier managingOrganization reasonCode reasonReference",
        "CareTeam.participant": "role",
        "Communication": "about basedOn category identifier inResponseTo instantiatesCanonical "
        "instantiatesUri medium partOf payload reasonCode reasonReference recipient",
        "CommunicationRequest": "about basedOn category identifier medium payload reasonCode "
        "reasonReference recipient",
        "DocumentReference": "author category content identifier",
        "DocumentReference.context": "encounter event",
        "EpisodeOfCare": "account identifier referralRequest statusHistory team type",
        "Provenance": "entity reason signature target",
        "Provenance.agent": "role",
        "Parameters.parameter": "part",
    }.items()
}


@dataclass(frozen=True, slots=True)
class _Element:
    """What the R4 model tables say about one element, from its owner's definition path."""

    path: str | None  # its definition path ("Patient.contact"), None when not known
    type_name: str | None  # "HumanName", "string", "Resource", _ANONYMOUS; None for a choice
    choice_types: tuple[str, ...] = ()  # the JSON suffixes of a choice element (value[x])

    def type_of(self, suffix: str | None, value: Any) -> str | None:
        """The type of one value: the choice's suffix, the contained resource's type, ..."""
        if suffix is not None:
            return _type_name(suffix)
        if self.type_name == "Resource":
            resource_type = value.get("resourceType") if isinstance(value, dict) else None
            return resource_type if isinstance(resource_type, str) else None
        return self.type_name

    def children_at(self, suffix: str | None, value: Any) -> str | None:
        """The definition path of one value's own children ("HumanName", "Patient.contact")."""
        if self.type_name == _ANONYMOUS and suffix is None:
            return self.path
        return self.type_of(suffix, value)


_UNKNOWN = _Element(None, None)


def _type_name(suffix: str) -> str:
    """The FHIR type of a JSON suffix: ``DateTime`` is ``dateTime``, ``Quantity`` stays."""
    return suffix[0].lower() + suffix[1:] if suffix in _PRIMITIVES else suffix


def _describe(owner: str | None, name: str) -> _Element:
    if owner is None:
        return _UNKNOWN
    path = f"{owner}.{name}"
    path = _DEFINED_ELSEWHERE.get(path, path)
    if path in _PATH_TYPES:
        return _Element(path, _PATH_TYPES[path])
    if path in _CHOICE_TYPES:
        return _Element(path, None, tuple(_CHOICE_TYPES[path]))
    if path in _OWNERS:
        return _Element(path, _ANONYMOUS)
    return _UNKNOWN


def _repeats(owner: str | None, name: str) -> bool:
    return name in _ALWAYS_REPEATING or name in _REPEATING.get(owner or "", frozenset())


def is_repeating(element_path: str) -> bool:
    """Whether the element at a definition path may repeat (max cardinality ``*``).

    ``element_path`` starts with a resource or datatype name: ``Patient.name``,
    ``HumanName.given``, ``Patient.contact.telecom``. Exact for the datatypes and the resources
    in the tables above; elsewhere only the elements that repeat everywhere are known.
    """
    first, *middle, name = element_path.split(".")
    owner: str | None = first
    for step in middle:
        owner = _describe(owner, step).children_at(None, None)
    return _repeats(owner, name)


# --- FHIRPath Patch: paths -------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|`[^`]+`")
_INDEXER = re.compile(r"\[\s*([0-9]+)\s*\]")
_TYPE_SPECIFIER = re.compile(r"\s*(?:FHIR\.)?([A-Za-z][A-Za-z0-9_]*)\s*")
_ELEMENT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


@dataclass(frozen=True, slots=True)
class _Step:
    kind: str  # "member", "index", "first", "last", "where" or "ofType"
    argument: str = ""


@dataclass(frozen=True, slots=True)
class _Node:
    """One element a path selects: ``parent.value[key]``, or ``[key][index]`` when it repeats."""

    value: Any
    parent: _Node | None  # None for the resource itself
    key: str  # the JSON property ("valueQuantity" for the element "value")
    index: int | None
    name: str  # the element name as FHIRPath sees it ("value")
    element: _Element
    definition: str | None  # where this value's own children are defined
    type_name: str | None


def _parse_path(text: str) -> tuple[_Step, ...]:
    """A patch path as steps (fhirpatch.html, "The FHIRPath statement must return a single
    element"): element names, ``[n]``, ``first()``, ``last()``, ``where()``, ``ofType()``."""
    text = text.strip()
    steps: list[_Step] = []
    position = 0
    while position < len(text):
        indexer = _INDEXER.match(text, position)
        if indexer and steps:
            steps.append(_Step("index", indexer.group(1)))
            position = indexer.end()
            continue
        if steps:
            if text[position] != ".":
                raise _Malformed(f"unexpected character at position {position} of the path")
            position += 1
        name = _NAME.match(text, position)
        if name is None:
            raise _Malformed(f"expected an element name at position {position} of the path")
        position = name.end()
        identifier = name.group().strip("`")
        if text.startswith("(", position):
            argument, position = _call_argument(text, position)
            steps.append(_function_step(identifier, argument))
        else:
            steps.append(_Step("member", identifier))
    if not steps:
        raise _Malformed("the path is empty")
    return tuple(steps)


def _call_argument(text: str, opening: int) -> tuple[str, int]:
    """The text between the parenthesis at ``opening`` and its match, and the next position."""
    depth, quote, position = 0, "", opening
    while position < len(text):
        char = text[position]
        if quote:
            if char == "\\":
                position += 1
            elif char == quote:
                quote = ""
        elif char in "'`":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return text[opening + 1 : position], position + 1
        position += 1
    raise _Malformed("unbalanced parentheses or quotes in the path")


def _function_step(name: str, argument: str) -> _Step:
    if name in ("first", "last"):
        if argument.strip():
            raise _Malformed(f"{name}() takes no argument")
        return _Step(name)
    if name == "where":
        if not argument.strip():
            raise _Malformed("where() needs a criterion")
        return _Step("where", argument)
    if name == "ofType":
        specifier = _TYPE_SPECIFIER.fullmatch(argument)
        if specifier is None:
            raise _Malformed("ofType() needs a type name")
        return _Step("ofType", specifier.group(1))
    raise _Malformed(f"the function {name[:50]}() is not supported in patch paths")


def _root(resource: dict[str, Any]) -> _Node:
    resource_type = resource.get("resourceType")
    definition = resource_type if isinstance(resource_type, str) else None
    return _Node(resource, None, "", None, definition or "", _UNKNOWN, definition, definition)


def _relative(steps: tuple[_Step, ...], root: _Node) -> tuple[_Step, ...]:
    """The steps after a leading type name that names the resource's own type."""
    if steps and steps[0] == _Step("member", root.name) and root.definition is not None:
        return steps[1:]
    return steps


def _select(root: _Node, steps: tuple[_Step, ...]) -> list[_Node]:
    """The nodes that steps relative to the resource select."""
    nodes = [root]
    for step in steps:
        nodes = _apply_step(nodes, step)
    return nodes


def _apply_step(nodes: list[_Node], step: _Step) -> list[_Node]:
    match step.kind:
        case "member":
            return [child for node in nodes for child in _children(node, step.argument)]
        case "index":
            position = int(step.argument)
            return nodes[position : position + 1]
        case "first":
            return nodes[:1]
        case "last":
            return nodes[-1:]
        case "ofType":
            return [node for node in nodes if node.type_name == step.argument]
        case _:
            return [node for node in nodes if _matches(node, step.argument)]


def _children(node: _Node, name: str) -> list[_Node]:
    if not isinstance(node.value, dict):
        return []
    element = _describe(node.definition, name)
    children = []
    for key, suffix in _keys(node.value, name, element, owner_known=node.definition is not None):
        value = node.value[key]
        items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
        for index, item in items:
            if item is None:
                continue  # a primitive array's gap for an extension-only entry
            definition = element.children_at(suffix, item)
            type_name = element.type_of(suffix, item)
            children.append(_Node(item, node, key, index, name, element, definition, type_name))
    return children


def _keys(
    container: dict[str, Any], name: str, element: _Element, *, owner_known: bool
) -> list[tuple[str, str | None]]:
    """The JSON properties holding element ``name``, with the choice suffix of each."""
    if name in container:
        return [(name, None)]
    suffixes = element.choice_types or (() if owner_known else tuple(_VALUE_TYPES))
    return [(name + suffix, suffix) for suffix in suffixes if name + suffix in container]


def _matches(node: _Node, criterion: str) -> bool:
    """Whether ``where(criterion)`` keeps the node, evaluated by fhirpathpy on a copy of it."""
    expression = f"where({criterion}).exists()"
    path: str | dict[str, str] = expression
    if node.definition is not None:
        path = {"base": node.definition, "expression": expression}
    try:
        result = evaluate(copy.deepcopy(node.value), path, model=_R4)
    except Exception as exc:  # antlr4 and fhirpathpy raise bare Exceptions on odd input
        raise _Malformed("the where() criterion cannot be evaluated") from exc
    return result == [True]


# --- FHIRPath Patch: the Parameters resource -------------------------------------------------

_REQUIRED_PARTS = {
    "add": ("path", "name", "value"),
    "insert": ("path", "value", "index"),
    "delete": ("path",),
    "replace": ("path", "value"),
    "move": ("path", "source", "destination"),
}
_PART_NAMES = frozenset({"type", "path", "name", "value", "index", "source", "destination"})
_STRING_KEYS = ("valueString", "valueCode")
_INTEGER_KEYS = ("valueInteger", "valueUnsignedInt", "valuePositiveInt")
_PART_METADATA = frozenset({"name", "id", "extension", "modifierExtension"})


@dataclass(frozen=True, slots=True)
class _Value:
    """A patch value: a value[x] (with its suffix), a resource, or parts naming its elements."""

    suffix: str | None  # "Quantity" for valueQuantity; None for a resource or parts
    content: Any  # the JSON of a value[x] or resource
    parts: tuple[tuple[str, _Value], ...] | None = None


@dataclass(frozen=True, slots=True)
class _FhirPathOperation:
    number: int
    kind: str  # add, insert, delete, replace or move
    path_text: str
    steps: tuple[_Step, ...]
    name: str = ""
    value: _Value | None = None
    index: int = 0
    source: int = 0
    destination: int = 0

    @property
    def label(self) -> str:
        return _label("FHIRPath Patch", self.number, self.kind, self.path_text)

    @property
    def new_value(self) -> _Value:
        """The value of add, insert and replace (parsing made sure they have one)."""
        if self.value is None:
            raise _Malformed(f"{self.kind} needs a value")
        return self.value


def apply_fhirpath_patch(resource: dict[str, Any], parameters: Any) -> dict[str, Any]:
    """Apply a FHIRPath Patch (a Parameters resource, fhirpatch.html) to a copy of ``resource``.

    The form of every operation (parts, path syntax, value types) is checked before any is
    applied; a where() criterion that fhirpathpy cannot evaluate is also a 400. ``add``,
    ``replace`` and the list of ``insert`` and ``move`` need a path that matches one element
    (422 otherwise); ``delete`` of a path that matches nothing changes nothing.
    """
    operations = _parse_parameters(parameters)
    patched = copy.deepcopy(resource)
    for operation in operations:
        try:
            _FHIRPATH_APPLY[operation.kind](_root(patched), operation)
        except _Malformed as exc:
            raise InvalidRequest(f"{operation.label}: {exc}") from None
        except _NotApplicable as exc:
            raise UnprocessableEntity(f"{operation.label}: {exc}") from None
    return patched


def _parse_parameters(parameters: Any) -> list[_FhirPathOperation]:
    if not isinstance(parameters, dict) or parameters.get("resourceType") != "Parameters":
        raise InvalidRequest("a FHIRPath Patch must be a Parameters resource")
    entries = parameters.get("parameter", [])
    if not isinstance(entries, list):
        raise InvalidRequest("Parameters.parameter must be an array")
    return [_parse_operation(number, entry) for number, entry in enumerate(entries)]


def _parse_operation(number: int, entry: Any) -> _FhirPathOperation:
    prefix = f"FHIRPath Patch operation {number}"
    try:
        parts = _parts_by_name(entry)
        kind = _string_part(parts, "type")
        if kind not in _REQUIRED_PARTS:
            raise _Malformed(f"'type' must be one of {' | '.join(_REQUIRED_PARTS)}")
        missing = [name for name in _REQUIRED_PARTS[kind] if name not in parts]
        if missing:
            raise _Malformed(f"{kind} needs the part(s) {', '.join(missing)}")
        path_text = _string_part(parts, "path")
        prefix = _label("FHIRPath Patch", number, kind, path_text)
        return _operation(number, kind, path_text, parts)
    except _Malformed as exc:
        raise InvalidRequest(f"{prefix}: {exc}") from None


def _operation(
    number: int, kind: str, path_text: str, parts: dict[str, dict[str, Any]]
) -> _FhirPathOperation:
    steps = _parse_path(path_text)
    if kind in ("insert", "move") and steps[-1].kind != "member":
        raise _Malformed(f"the path of {kind} must end with the name of a repeating element")
    name = _string_part(parts, "name") if kind == "add" else ""
    if kind == "add" and not _ELEMENT_NAME.fullmatch(name):
        raise _Malformed("'name' must be an element name")
    value = _parse_value(parts["value"]) if "value" in _REQUIRED_PARTS[kind] else None
    return _FhirPathOperation(
        number,
        kind,
        path_text,
        steps,
        name=name,
        value=value,
        index=_integer_part(parts, "index") if kind == "insert" else 0,
        source=_integer_part(parts, "source") if kind == "move" else 0,
        destination=_integer_part(parts, "destination") if kind == "move" else 0,
    )


def _parts_by_name(entry: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(entry, dict) or entry.get("name") != "operation":
        raise _Malformed("each parameter must be named 'operation'")
    parts = entry.get("part")
    if not isinstance(parts, list):
        raise _Malformed("an operation needs its parts")
    by_name: dict[str, dict[str, Any]] = {}
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or name not in _PART_NAMES:
            raise _Malformed(f"each part must be named one of {', '.join(sorted(_PART_NAMES))}")
        if name in by_name:
            raise _Malformed(f"the part '{name}' appears more than once")
        by_name[name] = part
    return by_name


def _string_part(parts: dict[str, dict[str, Any]], name: str) -> str:
    part = parts.get(name, {})
    values = [part[key] for key in _STRING_KEYS if key in part]
    if len(values) != 1 or not isinstance(values[0], str):
        raise _Malformed(f"the part '{name}' needs a valueString or valueCode")
    return values[0]


def _integer_part(parts: dict[str, dict[str, Any]], name: str) -> int:
    part = parts[name]
    values = [part[key] for key in _INTEGER_KEYS if key in part]
    if len(values) != 1 or not _is_integer(values[0]) or values[0] < 0:
        raise _Malformed(f"the part '{name}' needs a valueInteger of 0 or more")
    value: int = values[0]
    return value


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_value(part: dict[str, Any]) -> _Value:
    """A ``value`` part: one value[x], a ``resource``, or ``part``s named by element."""
    choices = [key for key in part if key not in _PART_METADATA]
    if len(choices) != 1:
        raise _Malformed("a value needs exactly one of value[x], resource or part")
    key = choices[0]
    if key == "part":
        return _Value(None, None, _parse_value_parts(part["part"]))
    if key == "resource":
        resource = part["resource"]
        if not isinstance(resource, dict) or not isinstance(resource.get("resourceType"), str):
            raise _Malformed("a resource value must be a resource")
        return _Value(None, resource)
    suffix = key.removeprefix("value")
    if not key.startswith("value") or suffix not in _VALUE_TYPES:
        raise _Malformed("a value needs exactly one of value[x], resource or part")
    if not _has_json_shape(suffix, part[key]):
        raise _Malformed(f"the value of {key} has the wrong JSON type")
    return _Value(suffix, part[key])


def _parse_value_parts(parts: Any) -> tuple[tuple[str, _Value], ...]:
    if not isinstance(parts, list) or not parts:
        raise _Malformed("a value's parts must be a non-empty array")
    parsed = []
    for part in parts:
        name = part.get("name") if isinstance(part, dict) else None
        if not isinstance(name, str) or not _ELEMENT_NAME.fullmatch(name):
            raise _Malformed("each part of a value must be named by an element name")
        parsed.append((name, _parse_value(part)))
    return tuple(parsed)


def _has_json_shape(suffix: str, value: Any) -> bool:
    """Whether a value[x] has the JSON type R4 gives its datatype (json.html#primitive)."""
    if suffix == "Boolean":
        return isinstance(value, bool)
    if suffix in _INTEGER_PRIMITIVES:
        return _is_integer(value)
    if suffix == "Decimal":
        return _is_integer(value) or (isinstance(value, float) and math.isfinite(value))
    if suffix in _STRING_PRIMITIVES:
        return isinstance(value, str)
    return isinstance(value, dict)


# --- FHIRPath Patch: the operations ----------------------------------------------------------


def _single(nodes: list[_Node], kind: str) -> _Node:
    if not nodes:
        raise _NotApplicable("the path matches no element")
    if len(nodes) > 1:
        raise _NotApplicable(f"the path matches {len(nodes)} elements; {kind} needs one")
    return nodes[0]


def _build(value: _Value, definition: str | None) -> Any:
    """The JSON of a patch value, its parts shaped by the definition at ``definition``."""
    if value.parts is None:
        return copy.deepcopy(value.content)
    built: dict[str, list[Any]] = {}
    names: dict[str, str] = {}
    for name, child in value.parts:
        element = _describe(definition, name)
        key = _json_key(element, name, child)
        definition_of_child = element.children_at(child.suffix, child.content)
        built.setdefault(key, []).append(_build(child, definition_of_child))
        names[key] = name
    return {
        key: items if len(items) > 1 or _repeats(definition, names[key]) else items[0]
        for key, items in built.items()
    }


def _children_at(element: _Element, value: _Value) -> str | None:
    return element.children_at(value.suffix, value.content)


def _json_key(element: _Element, name: str, value: _Value) -> str:
    """The JSON property: a choice element's name takes the value's type (``valueQuantity``)."""
    if element.choice_types and value.suffix is not None:
        return name + value.suffix
    return name


def _companion(container: dict[str, Any], key: str) -> list[Any] | None:
    """A primitive array's ``_key`` array (ids and extensions), kept aligned with it."""
    companion = container.get(f"_{key}")
    return companion if isinstance(companion, list) else None


def _apply_add(root: _Node, operation: _FhirPathOperation) -> None:
    """add: append ``name`` with ``value`` to the one element at ``path``."""
    value = operation.new_value
    target = _single(_select(root, _relative(operation.steps, root)), "add")
    if not isinstance(target.value, dict):
        raise _NotApplicable("the element at the path is a primitive value")
    element = _describe(target.definition, operation.name)
    if element.choice_types and value.suffix is None:
        raise _NotApplicable("a choice element needs a value[x] that names its type")
    key = _json_key(element, operation.name, value)
    content = _build(value, _children_at(element, value))
    container = target.value
    if isinstance(container.get(key), list):
        container[key].append(content)
        if (companion := _companion(container, key)) is not None:
            companion.append(None)
    elif _keys(container, operation.name, element, owner_known=target.definition is not None):
        raise _NotApplicable(f"the element '{operation.name}' exists and does not repeat")
    elif _repeats(target.definition, operation.name):
        container[key] = [content]
    else:
        container[key] = content


def _list_at(root: _Node, operation: _FhirPathOperation) -> tuple[_Node, str]:
    """The one element owning the list at ``path`` (insert, move), and the list's name."""
    steps = _relative(operation.steps, root)
    if not steps or steps[-1].kind != "member":
        raise _Malformed(f"the path of {operation.kind} must name a repeating element")
    owner = _single(_select(root, steps[:-1]), operation.kind)
    if not isinstance(owner.value, dict):
        raise _NotApplicable("the element at the path is a primitive value")
    name = steps[-1].argument
    is_choice = bool(_describe(owner.definition, name).choice_types)
    if is_choice or (name in owner.value and not isinstance(owner.value[name], list)):
        raise _NotApplicable(f"the element '{name}' does not repeat")
    return owner, name


def _apply_insert(root: _Node, operation: _FhirPathOperation) -> None:
    """insert: put ``value`` into the list at ``path`` at ``index`` (0 to its length)."""
    value = operation.new_value
    owner, name = _list_at(root, operation)
    values = owner.value.get(name, [])
    if operation.index > len(values):
        raise _NotApplicable(f"index {operation.index} is past the end of the list")
    element = _describe(owner.definition, name)
    values.insert(operation.index, _build(value, _children_at(element, value)))
    owner.value[name] = values
    companion = _companion(owner.value, name)
    if companion is not None and operation.index <= len(companion):
        companion.insert(operation.index, None)


def _apply_move(root: _Node, operation: _FhirPathOperation) -> None:
    """move: move the list item at ``source`` to ``destination`` within the list at ``path``."""
    owner, name = _list_at(root, operation)
    values = owner.value.get(name, [])
    if max(operation.source, operation.destination) >= len(values):
        raise _NotApplicable("source or destination is past the end of the list")
    arrays = [values]
    companion = _companion(owner.value, name)
    if companion is not None and len(companion) == len(values):
        arrays.append(companion)
    for array in arrays:
        array.insert(operation.destination, array.pop(operation.source))


def _apply_delete(root: _Node, operation: _FhirPathOperation) -> None:
    """delete: remove the one element at ``path``; a path that matches nothing is a no-op."""
    nodes = _select(root, _relative(operation.steps, root))
    if not nodes:
        return
    node = _single(nodes, "delete")
    if node.parent is None:
        raise _NotApplicable("the resource itself cannot be deleted by a patch")
    _remove(node, node.parent)


def _remove(node: _Node, parent: _Node) -> None:
    """Remove a node, and any parent that it leaves empty (R4 JSON has no empty objects)."""
    owner = parent.value
    companion = _companion(owner, node.key)
    if node.index is None:
        owner.pop(node.key)
        owner.pop(f"_{node.key}", None)
    else:
        owner[node.key].pop(node.index)
        if companion is not None and node.index < len(companion):
            companion.pop(node.index)
        if not owner[node.key]:
            owner.pop(node.key)
        if companion is not None and all(entry is None for entry in companion):
            owner.pop(f"_{node.key}")
    if not owner and parent.parent is not None:
        _remove(parent, parent.parent)


def _apply_replace(root: _Node, operation: _FhirPathOperation) -> None:
    """replace: put ``value`` in place of the one element at ``path``."""
    value = operation.new_value
    node = _single(_select(root, _relative(operation.steps, root)), "replace")
    if node.parent is None:
        raise _NotApplicable("the resource itself cannot be replaced by a patch")
    owner = node.parent.value
    content = _build(value, _children_at(node.element, value))
    if node.index is not None:
        owner[node.key][node.index] = content
        return
    key = node.key
    if node.key != node.name and value.suffix is not None:
        key = node.name + value.suffix  # a choice element may change its type
    if key != node.key:
        owner.pop(node.key)
        owner.pop(f"_{node.key}", None)
    owner[key] = content


_FHIRPATH_APPLY: dict[str, Callable[[_Node, _FhirPathOperation], None]] = {
    "add": _apply_add,
    "insert": _apply_insert,
    "delete": _apply_delete,
    "replace": _apply_replace,
    "move": _apply_move,
}
