"""Custom search parameters: every write of a SearchParameter queues its reindex job.

A trigger, so that no write path (REST, transaction Bundles, the bulk loader) can store a
SearchParameter without the job that indexes it: the job row commits with the resource, or
neither does. It also wakes the job runners and tells every server process to reload its search
parameters (``fhir_server/operations/search_parameters.py``).

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION search_parameter_written() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO job (id, kind, params) VALUES (
                gen_random_uuid(),
                'reindex',
                jsonb_build_object(
                    'searchParameter', NEW.id,
                    'versionId', NEW.version_id,
                    'deleted', NEW.deleted
                )
            );
            PERFORM pg_notify('sdoh_fhir_jobs', '');
            PERFORM pg_notify('sdoh_fhir_search_parameters', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER search_parameter_written AFTER INSERT OR UPDATE ON resource"
        " FOR EACH ROW WHEN (NEW.resource_type = 'SearchParameter')"
        " EXECUTE FUNCTION search_parameter_written()"
    )
    # A reindex job that starts, ends or fails changes which parameters may be searched.
    op.execute(
        """
        CREATE FUNCTION reindex_job_changed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sdoh_fhir_search_parameters', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER reindex_job_changed AFTER UPDATE ON job FOR EACH ROW"
        " WHEN (NEW.kind = 'reindex' AND OLD.state IS DISTINCT FROM NEW.state)"
        " EXECUTE FUNCTION reindex_job_changed()"
    )
    # The newest job of each SearchParameter: what says whether it may be searched yet.
    op.execute(
        "CREATE INDEX job_search_parameter ON job ((params ->> 'searchParameter'), created_at)"
        " WHERE kind = 'reindex'"
    )


def downgrade() -> None:
    op.execute("DROP INDEX job_search_parameter")
    op.execute("DROP TRIGGER reindex_job_changed ON job")
    op.execute("DROP FUNCTION reindex_job_changed()")
    op.execute("DROP TRIGGER search_parameter_written ON resource")
    op.execute("DROP FUNCTION search_parameter_written()")
