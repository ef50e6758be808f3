from __future__ import annotations

import asyncio

import asyncpg
from alembic import command

from app.db.migrate import alembic_config, head_revision, upgrade_to_head
from app.db.pool import asyncpg_dsn
from tests.conftest import PostgresServer

TABLES = {
    "alembic_version",
    "clients",
    "api_keys",
    "jobs",
    "events",
    "webhook_endpoints",
    "deliveries",
    "delivery_queue",
    "delivery_attempts",
    "service_secrets",
    "rate_limits",
    "console_sessions",
    "client_spend",
    "models",
    "file_deletions",
    "client_queue_counts",
}


async def _tables(url: str) -> set[str]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await conn.close()
    return {row["tablename"] for row in rows}


async def test_upgrade_downgrade_upgrade_on_an_empty_database(postgres: PostgresServer) -> None:
    name = "falrelay_migration_roundtrip"
    url = await postgres.create_database(name)
    try:
        await asyncio.to_thread(upgrade_to_head, url)
        assert await _tables(url) == TABLES

        await asyncio.to_thread(command.downgrade, alembic_config(url), "base")
        assert await _tables(url) == {"alembic_version"}

        await asyncio.to_thread(upgrade_to_head, url)
        assert await _tables(url) == TABLES
    finally:
        await postgres.drop_database(name)


async def test_models_and_migrations_agree(fresh_database_url: str) -> None:
    """`alembic check` fails when a model changed without a migration (or the reverse)."""
    await asyncio.to_thread(command.check, alembic_config(fresh_database_url))


def test_one_head() -> None:
    assert head_revision()


def test_readiness_accepts_head_and_newer_schemas_but_not_older_ones() -> None:
    from app.db.migrate import schema_is_usable

    assert schema_is_usable(head_revision())
    assert schema_is_usable("9999_from_a_newer_release")  # rolling upgrade: still fine
    assert not schema_is_usable("0001")
    assert not schema_is_usable(None)


async def test_0006_moves_each_default_secret_into_the_list_and_back(
    postgres: PostgresServer,
) -> None:
    name = "falrelay_migration_0006"
    url = await postgres.create_database(name)
    try:
        config = alembic_config(url)
        await asyncio.to_thread(command.upgrade, config, "0005")
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            await conn.execute(
                "INSERT INTO clients (id, name, webhook_secret) VALUES "
                "('00000000-0000-0000-0000-000000000001', 'with', 'whsec_b2xk'), "
                "('00000000-0000-0000-0000-000000000002', 'without', NULL)"
            )
            await asyncio.to_thread(command.upgrade, config, "0006")
            rows = await conn.fetch(
                "SELECT name, webhook_secrets::text AS secrets, webhook_secret FROM clients "
                "ORDER BY name"
            )
            assert [tuple(row) for row in rows] == [
                ("with", '[{"secret": "whsec_b2xk", "expires_at": null}]', "whsec_b2xk"),
                ("without", "[]", None),
            ]
            # Rotated once (grace period running): going back keeps the current secret.
            await conn.execute(
                'UPDATE clients SET webhook_secrets = \'[{"secret": "whsec_b2xk", '
                '"expires_at": "2099-01-01T00:00:00+00:00"}, '
                '{"secret": "whsec_bmV3", "expires_at": null}]\' WHERE name = \'with\''
            )
            await asyncio.to_thread(command.downgrade, config, "0005")
            current = await conn.fetchval("SELECT webhook_secret FROM clients WHERE name = 'with'")
            assert current == "whsec_bmV3"
        finally:
            await conn.close()
    finally:
        await postgres.drop_database(name)


async def test_deliveries_and_their_queue_leave_room_for_updates_in_place(
    fresh_database_url: str,
) -> None:
    """Migrations 0019, 0029 and 0030: a lease, and a result's update of a delivery, are HOT
    updates only with room on their page (tests/webhooks/test_delivery_claim.py shows them
    made in place)."""
    conn = await asyncpg.connect(asyncpg_dsn(fresh_database_url))
    try:
        rows = await conn.fetch(
            "SELECT relname, reloptions FROM pg_class"
            " WHERE relname IN ('deliveries', 'delivery_queue')"
        )
    finally:
        await conn.close()
    assert {row["relname"]: row["reloptions"] for row in rows} == {
        "deliveries": ["fillfactor=50"],
        "delivery_queue": ["fillfactor=45"],
    }
