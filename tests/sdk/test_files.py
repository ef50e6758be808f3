"""Files of any model in the SDK: a job's `files`, found in the output when an older service
sends none, and local files sent as data: URIs."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

from falrelay import File, Job
from falrelay.files import data_uri, files_in_output, files_of, kind_of, suffix_for

JOB: dict[str, Any] = {
    "id": "job_0193a9d2c4f07a4c9b1e2d3f4a5b6c7d",
    "model": "fal-ai/some/video-model",
    "status": "succeeded",
    "input": {"prompt": "a red fox"},
    "metadata": {},
    "callback_url": None,
    "error": None,
    "fal_request_id": "req-1",
    "created_at": "2025-01-01T00:00:00Z",
    "submitted_at": "2025-01-01T00:00:01Z",
    "started_at": "2025-01-01T00:00:02Z",
    "completed_at": "2025-01-01T00:00:03Z",
}
VIDEO_OUTPUT = {
    "video": {
        "url": "https://v3.fal.media/files/fox.mp4",
        "content_type": "video/mp4",
        "file_name": "fox.mp4",
        "file_size": 123456,
    },
    "seed": 42,
    # Not a file: a URL alone, with neither content type nor file name.
    "source": {"url": "https://fal.ai/models/some/video-model"},
}


def file(url: str, **fields: Any) -> File:
    defaults: dict[str, Any] = {
        "content_type": None,
        "kind": "file",
        "width": None,
        "height": None,
        "duration": None,
        "file_name": None,
        "file_size": None,
    }
    return File(url=url, **{**defaults, **fields})


def test_a_job_from_an_older_service_parses_and_its_files_come_from_the_output() -> None:
    job = Job.model_validate({**JOB, "output": VIDEO_OUTPUT})
    assert job.files == []
    assert files_of(job) == [
        file(
            "https://v3.fal.media/files/fox.mp4",
            content_type="video/mp4",
            kind="video",
            file_name="fox.mp4",
            file_size=123456,
        )
    ]


def test_the_services_files_are_taken_as_listed() -> None:
    listed = {
        "url": "https://v3.fal.media/files/fox.wav",
        "content_type": "audio/wav",
        "kind": "audio",
        "width": None,
        "height": None,
        "duration": 4.5,
        "file_name": "fox.wav",
        "file_size": 800,
        "source_url": None,
        "sha256": None,
        "thumbnail_url": None,
        "mirror_error": None,
    }
    # A kind this SDK does not know yet still parses.
    later = {**listed, "url": "https://v3.fal.media/files/fox.glb", "kind": "mesh"}
    job = Job.model_validate({**JOB, "output": VIDEO_OUTPUT, "files": [listed, later]})
    assert [f.kind for f in files_of(job)] == ["audio", "mesh"]
    assert files_of(job)[0].duration == 4.5
    assert job.model_dump(mode="json")["files"][0] == listed


def test_files_are_found_anywhere_in_the_output_in_order() -> None:
    output = {
        "images": [
            {"url": "https://f/a.png", "content_type": "image/png", "width": 1024, "height": 768},
            {"url": "https://f/b", "file_name": "b.webp", "width": True},
        ],
        "audio": {"url": "https://f/voice", "content_type": "audio/mpeg", "duration": 3},
        "nested": {"deeper": [{"url": "https://f/mesh.glb", "file_name": "mesh.glb"}]},
        "inline": {"url": "data:image/png;base64,iVBORw0KGgo=", "file_name": "x"},
        "text": "https://f/not-a-file.png",
        # A URL alone counts where the key names a kind, as fal's `images` and `audio_file` do.
        "audio_file": {"url": "https://f/speech"},
        "mask_images": [{"url": "https://f/m1"}],
        "reference": {"url": "https://f/not-a-file"},
    }
    found = files_in_output(output)
    assert [(f.url, f.kind) for f in found] == [
        ("https://f/a.png", "image"),
        ("https://f/b", "image"),  # from the file name's suffix
        ("https://f/voice", "audio"),
        ("https://f/mesh.glb", "file"),
        ("data:image/png;base64,iVBORw0KGgo=", "image"),  # the data: URI's own type
        ("https://f/speech", "audio"),
        ("https://f/m1", "image"),
    ]
    assert (found[0].width, found[0].height) == (1024, 768)
    assert found[1].width is None  # true is not a width
    assert found[2].duration == 3.0
    assert found[4].content_type == "image/png"
    assert files_in_output(None) == []
    assert files_in_output({"images": []}) == []


def test_kinds_and_suffixes() -> None:
    assert kind_of("video/webm") == "video"
    assert kind_of("Audio/Wav; codecs=1") == "audio"
    assert kind_of("application/zip") == "file"
    assert kind_of(None, "clip.mp4") == "video"
    assert kind_of(None, None) == "file"
    assert kind_of(None, "clip.mp4", "audio") == "audio"  # what the output calls it comes first
    assert kind_of("video/mp4", None, "image") == "video"  # after the content type

    assert suffix_for(file("https://f/x", content_type="image/jpeg")) == ".jpg"
    assert suffix_for(file("https://f/x", content_type="audio/wav")) == ".wav"
    assert suffix_for(file("https://f/x", file_name="Fox.PNG", content_type="image/png")) == ".png"
    assert suffix_for(file("https://f/files/clip.mp4?token=1")) == ".mp4"
    assert suffix_for(file("https://f/files/abc")) == ".bin"
    # A name with an odd "suffix" does not make a path of it.
    assert suffix_for(file("https://f/x", file_name="a.b/../c", content_type="video/mp4")) == ".mp4"


def test_a_local_file_as_a_data_uri(tmp_path: Path) -> None:
    picture = tmp_path / "face.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    uri = data_uri(picture)
    header, payload = uri.split(",", 1)
    assert header == "data:image/png;base64"
    assert base64.b64decode(payload) == picture.read_bytes()
    unknown = tmp_path / "blob"
    unknown.write_bytes(b"\x00\x01")
    assert data_uri(unknown) == "data:application/octet-stream;base64,AAE="
