"""fal's queue URLs for a request, built the way fal's own clients build them.

fal says to use the URLs its submit answer returns, and we do; this is only for a request we
learned of from its webhook before the submit answer was recorded.
"""

from __future__ import annotations

from app.fal.client import Submitted

NAMESPACES = ("workflows", "comfy")


def request_urls(queue_url: str, model: str, request_id: str) -> Submitted:
    parts = model.split("/")
    # Status, result and cancel use owner/app only, without the endpoint path.
    head = parts[:3] if parts[0] in NAMESPACES else parts[:2]
    base = f"{queue_url.rstrip('/')}/{'/'.join(head)}/requests/{request_id}"
    return Submitted(
        request_id=request_id,
        status_url=f"{base}/status",
        response_url=base,
        cancel_url=f"{base}/cancel",
    )
