"""The tables, as SQLAlchemy Core objects for building queries; the DDL lives in the migrations.

Every key starts with ``resource_type``, the partition key, so that PostgreSQL partitioning or a
distributed PostgreSQL needs no schema rewrite. ``rid`` is a resource's immutable surrogate key:
assigned at first create, never changed by updates, so it orders search pages stably.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    Numeric,
    Table,
    Text,
)

__all__ = [
    "INDEX_TABLES",
    "compartment",
    "idx_date",
    "idx_number",
    "idx_quantity",
    "idx_reference",
    "idx_string",
    "idx_token",
    "idx_uri",
    "metadata",
    "resource",
    "resource_history",
]

metadata = MetaData()

resource = Table(
    "resource",
    metadata,
    Column("resource_type", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("rid", BigInteger, nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("body", Text, nullable=True),
)

resource_history = Table(
    "resource_history",
    metadata,
    Column("resource_type", Text, primary_key=True),
    Column("id", Text, primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("last_updated", DateTime(timezone=True), nullable=False),
    Column("method", Text, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Column("body", Text, nullable=True),
)


def _index_table(name: str, *columns: Column) -> Table:
    return Table(
        name,
        metadata,
        Column("resource_type", Text, nullable=False),
        Column("rid", BigInteger, nullable=False),
        Column("param", Text, nullable=False),
        *columns,
    )


idx_string = _index_table("idx_string", Column("norm", Text), Column("value", Text))
idx_token = _index_table(
    "idx_token",
    Column("system", Text),
    Column("code", Text),
    Column("text", Text),
    Column("type_system", Text),
    Column("type_code", Text),
)
idx_date = _index_table(
    "idx_date", Column("low", DateTime(timezone=True)), Column("high", DateTime(timezone=True))
)
idx_number = _index_table(
    "idx_number", Column("value", Numeric), Column("low", Numeric), Column("high", Numeric)
)
idx_quantity = _index_table(
    "idx_quantity",
    Column("system", Text),
    Column("code", Text),
    Column("unit", Text),
    Column("value", Numeric),
    Column("low", Numeric),
    Column("high", Numeric),
)
idx_uri = _index_table("idx_uri", Column("value", Text))
idx_reference = _index_table(
    "idx_reference",
    Column("target_type", Text),
    Column("target_id", Text),
    Column("url", Text),
    Column("identifier_system", Text),
    Column("identifier_value", Text),
)
compartment = Table(
    "compartment",
    metadata,
    Column("resource_type", Text, primary_key=True),
    Column("rid", BigInteger, primary_key=True),
    Column("compartment_type", Text, primary_key=True),
    Column("compartment_id", Text, primary_key=True),
)

INDEX_TABLES: dict[str, Table] = {
    "string": idx_string,
    "token": idx_token,
    "date": idx_date,
    "number": idx_number,
    "quantity": idx_quantity,
    "uri": idx_uri,
    "reference": idx_reference,
}
