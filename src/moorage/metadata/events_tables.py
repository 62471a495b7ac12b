"""Schema of the outbox (see metadata/outbox.py for the contract)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from moorage.metadata.tables import metadata

__all__ = ["event_consumers", "event_failures", "events"]

events = Table(
    "events",
    metadata,
    Column("seq", Integer().with_variant(BigInteger(), "postgresql"), primary_key=True, autoincrement=True),
    # The writing transaction's id on PostgreSQL (pg_current_xact_id), 0 on SQLite.
    Column("xid", BigInteger, nullable=False, server_default="0"),
    Column("id", String(36), nullable=False, unique=True),
    Column("detail_type", String(100), nullable=False),
    Column("account_id", String(12), nullable=False),
    Column("region", String(32), nullable=False),
    Column("repository", String(256), nullable=True),
    Column("created_at", Float, nullable=False),
    Column("body", Text, nullable=False),
    Index("ix_events_position", "xid", "seq"),
    Index("ix_events_created_at", "created_at"),
)

event_consumers = Table(
    "event_consumers",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("xid", BigInteger, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("first_failure_at", Float, nullable=True),
    Column("next_attempt_at", Float, nullable=True),
    Column("last_error", Text, nullable=True),
    Column("seen_at", Float, nullable=False),
)

event_failures = Table(
    "event_failures",
    metadata,
    Column("consumer", String(200), primary_key=True),
    Column("event_id", String(36), primary_key=True),
    Column("failed_at", Float, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text, nullable=False),
)
