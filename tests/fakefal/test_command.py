"""`falrelay fakefal`'s flags: one per knob, defaults from the environment."""

from __future__ import annotations

import argparse

import pytest

from app.cli.fakefal import add_arguments, config_from_args
from app.fakefal import FakeFalConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_every_knob_has_a_flag() -> None:
    args = parse()
    assert (args.host, args.port) == ("127.0.0.1", 8001)
    assert set(FakeFalConfig.model_fields) <= set(vars(args))


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALRELAY_FAKEFAL_QUEUE_LATENCY", "2.5")
    monkeypatch.setenv("FALRELAY_FAKEFAL_ERROR_RATE", "0.1")
    config = config_from_args(
        parse(
            "--error-rate", "0.5",
            "--error-types", "validation", "request_timeout",
            "--webhook-retry-delays",
            "--random-seed", "3",
        )
    )  # fmt: skip
    assert config.queue_latency == 2.5
    assert config.error_rate == 0.5
    assert config.error_types == ["validation", "request_timeout"]
    assert config.webhook_retry_delays == []
    assert config.random_seed == 3


def test_bad_settings_exit_with_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FALRELAY_FAKEFAL_ERROR_RATE", "7")
    args = parse()  # building the parser must survive a bad environment
    with pytest.raises(SystemExit, match="error_rate"):
        config_from_args(args)
