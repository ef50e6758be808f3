"""The code map: domain packages are free of the web framework and import each other one way.

`LAYERS` is the order, lowest first; the README's architecture section draws the same list. A
domain package may import a package of a lower layer and the shared modules in `SHARED`, never
one of its own layer or above, and never the web layer.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app"

LAYERS: list[tuple[str, ...]] = [
    ("catalog", "storage"),
    ("billing", "events", "outputs"),
    ("fal", "webhooks"),
    ("jobs",),
    ("clients", "lifecycle"),
    ("auth",),
]
DOMAIN = [package for layer in LAYERS for package in layer]
# Modules every package may import: they know no domain package's behaviour.
SHARED = {
    "db",
    "errors",
    "http_client",
    "ids",
    "logs",
    "metrics",
    "pagination",
    "retry_after",
    "settings",
    "timestamps",
    "tracing",
}
# What serves HTTP, runs the processes or parses the command line: it imports the domain,
# never the other way round.
WEB = {"api", "cli", "console", "main", "http_server", "runtime", "worker"}
FRAMEWORKS = ("fastapi", "starlette")


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(package: str) -> list[str]:
    return sorted(_module_name(path) for path in (APP / package).rglob("*.py"))


def _imported(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (function bodies and
    `TYPE_CHECKING` blocks included), relative imports resolved."""
    module = _module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package[: len(package) - node.level + 1], *filter(None, [base])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _app_edges(package: str) -> set[tuple[str, str]]:
    """(importing module, imported `app.` package or top-level module) for one package."""
    edges = set()
    for path in (APP / package).rglob("*.py"):
        for name in _imported(path):
            parts = name.split(".")
            if parts[0] == "app" and len(parts) > 1 and parts[1] != package:
                edges.add((_module_name(path), parts[1]))
    return edges


@pytest.mark.parametrize("package", DOMAIN)
def test_domain_package_loads_no_web_framework(package: str) -> None:
    """Importing every module of the package, in an interpreter of its own, loads neither
    FastAPI nor Starlette, directly or through anything it imports."""
    imports = [f"import {module}" for module in _modules(package)]
    script = "\n".join([*imports, "import sys", "print('\\n'.join(sorted(sys.modules)))"])
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    loaded = done.stdout.split()
    assert "app." + package in loaded
    framework = [name for name in loaded if name.split(".")[0] in FRAMEWORKS]
    assert not framework, f"app.{package} loads {framework[:5]}"


def test_domain_packages_import_one_way() -> None:
    """Each import between packages (function-level ones too) goes down the layers."""
    layer_of = {package: index for index, layer in enumerate(LAYERS) for package in layer}
    wrong = []
    for package in DOMAIN:
        for module, target in sorted(_app_edges(package)):
            if target in layer_of:
                if layer_of[target] >= layer_of[package]:
                    wrong.append(f"{module} -> app.{target} (not below {package})")
            elif target in WEB:
                wrong.append(f"{module} -> app.{target} (the web layer)")
            elif target not in SHARED:
                wrong.append(f"{module} -> app.{target} (in no layer: add it to one)")
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_shared_modules_import_no_domain_package_at_load() -> None:
    """The shared modules sit under every layer: at module level they import no domain
    package (the migration environment's `import_models` gathers every model on call)."""
    wrong = []
    for name in sorted(SHARED):
        paths = list((APP / name).rglob("*.py")) if (APP / name).is_dir() else [APP / f"{name}.py"]
        for path in paths:
            tree = ast.parse(path.read_text())
            for node in tree.body:
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("app."):
                    target = (node.module or "").split(".")[1]
                    if target in DOMAIN or target in WEB:
                        wrong.append(f"{_module_name(path)} -> app.{target}")
    assert not wrong, "\n".join(wrong)


def test_readme_draws_the_layers() -> None:
    """The README's architecture drawing lists the same layers, top first: a line of the
    drawing names its packages (`jobs/`) before the first wide gap."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## How it is built", 1)[1]
    drawing = re.search(r"```text\n(.*?)```", section, re.S)
    assert drawing is not None
    drawn = []
    for line in drawing.group(1).splitlines():
        names = tuple(sorted(re.findall(r"([a-z_]+)/", re.split(r"\s{2,}", line.strip())[0])))
        if names and set(names) <= set(DOMAIN):
            drawn.append(names)
    assert drawn == [tuple(sorted(layer)) for layer in reversed(LAYERS)]


def _sdk_event_types() -> dict[str, set[str]]:
    """The SDK's spelling of the event types, read from its source wherever it keeps them."""
    import falrelay

    found: dict[str, set[str]] = {}
    for path in Path(falrelay.__file__).parent.rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            target = (
                node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
            )
            value = getattr(node, "value", None)
            if not isinstance(target, ast.Name) or value is None:
                continue
            if target.id in ("EventType", "JobEventType") and isinstance(value, ast.Subscript):
                found[target.id] = set(ast.literal_eval(value.slice))
            elif target.id == "TERMINAL_EVENT_TYPES" and isinstance(value, ast.Call):
                found[target.id] = set(ast.literal_eval(value.args[0]))
    return found


def test_event_types_are_defined_once() -> None:
    """Every list of event types derives from `app.events.types`; the SDK, which cannot import
    the server, spells the same sets."""
    from app.events import types

    assert tuple(types.SUMMARIES) == get_args(types.EventType)
    assert set(types.TERMINAL_EVENT_TYPES) <= set(types.JOB_EVENT_TYPES)
    assert _sdk_event_types() == {
        "EventType": set(get_args(types.EventType)),
        "JobEventType": set(types.JOB_EVENT_TYPES),
        "TERMINAL_EVENT_TYPES": set(types.TERMINAL_EVENT_TYPES),
    }
    spelled = [
        f"{path.relative_to(ROOT)}:{node.lineno}"
        for path in APP.rglob("*.py")
        if path != APP / "events" / "types.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id == "Literal"
        and "job.succeeded" in ast.unparse(node.slice)
    ]
    assert not spelled, f"event types spelled again: {spelled}"


def test_id_prefixes_are_defined_once() -> None:
    """A public id's prefix is named from `app.ids`, never spelled where it is used."""
    spelled = []
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("encode", "decode")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "ids"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if (
                isinstance(node, ast.Assign)
                and path != APP / "ids.py"
                and any(
                    isinstance(target, ast.Name) and target.id.endswith("_ID_PREFIX")
                    for target in node.targets
                )
            ):
                spelled.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not spelled, f"id prefixes spelled outside app.ids: {spelled}"
