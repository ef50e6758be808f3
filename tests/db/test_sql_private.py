"""Each package's SQL is private to it: other packages call its functions, never its
repository module or its SQL constants (a query changed in one place must not break a caller
that ran it itself). A static scan of app/; allowed exceptions, each with its reason, go in
ALLOWED (none today)."""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# (importing module, imported name) -> why it is allowed.
ALLOWED: dict[tuple[str, str], str] = {}

_SQL = re.compile(r"\s*(?:--[^\n]*\n\s*)*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(APP.rglob("*.py")):
        parts = path.relative_to(APP.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), ast.parse(path.read_text(), str(path))


def _package(module: str) -> str | None:
    """`app.jobs.service` -> `app.jobs`; a top-level module (`app.metrics`) has none."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    candidate = ".".join(parts[:2])
    return candidate if (APP / parts[1]).is_dir() else None


def _is_sql(module: str, name: str) -> bool:
    value = getattr(importlib.import_module(module), name, None)
    return name.lstrip("_").isupper() and isinstance(value, str) and bool(_SQL.match(value))


def _is_module(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _violations() -> Iterator[tuple[str, str, str]]:
    for module, tree in _modules():
        home = _package(module) or module
        # Modules of other packages bound to a local name, to check `alias.CONSTANT` uses.
        foreign_modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    target = alias.name
                    if not target.startswith("app.") or _package(target) in (home, None):
                        continue
                    if target.endswith(".repository"):
                        yield module, target, "imports another package's repository"
                    if alias.asname:
                        foreign_modules[alias.asname] = target
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                source = node.module
                if not source.startswith("app.") or _package(source) in (home, None):
                    continue
                for alias in node.names:
                    full = f"{source}.{alias.name}"
                    if source.endswith(".repository") or full.endswith(".repository"):
                        yield module, full, "imports another package's repository"
                    elif _is_module(full):
                        foreign_modules[alias.asname or alias.name] = full
                    elif _is_sql(source, alias.name):
                        yield module, full, "imports another package's SQL constant"
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in foreign_modules
                and _is_sql(foreign_modules[node.value.id], node.attr)
            ):
                full = f"{foreign_modules[node.value.id]}.{node.attr}"
                yield module, full, "runs another package's SQL constant"


def test_no_package_reaches_into_another_packages_sql() -> None:
    found = sorted(
        f"{module}: {why} ({name})"
        for module, name, why in _violations()
        if (module, name) not in ALLOWED
    )
    assert found == []


def test_the_scan_sees_what_it_forbids() -> None:
    # The scan itself: the jobs package's own SQL is found as SQL, a function is not.
    assert _is_sql("app.jobs.repository", "SELECT_FOR_CALLBACK")
    assert _is_sql("app.webhooks.queue", "_ENDPOINTS_GONE")
    assert not _is_sql("app.jobs.repository", "get_status")
    assert not _is_sql("app.ids", "JOB_ID_PREFIX")
    assert _package("app.worker.deliverer") == "app.worker"
    assert _package("app.metrics") is None
