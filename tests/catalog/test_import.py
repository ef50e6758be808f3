"""`falrelay models import` as an operator runs it, then a job on the imported model, through the
service and the fake fal over real HTTP."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.reliability.processes import falrelay_command, serve_environment
from tests.stack import StackFactory
from tests.support import assert_problem

pytestmark = pytest.mark.slow

SEEDREAM_ID = "fal-ai/bytedance/seedream/v4/text-to-image"
SEEDREAM = (
    Path(__file__).parent
    / "fixtures"
    / "fal-ai--bytedance--seedream--v4--text-to-image.openapi.json"
)


def models(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        falrelay_command("models", *args),
        env=serve_environment(database_url=database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_an_imported_model_is_listed_priced_and_runs(make_stack: StackFactory) -> None:
    async with make_stack() as stack:
        url = stack.settings.require_database_url()
        # fal's document has no price: refused, nothing stored.
        refused = models(url, "import", str(SEEDREAM))
        assert refused.returncode == 1
        assert "--price" in refused.stderr
        dry = models(url, "import", str(SEEDREAM), "--price", "image:0.03", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert await stack.pool.fetchval("SELECT count(*) FROM models") == 0

        imported = models(url, "import", str(SEEDREAM), "--price", "image:0.03")
        assert imported.returncode == 0, imported.stderr
        report = imported.stdout
        assert f"model      {SEEDREAM_ID}" in report
        assert "  prompt: string, required" in report
        assert "  images (image files)" in report
        document = await stack.pool.fetchval(
            "SELECT document FROM models WHERE id = $1", SEEDREAM_ID
        )
        assert document["price"] == {
            "unit": "image",
            "unit_price_usd": "0.03",
            "typical_units": "1",
        }
        listed = models(url, "list")
        assert f"{SEEDREAM_ID}  text-to-image  $0.03 per image  (imported)" in listed.stdout

        served = {m["id"]: m for m in (await stack.api.get("/v1/models")).json()["data"]}
        assert served[SEEDREAM_ID]["input_schema"]["required"] == ["prompt"]

        # Checked against the imported schema, at once on this replica.
        bad = await stack.api.post(
            "/v1/jobs", json={"model": SEEDREAM_ID, "input": {"prompt": "p", "num_images": 99}}
        )
        problem = assert_problem(bad, 422, "validation")
        assert [issue["loc"] for issue in problem["errors"]] == [["body", "input", "num_images"]]
        created = await stack.api.post(
            "/v1/jobs", json={"model": SEEDREAM_ID, "input": {"prompt": "a lighthouse"}}
        )
        assert created.status_code == 201, created.text
        assert created.json()["input"]["num_images"] == 1  # the schema's default
        job = await stack.wait_for(created.json()["id"], within=30)
        assert job["status"] == "succeeded", job
        assert [f["kind"] for f in job["files"]] == ["image"]
        cost = await stack.pool.fetchval(
            "SELECT unit_price_usd FROM jobs WHERE model = $1", SEEDREAM_ID
        )
        assert str(cost) == "0.030000"

        removed = models(url, "remove", SEEDREAM_ID)
        assert removed.returncode == 0, removed.stderr
        assert await stack.pool.fetchval("SELECT count(*) FROM models") == 0
        gone = models(url, "remove", "fal-ai/flux/dev")
        assert gone.returncode == 1
        assert "shipped model cannot be removed" in gone.stderr
