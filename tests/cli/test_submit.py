"""`falrelay submit`, run as a user runs it (a subprocess) against the whole product over real
HTTP: the service, its workers and the fake fal."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import pty
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from app.catalog import DEFAULT_MODEL_ID
from falrelay import File, Job
from falrelay.cli.connection import UsageError
from falrelay.cli.submit import (
    add_arguments,
    build_input,
    directory_paths,
    download,
    is_directory,
    keep_text,
    output_paths,
)
from falrelay.files import files_of
from tests.sdk.support import key_of
from tests.servers import free_port
from tests.stack import Stack, StackFactory
from tests.support import job_uuid

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def falrelay(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("falrelay")
    return [str(script), *args] if script.exists() else [sys.executable, "-m", "app", *args]


async def submit(
    stack: Stack,
    cwd: Path,
    *args: str,
    key: bool = True,
    stderr: int | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    env["FALRELAY_URL"] = stack.service_url
    if key:
        env["FALRELAY_API_KEY"] = key_of(stack)
    return await asyncio.to_thread(
        subprocess.run,
        falrelay("submit", *args),
        cwd=cwd,
        env=env,
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_submit_waits_shows_progress_and_downloads_the_image(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        result = await submit(
            stack,
            tmp_path,
            "a red fox in snow",
            "--aspect-ratio", "16:9",
            "--resolution", "1K",
            "--metadata", "order_id=A-1001",
            "--wait",
            "--out", "fox.png",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stdout == "fox.png\n"
        image = (tmp_path / "fox.png").read_bytes()
        assert png_size(image) == (1280, 720)

        # Not a terminal: one line per state, ending at succeeded.
        lines = result.stderr.splitlines()
        job_id = lines[0].split()[0]
        assert lines[0].startswith(f"{job_id} queued")
        assert lines[-1].startswith(f"{job_id} succeeded")
        assert all(line.startswith(job_id) for line in lines)

        job = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert job["metadata"] == {"order_id": "A-1001"}
        assert job["input"]["aspect_ratio"] == "16:9"
        # The file is the very image the job's URL serves.
        served = await stack.fal.get(job["output"]["images"][0]["url"])
        assert served.content == image


async def test_submit_json_prints_the_job_alone_and_finds_the_dev_key(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        # As `falrelay dev` leaves it: the key in ./.falrelay/dev-api-key, no FALRELAY_API_KEY.
        (tmp_path / ".falrelay").mkdir()
        (tmp_path / ".falrelay" / "dev-api-key").write_text(key_of(stack) + "\n")
        result = await submit(
            stack, tmp_path, "a red fox", "--seed", "42", "--wait", "--json", key=False
        )
        assert result.returncode == 0, result.stderr
        printed = json.loads(result.stdout)
        assert printed == (await stack.api.get(f"/v1/jobs/{printed['id']}")).json()
        assert printed["status"] == "succeeded"
        assert printed["input"]["seed"] == 42

        # Without --wait: only the job id, and the job is stored.
        queued = await submit(stack, tmp_path, "a grey wolf")
        assert queued.returncode == 0, queued.stderr
        job_id = queued.stdout.strip()
        assert queued.stdout == job_id + "\n"
        row = await stack.pool.fetchrow(
            "SELECT input FROM jobs WHERE id = $1 AND client_id = $2",
            job_uuid(job_id),
            stack.client_id,
        )
        assert row is not None
        assert row["input"]["prompt"] == "a grey wolf"


async def test_submit_on_a_terminal_rewrites_one_status_line(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        await stack.configure_fal(run_latency=0.5)
        controller, terminal = pty.openpty()
        try:
            result = await submit(stack, tmp_path, "a red fox", "--wait", stderr=terminal)
            os.close(terminal)
            shown = b""
            while True:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the terminal's other end is closed: all read
                    break
                if not chunk:
                    break
                shown += chunk
        finally:
            os.close(controller)
        assert result.returncode == 0
        text = shown.decode()
        assert "\r\x1b[K" in text  # the line is redrawn in place
        assert text.count("\n") <= 2  # (a pty turns the one final newline into \r\n)
        final = text.rsplit("\r\x1b[K", 1)[1]
        assert " → " in final
        assert "succeeded" in final
        assert result.stdout.strip().endswith(".png")


async def test_exit_codes_for_a_failed_job_and_for_errors(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        await stack.configure_fal(error_rate=1.0, error_types=["internal_error"])
        failed = await submit(stack, tmp_path, "a red fox", "--wait", "--json")
        assert failed.returncode == 1, failed.stderr
        job = json.loads(failed.stdout)
        assert job["status"] == "failed"
        assert f"{job['id']} failed" in failed.stderr

        refused = await submit(stack, tmp_path, "a red fox", "--aspect-ratio", "7:5", "--wait")
        assert refused.returncode == 2
        assert refused.stdout == ""
        assert "422 Validation failed" in refused.stderr
        assert "body.input.aspect_ratio" in refused.stderr

        keyless = await submit(stack, tmp_path, "a red fox", key=False)
        assert keyless.returncode == 2
        assert "no API key" in keyless.stderr

        count = await stack.pool.fetchval(
            "SELECT count(*) FROM jobs WHERE client_id = $1", stack.client_id
        )
        assert count == 1  # only the failed job: refused requests store nothing


def test_no_service_at_the_url_says_how_to_start_one(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("FALRELAY_")}
    done = subprocess.run(
        falrelay("submit", "a red fox", "--url", url, "--key", "k"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"no answer from {url}" in done.stderr
    assert "falrelay dev" in done.stderr


async def test_any_input_by_key_and_json_and_every_file_saved_in_a_directory(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        (tmp_path / "input.json").write_text(
            json.dumps({"prompt": "replaced below", "resolution": "1K", "aspect_ratio": "1:1"})
        )
        result = await submit(
            stack,
            tmp_path,
            "--model", DEFAULT_MODEL_ID,
            "--input-json", "input.json",
            "--input", "prompt=1984",  # JSON, but the model's input schema takes text here
            "--input", "aspect_ratio=9:16",
            "--input", "seed=42",  # JSON: the number 42, not the text "42"
            "--out", "results",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        job_id = result.stderr.splitlines()[0].split()[0]
        saved = tmp_path / "results" / f"{job_id}-1.png"
        assert result.stdout == f"{Path('results') / saved.name}\n"
        assert png_size(saved.read_bytes()) == (720, 1280)

        job = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert job["model"] == DEFAULT_MODEL_ID
        assert job["input"]["prompt"] == "1984"
        assert job["input"]["aspect_ratio"] == "9:16"
        assert job["input"]["resolution"] == "1K"
        assert job["input"]["seed"] == 42
        served = await stack.fal.get(job["output"]["images"][0]["url"])
        assert served.content == saved.read_bytes()


async def test_the_input_from_stdin_and_a_local_file_as_a_data_uri(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        # The default model takes no file input; a text file sent as its prompt shows what a
        # file input (`--input image_url=@face.png`) carries: the file, inline.
        (tmp_path / "note.txt").write_text("a fox")
        result = await submit(
            stack,
            tmp_path,
            "--input-json", "-",
            "--input", "prompt=@note.txt",
            stdin=json.dumps({"resolution": "1K", "reasoning": "high"}),
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        job = (await stack.api.get(f"/v1/jobs/{result.stdout.strip()}")).json()
        encoded = base64.b64encode(b"a fox").decode()
        assert job["input"]["prompt"] == f"data:text/plain;base64,{encoded}"
        assert job["input"]["reasoning"] == "high"
        assert job["input"]["resolution"] == "1K"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_input_values_are_json_when_they_parse_as_json(tmp_path: Path) -> None:
    face = tmp_path / "face.png"
    face.write_bytes(PNG_SIGNATURE)
    uri = "data:image/png;base64," + base64.b64encode(PNG_SIGNATURE).decode()
    built = build_input(
        parse(
            "--input", "n=3",
            "--input", "ratio=0.5",
            "--input", "safe=false",
            "--input", "size={\"width\": 512, \"height\": 512}",
            "--input", "text=a fox, in snow",
            "--input", "quoted=\"42\"",
            "--input", "nan=NaN",
            "--input", "empty=",
            "--input", "eq=a=b",
            "--input", f"image_url=@{face}",
            "--input", "image_urls=https://files.example/a.png",
            "--input", f"image_urls=@{face}",
        )
    )  # fmt: skip
    assert built == {
        "n": 3,
        "ratio": 0.5,
        "safe": False,
        "size": {"width": 512, "height": 512},
        "text": "a fox, in snow",
        "quoted": "42",
        "nan": "NaN",  # not JSON, though Python reads it
        "empty": "",
        "eq": "a=b",
        "image_url": uri,
        "image_urls": ["https://files.example/a.png", uri],
    }
    # The positional prompt and the ImagineArt flags still fill their fields; --input wins.
    assert build_input(parse("a fox", "--seed", "7", "--input", "seed=8")) == {
        "prompt": "a fox",
        "seed": 8,
    }


def test_input_mistakes_are_usage_errors(tmp_path: Path) -> None:
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "broken.json").write_text("{")
    cases = {
        "no input": [],
        "no file": ["--input", f"image_url=@{tmp_path / 'missing.png'}"],
        "not an object": ["--input-json", str(tmp_path / "list.json")],
        "is not JSON": ["--input-json", str(tmp_path / "broken.json")],
        "cannot read": ["--input-json", str(tmp_path / "absent.json")],
    }
    for message, argv in cases.items():
        with pytest.raises(UsageError, match=message):
            build_input(parse(*argv))
    with pytest.raises(SystemExit):
        parse("--input", "no-equals-sign")


def test_text_where_the_models_schema_takes_text() -> None:
    schema = {
        "properties": {
            "duration": {"type": "string", "enum": ["5", "10"]},
            "size": {"$ref": "#/$defs/Size"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "steps": {"type": "integer"},
            "either": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
        },
        "$defs": {"Size": {"enum": ["square", "1024"]}},
    }
    pairs = [
        ("duration", "10"),
        ("duration", "5"),  # the last one counts
        ("size", "1024"),
        ("note", "true"),
        ("steps", "30"),
        ("either", "7"),
        ("extra", "1"),
    ]
    built = build_input(parse(*[arg for k, v in pairs for arg in ("--input", f"{k}={v}")]))
    keep_text(built, pairs, schema)
    assert built == {
        "duration": "5",
        "size": "1024",
        "note": "true",
        "steps": 30,
        "either": 7,  # a number is what it takes too
        "extra": 1,  # not in the schema: as JSON reads it
    }


def test_several_images_are_numbered() -> None:
    assert output_paths(Path("fox.png"), 1) == [Path("fox.png")]
    assert output_paths(Path("out/fox.png"), 2) == [Path("out/fox-1.png"), Path("out/fox-2.png")]


def test_out_is_a_directory_unless_it_names_a_file(tmp_path: Path) -> None:
    (tmp_path / "existing.d").mkdir()
    assert is_directory("results")
    assert is_directory("results.v2/")
    assert is_directory(str(tmp_path / "existing.d"))
    assert not is_directory("fox.png")
    files = [
        File(url="https://f/1", content_type="image/png", kind="image"),
        File(url="https://f/clip", content_type="video/mp4", kind="video"),
        File(url="https://f/x/voice.wav", content_type=None, kind="audio"),
        File(url="https://f/blob", content_type=None, kind="file"),
    ]
    assert [p.name for p in directory_paths(Path("out"), "job_1", files)] == [
        "job_1-1.png",
        "job_1-2.mp4",
        "job_1-3.wav",
        "job_1-4.bin",
    ]


async def test_inline_files_are_decoded_into_the_directory(tmp_path: Path) -> None:
    # fal's sync mode: the bytes in the output itself, no URL to fetch.
    job = Job.model_validate(
        {
            "id": "job_1",
            "model": "fal-ai/any",
            "status": "succeeded",
            "input": {},
            "metadata": {},
            "callback_url": None,
            "output": {
                "image": {"url": "data:image/png;base64,iVBORw0KGgo=", "content_type": "image/png"},
                "audio": {"url": "data:audio/wav,RIFF%00", "file_name": "a.wav"},
            },
            "error": None,
            "fal_request_id": None,
            "created_at": "2025-01-01T00:00:00Z",
            "submitted_at": None,
            "started_at": None,
            "completed_at": None,
        }
    )
    saved = await download(job, files_of(job), tmp_path / "out", into_directory=True)
    assert saved == [tmp_path / "out" / "job_1-1.png", tmp_path / "out" / "job_1-2.wav"]
    assert saved[0].read_bytes() == PNG_SIGNATURE
    assert saved[1].read_bytes() == b"RIFF\x00"


async def test_a_video_model_with_a_local_image_as_its_file_input(
    make_stack: StackFactory, tmp_path: Path
) -> None:
    async with make_stack() as stack:
        # A 1x1 PNG, sent inline as the model's image_url.
        face = base64.b64decode(
            "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
        )
        (tmp_path / "face.png").write_bytes(face)
        result = await submit(
            stack,
            tmp_path,
            "--model", "fal-ai/kling-video/v2.1/standard/image-to-video",
            "--input", "prompt=the fox turns its head",
            "--input", "image_url=@face.png",
            "--input", "duration=5",  # the schema's "5" | "10": sent as text
            "--out", "clips",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        job_id = result.stderr.split()[0]
        (saved,) = (tmp_path / "clips").iterdir()
        assert saved.name == f"{job_id}-1.mp4"
        assert result.stdout == f"{Path('clips') / saved.name}\n"
        assert saved.read_bytes()[4:8] == b"ftyp"  # an MP4

        job = (await stack.api.get(f"/v1/jobs/{job_id}")).json()
        assert job["input"]["duration"] == "5"
        assert (
            job["input"]["image_url"] == "data:image/png;base64," + base64.b64encode(face).decode()
        )
        (file,) = job["files"]
        assert (file["kind"], file["content_type"]) == ("video", "video/mp4")
        assert (await stack.fal.get(file["url"])).content == saved.read_bytes()
