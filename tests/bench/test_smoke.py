"""The benchmark harness in its smoke mode: every benchmark at tiny sizes, one short run.

Proof that `python -m bench all` still starts everything, measures and writes its JSON, so
the harness cannot rot between full runs; the numbers themselves mean nothing here. wrk and
procrastinate are optional: without wrk the harness drives load with its asyncio driver, and
without procrastinate the queue benchmark reports its baseline as skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = [
    "intake", "e2e", "fanout", "fanout-sql", "claims", "queue", "scale", "memory", "fairness",
    "delivery-fairness", "validation", "purge", "mirror", "statements", "watch",
]  # fmt: skip
REPORT_KEYS = {
    "name", "title", "date", "mode", "command", "machine", "baseline", "goal", "goal_met",
    "ratio", "figures", "settings", "notes", "details",
}  # fmt: skip
FIGURE_KEYS = {"name", "unit", "value", "baseline", "ratio", "goal", "met", "runs"}
MACHINE_KEYS = {"cores", "memory_gib", "python", "postgres"}


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench-results")
    env = dict(os.environ)
    if "FALRELAY_TEST_DATABASE_URL" in env:
        env["FALRELAY_BENCH_DATABASE_URL"] = env["FALRELAY_TEST_DATABASE_URL"]
    argv = [sys.executable, "-m", "bench", "all", "--smoke", "--out", str(out)]
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        argv += ["--scratch", str(shm)]
    done = subprocess.run(
        # A bound, not a wait: about 1 min quiet, 2 on a loaded 2-core machine, for all of them.
        argv,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _report(results: Path, name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((results / f"{name}.json").read_text())
    return data


@pytest.mark.parametrize("name", BENCHMARKS)
def test_each_benchmark_writes_its_report(results: Path, name: str) -> None:
    report = _report(results, name)
    assert report.keys() >= REPORT_KEYS
    assert report["name"] == name
    assert report["mode"] == "smoke"
    assert report["machine"].keys() >= MACHINE_KEYS
    assert report["goal"]
    assert report["figures"]
    for figure in report["figures"]:
        assert figure.keys() >= FIGURE_KEYS
        assert figure["value"] is not None, figure


@pytest.mark.parametrize(
    "name", ["intake", "fanout", "fanout-sql", "claims", "scale", "validation", "mirror"]
)
def test_baselines_run_beside_falrelay(results: Path, name: str) -> None:
    headline = _report(results, name)["figures"][0]
    assert headline["baseline"] is not None
    assert headline["ratio"] is not None


def test_intake_answers_are_stored(results: Path) -> None:
    details = _report(results, "intake")["details"]
    assert details["jobs_answered_201"] > 0
    assert details["jobs_stored"] >= details["jobs_answered_201"]


def test_queue_runs_procrastinate_beside_falrelay(results: Path) -> None:
    report = _report(results, "queue")
    if importlib.util.find_spec("procrastinate") is None:
        assert any("procrastinate is not installed" in n for n in report["notes"])
        pytest.skip("procrastinate is not installed (pip install -e ./sdk -e '.[bench]')")
    assert report["figures"][0]["baseline"] is not None


def test_validation_paths_agree_and_the_api_timed_them(results: Path) -> None:
    details = _report(results, "validation")["details"]
    for run in details["micro_runs"]:
        assert all(run["same_result"].values()), run["same_result"]
        assert not run["refused_generated_inputs"]
    # Both apis timed validation inside themselves, in their one load run.
    for path in ("schema", "pydantic"):
        assert details["in_api_us_per_call"][path][0]["calls"] > 0, path


def test_purge_removed_every_old_job_and_left_intakes(results: Path) -> None:
    details = _report(results, "purge")["details"]
    assert details["removed"]["jobs"] == details["removed"]["events"] // 3 > 0
    assert details["old_jobs_left"] == details["outbox_left"] == 0
    assert details["jobs_stored_by_intake"] >= details["intake_201s_measured"] > 0


def test_mirror_checked_every_copy_of_every_way(results: Path) -> None:
    report = _report(results, "mirror")
    files = report["settings"]["files"]
    runs = report["details"]["runs"]
    # Every workload, store and way ran; each copied the whole set and checked every copy
    # against the source (a mismatch fails the benchmark run itself).
    assert len(runs) == len(files) * len(report["settings"]["stores"]) * 3
    for key, measured in runs.items():
        workload, _, way = key.split("/")
        for run in measured:
            assert run["copies_checked"] == files[workload], key
            assert run["bytes_copied"] > 0, key
            assert run["peak_rss_mib"] >= run["rss_before_mib"], key
            if workload == "png" and way != "naive":
                assert run["thumbnails"] == files[workload], key


def test_statements_counted_every_job_through(results: Path) -> None:
    report = _report(results, "statements")
    details = report["details"]
    # Counted by pg_stat_statements where it can be had, else from log_statement=all.
    assert report["settings"]["statistics"] in {"pg_stat_statements", "log_statement"}
    assert details["webhooks_received"] == details["jobs_done"] > 0
    assert report["figures"][0]["value"] > 0  # statements per job
    # Every job's intake is one INSERT INTO jobs, whatever else the window holds.
    inserts = [s for s in details["statements"] if "INSERT INTO jobs " in s["query"]]
    assert sum(s["calls"] for s in inserts) == details["jobs_done"]


def test_watch_held_every_stream_and_wait(results: Path) -> None:
    report = _report(results, "watch")
    settings, watchers = report["settings"], report["details"]["watchers"]
    assert watchers["before"]["streams_open"] == settings["streams"]
    assert watchers["before"]["waits_in_flight"] == settings["waits"]
    assert not watchers["after"]["stream_errors"]
    wake_ups = report["details"]["wake_up_ms"]
    assert len(wake_ups["stream"]) == len(wake_ups["wait"]) == settings["wake_up_jobs"]
