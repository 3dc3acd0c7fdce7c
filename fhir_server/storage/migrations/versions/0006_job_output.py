"""What a job produces besides its summary: the refused lines of an import, say.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE job_output (
            job_id uuid NOT NULL REFERENCES job (id) ON DELETE CASCADE,
            name text NOT NULL,
            part integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (job_id, name, part)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE job_output")
