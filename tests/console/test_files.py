"""Files of any model in the console (in process, over HTTP): the job page shows each output
file by kind (image, video and audio players, a link) and the file inputs, the gallery a video
as a video tile; data: URIs never go into a page whole."""

from __future__ import annotations

import base64
import re
from typing import Any

from app.console.views import file_facts, input_fields, job_files
from app.db.pool import Pool
from tests.console.conftest import Console
from tests.console.test_pages import create_job, is_html
from tests.support import Tenant, job_uuid

FILES = "https://v3.fal.media/files"
OUTPUT: dict[str, Any] = {
    "images": [
        {"url": f"{FILES}/a.png", "content_type": "image/png", "width": 1024, "height": 768},
        {"url": f"{FILES}/b.jpg", "content_type": "image/jpeg", "file_size": 2048},
    ],
    "video": {
        "url": f"{FILES}/clip.mp4",
        "content_type": "video/mp4",
        "file_name": "clip.mp4",
        "width": 1280,
        "height": 720,
        "duration": 5.0,
    },
    "audio": {"url": f"{FILES}/voice.wav", "content_type": "audio/wav", "file_name": "voice.wav"},
    "mesh": {"url": f"{FILES}/fox.glb", "file_name": "fox.glb", "file_size": 3 * 1024 * 1024},
    "seed": 424242,
}
# 3,000 bytes of a (pretend) PNG: 4,000 characters of base64.
INLINE_BYTES = b"\x89PNG" + bytes(2996)
INLINE = "data:image/png;base64," + base64.b64encode(INLINE_BYTES).decode()


async def finish(pool: Pool, job: dict[str, Any], output: dict[str, Any], **input: Any) -> None:
    """The job as a model with this output and input would leave it (no worker runs here)."""
    await pool.execute(
        "UPDATE jobs SET status = 'succeeded', output = $2, input = input || $3 WHERE id = $1",
        job_uuid(job["id"]),
        output,
        input,
    )


def tags(page: str, name: str) -> list[str]:
    return re.findall(rf"<{name}\b[^>]*>", page)


