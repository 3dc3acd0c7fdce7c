"""Reference indexes on url, identifier and target hold only the rows that have those values.

Most reference rows are relative (no url) and have no identifier: partial indexes spare every
write those index insertions.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("DROP INDEX idx_reference_url")
    op.execute("DROP INDEX idx_reference_identifier")
    op.execute("DROP INDEX idx_reference_target")
    op.execute(
        "CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url)"
        " WHERE url IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_reference_identifier"
        " ON idx_reference (resource_type, param, identifier_value, identifier_system)"
        " WHERE identifier_value IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id)"
        " WHERE target_id IS NOT NULL"
    )


def downgrade() -> None:
    for name in ("idx_reference_url", "idx_reference_identifier", "idx_reference_target"):
        op.execute(f"DROP INDEX {name}")
    op.execute("CREATE INDEX idx_reference_url ON idx_reference (resource_type, param, url)")
    op.execute(
        "CREATE INDEX idx_reference_identifier"
        " ON idx_reference (resource_type, param, identifier_value, identifier_system)"
    )
    op.execute("CREATE INDEX idx_reference_target ON idx_reference (target_type, target_id)")
