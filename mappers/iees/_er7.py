"""ER7 (HL7 v2 "pipe and hat") text: normalising, splitting, escaping.

HL7 v2.5.1 chapter 2, §2.5-§2.7 (message construction, escape sequences). python-hl7 parses a
sample message in about 2 ms and hl7apy in about 25 ms (research/feeds.md §5, re-measured for
bench/bench_iees_parse.py); the profile needs well under 0.5 ms for parse, map and ACK, so the
hot path splits the text itself: a message becomes segments of fields of repetitions of
components (sub-components are not used by the profile and stay inside their component).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Delimiters", "Segment", "escape", "normalise", "split_message", "unescape"]


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The five encoding characters of MSH-1 and MSH-2."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"


_STANDARD_DELIMITERS = Delimiters()

# A field is a list of repetitions; a repetition is a list of components (raw, still escaped).
Field = list[list[str]]


@dataclass(slots=True)
class Segment:
    """One segment: its id and its fields, ``fields[n]`` being field n (``MSH``: MSH-n)."""

    name: str
    fields: list[str]
    delimiters: Delimiters
    _split: list[Field | None] | None = None

    def raw(self, number: int) -> str:
        """Field ``number`` as sent (escaped), or "" when absent."""
        return self.fields[number] if number < len(self.fields) else ""

    def field(self, number: int) -> Field:
        """Field ``number`` split into repetitions and components (cached: the mapping reads
        the same field once per component)."""
        cache = self._split
        if cache is None:
            cache = self._split = [None] * len(self.fields)
        if number >= len(cache):
            return []
        found = cache[number]
        if found is None:
            raw = self.fields[number]
            d = self.delimiters
            found = [rep.split(d.component) for rep in raw.split(d.repetition)] if raw else []
            cache[number] = found
        return found

    def value(self, number: int, component: int = 1, repetition: int = 1) -> str:
        """One component, unescaped ("" when absent); numbers are 1-based as in the spec."""
        fields = self.fields
        if number >= len(fields) or not fields[number]:
            return ""
        cache = self._split
        reps = cache[number] if cache is not None else None
        if reps is None:
            reps = self.field(number)
        if repetition > len(reps):
            return ""
        comps = reps[repetition - 1]
        if component > len(comps):
            return ""
        text = comps[component - 1]
        escape_char = self.delimiters.escape
        return unescape(text, self.delimiters) if escape_char in text else text


def normalise(text: str) -> str:
    """CRLF and LF to CR, trailing CRs stripped: without it both libraries (and this splitter)
    would see one segment and silently drop the rest (feeds/iees/README.md, line endings)."""
    return text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")


def split_message(text: str) -> list[Segment]:
    """Segments of a normalised message; the delimiters come from its MSH (or the standard
    ones when it has none: the caller refuses a message without MSH first)."""
    delimiters = _delimiters(text)
    result = []
    for line in text.split("\r"):
        if not line:
            continue
        parts = line.split(delimiters.field)
        if parts[0] == "MSH":
            # MSH-1 is the field separator itself, so MSH-n sits at parts[n - 1].
            parts = ["MSH", delimiters.field, *parts[1:]]
        result.append(Segment(parts[0], parts, delimiters))
    return result


def _delimiters(text: str) -> Delimiters:
    if len(text) < 8 or not text.startswith("MSH"):
        return Delimiters()
    chars = text[3:8]
    if len(set(chars)) != 5 or any(c.isalnum() or c in "\r" for c in chars):
        return Delimiters()
    return Delimiters(chars[0], chars[1], chars[2], chars[3], chars[4])


_HEX = re.compile(r"X(?:[0-9A-Fa-f]{2})+")
_UNSTORABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
_ESCAPES = {"F": "field", "S": "component", "T": "subcomponent", "R": "repetition", "E": "escape"}


def unescape(text: str, delimiters: Delimiters | None = None) -> str:
    """Resolve \\F\\ \\S\\ \\T\\ \\R\\ \\E\\ and \\Xhh..\\ (as UTF-8); other escapes
    (\\.br\\, \\H\\ ...), and hex that would decode to a character FHIR strings cannot
    hold (below U+0020 but tab, CR, LF), are kept as sent."""
    delimiters = delimiters or _STANDARD_DELIMITERS
    esc = delimiters.escape
    if esc not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        end = text.find(esc, i + 1) if ch == esc else -1
        if end != -1:
            body = text[i + 1 : end]
            name = _ESCAPES.get(body)
            if name is not None:
                out.append(getattr(delimiters, name))
                i = end + 1
                continue
            if _HEX.fullmatch(body):
                decoded = bytes.fromhex(body[1:]).decode("utf-8", "replace")
                if _UNSTORABLE.search(decoded) is None:
                    out.append(decoded)
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def escape(text: str) -> str:
    """Escape the standard delimiters in ``text`` for an ER7 field (the ACKs we write use the
    standard encoding characters). Control characters (CR, LF ...) become \\Xhh\\ so echoed
    text can never open a new segment."""
    if _SPECIAL.search(text) is None:
        return text
    text = (
        text.replace("\\", "\\E\\")
        .replace("|", "\\F\\")
        .replace("^", "\\S\\")
        .replace("&", "\\T\\")
        .replace("~", "\\R\\")
    )
    return _CONTROL.sub(lambda m: f"\\X{ord(m.group()):02X}\\", text)


_SPECIAL = re.compile("[|^~\\\\&\x00-\x1f\x7f]")
_CONTROL = re.compile("[\x00-\x1f\x7f]")
