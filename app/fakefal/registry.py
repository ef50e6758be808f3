"""Which model ids the fake serves: falrelay's catalog, plus ids registered with the fake.

fal answers a submit or run to an app it does not host with a 404, and so does the fake for any id
outside this set. falrelay can take on models at run time, and tests use ids of their own, so
further ids come from the `models` knob (`FALRELAY_FAKEFAL_MODELS`, `PATCH /_fake/config`,
`POST /_fake/models`). An id names a model (`owner/app/path`) or a whole app (`owner/app`, which
covers every path under it).
"""

from __future__ import annotations

from collections.abc import Collection

from app.fakefal.endpoints import Endpoint


def catalog_ids() -> frozenset[str]:
    """The ids of the models falrelay ships (its catalog's entries)."""
    # Imported here: the catalog is falrelay's, and the fake needs it only when it starts.
    from app.catalog import shipped_models

    return frozenset(spec.id for spec in shipped_models().values())


def known_model(endpoint: Endpoint, catalog: Collection[str], registered: Collection[str]) -> bool:
    """Whether the fake hosts this endpoint: its model id or its app is known."""
    return any(
        name in catalog or name in registered for name in (endpoint.model_id, endpoint.app_id)
    )
