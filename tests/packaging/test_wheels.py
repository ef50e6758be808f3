"""The two distributions, built as wheels and opened: the SDK (`falrelay`, from sdk/) installs
its own package alone and needs only httpx and pydantic; the server (`falrelay-server`, the
repository root) installs `app` and `migrations`, needs the SDK, and adds its commands to the
SDK's `falrelay` command through entry points."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from configparser import ConfigParser
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from falrelay.cli import ENTRY_POINTS, SERVER_COMMANDS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def build_wheel(source: Path, into: Path) -> Path:
    """One wheel, offline: the build backend (hatchling) is the test environment's own."""
    into.mkdir()
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", *offline, "-w", str(into), str(source)],
        check=True,
        timeout=120,
    )
    (wheel,) = into.glob("*.whl")
    return wheel


class Wheel:
    def __init__(self, path: Path) -> None:
        with zipfile.ZipFile(path) as archive:
            self.names = archive.namelist()
            self.dist_info = next(n.split("/")[0] for n in self.names if ".dist-info/" in n)

            def read(name: str) -> str:
                return archive.read(f"{self.dist_info}/{name}").decode()

            self.metadata: Message = Parser().parsestr(read("METADATA"))
            self.entry_points = ConfigParser(delimiters=("=",))
            self.entry_points.optionxform = str  # type: ignore[assignment,method-assign]
            if f"{self.dist_info}/entry_points.txt" in self.names:
                self.entry_points.read_string(read("entry_points.txt"))

    def top_level(self) -> set[str]:
        return {name.split("/")[0] for name in self.names} - {self.dist_info}

    def requires(self) -> dict[str, Requirement]:
        requirements = (Requirement(r) for r in self.metadata.get_all("Requires-Dist") or [])
        return {r.name: r for r in requirements if r.marker is None}


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Wheel]:
    where = tmp_path_factory.mktemp("wheels")
    return {
        "sdk": Wheel(build_wheel(ROOT / "sdk", where / "sdk")),
        "server": Wheel(build_wheel(ROOT, where / "server")),
    }


def test_the_sdk_installs_falrelay_alone_and_needs_httpx_and_pydantic(
    wheels: dict[str, Wheel],
) -> None:
    sdk = wheels["sdk"]
    assert sdk.metadata["Name"] == "falrelay"
    assert sdk.top_level() == {"falrelay"}, "no `app`, no `migrations`"
    for module in ("__init__", "__main__", "client", "webhooks", "cli/__init__", "cli/submit"):
        assert f"falrelay/{module}.py" in sdk.names
    assert "falrelay/py.typed" in sdk.names
    assert set(sdk.requires()) == {"httpx", "pydantic"}
    assert dict(sdk.entry_points["console_scripts"]) == {"falrelay": "falrelay.cli:main"}


def test_the_server_installs_app_and_migrations_and_adds_its_commands(
    wheels: dict[str, Wheel],
) -> None:
    server = wheels["server"]
    assert server.metadata["Name"] == "falrelay-server"
    assert server.top_level() == {"app", "migrations"}
    assert "app/cli/__init__.py" in server.names
    assert "migrations/env.py" in server.names
    sdk = server.requires()["falrelay"]
    assert sdk.specifier.contains(wheels["sdk"].metadata["Version"])
    # One `falrelay` command, the SDK's: the server only registers commands with it.
    assert "console_scripts" not in server.entry_points
    commands = dict(server.entry_points[ENTRY_POINTS])
    assert set(commands) == set(SERVER_COMMANDS)
    assert all(target.startswith("app.cli.") for target in commands.values())