async def test_the_job_page_shows_every_output_file_by_kind(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    job = await create_job(tenant, "a fox, moving")
    await finish(pool, job, OUTPUT)
    page = is_html(await console.http.get(f"/console/jobs/{job['id']}"), 200)
    output = page.split("<h2>Output</h2>")[1].split("</section>")[0]

    images = tags(output, "img")
    assert [re.search(r'src="([^"]+)"', tag)[1] for tag in images] == [  # type: ignore[index]
        f"{FILES}/a.png",
        f"{FILES}/b.jpg",
    ]
    assert 'width="1024" height="768"' in images[0]
    (video,) = tags(output, "video")
    assert f'src="{FILES}/clip.mp4"' in video
    assert "controls" in video
    assert 'preload="metadata"' in video
    assert 'width="1280" height="720"' in video
    (audio,) = tags(output, "audio")
    assert f'src="{FILES}/voice.wav"' in audio
    assert "controls" in audio
    assert re.search(
        rf'<a class="file-link mono" href="{FILES}/fox.glb"[^>]*download>fox.glb</a>', output
    )
    # With what is known of each.
    assert "1280 \N{MULTIPLICATION SIGN} 720 · 5 s · video/mp4" in output
    assert "3.0 MiB" in output
    assert "2.0 KiB" in output
    # What is not a file is in the output's JSON.
    assert "Output JSON" in output
    assert "424242" in output


async def test_a_succeeded_job_without_files_shows_its_output(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    job = await create_job(tenant)
    await finish(pool, job, {"text": "A fox is a small canid.", "inline": {"data": INLINE}})
    page = is_html(await console.http.get(f"/console/jobs/{job['id']}"), 200)
    assert "A fox is a small canid." in page
    assert "Waiting for fal" not in page
    assert "image/png data URI, 2.9 KiB" in page
    assert INLINE[40:80] not in page


async def test_file_inputs_are_thumbnails_links_and_labels(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    job = await create_job(tenant)
    await finish(
        pool,
        job,
        {"video": OUTPUT["video"]},
        image_url=f"{FILES}/face.png",
        audio_url=f"{FILES}/speech.mp3",
        image_urls=[INLINE, f"{FILES}/style%20ref.webp"],
        mask_url="not a url",
        loras=[{"path": INLINE, "scale": 0.5}],
        sync_mode=True,
    )
    page = is_html(await console.http.get(f"/console/jobs/{job['id']}"), 200)
    aside = page.split("<h2>Input</h2>")[1].split("</section>")[0]

    thumbs = re.findall(r'<a class="input-file input-thumb" href="([^"]+)"', aside)
    assert thumbs == [f"{FILES}/face.png", f"{FILES}/style%20ref.webp"]
    assert f'<img src="{FILES}/face.png" alt="face.png"' in aside
    assert re.search(
        rf'<a class="input-file mono" href="{FILES}/speech.mp3"[^>]*>speech.mp3</a>', aside
    )
    # The data URI: a label with its size, never its bytes, in the field and inside JSON.
    assert aside.count("image/png data URI, 2.9 KiB") == 2
    assert "base64," not in page
    assert '<dd class="mono">not a url</dd>' in aside
    assert "&#34;scale&#34;: 0.5" in aside
    assert '<dd class="mono">true</dd>' in aside  # JSON, not Python's True


async def test_the_gallery_shows_a_video_as_a_muted_video_tile(
    console: Console, pool: Pool, tenant: Tenant
) -> None:
    video_job = await create_job(tenant, "a fox running")
    await finish(pool, video_job, {"video": OUTPUT["video"]})
    sound_job = await create_job(tenant, "a fox barking")
    await finish(pool, sound_job, {"audio": OUTPUT["audio"], "images": OUTPUT["images"]})
    image_job = await create_job(tenant, "a still fox")
    await finish(pool, image_job, {"images": OUTPUT["images"]})
    page = is_html(await console.http.get("/console/jobs"), 200)

    def card(job: dict[str, Any]) -> str:
        return page.split(f'href="/console/jobs/{job["id"]}"')[1].split("</li>")[0]

    (video,) = tags(card(video_job), "video")
    assert f'src="{FILES}/clip.mp4"' in video
    assert "muted" in video
    assert 'preload="metadata"' in video
    assert "controls" not in video  # the tile is a link to the job
    assert "poster" not in video
    assert "Video · 5 s" in card(video_job)
    assert not tags(card(video_job), "img")

    assert "Audio" in card(sound_job)
    assert "3 files" in card(sound_job)
    assert "2 images" in card(image_job)
    assert f'<img src="{FILES}/a.png"' in card(image_job)


async def test_media_may_come_from_fals_file_hosts(console: Console, tenant: Tenant) -> None:
    job = await create_job(tenant)
    response = await console.http.get(f"/console/jobs/{job['id']}")
    policy = response.headers["content-security-policy"]
    assert "media-src * data:" in policy
    assert "default-src 'none'" in policy


def test_the_jobs_own_files_come_first_else_the_output_is_searched() -> None:
    listed = [{"url": f"{FILES}/x.mp4", "kind": "video", "content_type": "video/mp4"}]
    assert job_files({"files": listed, "output": OUTPUT}) == listed
    found = job_files({"output": OUTPUT})
    assert [(f["url"].rsplit("/", 1)[1], f["kind"]) for f in found] == [
        ("a.png", "image"),
        ("b.jpg", "image"),
        ("clip.mp4", "video"),
        ("voice.wav", "audio"),
        ("fox.glb", "file"),
    ]
    assert found[2]["duration"] == 5.0
    assert job_files({"output": None}) == []


def test_input_fields_sizes_and_what_is_a_file() -> None:
    fields = {
        f.name: f
        for f in input_fields(
            {
                "prompt": "shown on its own",
                "image_url": "data:image/png,%89PNG",
                "video_url": "ftp://files.example/clip.mp4",  # not http(s): text
                "image_urls": [f"{FILES}/a.png", 42],  # not all files: JSON text
                "reference_urls": [],
                "num_images": 2,
            }
        )
    }
    assert list(fields) == ["image_url", "image_urls", "num_images", "reference_urls", "video_url"]
    (ref,) = fields["image_url"].files
    assert (ref.url, ref.kind, ref.size, ref.label) == (
        None,
        "image",
        4,
        "image/png data URI, 4 B",
    )
    assert fields["video_url"].text == "ftp://files.example/clip.mp4"
    assert fields["image_urls"].text == f'["{FILES}/a.png", 42]'
    assert fields["reference_urls"].text == "[]"
    assert fields["num_images"].text == "2"


def test_captions() -> None:
    assert file_facts({"width": 1280, "height": 720, "duration": 125.4, "file_size": 5}) == (
        "1280 \N{MULTIPLICATION SIGN} 720 · 2 min 5 s · 5 B"
    )
    assert file_facts({"duration": 4.5, "content_type": "audio/wav"}) == "4.5 s · audio/wav"
    assert file_facts({"url": "https://f/x"}) == ""
