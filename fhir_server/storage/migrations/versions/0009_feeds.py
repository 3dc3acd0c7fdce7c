"""State feeds (the 211 directory in HSDS, the IEES eligibility feed): what each feed wrote, so
a reload is an idempotent upsert; the HL7 v2 duplicate keys with their original ACKs; the last
applied event per person; what could not be applied (dead letters, kept for replay); and one
row per load.

``feed_item``: one row per resource a feed wrote. ``content_hash`` is the hash of the mapped
content, ``version_id`` the version the feed wrote: when both still hold, a reload skips the
record without reading or re-validating it. ``inactive``: ended by a full load that no longer
listed it.

``feed_message``: the (MSH-3, MSH-4, MSH-10) of every HL7 v2 message answered, and the ACK
(feeds/iees/README.md rule 2: a resend gets the stored original ACK). Kept 30 days at least.

``feed_person``: per IEES person (by Patient id), the event time last applied (rule 3) and the
programs, RelatedPersons and households it stated (snapshot semantics, rule 4 and 5).

``feed_dead_letter``: the raw bytes of whatever could not be applied, with why; ``sdoh-fhir
feeds replay`` applies them again.

Revision ID: 0009
Revises: 0008
"""

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        "CREATE TABLE feed_item (feed text NOT NULL, resource_type text NOT NULL,"
        " id text NOT NULL, content_hash text NOT NULL, version_id integer NOT NULL,"
        " inactive boolean NOT NULL DEFAULT false, run_id bigint,"
        " PRIMARY KEY (feed, resource_type, id))"
    )
    op.execute(
        "CREATE TABLE feed_message (feed text NOT NULL, sender text NOT NULL,"
        " facility text NOT NULL, control_id text NOT NULL,"
        " received_at timestamptz NOT NULL DEFAULT now(), ack bytea NOT NULL,"
        " PRIMARY KEY (feed, sender, facility, control_id))"
    )
    op.execute("CREATE INDEX feed_message_received ON feed_message (received_at)")
    op.execute(
        "CREATE TABLE feed_person (feed text NOT NULL, patient_id text NOT NULL,"
        " event_time timestamptz NOT NULL, event_time_text text NOT NULL,"
        " programs text[] NOT NULL DEFAULT '{}', related text[],"
        " groups text[] NOT NULL DEFAULT '{}',"
        " PRIMARY KEY (feed, patient_id))"
    )
    op.execute(
        "CREATE TABLE feed_dead_letter (id bigserial PRIMARY KEY, feed text NOT NULL,"
        " kind text NOT NULL, received_at timestamptz NOT NULL DEFAULT now(),"
        " payload bytea NOT NULL, reason text NOT NULL, ack_code text,"
        " replayed_at timestamptz, replay_result text)"
    )
    op.execute(
        "CREATE INDEX feed_dead_letter_pending ON feed_dead_letter (feed, id)"
        " WHERE replayed_at IS NULL"
    )
    op.execute(
        "CREATE TABLE feed_run (id bigserial PRIMARY KEY, feed text NOT NULL,"
        " kind text NOT NULL, started_at timestamptz NOT NULL DEFAULT now(),"
        " finished_at timestamptz, counts jsonb, provenance_id text)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE feed_run, feed_dead_letter, feed_person, feed_message, feed_item")
