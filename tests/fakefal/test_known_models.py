"""Which model ids the fake serves: the catalog's, and those registered with it; 404 for others."""

from __future__ import annotations

import httpx
import pytest

from app.fakefal import FakeFal, FakeFalConfig
from app.fakefal.registry import catalog_ids
from tests.fakefal.support import IMAGINEART, RunningFake
from tests.servers import LiveServer

PROMPT = {"prompt": "a red fox in snow", "resolution": "1K"}


async def test_unknown_models_are_404(fake: RunningFake, http: httpx.AsyncClient) -> None:
    for url in [
        f"{fake.url}/nobody/nothing",
        f"{fake.url}/run/nobody/nothing",
        f"{fake.url}/run/nobody/nothing/stream",
        f"{fake.url}/imagineart/other-app",
    ]:
        response = await http.post(url, json=PROMPT)
        assert response.status_code == 404, url
        assert "not found" in response.json()["detail"]
    assert len(fake.fake.requests) == 0


async def test_registering_models(fake: RunningFake, http: httpx.AsyncClient) -> None:
    models = f"{fake.url}/_fake/models"
    listed = (await http.get(models)).json()
    assert IMAGINEART in listed["catalog"]
    assert listed["catalog"] == sorted(catalog_ids())
    assert listed["registered"] == []
    for bad in [{"ids": ["just-one-segment"]}, {"ids": "someone/app"}, [1], {"ids": ["run/x"]}]:
        assert (await http.post(models, json=bad)).status_code == 422, bad
    added = await http.post(models, json={"ids": ["someone/app", "other/app/sub"]})
    assert added.json()["registered"] == ["someone/app", "other/app/sub"]
    # An app covers its paths; a model id covers itself (and its app's status URLs).
    assert (await http.post(f"{fake.url}/someone/app/any/path", json={})).status_code == 200
    assert (await http.post(f"{fake.url}/other/app/sub", json={})).status_code == 200
    assert (await http.post(f"{fake.url}/other/app/else", json={})).status_code == 404
    # The knob is the same list: a reset keeps it, a config PATCH replaces it.
    await http.post(f"{fake.url}/_fake/reset")
    assert (await http.get(models)).json()["registered"] == ["someone/app", "other/app/sub"]
    await http.patch(f"{fake.url}/_fake/config", json={"models": []})
    assert (await http.post(f"{fake.url}/someone/app", json={})).status_code == 404


def test_models_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALRELAY_FAKEFAL_MODELS", '["someone/app", "/other/app/"]')
    assert FakeFalConfig().models == ["someone/app", "other/app"]
    monkeypatch.setenv("FALRELAY_FAKEFAL_MODELS", '["storage/auth/token"]')
    with pytest.raises(ValueError, match="not model ids"):
        FakeFalConfig()


async def test_a_live_catalog_can_name_more_models(http: httpx.AsyncClient) -> None:
    # As falrelay dev would pass its catalog: asked at each request, so an import counts at once.
    imported: set[str] = set()
    fake = FakeFal(FakeFalConfig(), also_serves=imported.__contains__)
    with LiveServer(fake.app) as server:
        assert (await http.post(f"{server.url}/someone/app", json={})).status_code == 404
        imported.add("someone/app")
        assert (await http.post(f"{server.url}/someone/app", json={})).status_code == 200
        assert (await http.post(f"{server.url}/run/someone/app/x", json={})).status_code == 200
        assert (await http.post(f"{server.url}/someone/other", json={})).status_code == 404
