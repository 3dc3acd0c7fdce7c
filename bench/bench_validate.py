"""Profile validation benchmark: resources/s per core, and what it adds to a write.

Validates the synthetic SDoH population (Patients, Organizations, Practitioners, SDOHCC
Observations, Conditions, Goals, ServiceRequests, referral Tasks, Procedures, Consents, ...)
against the profiles each claims, in this process on one core, and prints:

- profile validation alone (``Validator.validate`` per claimed profile), resources/s;
- the whole write-time check (``Conformance.check_write``: finding the profiles, validating,
  turning issues into errors), in microseconds a resource, beside the R4 base check that every
  write already pays (``check_resource``, the models);
- the rate by resource type, and how many resources had errors (the synthetic data conform, so
  any error is a bug to look at).

Run from the repository root: ``.venv/bin/python bench/bench_validate.py --resources 20000``.
A script run by hand, not a test.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fhir_server.conformance import Conformance  # noqa: E402
from fhir_server.core.errors import FhirError  # noqa: E402
from fhir_server.ingest.synthetic import generate_population  # noqa: E402
from fhir_server.storage.repository import check_resource  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3, help="best of this many passes")
    options = parser.parse_args()

    resources: list[dict[str, Any]] = list(
        itertools.islice(
            generate_population(options.resources // 11 + 10, seed=5), options.resources
        )
    )
    started = time.perf_counter()
    conformance = Conformance.bundled()
    claimed = [(r, conformance.profiles_for(r["resourceType"], r)) for r in resources]
    for resource, urls in claimed[:200]:  # compile every profile used before timing
        for url in urls:
            if conformance.profiles.known(url):
                conformance.validator.validate(resource, url)
    print(f"loaded and compiled the bundled profiles in {time.perf_counter() - started:.2f} s")
    with_profile = sum(1 for _, urls in claimed if urls)
    print(f"{len(resources):,} resources, {with_profile:,} claiming a profile")

    gc.collect()
    gc.freeze()

    def best(run: Any) -> float:
        times = []
        for _ in range(options.rounds):
            begun = time.perf_counter()
            run()
            times.append(time.perf_counter() - begun)
        return min(times)

    def validate_all() -> None:
        for resource, urls in claimed:
            for url in urls:
                conformance.validator.validate(resource, url)

    def check_all() -> None:
        for resource in resources:
            try:
                conformance.check_write(resource["resourceType"], resource)
            except FhirError:
                pass

    def base_all() -> None:
        for resource in resources:
            check_resource(resource["resourceType"], resource)

    n = len(resources)
    validating = best(validate_all)
    checking = best(check_all)
    base = best(base_all)
    print(
        f"profile validation: {n / validating:,.0f} resources/s on one core"
        f" ({validating / n * 1e6:,.0f} us a resource)"
    )
    print(
        f"write-time profile check: {checking / n * 1e6:,.0f} us a resource;"
        f" the R4 base check every write already pays: {base / n * 1e6:,.0f} us"
    )

    by_type: dict[str, float] = defaultdict(float)
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    first_error: dict[str, str] = {}
    for resource, urls in claimed:
        kind = resource["resourceType"]
        begun = time.perf_counter()
        for url in urls:
            issues = conformance.validator.validate(resource, url)
            bad = [i for i in issues if i.severity in ("error", "fatal")]
            if bad:
                errors[kind] += 1
                first_error.setdefault(
                    kind, f"{url.rsplit('/', 1)[-1]}: {bad[0].expression} {bad[0].message}"
                )
        by_type[kind] += time.perf_counter() - begun
        counts[kind] += 1
    print("by type (one pass): resources, resources/s, with errors")
    for kind in sorted(counts):
        rate = counts[kind] / by_type[kind] if by_type[kind] else float("inf")
        print(f"  {kind:<20} {counts[kind]:>7,} {rate:>10,.0f}/s {errors[kind]:>7,}")
    for kind, text in sorted(first_error.items()):
        print(f"  first error, {kind}: {text}")


if __name__ == "__main__":
    main()
