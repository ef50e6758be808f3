"""OpenTelemetry tracing: one trace per job, off unless the OTEL_* variables ask for it.

Turned on by the standard variables: `OTEL_TRACES_EXPORTER` naming an exporter (`otlp`,
`console`, ...), or an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`). The rest (`OTEL_SERVICE_NAME`,
`OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, the exporter's headers, timeout and
compression, `OTEL_SDK_DISABLED`) mean what OpenTelemetry says they mean.

With none of them set nothing is imported from OpenTelemetry, nothing is instrumented, and each
hook costs one test of a module global: the `otel` extra stays optional, and the intake path
pays nothing for tracing it does not do.

On, the trace of a job starts at its `POST /v1/jobs` and its context (a W3C `traceparent`) is
stored with the job (`jobs.trace_context`); the submission to fal, fal's callback, the
reconciler's polls and every delivery of the job's events are spans of that trace, started from
the stored context (`job_span`). Deliveries carry it on to the receiver as a `traceparent`
header.

The state is process-wide (as OpenTelemetry's is) but kept here, not in OpenTelemetry's global
tracer provider, which can be set only once per process: `install` and `uninstall` can be
repeated, as tests need.
"""

from __future__ import annotations

import logging
import os
import re
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal

from app.logs import REDACTED, mask_callback_tokens

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

SpanKindName = Literal["internal", "client", "server", "producer", "consumer"]
Attributes = Mapping[str, str | int | float | bool]

TRACEPARENT = "traceparent"
# The OTLP exporter this project ships (the `otel` extra): OTLP over HTTP with protobuf bodies.
_OTLP_BY_PROTOCOL = {
    "http/protobuf": "otlp_proto_http",
    "grpc": "otlp_proto_grpc",
    "http/json": "otlp_json_http",
}
# Probes and metrics are scraped every few seconds: a trace each would drown the jobs'.
DEFAULT_EXCLUDED_URLS = r"/healthz$,/readyz$,/livez$,/metrics$"


class _State:
    def __init__(self, provider: TracerProvider, tracer: Tracer, asyncpg: Any) -> None:
        self.provider = provider
        self.tracer = tracer
        self.asyncpg = asyncpg  # the AsyncPGInstrumentor, to undo at uninstall
        self.apps: weakref.WeakSet[Any] = weakref.WeakSet()  # instrumented, to undo too


_state: _State | None = None


def enabled() -> bool:
    """Whether spans are being made in this process (the hooks' one test)."""
    return _state is not None


def requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the OTEL_* variables ask for traces: an exporter is named, or an OTLP endpoint
    is given. `OTEL_SERVICE_NAME` alone names the service of traces made, and asks for none."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    names = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if names:
        return any(name.strip() not in ("", "none") for name in names.split(","))
    return bool(
        environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
        or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    )


def start_from_env() -> bool:
    """Turn tracing on as the OTEL_* variables say, once per process (later calls change
    nothing). Every role calls it at start: the API (`create_app`) and the workers
    (`open_runtime`). False when tracing stays off."""
    if _state is not None:
        return True
    if not requested():
        return False
    try:
        exporters = _exporters_from_env()
    except ImportError:
        log.error(
            "OTEL_* variables ask for traces, but OpenTelemetry is not installed: "
            "install falrelay with its `otel` extra (pip install 'falrelay-server[otel]'); "
            "tracing stays off"
        )
        return False
    if not exporters:
        return False
    install(*exporters)
    return True


def _exporters_from_env() -> list[SpanExporter]:
    from importlib.metadata import entry_points

    import opentelemetry.sdk.trace  # noqa: F401  (ImportError here: the extra is missing)

    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    exporters: list[SpanExporter] = []
    for name in names:
        if name in ("", "none"):
            continue
        entry = name
        if name == "otlp":
            protocol = (
                os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf"
            ).strip()
            entry = _OTLP_BY_PROTOCOL.get(protocol, protocol)
        found = list(entry_points(group="opentelemetry_traces_exporter", name=entry))
        if not found:
            log.error(
                "OTEL_TRACES_EXPORTER=%s: no exporter %r is installed (the `otel` extra ships "
                "otlp over http/protobuf, and console); skipped",
                name,
                entry,
            )
            continue
        # Each exporter reads its own variables (endpoint, headers, timeout, compression).
        exporters.append(found[0].load()())
    return exporters


def install(*exporters: SpanExporter, batch: bool = True) -> None:
    """Tracing on, exporting to `exporters` (batched; `batch=False` exports each span as it
    ends, for tests). The sampler is OTEL_TRACES_SAMPLER's (parent-based, always on, by
    default), less the database calls made outside any span."""
    global _state
    if _state is not None:
        uninstall()

    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider, sampling
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    from app import __version__

    resource = Resource.create({SERVICE_VERSION: __version__})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: "falrelay"}))
    # The SDK reads OTEL_TRACES_SAMPLER itself when given no sampler; it is read here (the same
    # function) so that it can be wrapped.
    sampler = _no_orphan_queries(sampling._get_from_env_or_default())
    provider = TracerProvider(sampler=sampler, resource=resource)
    for exporter in exporters:
        provider.add_span_processor(
            BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        )
    instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    instrumentor.instrument(tracer_provider=provider)
    _state = _State(provider, provider.get_tracer("falrelay", __version__), instrumentor)


