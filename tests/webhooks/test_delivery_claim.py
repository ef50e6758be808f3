"""The delivery claim (app.webhooks.queue.claim_deliveries, a function since migration 0026):
what it picks between clients, what it reads to pick it, and the plan it runs on.

Each test has a database of its own: the claim weighs every client there is."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app import ids
from app.auth.service import create_client
from app.db.pool import Pool, create_pool
from app.webhooks import fanout, queue, repository, signing
from app.webhooks.delivery import AttemptResult
from app.webhooks.models import DeliveryStatus
from tests.support import rows_read, session_stat

PUBLIC_URL = "https://93.184.215.14/hooks/falrelay"  # never sent to: no worker runs here

# n deliveries of one client to its callback URL $3, due $4 seconds apart, the first $5
# seconds ago.
PENDING = f"""
WITH ev AS (
    INSERT INTO events (id, client_id, job_id, type, payload, created_at)
    SELECT uuid7(), $1, NULL, 'job.succeeded', '{{"type": "job.succeeded"}}'::jsonb, now()
    FROM generate_series(1, $2)
    RETURNING id
), queued AS (
    INSERT INTO deliveries (id, client_id, event_id, job_id, endpoint_id, url, next_attempt_at)
    SELECT uuid7(), $1, id, NULL, NULL, $3,
           now() - make_interval(secs => $5) + make_interval(secs => $4 * row_number() OVER ())
    FROM ev
    RETURNING id, client_id, event_id, endpoint_id, url, next_attempt_at
)
{fanout.ENQUEUE} FROM queued
"""

CAPACITY, RESERVE = 128, 32  # a share is (128 - 32) * weight / the contenders' weight


@pytest.fixture
async def pool(fresh_database_url: str) -> AsyncIterator[Pool]:
    # One connection: the statistics flushed in _index_reads are this session's own.
    pool = await create_pool(fresh_database_url, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def _client(pool: Pool, name: str, due: int, *, weight: int = 1, **when: float) -> uuid.UUID:
    client_id, _ = await create_client(pool, name)
    await pool.execute("UPDATE clients SET weight = $2 WHERE id = $1", client_id, weight)
    await pool.execute(
        PENDING,
        client_id,
        due,
        f"{PUBLIC_URL}/{name}",
        when.get("apart", 0.001),
        when.get("since", 600.0),
    )
    return client_id


async def _claim(
    pool: Pool, limit: int, in_flight: dict[uuid.UUID, int] | None = None, *, fair: bool = True
) -> queue.DeliveryClaim:
    return await queue.claim_deliveries(
        pool,
        limit,
        60.0,
        [],
        in_flight=in_flight or {},
        capacity=CAPACITY,
        reserve=RESERVE,
        fair_share=fair,
    )


async def record_answered(pool: Pool, rows: list[Any]) -> None:
    """Record each claimed row's attempt as answered 2xx, in one batch, as the worker does."""
    now = datetime.now(UTC)
    await queue.record(
        pool,
        [
            queue.Outcome(
                delivery_id=row["id"],
                attempt_count=row["attempt_count"],
                endpoint_id=None,
                attempted_at=now,
                result=AttemptResult(duration_ms=2, status_code=200, response_body=""),
                status=DeliveryStatus.SUCCEEDED,
                next_attempt_at=None,
            )
            for row in rows
        ],
        now=now,
        breaker_failures=5,
        breaker_cooldown=30.0,
    )


def _by_client(claim: queue.DeliveryClaim) -> Counter[uuid.UUID]:
    return Counter(row["client_id"] for row in claim.rows)


async def _index_reads(pool: Pool) -> Any:
    return await session_stat(
        pool,
        "SELECT idx_tup_read FROM pg_stat_user_indexes"
        " WHERE indexrelname = 'ix_delivery_queue_client_due'",
    )


async def test_each_slot_goes_to_the_client_with_the_fewest_in_flight_for_its_weight(
    pool: Pool,
) -> None:
    light = await _client(pool, "light", 40)
    heavy = await _client(pool, "heavy", 40, weight=3)
    # Keys (n + r) / weight: light's 1, 2, 3, 4 and heavy's 1/3, 2/3, ... 12/3 are the 16
    # smallest (ties at 1, 2, 3 and 4 go to the one due first).
    claimed = await _claim(pool, 16)
    assert _by_client(claimed) == {light: 4, heavy: 12}
    assert not claimed.held_back
    # What is in flight counts: with 2 of light's out, its keys are 3, 4, ...: the 16 smallest
    # are light's 3 and 4 and heavy's 1/3 to 14/3.
    claimed = await _claim(pool, 16, {light: 2})
    assert _by_client(claimed) == {light: 2, heavy: 14}


