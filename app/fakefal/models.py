"""What the fake's models do with an input: an output of the model's own shape, or its refusal.

Models validate their own input, as fal's do: the queue accepts anything at submit and an invalid
input surfaces as a 422 on the result. A catalog model (app.catalog) checks its input against
its input schema and answers an output made from its output schema, with real files behind its
URLs (outputs.py, media.py): images, videos and sounds of the size and length the input asked
for. ImagineArt 2.0 keeps its own input model and sizes (its fal model page); any other model id
answers one 1024x1024 image, enough for a client that only needs a well-formed output.
Everything is a function of the input and the seed: the same request makes the same files.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from app.fakefal.failures import Failure, validation_failure
from app.fakefal.images import MAX_SIDE, ImageSpec, image_key
from app.fakefal.media import OTHER_TYPES, AudioSpec, Kind, MediaFile, OtherSpec, VideoSpec
from app.fakefal.mp4 import MAX_WIDTH as MAX_VIDEO_SIDE
from app.fakefal.outputs import FileSlot, OutputBuilder, materialise
from app.fakefal.sizes import image_size, requested_image_size, requested_video_size
from app.fakefal.validation import InputRefused, check_input

IMAGINEART = "imagineart/imagineart-2.0-preview/text-to-image"
GENERIC_SIZE = (1024, 1024)
# 0 and -1 ask for a random seed (fal's model page).
RANDOM_SEEDS = (0, -1)
# The fields fal's models read how many outputs, how long and how fast from.
COUNT_FIELDS = ("num_images", "num_outputs", "num_videos", "num_samples", "batch_size")
SECONDS_FIELDS = ("duration", "duration_seconds", "seconds_total", "seconds", "audio_length")
FPS_FIELDS = ("fps", "frames_per_second", "frame_rate")
FRAMES_FIELDS = ("num_frames", "frames")
MAX_COUNT = 16
DEFAULT_FPS = 24
DEFAULT_SECONDS = 1.0
DEFAULT_SAMPLE_RATE = 16000
# Speech runs about 15 characters a second: a text-to-speech output lasts as long as its text.
SPEECH_CHARACTERS_PER_SECOND = 15
_IMAGE_FIELDS = ("url", "content_type", "width", "height", "file_name", "file_size")
_MEGAPIXEL = 1024 * 1024


class ImagineArt2Input(BaseModel):
    """Lax, as a FastAPI model app validates: unknown fields are ignored."""

    prompt: str = Field(min_length=1)
    aspect_ratio: Literal[
        "1:1", "16:9", "9:16", "4:3", "3:4", "3:1", "1:3", "3:2", "2:3", "21:9", "4:5", "5:4",
        "4:1", "1:4",
    ] = "1:1"  # fmt: skip
    resolution: Literal["1K", "2K"] = "2K"
    seed: int | None = None
    reasoning: Literal["high", "low"] = "low"


@dataclass(frozen=True, slots=True)
class CatalogModel:
    """What the fake needs of a catalog entry."""

    id: str
    input_schema: Mapping[str, Any]
    output_schema: Mapping[str, Any]
    typical_seconds: float
    price_unit: str


def catalog_model(model_id: str) -> CatalogModel | None:
    """The catalog's entry for the model: shipped, or imported when this process's catalog
    has read it (`falrelay dev` runs the fake beside the API)."""
    # Imported here: the catalog is falrelay's, and the fake must not need it at import.
    from app.catalog import CATALOG

    spec = CATALOG.get(model_id)
    if spec is None:
        return None
    return CatalogModel(
        id=spec.id,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        typical_seconds=spec.typical_seconds,
        price_unit=str(spec.price.unit),
    )


def typical_seconds(model_id: str) -> float:
    """How long the model typically runs at fal; 0 for a model the catalog does not know."""
    model = catalog_model(model_id)
    return model.typical_seconds if model is not None else 0.0


@dataclass(frozen=True, slots=True, eq=False)
class Generation:
    files: tuple[MediaFile, ...]
    seed: int
    # The output with each file as a `FileSlot`, written out by `output`.
    skeleton: Mapping[str, Any]
    # What fal bills for the run (`X-Fal-Billable-Units`): images, megapixels or seconds.
    billable_units: Decimal = Decimal(1)

    @property
    def images(self) -> tuple[ImageSpec, ...]:
        return tuple(file for file in self.files if isinstance(file, ImageSpec))

    def output(self, files_url: str) -> dict[str, Any]:
        """The model's output JSON; `files_url` is where this fake serves `/files/`."""
        document: dict[str, Any] = materialise(self.skeleton, files_url)
        return document

    def describe(self) -> str:
        """What was made, for the run's log: `2048x2048`, `1280x720 5.0 s`..."""
        parts = []
        for file in self.files:
            if isinstance(file, ImageSpec):
                parts.append(f"{file.width}x{file.height}")
            elif isinstance(file, VideoSpec):
                parts.append(f"{file.width}x{file.height} {file.duration:g} s")
            elif isinstance(file, AudioSpec):
                parts.append(f"{file.duration:g} s of audio")
            else:
                parts.append(file.file_name)
        return ", ".join(parts) or "no files"


