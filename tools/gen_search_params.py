"""Generate the search-parameter registry data from the FHIR R4 SearchParameter Bundle.

Spec: http://hl7.org/fhir/R4/searchparameter-registry.html

Writes ``fhir_server/search/data/search_parameters.json``. Keeps the core R4 parameters only
(url under http://hl7.org/fhir/SearchParameter/; the shared copy also carries a few
project-specific ones from the Blaze server, which are skipped and listed under
``skippedNonCore``), and of those the facts only: code, base, type, expression, target,
comparator, modifier, component, url, multipleOr/multipleAnd. One line per (base, code), with
each expression restricted to its base's part of the R4 union. Expressions that fhirpathpy
cannot compile are left out and listed under ``excluded`` with the reason; functions used that
fhirpathpy has no built-in for are listed under ``needsFunctions``. Usage (from the repo root)::

    python tools/gen_search_params.py [INPUT] [--output PATH] [--include-non-core]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_INPUT = REPO_ROOT / ".." / "shared" / "fhir-r4" / "search-parameters.json"
DEFAULT_OUTPUT = REPO_ROOT / "fhir_server" / "search" / "data" / "search_parameters.json"
COMMON_BASES = frozenset({"Resource", "DomainResource"})
CORE_URL_PREFIX = "http://hl7.org/fhir/SearchParameter/"


def _import_helpers() -> Any:
    """The union splitter lives in the registry so the loader and generator agree."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    from fhir_server.search import registry

    return registry


def restrict(expression: str, base: str, multi_base: bool) -> str:
    """The part of a (possibly multi-base) union expression that applies to ``base``."""
    if not multi_base:
        return expression
    registry = _import_helpers()
    parts = registry.split_union(expression)
    kept = [p for p in parts if registry.expression_root(p) == base]
    return " | ".join(kept) if kept else expression


def unsupported_functions(expression: str) -> list[str]:
    """Functions used by ``expression`` that fhirpathpy has no built-in for (e.g. ``resolve``)."""
    from fhirpathpy.engine.invocations import invocation_registry
    from fhirpathpy.parser import parse

    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "Functn":
                name = node["children"][0]["text"]
                if name not in invocation_registry:
                    found.add(name)
            for child in node.get("children", ()):
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(parse(expression))
    return sorted(found)


def compile_error(expression: str) -> str | None:
    """``None`` if fhirpathpy compiles ``expression`` against the R4 model, else the error."""
    from fhirpathpy import compile as fp_compile
    from fhirpathpy.models import models

    try:
        fp_compile(expression, model=models["r4"])
    except Exception as exc:  # fhirpathpy raises bare Exceptions from its ANTLR parser
        return f"{type(exc).__name__}: {exc}".strip()
    return None


def build(bundle: dict[str, Any], include_non_core: bool = False) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    excluded: list[dict[str, Any]] = []
    skipped: list[str] = []
    needs: dict[str, list[str]] = {}
    for entry in bundle["entry"]:
        sp = entry["resource"]
        if not include_non_core and not sp["url"].startswith(CORE_URL_PREFIX):
            skipped.append(sp["url"])
            continue
        bases: list[str] = sp["base"]
        for base in bases:
            row: dict[str, Any] = {"base": base, "code": sp["code"], "type": sp["type"]}
            expression = sp.get("expression")
            if expression is not None:
                row["expression"] = restrict(expression, base, len(bases) > 1)
            row["url"] = sp["url"]
            if sp.get("target"):
                row["target"] = sorted(sp["target"])
            for key in ("modifier", "comparator"):
                if sp.get(key):
                    row[key] = list(sp[key])
            if sp.get("component"):
                row["component"] = [
                    {"definition": c["definition"], "expression": c["expression"]}
                    for c in sp["component"]
                ]
            for key in ("multipleOr", "multipleAnd"):
                if key in sp:
                    row[key] = sp[key]

            expressions = [row.get("expression")] + [
                c["expression"] for c in row.get("component", [])
            ]
            errors = [f"{e!r}: {err}" for e in expressions if e and (err := compile_error(e))]
            if errors:
                excluded.append({**row, "reason": "; ".join(errors)})
                continue
            missing = sorted({f for e in expressions if e for f in unsupported_functions(e)})
            for name in missing:
                needs.setdefault(name, []).append(f"{base}.{sp['code']}")
            params.append(row)

    params.sort(key=lambda r: (r["base"], r["code"]))
    excluded.sort(key=lambda r: (r["base"], r["code"]))
    return {
        "fhirVersion": "4.0.1",
        "source": "http://hl7.org/fhir/R4/search-parameters.json (facts only)",
        "generator": "tools/gen_search_params.py",
        "resourceTypes": _resource_types(),
        "skippedNonCore": sorted(skipped),
        "needsFunctions": {name: sorted(where) for name, where in sorted(needs.items())},
        "excluded": excluded,
        "params": params,
    }


def _resource_types() -> dict[str, str]:
    """Every R4 resource type and whether it is a DomainResource (from fhirpathpy's R4 model)."""
    from fhirpathpy.models import models

    parents: dict[str, str] = models["r4"]["type2Parent"]
    return {
        name: parent
        for name, parent in sorted(parents.items())
        if parent in COMMON_BASES and name != "DomainResource"
    }


def dumps(data: dict[str, Any]) -> str:
    """Readable JSON with one parameter (or exclusion) per line; deterministic."""

    def line(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))

    out = ["{"]
    keys = list(data)
    for i, key in enumerate(keys):
        comma = "," if i < len(keys) - 1 else ""
        value = data[key]
        if isinstance(value, list):
            if not value:
                out.append(f'  "{key}": []{comma}')
                continue
            out.append(f'  "{key}": [')
            out.extend(
                f"    {line(v)}{',' if j < len(value) - 1 else ''}" for j, v in enumerate(value)
            )
            out.append(f"  ]{comma}")
        else:
            out.append(f'  "{key}": {line(value)}{comma}')
    out.append("}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", nargs="?", type=Path, default=DEFAULT_INPUT)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--include-non-core",
        action="store_true",
        help=f"also keep SearchParameters whose url is not under {CORE_URL_PREFIX}",
    )
    args = parser.parse_args(argv)

    bundle = json.loads(args.input.read_text(encoding="utf-8"))
    data = build(bundle, include_non_core=args.include_non_core)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(dumps(data), encoding="utf-8")

    n_common = sum(1 for p in data["params"] if p["base"] in COMMON_BASES)
    print(  # noqa: T201
        f"{len(bundle['entry'])} SearchParameters -> {len(data['params'])} (base, code) rows "
        f"({n_common} common), {len(data['excluded'])} excluded; wrote {args.output}"
    )
    for url in data["skippedNonCore"]:
        print(f"  skipped non-core {url}")  # noqa: T201
    for row in data["excluded"]:
        print(f"  excluded {row['base']}.{row['code']}: {row['reason']}")  # noqa: T201
    for name, where in data["needsFunctions"].items():
        print(f"  needs {name}() (not built into fhirpathpy): {len(where)} params")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
