"""Fidelity: fal's official JavaScript client (@fal-ai/client), unchanged, against the fake.

Each test runs one scenario of tests/fakefal/js/scenario.mjs in Node, which points the client
at the fake by rewriting fal's hosts in its `fetch`, and checks what the client saw. Skipped
where Node or npm is missing; the client is installed from the lock file on first use.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakefal.conftest import StartFake
from tests.fakefal.support import IMAGINEART, RunningFake

JS_DIR = Path(__file__).parent / "js"
RunScenario = Callable[[str, RunningFake], Any]


@pytest.fixture(scope="session")
def node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("fal's JS client needs Node.js and npm")
    if not (JS_DIR / "node_modules" / "@fal-ai" / "client" / "package.json").exists():
        installed = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}{installed.stderr}"
    return node


@pytest.fixture
def scenario(node: str) -> RunScenario:
    def run(name: str, fake: RunningFake) -> Any:
        done = subprocess.run(
            [node, "scenario.mjs", name, fake.url],
            cwd=JS_DIR,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return run


def test_run(start_fake: StartFake, scenario: RunScenario) -> None:
    fake = start_fake(run_latency=0.1)
    seen = scenario("run", fake)
    [image] = seen["result"]["data"]["images"]
    assert (image["width"], image["height"]) == (1280, 720)
    assert seen["result"]["requestId"] == next(iter(fake.fake.requests)).id
    assert seen["error"]["name"] == "ValidationError"
    assert seen["error"]["status"] == 422
    assert seen["error"]["body"]["detail"][0]["loc"] == ["body", "prompt"]
    assert seen["unknown"]["status"] == 404


def test_stream(start_fake: StartFake, scenario: RunScenario) -> None:
    fake = start_fake(queue_latency=0.1, run_latency=0.2)
    seen = scenario("stream", fake)
    events = seen["events"]
    assert events[:-1] == [{"partial": True, "progress": 0}, {"partial": True, "progress": 0.5}]
    assert events[-1] == seen["done"]
    assert seen["done"]["images"][0]["width"] == 1280
    [request] = list(fake.fake.requests)
    assert (request.mode, request.id) == ("stream", seen["requestId"])


def test_subscribe_polling(start_fake: StartFake, scenario: RunScenario) -> None:
    fake = start_fake(queue_latency=0.3, run_latency=0.5)
    seen = scenario("subscribePolling", fake)
    statuses = [update["status"] for update in seen["updates"]]
    assert statuses[0] == "IN_QUEUE"
    assert "IN_PROGRESS" in statuses
    assert statuses[-1] == "COMPLETED"
    assert seen["result"]["data"]["seed"] == 7


def test_subscribe_streaming_sends_each_log_line_once(
    start_fake: StartFake, scenario: RunScenario
) -> None:
    # Long enough that Node opens the stream while the request still waits, even on a busy
    # machine: every state is then seen once.
    fake = start_fake(queue_latency=1.0, run_latency=0.5)
    seen = scenario("subscribeStreaming", fake)
    updates = seen["updates"]
    assert [update["status"] for update in updates] == ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]
    # The client adds each event's lines to one list: every line appears once.
    messages = [line["message"] for line in updates[-1]["logs"]]
    assert len(messages) == 2
    assert messages[0] == f"Running {IMAGINEART}"
    assert seen["result"]["data"]["seed"] == 7


def test_submit_with_priority_and_start_timeout_status_result(
    start_fake: StartFake, scenario: RunScenario
) -> None:
    fake = start_fake(queue_latency=0.2, run_latency=0.1)
    seen = scenario("queue", fake)
    [request] = list(fake.fake.requests)
    assert seen["submitted"]["request_id"] == request.id
    assert (request.priority, request.start_timeout) == ("low", 30.0)
    assert seen["first"]["status"] == "IN_QUEUE"
    assert seen["completed"]["status"] == "COMPLETED"
    assert seen["result"]["requestId"] == request.id
    assert seen["result"]["data"]["images"][0]["height"] == 720


def test_cancel(start_fake: StartFake, scenario: RunScenario) -> None:
    fake = start_fake(queue_latency=30)
    seen = scenario("cancel", fake)
    assert seen["status"]["status"] == "COMPLETED"
    assert seen["status"]["error_type"] == "client_cancelled"
    assert seen["result"]["status"] == 499
    assert seen["again"]["status"] == 400
    assert seen["again"]["body"] == {"status": "ALREADY_COMPLETED"}


def test_upload_round_trips_bytes(fake: RunningFake, scenario: RunScenario) -> None:
    seen = scenario("upload", fake)
    for label in ("small", "multipart"):  # 200 kB, and 91 MB (the client goes multipart)
        assert seen[label]["same"] is True, label
        assert seen[label]["contentType"] == "image/png"
        assert seen[label]["url"].startswith(f"{fake.url}/files/")
    assert fake.fake.stats.files_uploaded == 2
