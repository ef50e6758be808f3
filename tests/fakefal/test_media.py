"""The fake's videos, sounds and other files: what a standard decoder makes of them, and names
that carry everything needed to make them again."""

from __future__ import annotations

import io
import wave

import pytest

from app.fakefal.media import AudioSpec, OtherSpec, VideoSpec, file_from_name
from app.fakefal.mp4 import encode_mp4, ycbcr
from app.fakefal.sizes import requested_image_size, requested_video_size
from tests.fakefal.media_checks import decode, plane_values


@pytest.mark.parametrize(
    ("width", "height", "fps", "frames"),
    [(1280, 720, 24, 24), (1920, 1080, 30, 45), (720, 1280, 24, 5), (18, 34, 25, 3), (2, 2, 1, 1)],
)
def test_mp4_decodes_to_every_frame_in_its_colour(
    width: int, height: int, fps: int, frames: int
) -> None:
    data = encode_mp4(width, height, fps, frames, (200, 30, 90))
    assert data[4:8] == b"ftyp"
    decoded_width, decoded_height, seconds, decoded = decode(data)
    assert (decoded_width, decoded_height) == (width, height)
    assert seconds == pytest.approx(frames / fps)
    assert len(decoded) == frames
    assert decoded[0].key_frame
    y, cb, cr = ycbcr((200, 30, 90))
    for frame in (decoded[0], decoded[-1]):
        assert (frame.width, frame.height) == (width, height)
        assert [plane_values(frame, i) for i in range(3)] == [{y}, {cb}, {cr}]


def test_mp4_is_small_and_refuses_sizes_it_cannot_write() -> None:
    assert len(encode_mp4(1920, 1080, 24, 24, (0, 0, 0))) < 20_000
    for width, height in [(3, 2), (2, 0), (4098, 2), (4096, 4096)]:
        with pytest.raises(ValueError, match=r"must be even|too large"):
            encode_mp4(width, height, 24, 1, (0, 0, 0))


def test_video_names_round_trip_and_fit_what_the_writer_can_make() -> None:
    spec = VideoSpec.fitted(0xABC, 1921, 1081, 24, 5)
    assert (spec.width, spec.height, spec.frames, spec.duration) == (1920, 1080, 120, 5.0)
    assert VideoSpec.from_file_name(spec.file_name) == spec
    assert file_from_name(spec.file_name) == spec
    assert len(spec.render()) == spec.file_size()
    assert decode(spec.render())[:3] == (1920, 1080, 5.0)
    big = VideoSpec.fitted(1, 8000, 8000, 240, 600)
    assert (big.fps, big.duration) == (60, 60.0)
    assert (big.width * big.height) // 256 <= 36864
    for name in [
        "0000000000000abc-1921x1080-24fps-120f.mp4",  # odd side
        "0000000000000abc-8000x2-24fps-1f.mp4",
        "0000000000000abc-4096x4096-24fps-1f.mp4",  # too many macroblocks
        "0000000000000abc-16x16-24fps-99999f.mp4",  # over a minute
        "0000000000000abc-16x16-0fps-1f.mp4",
    ]:
        assert VideoSpec.from_file_name(name) is None


def test_wav_opens_with_the_wave_module() -> None:
    spec = AudioSpec.fitted(7, 16000, 2.5)
    data = spec.render()
    assert len(data) == spec.file_size()
    with wave.open(io.BytesIO(data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
        assert reader.getframerate() == 16000
        assert reader.getnframes() / reader.getframerate() == pytest.approx(2.5)
        samples = reader.readframes(100)
    assert samples != bytes(len(samples))  # a tone, not silence
    assert file_from_name(spec.file_name) == spec
    assert AudioSpec.from_file_name("0000000000000007-100hz-10ms.wav") is None
    assert AudioSpec.fitted(7, 1_000_000, 1e9).duration == 60


def test_other_files_have_their_extensions_media_type() -> None:
    json_file = OtherSpec(5, "json")
    assert json_file.content_type == "application/json"
    assert json_file.render().startswith(b"{")
    assert file_from_name(json_file.file_name) == json_file
    assert len(OtherSpec(5, "bin").render()) == OtherSpec(5, "bin").file_size()
    for name in ["0000000000000005.exe", "5.json", "../0000000000000005.json"]:
        assert file_from_name(name) is None


@pytest.mark.parametrize(
    ("model_input", "size"),
    [
        ({}, (1024, 1024)),
        ({"image_size": "landscape_4_3"}, (1024, 768)),
        ({"image_size": "portrait_16_9"}, (576, 1024)),
        ({"image_size": {"width": 1280, "height": 720}}, (1280, 720)),
        ({"image_size": {"width": 14142, "height": 7071}}, (4096, 2048)),
        ({"image_size": "1536x1024"}, (1536, 1024)),
        ({"width": 640, "height": 480}, (640, 480)),
        ({"aspect_ratio": "16:9"}, (1280, 720)),
        ({"aspect_ratio": "16:9", "resolution": "2K"}, (2816, 1584)),
        ({"aspect_ratio": "match_input_image"}, (1024, 1024)),
    ],
)
def test_image_sizes_read_as_fal_models_read_them(
    model_input: dict[str, object], size: tuple[int, int]
) -> None:
    assert requested_image_size(model_input, 4096) == size


@pytest.mark.parametrize(
    ("model_input", "size"),
    [
        ({}, (1280, 720)),
        ({"resolution": "1080p"}, (1920, 1080)),
        ({"resolution": "480p", "aspect_ratio": "9:16"}, (480, 853)),
        ({"resolution": "720p", "aspect_ratio": "1:1"}, (720, 720)),
        ({"resolution": "4k"}, (3840, 2160)),
        ({"aspect_ratio": "auto"}, (1280, 720)),
        ({"video_size": "landscape_16_9"}, (1024, 576)),
    ],
)
def test_video_sizes(model_input: dict[str, object], size: tuple[int, int]) -> None:
    assert requested_video_size(model_input, 4096) == size
