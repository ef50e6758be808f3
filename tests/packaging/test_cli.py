"""The one `falrelay` command across the two distributions: the SDK's client commands start
without the server, and its `main` finds the server's commands when they are installed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from falrelay.cli import ENTRY_POINTS, SERVER_COMMANDS

pytestmark = pytest.mark.slow

SCRIPT = Path(sys.executable).with_name("falrelay")
# What a client service must never get from `falrelay submit`: the server and its stack.
SERVER_MODULES = ("app", "fastapi", "asyncpg", "sqlalchemy")
# `falrelay`'s main, then the modules it loaded (one line of JSON on stderr): a wrapper, since
# `-X importtime` does not see what importlib.import_module loads (entry points).
LOADED = """
import json, sys
from falrelay.cli import main

try:
    main()
finally:
    sys.stderr.write(json.dumps(sorted(sys.modules)) + "\\n")
"""
# The same, with the server's distribution hidden, as in a client's venv with the SDK alone.
SDK_ALONE = (
    """
import importlib.metadata as metadata

everything = metadata.entry_points
metadata.entry_points = lambda **select: metadata.EntryPoints(
    entry for entry in everything(**select) if entry.dist.name != "falrelay-server"
)
"""
    + LOADED
)


def run(*command: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
        cwd=Path(__file__).parent,  # not the checkout's root: nothing imported from the cwd
    )


def loaded(result: subprocess.CompletedProcess[str]) -> tuple[str, set[str]]:
    """(stderr before the wrapper's line, the modules it lists)."""
    before, _, last = result.stderr.rstrip("\n").rpartition("\n")
    return before, set(json.loads(last))


def server_modules(modules: set[str]) -> set[str]:
    return {name for name in modules if name.split(".")[0] in SERVER_MODULES}


def test_submit_help_imports_nothing_of_the_server() -> None:
    result = run(sys.executable, "-c", LOADED, "submit", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: falrelay submit [-h]")
    _, modules = loaded(result)
    assert "falrelay.cli.submit" in modules
    assert not server_modules(modules)

    # The installed script and `python -m falrelay` the same way, as far as `-X importtime`
    # sees (the import statements: any module of the server imports others so).
    for program in ([str(SCRIPT)], [sys.executable, "-m", "falrelay"]):
        result = run(*program, "submit", "--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert result.returncode == 0, result.stderr
        reported = set(re.findall(r"^import time:.*\|\s+(\S+)$", result.stderr, re.M))
        assert "falrelay.cli.connection" in reported, "the import report was read"
        assert not server_modules(reported), program


def test_with_the_sdk_alone_a_server_command_says_where_it_comes_from() -> None:
    result = run(sys.executable, "-c", SDK_ALONE, "dev")
    assert result.returncode == 2
    assert result.stdout == ""
    said, modules = loaded(result)
    assert not server_modules(modules)
    assert said + "\n" == (
        "falrelay: `dev` comes with the server: pip install falrelay-server, or from "
        "falrelay's repository pip install -e .\n"
    )

    listing = run(sys.executable, "-c", SDK_ALONE, "--help")
    assert listing.returncode == 0, listing.stderr
    assert "submit" in listing.stdout
    assert "jobs" in listing.stdout
    assert "come with the server" in listing.stdout
    said, modules = loaded(listing)
    assert said == ""
    assert not server_modules(modules)


def test_the_installed_server_adds_every_command_in_order() -> None:
    assert set(entry_points(group=ENTRY_POINTS).names) == set(SERVER_COMMANDS)
    for program in (
        [str(SCRIPT)],
        [sys.executable, "-m", "falrelay"],
        [sys.executable, "-m", "app"],
    ):
        result = run(*program, "--help")
        assert result.returncode == 0, result.stderr
        listed = re.findall(r"^    (\w+)\s", result.stdout, re.M)
        assert listed == [*SERVER_COMMANDS, "jobs", "submit"], program


def test_a_server_command_loads_alone() -> None:
    """`falrelay migrate` reads the entry points but imports no other command's module."""
    result = run(sys.executable, "-c", LOADED, "migrate", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: falrelay migrate [-h]")
    _, modules = loaded(result)
    assert {name for name in modules if name.startswith("app.cli.")} == {"app.cli.migrate"}
