"""Log lines never carry fal's callback token, wherever the URL shows up in them."""

from __future__ import annotations

import logging

import orjson

from app import logs

TOKEN = "0123456789abcdef0123456789abcdef"


def _formatted(message: str, *args: object) -> str:
    formatter = logs.JsonFormatter(logs.Scrubber([]))
    record = logging.LogRecord("falrelay.test", logging.WARNING, __file__, 1, message, args, None)
    return formatter.format(record)


def test_the_token_is_masked_in_a_path_and_in_an_encoded_url() -> None:
    job = "job_01a2269f9b4f7999b99a3ffc642d7ea3"
    path = f"/callbacks/fal/{job}/{TOKEN}"
    encoded = (
        "http://127.0.0.1:9/fal-ai/x?fal_webhook=http%3A%2F%2F127.0.0.1%3A8000"
        f"%2Fcallbacks%2Ffal%2F{job}%2F{TOKEN}"
    )
    for text in (path, encoded, f"submit failed: POST {encoded}: connection reset"):
        line = _formatted("%s", text)
        assert TOKEN not in line, line
        assert job in orjson.loads(line)["msg"]  # which job it was stays readable
    assert logs.mask_callback_tokens(path) == f"/callbacks/fal/{job}/[redacted]"
    # Other paths are left alone.
    assert logs.mask_callback_tokens(f"/v1/jobs/{job}") == f"/v1/jobs/{job}"


def test_keys_secrets_and_the_fal_key_are_redacted_and_other_lines_kept() -> None:
    scrub = logs.Scrubber(["fal-key-0123456789"])
    line = (
        "key frk_Bas0mdILeCXZeTArLNyyd_cyfcs secret whsec_c2VjcmV0LXNlY3JldA== "
        "fal Key fal-key-0123456789 at /callbacks/fal/job_1/" + TOKEN
    )
    assert scrub(line) == (
        "key [redacted] secret [redacted] fal Key [redacted] at /callbacks/fal/job_1/[redacted]"
    )
    plain = '{"msg": "POST /v1/jobs 201", "path": "/v1/jobs", "status": 201}'
    assert scrub(plain) == plain
