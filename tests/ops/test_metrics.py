from __future__ import annotations

import re

from tests.e2e.test_deliveries import register
from tests.receivers import Receiver
from tests.servers import LiveServer
from tests.stack import StackFactory


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(rf"{re.escape(name)}(?:\{{(.*)\}})? (\S+)", line)
        if match and ",".join(sorted((match.group(1) or "").split(","))) == wanted:
            return float(match.group(2))
    return 0.0


async def test_metrics_move_with_a_job(make_stack: StackFactory) -> None:
    inbox = Receiver()
    with LiveServer(inbox.app) as receiver:
        async with make_stack() as stack:
            await register(stack, f"{receiver.url}/m")
            before = (await stack.api.get("/metrics")).text
            job = await stack.wait_for(await stack.create_job())
            assert job["status"] == "succeeded"
            after = ""
            for _ in range(100):
                after = (await stack.api.get("/metrics")).text
                if sample(after, "falrelay_deliveries_total", outcome="succeeded") > sample(
                    before, "falrelay_deliveries_total", outcome="succeeded"
                ):
                    break

    def moved(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("falrelay_http_requests_total", method="POST", route="/v1/jobs", status="201") == 1
    assert moved("falrelay_job_transitions_total", status="submitted") == 1
    assert moved("falrelay_job_transitions_total", status="succeeded") == 1
    assert moved("falrelay_fal_calls_total", operation="submit", outcome="ok") == 1
    assert moved("falrelay_fal_callbacks_total", outcome="applied") == 1
    assert moved("falrelay_deliveries_total", outcome="succeeded") == 1
    assert moved("falrelay_fal_call_duration_seconds_count", operation="submit") == 1
    # Routes are labelled by template, never by raw path (no label per job id).
    assert 'route="/v1/jobs/{job_id}"' in after
    assert f'route="/v1/jobs/{job["id"]}"' not in after
    for queue in ("submission", "reconciliation", "delivery"):
        assert f'falrelay_queue_depth{{queue="{queue}"}}' in after
        assert f'falrelay_queue_oldest_due_seconds{{queue="{queue}"}}' in after
    assert "falrelay_webhook_endpoints_disabled 0.0" in after
