"""The synthetic benchmark feeds map as the mappers read real ones, with only planted problems."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from fhir_server.ingest.synthetic_feeds import (
    HsdsCounts,
    iter_iees_messages,
    main,
    write_hsds_directory,
    write_iees_file,
)
from mappers.hsds import Bounds, Feed, MappingResult, map_directory
from mappers.hsds.crosswalk import SDOHCC_SYSTEM
from mappers.iees import ParsedMessage, ack, check_structure, map_message, parse

KENTUCKY = Bounds(south=36.49, west=-89.58, north=39.15, east=-81.96)
LOUISVILLE = (38.25, -85.76)


def _write(
    path: Path, services: int, *, seed: int, changed: float = 0.0, dropped: float = 0.0
) -> tuple[HsdsCounts, MappingResult]:
    counts = write_hsds_directory(path, services, seed=seed, changed=changed, dropped=dropped)
    return counts, map_directory(path, feed=Feed("bench", bounds=KENTUCKY))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[HsdsCounts, MappingResult]:
    return _write(tmp_path_factory.mktemp("hsds") / "base", 1500, seed=5)


def _hashes(result: MappingResult, resource_type: str) -> dict[str, str]:
    return {
        item.feed_id: item.content_hash
        for item in result.resources
        if item.resource_type == resource_type
    }


# --- HSDS ---------------------------------------------------------------------------------------


def test_directory_maps_to_the_written_counts(base: tuple[HsdsCounts, MappingResult]) -> None:
    counts, result = base
    assert result.summary()["resources"] == {
        "Organization": counts.organizations,
        "Location": counts.locations,
        "HealthcareService": counts.services,
    }
    assert counts.services == 1500
    assert 3 <= counts.services / counts.organizations <= 4
    assert counts.organizations <= counts.locations <= 3 * counts.organizations + 50
    assert result.counts["service_at_location"] == counts.service_at_locations


def test_only_the_planted_problems_are_reported(base: tuple[HsdsCounts, MappingResult]) -> None:
    counts, result = base
    assert counts.missing_organization >= 1 and counts.without_coordinates >= 1
    found = Counter((problem.kind, problem.code) for problem in result.problems)
    assert found == {
        ("service", "missing-organization"): counts.missing_organization,
        ("location", "no-coordinates"): counts.without_coordinates,
    }
    # Reported, not dropped: those services are mapped, without a providedBy.
    orphans = {p.feed_id for p in result.problems if p.code == "missing-organization"}
    mapped = {item.feed_id: item.resource for item in result.resources}
    assert all(oid in mapped and "providedBy" not in mapped[oid] for oid in orphans)


def test_services_are_coded_and_sites_cluster_in_kentucky_cities(
    base: tuple[HsdsCounts, MappingResult],
) -> None:
    _, result = base
    services = [i.resource for i in result.resources if i.resource_type == "HealthcareService"]
    with_domain = [
        s
        for s in services
        if any(c["system"] == SDOHCC_SYSTEM for cat in s.get("category", []) for c in cat["coding"])
    ]
    # Most codes map to an SDOH domain; the crosswalk does not know some (counseling, dental).
    assert 0.6 * len(services) < len(with_domain) < len(services)
    assert all(s.get("type") and s.get("telecom") for s in services)
    assert sum(bool(s.get("availableTime")) for s in services) > 0.8 * len(services)
    assert sum(len(s.get("communication", [])) > 1 for s in services) > 0.2 * len(services)
    positions = [
        i.resource["position"]
        for i in result.resources
        if i.resource_type == "Location" and "position" in i.resource
    ]
    near_louisville = [
        p
        for p in positions
        if abs(p["latitude"] - LOUISVILLE[0]) < 0.3 and abs(p["longitude"] - LOUISVILLE[1]) < 0.3
    ]
    assert 0.15 * len(positions) < len(near_louisville) < 0.5 * len(positions)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    write_hsds_directory(tmp_path / "a", 300, seed=9, changed=0.1, dropped=0.1)
    write_hsds_directory(tmp_path / "b", 300, seed=9, changed=0.1, dropped=0.1)
    write_hsds_directory(tmp_path / "c", 300, seed=10, changed=0.1, dropped=0.1)
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert "service_list_full_0001.json" in names and "taxonomy_terms.json" in names
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "service_list_full_0001.json").read_bytes() != (
        tmp_path / "c" / "service_list_full_0001.json"
    ).read_bytes()


def test_changed_and_dropped_fractions_hold_against_the_same_seeds_base(
    tmp_path: Path, base: tuple[HsdsCounts, MappingResult]
) -> None:
    base_counts, base_result = base
    counts, result = _write(tmp_path / "later", 1500, seed=5, changed=0.1, dropped=0.05)
    assert (counts.changed, counts.dropped, counts.services) == (150, 75, 1425)
    before, after = _hashes(base_result, "HealthcareService"), _hashes(result, "HealthcareService")
    assert set(before) - set(after) == set(counts.dropped_ids)
    assert set(after) <= set(before)
    edited = {fid for fid, digest in after.items() if before[fid] != digest}
    assert edited == set(counts.changed_ids)
    assert not edited & set(counts.dropped_ids)
    for resource_type in ("Organization", "Location"):
        assert _hashes(result, resource_type) == _hashes(base_result, resource_type)
    assert counts.organizations == base_counts.organizations


def test_refuses_a_directory_that_already_holds_json(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("[]")
    with pytest.raises(FileExistsError):
        write_hsds_directory(tmp_path, 10)
    with pytest.raises(ValueError, match="fraction"):
        write_hsds_directory(tmp_path / "new", 10, changed=1.5)


# --- IEES ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def messages() -> list[bytes]:
    return list(iter_iees_messages(600, seed=4, updates=400, start_control_id=1000))


@pytest.fixture(scope="module")
def parsed(messages: list[bytes]) -> list[ParsedMessage]:
    return [parse(message) for message in messages]


def test_every_message_parses_maps_and_is_acknowledged_aa(
    messages: list[bytes], parsed: list[ParsedMessage]
) -> None:
    for message, item in zip(messages, parsed, strict=True):
        mapped = map_message(item)
        assert mapped.resources[0]["resourceType"] == "Patient"
        assert b"\rMSA|AA|" in ack(item)
        assert b"\n" not in message and message.startswith(b"MSH|^~\\&|IEES|KY_CHFS|")
    events = Counter(item.event for item in parsed)
    assert events == {"A28": 600, "A31": 400}
    control_ids = [item.header.control_id for item in parsed]
    assert len(set(control_ids)) == len(control_ids)
    assert control_ids[0] == "IEES000000001000"
    a28_ids = [item.person.individual_id for item in parsed if item.event == "A28"]
    assert len(set(a28_ids)) == 600 and all(iid.startswith("9") for iid in a28_ids)


def test_messages_pass_the_full_hl7apy_structure_check(messages: list[bytes]) -> None:
    for message in messages[:5] + messages[-5:]:
        assert check_structure(message) == ()


def test_households_are_consistent(parsed: list[ParsedMessage]) -> None:
    members: dict[str, set[str]] = defaultdict(set)
    household_of: dict[str, set[str]] = {}
    relations: dict[tuple[str, str], str] = {}
    for item in parsed:
        if item.event != "A28":
            continue
        person = item.person
        cases = {program.case_number for program in person.programs}
        assert len(cases) == 1 and next(iter(cases)).startswith("9")
        members[next(iter(cases))].add(person.individual_id)
        household = person.household or ()
        household_of[person.individual_id] = {m.individual_id for m in household}
        for member in household:
            relations[(person.individual_id, member.individual_id)] = member.relationship
    sizes = Counter(len(ids) for ids in members.values())
    assert set(sizes) == {1, 2, 3, 4, 5, 6}
    for ids in members.values():
        for individual_id in ids:
            assert household_of[individual_id] == ids - {individual_id}
    inverse = {"SPO": {"SPO"}, "CHD": {"MTH", "FTH", "PAR"}, "SIB": {"SIB"}, "PAR": {"CHD"}}
    for (one, other), relation in relations.items():
        if relation in inverse:
            assert relations[(other, one)] in inverse[relation]


def test_each_update_is_later_and_changes_the_persons_state(
    messages: list[bytes], parsed: list[ParsedMessage]
) -> None:
    last_time: dict[str, dt.datetime] = {}
    last_body: dict[str, list[bytes]] = {}
    for message, item in zip(messages, parsed, strict=True):
        individual_id = item.person.individual_id
        body = message.split(b"\r")[2:]  # without MSH and EVN
        if item.event == "A31":
            assert item.event_time > last_time[individual_id]
            assert body != last_body[individual_id]
        last_time[individual_id] = item.event_time
        last_body[individual_id] = body


def test_same_seed_same_messages() -> None:
    one = list(iter_iees_messages(50, seed=3, updates=20))
    assert one == list(iter_iees_messages(50, seed=3, updates=20))
    assert one != list(iter_iees_messages(50, seed=4, updates=20))


def test_file_holds_mllp_framed_messages(tmp_path: Path) -> None:
    path = tmp_path / "iees.hl7"
    assert write_iees_file(path, 30, updates=10) == 40
    frames = path.read_bytes().split(b"\x1c\r")
    assert frames[-1] == b"" and len(frames) == 41
    assert all(frame.startswith(b"\x0bMSH|") for frame in frames[:-1])
    assert [f[1:] for f in frames[:-1]] == list(iter_iees_messages(30, updates=10))


def test_cli_writes_both_feeds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hsds", str(tmp_path / "hsds"), "--services", "40", "--dropped", "0.1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["services"], summary["dropped"]) == (36, 4)
    assert main(["iees", str(tmp_path / "f.hl7"), "--persons", "20", "--updates", "5"]) == 0
    assert json.loads(capsys.readouterr().out)["messages"] == 25