def generate(model_id: str, model_input: Any, random_seed: int) -> Generation | Failure:
    """Run the model; `random_seed` is used when the input asks for a random one."""
    if model_id == IMAGINEART:
        return _imagineart(model_input, random_seed)
    model = catalog_model(model_id)
    if model is not None:
        return run_model(model, model_input, random_seed)
    given = model_input.get("seed") if isinstance(model_input, dict) else None
    seed = _seed(given, random_seed)
    key = image_key(seed, f"{model_id}\n{_canonical(model_input)}")
    return _images_output((ImageSpec(key, *GENERIC_SIZE),), seed)


def _imagineart(model_input: Any, random_seed: int) -> Generation | Failure:
    try:
        parsed = ImagineArt2Input.model_validate(model_input)
    except ValidationError as exc:
        return validation_failure(_fastapi_errors(exc))
    seed = _seed(parsed.seed, random_seed)
    width, height = image_size(parsed.aspect_ratio, parsed.resolution)
    payload = _canonical(parsed.model_dump(exclude={"seed"}))
    return _images_output((ImageSpec(image_key(seed, payload), width, height),), seed)


def _images_output(images: tuple[ImageSpec, ...], seed: int) -> Generation:
    skeleton = {"images": [FileSlot(image, _IMAGE_FIELDS) for image in images], "seed": seed}
    return Generation(images, seed, skeleton, Decimal(len(images)))


def run_model(model: CatalogModel, model_input: Any, random_seed: int) -> Generation | Failure:
    """A run of a model described by its schemas (a catalog entry's, or any)."""
    try:
        checked = check_input(model.input_schema, model_input)
    except InputRefused as exc:
        return validation_failure(exc.detail)
    seed = _seed(checked.get("seed"), random_seed)
    unseeded = {name: value for name, value in checked.items() if name != "seed"}
    planner = _FilePlanner(seed, f"{model.id}\n{_canonical(unseeded)}", checked)
    skeleton = OutputBuilder(
        model.output_schema,
        checked,
        seed=seed,
        count=_count(checked),
        run_seconds=model.typical_seconds,
        new_file=planner.new,
    ).build()
    files = tuple(planner.files)
    return Generation(files, seed, skeleton, billable_units(model.price_unit, files))


