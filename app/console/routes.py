"""The web console at /console: thin handlers over the same services as the /v1 API."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from app.api.deps import RuntimeDep
from app.api.usage import default_budget
from app.billing.usage import month_spend, month_start, spend_per_day
from app.console import charts, queries, search, session
from app.console.pages import ConsoleRoute, local_path, render, see_other, stylesheet
from app.console.session import CheckedFormDep, CsrfRefused, SessionDep
from app.console.views import (
    by_target,
    deliveries_with_attempts,
    elide_data,
    input_fields,
    job_card,
    job_files,
    month_days,
    parse_month,
    settling,
    timeline,
)
from app.events import history as event_history
from app.jobs import service as jobs_service
from app.jobs.models import JobStatus
from app.jobs.schemas import job_view
from app.jobs.service import FalUnreachable, JobNotCancelable
from app.lifecycle import purge
from app.lifecycle.purge import JobNotFinished
from app.pagination import page_of
from app.webhooks import deliveries, endpoints
from app.webhooks.models import DeliveryStatus
from app.webhooks.schemas import EndpointUpdate
from app.webhooks.views import endpoint_view

ROOT = session.PATH
router = APIRouter(prefix=ROOT, include_in_schema=False, route_class=ConsoleRoute)

GALLERY_PAGE_SIZE = 24
DELIVERY_PAGE_SIZE = 25
ENDPOINT_PAGE_SIZE = 50
# A job has a handful of events, each sent to a handful of targets.
JOB_DELIVERIES_SHOWN = 100
RECOVER_WINDOWS = {"1": "the last hour", "24": "the last 24 hours", "168": "the last 7 days"}
ROTATION_GRACE_SECONDS = 24 * 3600


async def _page(
    request: Request, runtime: RuntimeDep, user: session.Session, template: str, **context: Any
) -> Response:
    name = await queries.client_name(runtime.pool, user.client_id)
    return render(request, template, user=user, client_name=name, **context)


@router.get("")
async def console_home() -> Response:
    return see_other(f"{ROOT}/jobs")


@router.get("/static/console.css")
async def console_stylesheet() -> Response:
    return stylesheet()


@router.get("/login")
async def login_page(
    request: Request, back: Annotated[str | None, Query(alias="next")] = None
) -> Response:
    return render(request, "login.html", next=local_path(back, ""), error=None)


@router.post("/login")
async def log_in(request: Request, runtime: RuntimeDep) -> Response:
    if not session.same_origin(request):
        raise CsrfRefused
    form = await session.read_form(request)
    key = form.get("key", "").strip()
    user = await session.open_session(runtime.pool, key, datetime.now(UTC)) if key else None
    if user is None:
        error = "That API key is not valid, or it was revoked."
        return render(
            request,
            "login.html",
            status_code=401,
            next=local_path(form.get("next"), ""),
            error=error,
        )
    response = see_other(local_path(form.get("next"), f"{ROOT}/jobs"))
    session.start(request, response, user)
    return response


@router.post("/logout")
async def log_out(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep
) -> Response:
    await session.close_session(runtime.pool, user)
    response = see_other(f"{ROOT}/login")
    session.end(request, response)
    return response


@router.get("/jobs")
async def gallery(
    request: Request,
    runtime: RuntimeDep,
    user: SessionDep,
    status: str | None = None,
    q: str = "",
    cursor: str | None = None,
) -> Response:
    wanted = search.parse(q)
    if wanted.job_id is not None:
        return see_other(f"{ROOT}/jobs/{wanted.job_id}")
    status = status if status in set(JobStatus) else None
    page = page_of([], GALLERY_PAGE_SIZE)
    if wanted.error is None:
        page = await jobs_service.list_jobs(
            runtime.pool,
            user.client_id,
            status=JobStatus(status) if status is not None else None,
            model=None,
            created_after=None,
            created_before=None,
            metadata=wanted.metadata,
            limit=GALLERY_PAGE_SIZE,
            cursor=cursor,
        )
    return await _page(
        request,
        runtime,
        user,
        "gallery.html",
        jobs=[job_card(row) for row in page.rows],
        next_cursor=page.next_cursor,
        paged=cursor is not None,
        status=status,
        statuses=list(JobStatus),
        q=q,
        search_error=wanted.error,
    )


@router.get("/jobs/{job_id}")
async def job_page(
    request: Request, runtime: RuntimeDep, user: SessionDep, job_id: str
) -> Response:
    row = await jobs_service.get_job(runtime.pool, user.client_id, job_id)
    job = job_view(row)
    events = await event_history.first_page(runtime.pool, row["id"])
    page = await deliveries.list_page(
        runtime.pool,
        user.client_id,
        job_id=row["id"],
        status=None,
        limit=JOB_DELIVERIES_SHOWN,
        cursor=None,
    )
    attempts = await queries.attempts_of(runtime.pool, [d["id"] for d in page.rows])
    shown = deliveries_with_attempts(page.rows, attempts)
    return await _page(
        request,
        runtime,
        user,
        "job.html",
        job=job,
        files=job_files(job),
        input_fields=input_fields(job["input"]),
        # The whole output too (what is not a file: seeds, flags, text), data: URIs elided.
        output_json=(
            None
            if job["output"] is None
            else json.dumps(elide_data(job["output"]), indent=2, ensure_ascii=False)
        ),
        here=f"{ROOT}/jobs/{job['id']}",
        timeline=timeline(job, events),
        targets=by_target(shown),
        # How many are shown when there are more than that.
        more_deliveries=JOB_DELIVERIES_SHOWN if page.next_cursor else None,
        refresh=settling(shown, datetime.now(UTC), job),
        cancelable=not JobStatus(job["status"]).is_terminal,
    )


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, job_id: str
) -> Response:
    response = see_other(f"{ROOT}/jobs/{job_id}")
    try:
        await jobs_service.cancel_job(
            runtime.pool, runtime.fal, runtime.wakeup, user.client_id, job_id
        )
    except (JobNotCancelable, FalUnreachable) as exc:
        session.flash(request, response, "error", exc.detail or exc.title)
    else:
        session.flash(request, response, "ok", "The job was canceled.")
    return response


@router.post("/jobs/{job_id}/delete")
async def delete_job(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, job_id: str
) -> Response:
    try:
        await purge.delete_job(runtime.pool, runtime.store, user.client_id, job_id)
    except JobNotFinished as exc:
        response = see_other(f"{ROOT}/jobs/{job_id}")
        session.flash(request, response, "error", exc.detail or exc.title)
        return response
    response = see_other(f"{ROOT}/jobs")
    session.flash(request, response, "ok", f"Job {job_id} was deleted, with its files.")
    return response


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, delivery_id: str
) -> Response:
    await deliveries.retry(runtime.pool, user.client_id, delivery_id, wakeup=runtime.wakeup)
    response = see_other(local_path(form.get("back"), f"{ROOT}/endpoints"))
    session.flash(request, response, "ok", f"Delivery {delivery_id} is being sent again now.")
    return response


@router.get("/endpoints")
async def endpoints_page(
    request: Request, runtime: RuntimeDep, user: SessionDep, cursor: str | None = None
) -> Response:
    page = await endpoints.list_page(
        runtime.pool, user.client_id, limit=ENDPOINT_PAGE_SIZE, cursor=cursor
    )
    return await _page(
        request,
        runtime,
        user,
        "endpoints.html",
        endpoints=[endpoint_view(row) for row in page.rows],
        next_cursor=page.next_cursor,
        paged=cursor is not None,
    )


async def _endpoint_page(
    request: Request,
    runtime: RuntimeDep,
    user: session.Session,
    endpoint_id: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    new_secret: str | None = None,
) -> Response:
    endpoint = await endpoints.get(runtime.pool, user.client_id, endpoint_id)
    delivery_status = DeliveryStatus(status) if status in set(DeliveryStatus) else None
    page = await deliveries.list_page(
        runtime.pool,
        user.client_id,
        endpoint_id=endpoint["id"],
        status=delivery_status,
        limit=DELIVERY_PAGE_SIZE,
        cursor=cursor,
    )
    attempts = await queries.attempts_of(runtime.pool, [d["id"] for d in page.rows])
    shown = deliveries_with_attempts(page.rows, attempts)
    view = endpoint_view(endpoint)
    return await _page(
        request,
        runtime,
        user,
        "endpoint.html",
        endpoint=view,
        here=f"{ROOT}/endpoints/{view['id']}",
        deliveries=shown,
        status=delivery_status,
        statuses=list(DeliveryStatus),
        next_cursor=page.next_cursor,
        paged=cursor is not None,
        recover_windows=RECOVER_WINDOWS,
        new_secret=new_secret,
        # Never on the page that shows a new secret: reloading it would post the form again.
        refresh=new_secret is None and settling(shown, datetime.now(UTC)),
    )


@router.get("/endpoints/{endpoint_id}")
async def endpoint_page(
    request: Request,
    runtime: RuntimeDep,
    user: SessionDep,
    endpoint_id: str,
    status: str | None = None,
    cursor: str | None = None,
) -> Response:
    return await _endpoint_page(request, runtime, user, endpoint_id, status=status, cursor=cursor)


@router.post("/endpoints/{endpoint_id}/recover")
async def recover_endpoint(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, endpoint_id: str
) -> Response:
    hours = form.get("hours", "24")
    window = RECOVER_WINDOWS.get(hours)
    if window is None:
        hours, window = "24", RECOVER_WINDOWS["24"]
    endpoint = await endpoints.get(runtime.pool, user.client_id, endpoint_id)
    since = datetime.now(UTC) - timedelta(hours=int(hours))
    count = await deliveries.recover(
        runtime.pool, user.client_id, endpoint["id"], since, wakeup=runtime.wakeup
    )
    response = see_other(f"{ROOT}/endpoints/{endpoint_id}")
    noun = "delivery" if count == 1 else "deliveries"
    session.flash(request, response, "ok", f"{count} failed {noun} from {window} sent again.")
    return response


@router.post("/endpoints/{endpoint_id}/rotate-secret")
async def rotate_endpoint_secret(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, endpoint_id: str
) -> Response:
    # Answered with the page itself, not a redirect: the secret is shown once and stored
    # nowhere on the way (not in a cookie, not in a URL).
    secret = await endpoints.rotate_secret(
        runtime.pool,
        user.client_id,
        endpoint_id,
        grace_seconds=ROTATION_GRACE_SECONDS,
        now=datetime.now(UTC),
    )
    return await _endpoint_page(request, runtime, user, endpoint_id, new_secret=secret)


@router.post("/endpoints/{endpoint_id}/test")
async def test_endpoint(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, endpoint_id: str
) -> Response:
    await endpoints.send_test(
        runtime.pool, user.client_id, endpoint_id, wakeup=runtime.wakeup, now=datetime.now(UTC)
    )
    response = see_other(f"{ROOT}/endpoints/{endpoint_id}")
    session.flash(request, response, "ok", "A ping event is on its way to this endpoint.")
    return response


@router.post("/endpoints/{endpoint_id}/enabled")
async def set_endpoint_enabled(
    request: Request, runtime: RuntimeDep, user: SessionDep, form: CheckedFormDep, endpoint_id: str
) -> Response:
    enabled = form.get("enabled") == "true"
    await endpoints.update(
        runtime.pool,
        user.client_id,
        endpoint_id,
        EndpointUpdate(enabled=enabled),
        allow_private=runtime.settings.allow_private_webhook_urls,
    )
    response = see_other(f"{ROOT}/endpoints/{endpoint_id}")
    text = "Endpoint enabled: new events will be sent to it." if enabled else "Endpoint disabled."
    session.flash(request, response, "ok", text)
    return response


@router.get("/usage")
async def usage_page(
    request: Request, runtime: RuntimeDep, user: SessionDep, month: str | None = None
) -> Response:
    """This month's (or `?month=YYYY-MM`'s) spend against the budget, and per day and model."""
    now = datetime.now(UTC)
    start = parse_month(month) or month_start(now)
    end = month_start(start, 1)
    first = start.date()
    figures = await month_spend(
        runtime.pool, user.client_id, first, default_budget(runtime.settings)
    )
    spend = await spend_per_day(runtime.pool, user.client_id, start, end)
    by_day = {date.fromisoformat(day.day): day.by_model for day in spend}
    days = month_days(first)
    return await _page(
        request,
        runtime,
        user,
        "usage.html",
        month=first,
        previous=month_start(start, -1).date(),
        following=month_start(start, 1).date() if end <= month_start(now) else None,
        figures=figures,
        chart=charts.spend_chart(days, by_day),
        budget=charts.budget_bar(figures.spent_usd, figures.reserved_usd, figures.budget_usd),
        chart_total=sum((day.total for day in spend), Decimal(0)),
    )
