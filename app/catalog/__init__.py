"""The fal models falrelay runs, kept as data: one catalog entry per model.

Adding a model is adding a document (a file in `entries/`, or `falrelay models import`), not
code: its input and output JSON Schemas as fal publishes them, its price rule and its typical
run time. `CATALOG` is this process's view of every entry.
"""

from __future__ import annotations

from app.catalog.registry import CATALOG, Catalog, shipped_models
from app.catalog.spec import EntryInvalid, InputInvalid, InputIssue, ModelSpec, from_document

# The model a job runs when it names none: the first model falrelay ran.
DEFAULT_MODEL_ID = "imagineart/imagineart-2.0-preview/text-to-image"

__all__ = [
    "CATALOG",
    "DEFAULT_MODEL_ID",
    "Catalog",
    "EntryInvalid",
    "InputInvalid",
    "InputIssue",
    "ModelSpec",
    "from_document",
    "shipped_models",
]