@dataclass
class _FilePlanner:
    """Makes a run's files, each keyed by the seed, the input and its place in the output."""

    seed: int
    payload: str
    model_input: Mapping[str, Any]
    files: list[MediaFile] = field(default_factory=list)

    def new(self, kind: Kind, extension: str) -> MediaFile:
        key = image_key(self.seed, f"{self.payload}\n{len(self.files)}")
        made: MediaFile
        if kind == "image":
            made = ImageSpec(key, *requested_image_size(self.model_input, MAX_SIDE))
        elif kind == "video":
            width, height = requested_video_size(self.model_input, MAX_VIDEO_SIDE)
            fps = _fps(self.model_input)
            made = VideoSpec.fitted(key, width, height, fps, _seconds(self.model_input, fps))
        elif kind == "audio":
            made = AudioSpec.fitted(key, _sample_rate(self.model_input), self._audio_seconds())
        else:
            made = OtherSpec(key, extension if extension in OTHER_TYPES else "bin")
        self.files.append(made)
        return made

    def _audio_seconds(self) -> float:
        if any(name in self.model_input for name in (*SECONDS_FIELDS, *FRAMES_FIELDS)):
            return _seconds(self.model_input, DEFAULT_FPS)
        text = self.model_input.get("text", self.model_input.get("prompt"))
        if isinstance(text, str) and text:
            return min(30.0, max(1.0, len(text) / SPEECH_CHARACTERS_PER_SECOND))
        return DEFAULT_SECONDS


def billable_units(price_unit: str, files: tuple[MediaFile, ...]) -> Decimal:
    """What fal would bill for these files: images (at least one: a per-request model bills
    one), megapixels (each image rounded up to whole ones, 1024x1024 being one), or seconds
    of video and audio."""
    images = [file for file in files if isinstance(file, ImageSpec)]
    if price_unit == "megapixel":
        megapixels = sum(math.ceil(i.width * i.height / _MEGAPIXEL) for i in images)
        return Decimal(megapixels or 1)
    if price_unit == "second":
        seconds = sum(
            (
                Decimal(f.frames) / Decimal(f.fps)
                if isinstance(f, VideoSpec)
                else Decimal(f.milliseconds) / 1000
                for f in files
                if isinstance(f, VideoSpec | AudioSpec)
            ),
            Decimal(0),
        )
        # Plain digits ("5", "10.5"): this goes out as a header value.
        return Decimal(format(seconds.quantize(Decimal("0.001")).normalize(), "f")) or Decimal(1)
    return Decimal(len(images) or 1)


def _seed(given: Any, random_seed: int) -> int:
    if isinstance(given, int) and not isinstance(given, bool) and given not in RANDOM_SEEDS:
        return given
    return random_seed


def _count(model_input: Mapping[str, Any]) -> int:
    for name in COUNT_FIELDS:
        value = model_input.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return min(MAX_COUNT, value)
    return 1


def _number(value: Any) -> float | None:
    """A number as fal's inputs write them: 5, 5.0, "5", "5s"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip().removesuffix("s"))
        except ValueError:
            return None
    return None


def _fps(model_input: Mapping[str, Any]) -> int:
    for name in FPS_FIELDS:
        value = _number(model_input.get(name))
        if value is not None and value > 0:
            return round(value)
    return DEFAULT_FPS


def _seconds(model_input: Mapping[str, Any], fps: int) -> float:
    for name in SECONDS_FIELDS:
        value = _number(model_input.get(name))
        if value is not None and value > 0:
            return value
    for name in FRAMES_FIELDS:
        value = _number(model_input.get(name))
        if value is not None and value > 0:
            return value / fps
    return DEFAULT_SECONDS


def _sample_rate(model_input: Mapping[str, Any]) -> int:
    value = _number(model_input.get("sample_rate"))
    return round(value) if value is not None and value > 0 else DEFAULT_SAMPLE_RATE


def invalid_json(message: str, position: int) -> Failure:
    """A body that is not JSON fails as FastAPI fails it: a 422 at the decoding position."""
    return validation_failure(
        [
            {
                "type": "json_invalid",
                "loc": ["body", position],
                "msg": "JSON decode error",
                "input": {},
                "ctx": {"error": message},
            }
        ]
    )


def _fastapi_errors(exc: ValidationError) -> list[dict[str, Any]]:
    # exc.json() makes `ctx` and `input` JSON-safe; FastAPI prefixes body fields with "body".
    errors: list[dict[str, Any]] = json.loads(exc.json(include_url=False))
    for error in errors:
        error["loc"] = ["body", *error["loc"]]
    return errors


def _canonical(value: Any) -> str:
    # json, not orjson: model input may hold integers beyond 64 bits.
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