@pytest.mark.parametrize("fair", [True, False], ids=["fair share", "first due first"])
async def test_with_many_clients_due_a_claim_reads_about_what_it_picks(
    pool: Pool, fair: bool
) -> None:
    # Each client's deliveries a second apart; the clients' first ones a few ms apart, in the
    # order they are made.
    made = [await _client(pool, f"client{i}", 10, apart=1.0) for i in range(30)]
    sending = made[:10]
    before = await _index_reads(pool)
    claimed = await _claim(pool, 16, dict.fromkeys(sending, 1), fair=fair)
    reads = await _index_reads(pool) - before
    # One each to sixteen clients: by fair share, of those with none in flight; else the
    # sixteen first due.
    assert sorted(_by_client(claimed).values()) == [1] * 16
    assert set(_by_client(claimed)) == set(made[10:26] if fair else made[:16])
    # Each client's first due delivery, then the rows after it that could be picked: none here
    # by fair share (every first one ties with the bound), and by due time a second read that
    # skips the first and stops at the bound. Not the claim's sixteen each (300 in all).
    assert reads <= (30 if fair else 2 * 30) + 16, reads


async def test_a_client_at_its_share_is_held_back_and_the_others_take_the_slots(
    pool: Pool,
) -> None:
    full = await _client(pool, "full", 20)
    other = await _client(pool, "other", 16)
    # Two contenders: a share of 96 / 2 = 48 each, all of full's in flight already.
    claimed = await _claim(pool, 16, {full: 48})
    assert _by_client(claimed) == {other: 16}
    assert claimed.held_back
    # full at its share, other's due all leased: nothing to take, and full is held back.
    claimed = await _claim(pool, 16, {full: 48, other: 16})
    assert claimed.rows == []
    assert claimed.held_back


async def test_with_fair_share_off_the_first_due_go_first_across_clients(pool: Pool) -> None:
    # Due a second apart: early's from 599 s ago, late's from 589.5 s ago. The 16 first due are
    # early's ten before late's first, then the two alternately: 13 of early's, 3 of late's.
    early = await _client(pool, "early", 30, apart=1.0, since=600.0)
    late = await _client(pool, "late", 30, apart=1.0, since=590.5)
    first = await pool.fetch("SELECT id FROM deliveries ORDER BY next_attempt_at LIMIT 16")
    claimed = await _claim(pool, 16, fair=False)
    assert _by_client(claimed) == {early: 13, late: 3}
    assert {row["id"] for row in claimed.rows} == {row["id"] for row in first}


@pytest.mark.parametrize(
    ("queued", "analysed"),
    [(0, False), (0, True), (20, True), (1_000, False)],
    ids=["never analysed", "empty", "small", "unanalysed rows"],
)
async def test_a_claim_planned_on_an_empty_or_small_queue_reads_a_full_one_by_index(
    pool: Pool, queued: int, analysed: bool
) -> None:
    # The statement's plan is made once per connection (migration 0026), with the statistics
    # of that moment: an empty or small queue (a new deployment, one vacuumed after a quiet
    # spell), or a few hundred rows never analysed (the first burst of a new deployment). Once
    # the queue is full it must not read every delivery, by a sequential scan, a whole index,
    # or every due row of a client sorted by due time: a bitmap scan, which a plan made on
    # 1,000 rows never analysed chose (8,015 rows read here; migration 0030).
    client_id, _ = await create_client(pool, "claims")
    endpoint = await repository.insert_endpoint(
        pool,
        endpoint_id=ids.uuid7(),
        client_id=client_id,
        url=PUBLIC_URL,
        description=None,
        event_types=["job.succeeded"],
        secret=signing.new_secret(),
    )
    assert endpoint is not None
    # Another client's deliveries, due in an hour: there when the plan is made, never read.
    await _client(pool, "later", queued, since=-3600.0)
    if analysed:
        await pool.execute("VACUUM ANALYZE deliveries, delivery_queue")
    assert (await _claim(pool, 16)).rows == []

    await pool.execute(PENDING, client_id, 3_000, f"{PUBLIC_URL}/callback", 0.001, 600.0)
    tables = ("delivery_queue", "events", "deliveries")
    before = {table: await rows_read(pool, table) for table in tables}
    claimed = await _claim(pool, 16)
    read = {table: await rows_read(pool, table) - n for table, n in before.items()}
    # Its first due delivery, its first 16 read again past it, the 16 leased by primary key
    # (33 here), and their 16 events by primary key. A scan of either table, of a whole index
    # or of the client's due rows reads 3,000 or more. The delivery log is not read at all
    # (migration 0030).
    assert read["delivery_queue"] <= 3 * 16 + 2, read
    assert read["events"] <= 16 + 2, read
    assert read["deliveries"] == 0, read

    assert len(claimed.rows) == 16
    leased = await pool.fetchval(
        "SELECT count(*) FROM delivery_queue WHERE locked_until > now() AND attempt_count = 1"
    )
    assert leased == 16


