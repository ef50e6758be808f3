"""Tracing's switch (app.tracing): the OTEL_* variables turn it on, nothing else does; off, it
imports and instruments nothing; on, spans reach a real OTLP/HTTP endpoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app import tracing
from tests.receivers import Receiver
from tests.servers import LiveServer
from tests.stack import StackFactory


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "falrelay"}, False),  # names the service, asks for nothing
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_the_otel_variables_decide(environ: dict[str, str], on: bool) -> None:
    assert tracing.requested(environ) is on


def test_urls_lose_their_credentials() -> None:
    assert (
        tracing.scrub_url("http://h/callbacks/fal/job_1/s3cret-token")
        == "http://h/callbacks/fal/job_1/[redacted]"
    )
    assert (
        tracing.scrub_url("/files/a/b.png?expires=17&signature=abc123")
        == "/files/a/b.png?expires=[redacted]&signature=[redacted]"
    )
    assert tracing.scrub_url("https://receiver.example/hook") == "https://receiver.example/hook"


def test_off_by_default_nothing_is_imported_or_instrumented() -> None:
    """In a fresh interpreter with no OTEL_* variable: the app and the worker's services are
    built as `falrelay serve` builds them, and neither the SDK nor any instrumentation is
    imported, asyncpg is left as it is, and the routes are not wrapped."""
    script = """
import sys
import asyncpg
from app import tracing
from app.main import create_app
from app.settings import Settings
app = create_app(Settings(), run_worker=True)
assert not tracing.start_from_env() and not tracing.enabled()
assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
assert not hasattr(asyncpg.connection.Connection.fetch, "__wrapped__")
loaded = sorted(m for m in sys.modules if m.startswith(
    ("opentelemetry.sdk", "opentelemetry.instrumentation", "opentelemetry.exporter")))
assert not loaded, loaded
print("off")
"""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "off"


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    """A stand-in OTLP/HTTP collector on loopback, and the variables that point falrelay at it
    (nothing else: the exporter, its protocol and its path are the defaults)."""
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        for name in [k for k in os.environ if k.startswith("OTEL_")]:
            monkeypatch.delenv(name)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "falrelay-otlp-test")
        try:
            yield receiver
        finally:
            tracing.uninstall()


def _decoded(receiver: Receiver) -> list[ExportTraceServiceRequest]:
    requests = []
    for request in receiver.at("/v1/traces"):
        assert request.headers["content-type"] == "application/x-protobuf"
        message = ExportTraceServiceRequest()
        message.ParseFromString(request.body)
        requests.append(message)
    return requests


async def test_spans_reach_an_otlp_http_endpoint(
    make_stack: StackFactory, collector: Receiver
) -> None:
    assert tracing.start_from_env()
    async with make_stack() as stack:
        job_id = await stack.create_job()
        assert (await stack.wait_for(job_id))["status"] == "succeeded"
        await asyncio.to_thread(tracing.force_flush)

    deadline = time.monotonic() + 15
    while True:
        spans = {
            span.name: (span.trace_id.hex(), resource.resource)
            for message in _decoded(collector)
            for resource in message.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        }
        if {"POST /v1/jobs", "submit job", "fal callback"} <= spans.keys():
            break
        assert time.monotonic() < deadline, f"spans exported: {sorted(spans)}"
        await asyncio.sleep(0.05)
    assert spans["submit job"][0] == spans["POST /v1/jobs"][0] == spans["fal callback"][0]
    resource = spans["POST /v1/jobs"][1]
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "falrelay-otlp-test"
