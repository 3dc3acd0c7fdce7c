"""Durable background jobs (bulk import, reindexing): one row each, claimed with SKIP LOCKED.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE job (
            id uuid PRIMARY KEY,
            kind text NOT NULL,
            state text NOT NULL DEFAULT 'queued'
                CHECK (state IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
            params jsonb NOT NULL DEFAULT '{}',
            progress jsonb NOT NULL DEFAULT '{}',
            result jsonb,
            error text,
            attempts integer NOT NULL DEFAULT 0,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            heartbeat_at timestamptz,
            finished_at timestamptz
        )
        """
    )
    op.execute(
        "CREATE INDEX job_claim ON job (kind, created_at) WHERE state IN ('queued', 'running')"
    )
    # What a job reads, spooled in the database so that any process can run it: an $import
    # body, say. Deleted with its job.
    op.execute(
        """
        CREATE TABLE job_input (
            job_id uuid NOT NULL REFERENCES job (id) ON DELETE CASCADE,
            part integer NOT NULL,
            data bytea NOT NULL,
            PRIMARY KEY (job_id, part)
        )
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE job_input")
    op.execute("DROP TABLE job")