async def _updates(pool: Pool, table: str) -> tuple[int, int]:
    """Rows of `table` updated so far, and how many of those updates were HOT."""
    row = await session_stat(
        pool,
        "SELECT ARRAY[n_tup_upd, n_tup_hot_upd] FROM pg_stat_user_tables"
        f" WHERE relname = '{table}'",
    )
    return row[0], row[1]


async def test_leases_and_results_of_deliveries_queued_together_are_made_in_place(
    pool: Pool,
) -> None:
    # Deliveries queued in one statement lie together, and a claim leases a page's rows
    # together: each lease needs room for a second version on its own page (migrations 0029
    # and 0030), or it moves with a new entry in every index (with 30 % of each page free,
    # about half of them did). A result deletes the queue row and updates the delivery's log
    # row in place: with the queue in `deliveries` (before migration 0030) that update took
    # the row out of the queue index's predicate, and none was HOT.
    client_id = await _client(pool, "burst", 400)
    await pool.execute("VACUUM ANALYZE deliveries, delivery_queue")
    queue_before = await _updates(pool, "delivery_queue")
    log_before = await _updates(pool, "deliveries")
    leased: list[Any] = []
    while claimed := (await _claim(pool, CAPACITY, fair=False)).rows:
        leased += claimed
    assert len(leased) == 400
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM delivery_queue WHERE client_id = $1 AND locked_until > now()",
            client_id,
        )
        == 400
    )
    updated, in_place = (
        a - b for a, b in zip(await _updates(pool, "delivery_queue"), queue_before, strict=True)
    )
    assert updated == 400
    assert in_place >= 0.95 * 400, in_place

    for start in range(0, 400, 50):
        await record_answered(pool, leased[start : start + 50])
    assert await pool.fetchval("SELECT count(*) FROM delivery_queue") == 0
    counts = await pool.fetchrow(
        "SELECT count(*) FILTER (WHERE status = 'succeeded' AND attempt_count = 1) AS done,"
        " count(*) AS all FROM deliveries"
    )
    assert (counts["done"], counts["all"]) == (400, 400)
    updated, in_place = (
        a - b for a, b in zip(await _updates(pool, "deliveries"), log_before, strict=True)
    )
    assert updated == 400
    assert in_place >= 0.95 * 400, in_place


@pytest.mark.parametrize(
    ("queued", "analysed"),
    [(0, False), (20, False), (20, True)],
    ids=["never analysed", "small, never analysed", "small"],
)
async def test_results_recorded_on_a_plan_made_while_the_tables_were_small_read_them_by_key(
    pool: Pool, queued: int, analysed: bool
) -> None:
    # The recording runs on a plan made once per connection (migration 0031), with the
    # statistics of that moment: here, a new deployment's first batches. A prepared statement's
    # generic plan is made by its sixth execution; the one made on these tables hash-joined each
    # batch against a sequential scan of `deliveries` and kept doing so once they were full.
    await _client(pool, "first", queued)
    if analysed:
        await pool.execute("VACUUM ANALYZE deliveries, delivery_queue")
    for _ in range(6):
        await record_answered(pool, [{"id": ids.uuid7(), "attempt_count": 1}])

    await _client(pool, "full", 3_000, since=3_600.0)
    claimed = (await _claim(pool, 16, fair=False)).rows
    assert len(claimed) == 16
    tables = ("deliveries", "delivery_queue")
    before = {table: await rows_read(pool, table) for table in tables}
    await record_answered(pool, claimed)
    read = {table: await rows_read(pool, table) - n for table, n in before.items()}
    # By primary key: each delivery for its attempt's log row, again for the foreign key of
    # that row, and again to update it (48); each queue row once, to end it (16). A scan of
    # either table reads 3,000 or more.
    assert read["deliveries"] <= 3 * 16 + 2, read
    assert read["delivery_queue"] <= 16 + 2, read

    done = [row["id"] for row in claimed]
    counts = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM deliveries WHERE id = ANY($1) AND status = 'succeeded'),"
        " (SELECT count(*) FROM delivery_attempts WHERE delivery_id = ANY($1)),"
        " (SELECT count(*) FROM delivery_queue WHERE id = ANY($1))",
        done,
    )
    assert tuple(counts) == (16, 16, 0)
