"""One trace per job (app.tracing): a job through the whole stack — falrelay serve, the fake
fal calling back, a receiver on loopback — makes one trace, from its POST /v1/jobs to the
delivery of its terminal event, and the receiver is handed that trace's `traceparent`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from app import tracing
from tests.receivers import Receiver
from tests.servers import LiveServer
from tests.stack import StackFactory
from tests.support import job_uuid, until


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    receiver = Receiver()
    with LiveServer(receiver.app) as server:
        yield receiver, server.url


@pytest.fixture
def exported() -> Iterator[InMemorySpanExporter]:
    """Tracing on, each span exported as it ends; off again after the test, for the others."""
    exporter = InMemorySpanExporter()
    tracing.install(exporter, batch=False)
    try:
        yield exporter
    finally:
        tracing.uninstall()
    assert not tracing.enabled()


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def traceparent_of(span: ReadableSpan) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"


async def test_a_job_is_one_trace_from_its_post_to_its_delivery(
    make_stack: StackFactory,
    receiver: tuple[Receiver, str],
    exported: InMemorySpanExporter,
) -> None:
    inbox, receiver_url = receiver
    async with make_stack() as stack:
        response = await stack.api.post(
            "/v1/jobs",
            json={
                "input": {"prompt": "a red fox in snow", "resolution": "1K"},
                "callback_url": f"{receiver_url}/done",
            },
        )
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        assert (await stack.wait_for(job_id))["status"] == "succeeded"
        await until(lambda: named(exported.get_finished_spans(), "deliver job.succeeded"))
        stored = await stack.pool.fetchval(
            "SELECT trace_context FROM jobs WHERE id = $1", job_uuid(job_id)
        )
        token = (await stack.callback_url(job_id)).rsplit("/", 1)[1]

    # Off again, the app is as it was without tracing (other tests build theirs afresh).
    tracing.uninstall()
    assert not getattr(stack.app, "_is_instrumented_by_opentelemetry", True)

    spans = exported.get_finished_spans()
    (intake,) = named(spans, "POST /v1/jobs")
    assert intake.kind is SpanKind.SERVER
    trace_id = intake.context.trace_id
    # The job keeps its request's context: the parent of all that happens to it later.
    assert stored == traceparent_of(intake)

    def children(name: str) -> list[ReadableSpan]:
        found = named(spans, name)
        assert found, f"no {name!r} span"
        for span in found:
            assert span.context.trace_id == trace_id, f"{name!r} is in another trace"
            assert parent_id(span) == intake.context.span_id
        return found

    (submission,) = children("submit job")
    (callback,) = children("fal callback")
    (delivery,) = children("deliver job.succeeded")

    # Within them, the fal call and the Postgres queries.
    (fal_submit,) = named(spans, "fal submit")
    assert parent_id(fal_submit) == submission.context.span_id
    assert fal_submit.kind is SpanKind.CLIENT
    # The job's insert, however its statement begins (intake is one statement with CTEs).
    inserts = [
        s
        for s in spans
        if parent_id(s) == intake.context.span_id
        and any("INSERT INTO jobs" in str(value) for value in (s.attributes or {}).values())
    ]
    assert inserts, "the job's INSERT is not in the request's span"
    assert any(parent_id(s) == callback.context.span_id for s in spans), "no query in callback"

    # fal's callback request is a trace of its own (its parent would be fal's), linked from the
    # job's; its path is kept without the URL's token.
    (callback_request,) = [s for s in spans if s.name.startswith("POST /callbacks/fal/")]
    assert callback_request.context.trace_id != trace_id
    assert [link.context.span_id for link in callback.links] == [callback_request.context.span_id]
    assert callback.attributes is not None
    assert callback.attributes["falrelay.callback.outcome"] == "applied"
    recorded = str(dict(callback_request.attributes or {}))
    assert token not in recorded
    assert "[redacted]" in recorded

    # The receiver got the delivery's context: its own spans would join the job's trace.
    (request,) = inbox.at("/done")
    assert request.headers["traceparent"] == traceparent_of(delivery)
    assert delivery.kind is SpanKind.CLIENT
    assert delivery.attributes is not None
    assert delivery.attributes["http.response.status_code"] == 200

    # No trace of a lone query: the workers' claims, polled every 50 ms here, made none.
    for span in spans:
        if span.attributes and "db.system" in span.attributes:
            assert span.parent is not None, f"an orphan query span: {span.name}"
