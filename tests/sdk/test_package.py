"""`import falrelay` resolves its names on first use (so that `falrelay submit --help` builds no
models): every exported name is still there, the very object of its home module."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

import falrelay


def test_every_exported_name_is_its_home_modules_object() -> None:
    homes = [importlib.import_module(f"falrelay.{m}") for m in ("client", "errors", "models")]
    for name in falrelay.__all__:
        value = getattr(falrelay, name)
        assert any(getattr(home, name, None) is value for home in homes), name
    assert set(falrelay.__all__) <= set(dir(falrelay))


def test_submodules_and_unknown_names() -> None:
    assert falrelay.models.Job is falrelay.Job
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        falrelay.Nothing  # type: ignore[attr-defined]  # noqa: B018


def test_importing_the_package_alone_loads_neither_httpx_nor_the_models() -> None:
    probe = (
        "import sys, falrelay; "
        "print(sorted(m for m in ('httpx', 'pydantic', 'falrelay.models') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "[]\n"
    star = "from falrelay import *; print(Client.__module__, WebhookVerificationError.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", star], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout == "falrelay.client WebhookVerificationError\n"
