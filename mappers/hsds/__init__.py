"""HSDS (Open Referral, the 211 directory format) to FHIR R4: a pure transform.

Usage::

    from mappers.hsds import Feed, map_directory

    result = map_directory(path, feed=Feed("ky-211", base="https://211.example.org/hsds"))
    for item in result.resources:      # Organizations, then Locations, then HealthcareServices
        item.resource                  # the FHIR resource (a dict of R4 JSON)
        item.id, item.content_hash     # upsert by id; skip when the stored hash is equal
        item.hsds_object, item.feed_id # ("service", "<the feed's id>")
    result.problems                    # Problem(kind, feed_id, code, message), ids only
    result.summary()                   # counts by resource type and by problem code

    for item in iter_mapping(read_feed(path), feed=feed):  # the same, one at a time
        ...                            # a MappedResource, or a Problem

Input (``read_feed``): HSDS 3.x JSON as the HSDS API returns it (one object, a page
``{"contents": [...]}``, a list, or a directory of such files) and HSDS tabular data packages
(``datapackage.json`` + CSVs) with 3.x, 2.0.1 or 1.x table and field names. Both are read into
3.x tables (``Tables``), so the JSON and CSV forms of one feed give the same resources.

For the loader:

* Ids are stable: ``Feed.resource_id(object, feed_id)`` (a UUIDv5 of the feed name, object and
  feed id), and references between the mapped resources use them. Every resource carries an
  ``identifier`` with ``Feed.system(object)`` and the feed's id: the records of a feed are
  exactly those with that identifier system, so the ones missing from a full load can be found
  and marked inactive.
* Resources carry no ``meta.lastUpdated``, ``versionId`` or tags (only ``meta.profile`` when a
  profile is met): server-side tags such as an onboarded-partner flag are the loader's to keep
  across reloads; ``content_hash`` covers only what is mapped here.
* Problems never stop a run: a record is mapped with what it has (a service whose
  organization is missing has no ``providedBy``), or, when it has no id to upsert by, skipped
  and reported. Nothing is dropped silently.

Not mapped (yet): HSDS contacts of services and locations (the HSD contact-info extension),
service_area extents (areas are display-only ``coverageArea``), location languages,
service_capacity, metadata (``meta.lastUpdated`` is the server's), and one HealthcareService
per service_at_location.
"""

from mappers.hsds.feed import Bounds, Feed
from mappers.hsds.mapping import iter_mapping, map_directory, map_tables, read_feed
from mappers.hsds.result import MappedResource, MappingResult, Problem
from mappers.hsds.tables import InvalidHsds, Tables

__all__ = [
    "Bounds",
    "Feed",
    "InvalidHsds",
    "MappedResource",
    "MappingResult",
    "Problem",
    "Tables",
    "iter_mapping",
    "map_directory",
    "map_tables",
    "read_feed",
]
