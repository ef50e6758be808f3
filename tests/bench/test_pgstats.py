"""The statement log parser of the benchmarks' fallback (no pg_stat_statements to be had)."""

from __future__ import annotations

from bench.pgstats import HARNESS, normalise, parse_statement_log

LOG = f"""\
2026-11-29 16:00:00.001 UTC [101] db=bench LOG:  statement: BEGIN
2026-11-29 16:00:00.002 UTC [101] db=bench LOG:  execute __asyncpg_stmt_1__: SELECT id
\tFROM jobs
\tWHERE id = $1
2026-11-29 16:00:00.002 UTC [101] db=bench DETAIL:  parameters: $1 = '7'
2026-11-29 16:00:00.003 UTC [102] db=other LOG:  statement: SELECT 1
2026-11-29 16:00:00.004 UTC [101] db=bench LOG:  execute <unnamed>: SELECT 2 {HARNESS}
2026-11-29 16:00:00.005 UTC [103] db=bench LOG:  checkpoint starting: time
2026-11-29 16:00:00.006 UTC [101] db=bench LOG:  statement: COMMIT
"""


def test_statements_are_read_with_their_continuation_lines_and_database() -> None:
    found = parse_statement_log(LOG)
    assert found == [
        ("bench", "BEGIN"),
        ("bench", "SELECT id\n\tFROM jobs\n\tWHERE id = $1"),
        ("other", "SELECT 1"),
        ("bench", f"SELECT 2 {HARNESS}"),
        ("bench", "COMMIT"),
    ]
    assert normalise(found[1][1]) == "SELECT id FROM jobs WHERE id = $1"
