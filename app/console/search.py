"""The gallery's search box: `key:value` terms that a job's metadata must all contain."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from app import ids
from app.ids import JOB_ID_PREFIX

MAX_TERMS = 10


@dataclass(frozen=True, slots=True)
class Search:
    metadata: dict[str, str] = field(default_factory=dict)
    # A job id typed into the box: the console goes straight to that job.
    job_id: str | None = None
    error: str | None = None


def parse(text: str) -> Search:
    """`order_id:A-1001 customer:"Acme Inc"` → {"order_id": "A-1001", "customer": "Acme Inc"}."""
    text = text.strip()
    if not text:
        return Search()
    if ids.decode(JOB_ID_PREFIX, text) is not None:
        return Search(job_id=text)
    try:
        terms = shlex.split(text)
    except ValueError:
        return Search(error="A quote is not closed.")
    if len(terms) > MAX_TERMS:
        return Search(error=f"At most {MAX_TERMS} key:value terms.")
    metadata: dict[str, str] = {}
    for term in terms:
        key, sep, value = term.partition(":")
        if not sep or not key:
            return Search(error=f"Search by metadata as key:value (got {term!r}).")
        metadata[key] = value
    return Search(metadata=metadata)
