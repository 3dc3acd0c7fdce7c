"""Measure search-index extraction throughput over the SDOHCC example resources.

Spec: http://hl7.org/fhir/R4/search.html. Run from the repository root:
``PYTHONPATH=. python bench/bench_extract.py [seconds]``.
Prints resources per second for the fast path and for fhirpathpy alone, and the slowest types.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from fhir_server.search.extract import IndexExtractor
from fhir_server.search.registry import SearchRegistry

EXAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "conformance" / "sdohcc"
EXAMPLES = EXAMPLES / "examples"


def rate(work: Callable[[], Any], count: int, seconds: float) -> float:
    """Calls per second of ``work`` (which handles ``count`` resources), over ``seconds``."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        work()
        done += count
    return done / elapsed


def main(seconds: float) -> None:
    resources = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    if not resources:
        sys.exit(f"no examples at {EXAMPLES}")
    registry = SearchRegistry.load_default()
    params = [
        p for t in sorted(registry.all_resource_types()) for p in registry.for_type(t).values()
    ]
    start = time.perf_counter()
    fast = IndexExtractor(params)
    compile_ms = (time.perf_counter() - start) * 1000
    slow = IndexExtractor(params, fast_path=False)

    def run(extractor: IndexExtractor, group: list[dict[str, Any]]) -> Callable[[], None]:
        def work() -> None:
            for resource in group:
                extractor.extract(resource)

        return work

    rows = sum(
        len(getattr(fast.extract(r), k)) for r in resources for k in fast.extract(r).__slots__
    )
    print(f"{len(resources)} resources, {rows} rows, {len(params)} parameters")  # noqa: T201
    print(f"compile all R4 parameters: {compile_ms:.0f} ms")  # noqa: T201
    print(f"fast path:  {rate(run(fast, resources), len(resources), seconds):8.0f} resources/s")  # noqa: T201
    print(f"fhirpathpy: {rate(run(slow, resources), len(resources), seconds):8.0f} resources/s")  # noqa: T201
    per_type: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        per_type.setdefault(resource["resourceType"], []).append(resource)
    timings = []
    for name, group in per_type.items():
        per_second = rate(run(fast, group), len(group), seconds / 10)
        timings.append((1e6 / per_second, name))
    for micros, name in sorted(timings, reverse=True)[:6]:
        print(f"  {name:24} {micros:7.0f} us/resource")  # noqa: T201


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 3.0)
