"""`falrelay clients limits|show|list` as an operator runs them: subprocesses on a database of
the test's own, checked against Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest

from app.db.pool import asyncpg_dsn

pytestmark = pytest.mark.slow


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


def run(database_url: str, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env["FALRELAY_DATABASE_URL"] = database_url
    env.update({f"FALRELAY_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        falrelay(*args), env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ok(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return orjson.loads(result.stdout)


async def test_limits_show_and_list(fresh_database_url: str) -> None:
    url = fresh_database_url
    assert run(url, "keys", "create", "billing").returncode == 0
    assert run(url, "keys", "create", "search").returncode == 0

    shown = ok(
        run(
            url,
            "clients",
            "limits",
            "billing",
            "--requests-per-second",
            "2.5",
            "--max-endpoints",
            "3",
            "--monthly-budget-usd",
            "120.50",
            "--weight",
            "4",
            "--max-in-flight",
            "8",
        )
    )
    limits = shown["limits"]
    assert limits["requests_per_second"] == {"value": 2.5, "source": "client"}
    assert limits["burst"] == {"value": 3, "source": "default"}  # a second's worth
    assert limits["max_endpoints"] == {"value": 3, "source": "client"}
    assert limits["max_queued_jobs"] == {"value": 10_000, "source": "default"}
    assert limits["max_in_flight"] == {"value": 8, "source": "client"}
    assert limits["monthly_budget_usd"] == {"value": "120.5000", "source": "client"}
    assert limits["weight"] == {"value": 4, "source": "client"}
    month = datetime.now(UTC).strftime("%Y-%m")
    assert shown["usage"] == {
        "endpoints": 0,
        "queued_jobs": 0,
        "in_flight_jobs": 0,
        "month": month,
        "spent_usd": "0.00",
        "reserved_usd": "0.00",
        "budget_usd": "120.50",
    }

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        row = await conn.fetchrow("SELECT * FROM clients WHERE name = 'billing'")
        assert row is not None
        assert row["requests_per_second"] == 2.5
        assert row["burst"] is None
        assert row["max_endpoints"] == 3
        assert row["max_queued_jobs"] is None
        assert row["max_in_flight"] == 8
        assert row["monthly_budget_usd"] == Decimal("120.5")
        assert row["weight"] == 4
        # Usage is read from Postgres as it stands.
        await conn.execute(
            "INSERT INTO jobs (id, client_id, model, input, status) VALUES "
            "(gen_random_uuid(), $1, 'm', '{}', 'queued'), "
            "(gen_random_uuid(), $1, 'm', '{}', 'running'), "
            "(gen_random_uuid(), $1, 'm', '{}', 'succeeded')",
            row["id"],
        )
        # This month's ledger, as reservations and settlements leave it.
        await conn.execute(
            "INSERT INTO client_spend (client_id, month, reserved_usd, spent_usd) "
            "VALUES ($1, date_trunc('month', now() AT TIME ZONE 'UTC')::date, 0.08, 1.234)",
            row["id"],
        )
    finally:
        await conn.close()

    # `default` puts a limit back; the others stay; the settings decide the default.
    reset = ok(
        run(
            url,
            "clients",
            "limits",
            "billing",
            "--max-endpoints",
            "default",
            "--weight",
            "default",
            default_max_endpoints="7",
        )
    )
    assert reset["limits"]["max_endpoints"] == {"value": 7, "source": "default"}
    assert reset["limits"]["weight"] == {"value": 1, "source": "client"}
    assert reset["limits"]["requests_per_second"] == {"value": 2.5, "source": "client"}
    assert reset["usage"] == {
        "endpoints": 0,
        "queued_jobs": 1,
        "in_flight_jobs": 1,
        "month": month,
        "spent_usd": "1.234",
        "reserved_usd": "0.08",
        "budget_usd": "120.50",
    }

    unlimited = ok(run(url, "clients", "show", "search", default_max_queued_jobs="unlimited"))
    assert unlimited["limits"]["max_queued_jobs"] == {"value": None, "source": "default"}
    assert unlimited["limits"]["requests_per_second"] == {"value": None, "source": "default"}
    assert unlimited["limits"]["burst"] == {"value": None, "source": "default"}
    assert unlimited["usage"]["budget_usd"] is None  # no budget of its own, none by default
    assert unlimited["usage"]["spent_usd"] == "0.00"

    listed = ok(run(url, "clients", "list"))
    assert [(c["name"], c["active_keys"]) for c in listed] == [("billing", 1), ("search", 1)]
    assert listed[0]["own_limits"] == {
        "requests_per_second": 2.5,
        "max_in_flight": 8,
        "monthly_budget_usd": "120.5000",
    }
    assert listed[1]["own_limits"] == {}
    # By id too: names need not be unique.
    by_id = ok(run(url, "clients", "show", listed[1]["id"]))
    assert by_id["name"] == "search"


async def test_refusals(fresh_database_url: str) -> None:
    url = fresh_database_url
    for _ in range(2):
        assert run(url, "keys", "create", "twin").returncode == 0

    missing = run(url, "clients", "show", "nobody")
    assert missing.returncode == 1
    assert "no client is named 'nobody'" in missing.stderr
    twins = run(url, "clients", "limits", "twin", "--weight", "2")
    assert twins.returncode == 1
    assert "2 clients are named 'twin'" in twins.stderr
    # Each process costs seconds: two of the argument checks stand for the others.
    for bad in (["--weight", "0"], ["--monthly-budget-usd", "1.00001"]):
        result = run(url, "clients", "limits", "twin", *bad)
        assert result.returncode == 2, (bad, result.stderr)
        assert result.stdout == ""
    nothing = run(url, "clients", "limits", "twin")
    assert nothing.returncode == 2
    assert "at least one limit" in nothing.stderr

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        changed = await conn.fetchval(
            "SELECT count(*) FROM clients WHERE weight <> 1 OR requests_per_second IS NOT NULL "
            "OR max_endpoints IS NOT NULL OR burst IS NOT NULL OR monthly_budget_usd IS NOT NULL"
        )
    finally:
        await conn.close()
    assert changed == 0
