"""Positions for ``near`` and full-text vectors for ``_text`` and ``_content``.

``idx_geo``: one row per Location.position (http://hl7.org/fhir/R4/location.html#search), with
a btree on (resource_type, param, lat, lon) that a near search range-scans by its bounding box
before the exact great-circle distance. No PostGIS or earthdistance: earthdistance is not a
trusted extension, so a hosted PostgreSQL may refuse it. Existing Locations are filled in here.

``idx_text``: one row per resource, the narrative's and the whole resource's words as 'simple'
tsvectors (http://hl7.org/fhir/R4/search.html#text), each with a GIN index. Resources stored
before this revision have no row, so no full-text match, until they are written again.

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE idx_geo (resource_type text NOT NULL, rid bigint NOT NULL,"
        " param text NOT NULL, lat double precision NOT NULL, lon double precision NOT NULL)"
    )
    op.execute("CREATE INDEX idx_geo_rid ON idx_geo (resource_type, rid)")
    op.execute("CREATE INDEX idx_geo_value ON idx_geo (resource_type, param, lat, lon)")
    op.execute(
        "INSERT INTO idx_geo (resource_type, rid, param, lat, lon)"
        " SELECT resource_type, rid, 'near', lat, lon FROM ("
        " SELECT resource_type, rid,"
        " (body::jsonb -> 'position' ->> 'latitude')::double precision AS lat,"
        " (body::jsonb -> 'position' ->> 'longitude')::double precision AS lon"
        " FROM resource WHERE resource_type = 'Location' AND NOT deleted"
        " AND jsonb_typeof(body::jsonb -> 'position' -> 'latitude') = 'number'"
        " AND jsonb_typeof(body::jsonb -> 'position' -> 'longitude') = 'number') p"
        " WHERE abs(lat) <= 90 AND abs(lon) <= 180"
    )
    op.execute(
        "CREATE TABLE idx_text (resource_type text NOT NULL, rid bigint NOT NULL,"
        " narrative tsvector NOT NULL, content tsvector NOT NULL)"
    )
    op.execute("CREATE INDEX idx_text_rid ON idx_text (resource_type, rid)")
    op.execute("CREATE INDEX idx_text_narrative ON idx_text USING gin (narrative)")
    op.execute("CREATE INDEX idx_text_content ON idx_text USING gin (content)")
    op.execute("ANALYZE idx_geo")


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS idx_text")
    op.execute("DROP TABLE IF EXISTS idx_geo")
