"""Resources, history, typed search indexes and Patient-compartment membership.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_INDEX_TABLES = {
    "idx_string": "norm text, value text",
    "idx_token": "system text, code text, text text, type_system text, type_code text",
    "idx_date": "low timestamptz, high timestamptz",
    "idx_number": "value numeric, low numeric, high numeric",
    "idx_quantity": "system text, code text, unit text, value numeric, low numeric, high numeric",
    "idx_uri": "value text",
    "idx_reference": (
        "target_type text, target_id text, url text, identifier_system text, identifier_value text"
    ),
}

_LOOKUPS = [
    "CREATE INDEX idx_string_value ON idx_string (resource_type, param, norm text_pattern_ops)",
    "CREATE INDEX idx_string_trgm ON idx_string USING gin (norm gin_trgm_ops)",
    "CREATE INDEX idx_token_value ON idx_token (resource_type, param, code, system)",
    "CREATE INDEX idx_date_value ON idx_date (resource_type, param, low, high)",
    "CREATE INDEX idx_number_value ON idx_number (resource_type, param, low, high)",
    "CREATE INDEX idx_quantity_value ON idx_quantity (resource_type, param, code, low, high)",
    "CREATE INDEX idx_uri_value ON idx_uri (resource_type, param, value)",
    "CREATE INDEX idx_reference_value"
    " ON idx_reference (resource_type, param, target_id, target_type)",
    "CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url)",
    "CREATE INDEX idx_reference_identifier"
    " ON idx_reference (resource_type, param, identifier_value, identifier_system)",
    "CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id)",
]


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute("CREATE SEQUENCE resource_rid_seq")
    op.execute("CREATE SEQUENCE resource_history_seq")
    op.execute(
        """
        CREATE TABLE resource (
            resource_type text NOT NULL,
            id text NOT NULL,
            rid bigint NOT NULL,
            version_id integer NOT NULL,
            last_updated timestamptz NOT NULL,
            deleted boolean NOT NULL,
            body text,
            PRIMARY KEY (resource_type, id)
        )
        """
    )
    op.execute("CREATE UNIQUE INDEX resource_rid ON resource (resource_type, rid)")
    op.execute("CREATE INDEX resource_last_updated ON resource (resource_type, last_updated)")
    op.execute(
        """
        CREATE TABLE resource_history (
            resource_type text NOT NULL,
            id text NOT NULL,
            version_id integer NOT NULL,
            seq bigint NOT NULL,
            last_updated timestamptz NOT NULL,
            method text NOT NULL,
            deleted boolean NOT NULL,
            body text,
            PRIMARY KEY (resource_type, id, version_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX resource_history_type_time"
        " ON resource_history (resource_type, last_updated, seq)"
    )
    op.execute("CREATE INDEX resource_history_time ON resource_history (last_updated, seq)")
    for table, columns in _INDEX_TABLES.items():
        op.execute(
            f"CREATE TABLE {table} (resource_type text NOT NULL, rid bigint NOT NULL,"
            f" param text NOT NULL, {columns})"
        )
        op.execute(f"CREATE INDEX {table}_rid ON {table} (resource_type, rid)")
    for statement in _LOOKUPS:
        op.execute(statement)
    op.execute(
        """
        CREATE TABLE compartment (
            resource_type text NOT NULL,
            rid bigint NOT NULL,
            compartment_type text NOT NULL,
            compartment_id text NOT NULL,
            PRIMARY KEY (resource_type, rid, compartment_type, compartment_id)
        )
        """
    )
    op.execute(
        "CREATE INDEX compartment_member"
        " ON compartment (compartment_type, compartment_id, resource_type)"
    )


def downgrade() -> None:
    for table in ("compartment", *_INDEX_TABLES, "resource_history", "resource"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    op.execute("DROP SEQUENCE IF EXISTS resource_history_seq")
    op.execute("DROP SEQUENCE IF EXISTS resource_rid_seq")
