"""FALRELAY_STORAGE_URL: the forms it takes, checked when the settings load."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from app.storage.location import FileLocation, S3Location, parse_location


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///srv/falrelay/files", FileLocation(Path("/srv/falrelay/files"))),
        ("file://localhost/srv/files", FileLocation(Path("/srv/files"))),
        ("file:///srv/with%20space", FileLocation(Path("/srv/with space"))),
        ("s3://bucket", S3Location("bucket", None)),
        ("s3://bucket/", S3Location("bucket", None)),
        ("s3://bucket/outputs/prod/", S3Location("bucket", "outputs/prod")),
    ],
)
def test_the_forms_of_a_storage_url(url: str, expected: object) -> None:
    assert parse_location(url) == expected
    assert Settings(storage_url=url).storage_url == url


@pytest.mark.parametrize(
    "url",
    ["file://relative/dir", "file:relative", "/srv/files", "s3:///prefix", "gs://bucket/x",
     "file:///srv?x=1", "https://bucket.s3.amazonaws.com/x"],
)  # fmt: skip
def test_a_storage_url_of_another_form_is_refused_at_start(url: str) -> None:
    with pytest.raises(ValidationError, match="storage"):
        Settings(storage_url=url)


def test_unset_and_empty_mean_no_mirroring() -> None:
    assert Settings().storage_url is None
    assert Settings(storage_url="").storage_url is None


def test_dev_uses_a_folder_of_its_data_dir() -> None:
    # `falrelay dev` passes (data dir / "files").as_uri(): absolute, spaces quoted.
    url = (Path("/home/me/my project/.falrelay") / "files").as_uri()
    assert parse_location(url) == FileLocation(Path("/home/me/my project/.falrelay/files"))
