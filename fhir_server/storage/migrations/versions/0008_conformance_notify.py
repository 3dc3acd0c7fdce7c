"""Conformance resources: every write of a StructureDefinition, CodeSystem, ValueSet or
ConceptMap tells every server process to reload its profiles and terminology
(``fhir_server/operations/conformance.py``). A trigger, so that no write path can skip it.

Revision ID: 0008
Revises: 0007
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE FUNCTION conformance_written() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('sdoh_fhir_conformance', '');
            RETURN NULL;
        END
        $$
        """
    )
    op.execute(
        "CREATE TRIGGER conformance_written AFTER INSERT OR UPDATE ON resource FOR EACH ROW"
        " WHEN (NEW.resource_type IN"
        " ('StructureDefinition', 'CodeSystem', 'ValueSet', 'ConceptMap'))"
        " EXECUTE FUNCTION conformance_written()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER conformance_written ON resource")
    op.execute("DROP FUNCTION conformance_written()")