def uninstall() -> None:
    """Tracing off: spans still buffered are exported, and the instrumentation is undone
    (asyncpg's, and that of the apps `instrument_app` wrapped)."""
    global _state
    state, _state = _state, None
    if state is None:
        return
    state.asyncpg.uninstrument()
    if state.apps:
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        for app in list(state.apps):
            FastAPIInstrumentor.uninstrument_app(app)
    state.provider.shutdown()


def force_flush(timeout_millis: int = 5000) -> bool:
    """Export what is buffered now (tests; a drain)."""
    return True if _state is None else _state.provider.force_flush(timeout_millis)


def instrument_app(app: Any) -> None:
    """Spans for the HTTP routes of a FastAPI app, when tracing is on. Named by route template
    (`POST /v1/jobs`); without the ASGI send and receive spans; no probes or /metrics; paths
    and queries scrubbed of credentials (fal's callback token, signed file URLs)."""
    if _state is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_state.provider,
        server_request_hook=_scrub_request,
        excluded_urls=os.environ.get("OTEL_PYTHON_FASTAPI_EXCLUDED_URLS")
        or os.environ.get("OTEL_PYTHON_EXCLUDED_URLS")
        or DEFAULT_EXCLUDED_URLS,
        exclude_spans=["receive", "send"],
    )
    _state.apps.add(app)


_URL_ATTRIBUTES = ("http.target", "http.url", "url.full", "url.path", "url.query")
_QUERY_VALUE = re.compile(r"=[^&#]*")


def scrub_url(text: str) -> str:
    """A URL or path fit for a trace: fal's callback token masked, every query value too
    (`signature=`, a receiver's `?token=`: a URL's query is where credentials travel)."""
    path, question, query = mask_callback_tokens(text).partition("?")
    return path + question + _scrub_query(query)


def _scrub_request(span: Span, scope: dict[str, Any]) -> None:
    if not span.is_recording():
        return
    attributes: Mapping[str, Any] = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, scrub_url(value) if key != "url.query" else _scrub_query(value))


def _scrub_query(query: str) -> str:
    return _QUERY_VALUE.sub("=" + REDACTED, query)


# Helpers for the hooks. Each returns at once when tracing is off.


def current_traceparent() -> str | None:
    """The W3C `traceparent` of the span in progress (stored with a new job), or None."""
    if _state is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def inject(headers: dict[str, str]) -> None:
    """Add the `traceparent` of the span in progress to outgoing `headers`."""
    if _state is None:
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(headers)


def _kind(name: SpanKindName) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[name.upper()]


@contextmanager
def span(
    name: str, *, kind: SpanKindName = "internal", attributes: Attributes | None = None
) -> Iterator[Span | None]:
    """A span, child of the one in progress; None when tracing is off."""
    if _state is None:
        yield None
        return
    with _state.tracer.start_as_current_span(
        name, kind=_kind(kind), attributes=dict(attributes or {})
    ) as current:
        yield current


@contextmanager
def job_span(
    name: str,
    traceparent: str | None,
    *,
    kind: SpanKindName = "internal",
    attributes: Attributes | None = None,
    link_current: bool = False,
) -> Iterator[Span | None]:
    """A span of a job's trace, whatever is in progress: its parent is the job's stored
    `traceparent` (a root span when the job has none: made while tracing was off). With
    `link_current`, it links to the span in progress (the HTTP request it happens in, which
    stays a trace of its own). None when tracing is off."""
    if _state is None:
        yield None
        return
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = (
        TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
        if traceparent
        else Context()  # empty: a new trace, not a child of whatever is in progress
    )
    links = []
    if link_current:
        current = trace.get_current_span().get_span_context()
        if current.is_valid:
            links.append(trace.Link(current))
    with _state.tracer.start_as_current_span(
        name, context=parent, kind=_kind(kind), attributes=dict(attributes or {}), links=links
    ) as current_span:
        yield current_span


def set_attributes(span: Span | None, attributes: Attributes) -> None:
    if span is not None and span.is_recording():
        span.set_attributes(dict(attributes))


def set_error(span: Span | None, error_type: str, description: str | None = None) -> None:
    """Mark `span` failed (`error.type`, status ERROR) without an exception to record."""
    if span is None or not span.is_recording():
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, description))


def _no_orphan_queries(base: Any) -> Any:
    from opentelemetry import trace
    from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult

    class NoOrphanQueries(Sampler):
        """Database calls made outside any span — the workers' claims every poll, the LISTEN
        connection, the delivery recorder — would each be a trace of one span, several a
        second: they are dropped. Inside a span they are sampled as the rest of its trace."""

        def should_sample(
            self,
            parent_context: Any,
            trace_id: int,
            name: str,
            kind: Any = None,
            attributes: Any = None,
            links: Any = None,
            trace_state: Any = None,
        ) -> SamplingResult:
            if attributes and ("db.system" in attributes or "db.system.name" in attributes):
                parent = trace.get_current_span(parent_context).get_span_context()
                if not parent.is_valid:
                    return SamplingResult(Decision.DROP)
            return base.should_sample(  # type: ignore[no-any-return]
                parent_context, trace_id, name, kind, attributes, links, trace_state
            )

        def get_description(self) -> str:
            return f"NoOrphanQueries{{{base.get_description()}}}"

    return NoOrphanQueries()
