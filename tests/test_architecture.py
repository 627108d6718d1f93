"""The project's own code imports no private name of another package (``docs/DESIGN.md``, "Layers").

The layer order itself is enforced by ``lint-imports`` (``.importlinter``) in ``make test``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from koywe_test_support import PROJECT_DIR

SOURCES = ("plugins", "include", "dags", "benchmarks")


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _own_package(path: Path) -> str:
    relative = path.relative_to(PROJECT_DIR)
    parts = relative.parts
    return parts[1] if len(parts) > 2 else relative.stem


def private_imports() -> list[str]:
    found = []
    for folder in SOURCES:
        for path in sorted((PROJECT_DIR / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            own = _own_package(path)
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    if _top(node.module) == own:
                        continue
                    private_module = any(
                        p.startswith("_") and not p.startswith("__") for p in node.module.split(".")
                    )
                    for alias in node.names:
                        if private_module or (alias.name.startswith("_") and not alias.name.startswith("__")):
                            found.append(
                                f"{path.relative_to(PROJECT_DIR)}:{node.lineno}: {node.module}.{alias.name}"
                            )
    return found


def test_no_private_name_of_another_package_is_imported():
    assert private_imports() == []


def test_the_check_sees_a_private_import(tmp_path, monkeypatch):
    import test_architecture

    fake = tmp_path / "plugins" / "pkg"
    fake.mkdir(parents=True)
    (fake / "mod.py").write_text("from airflow.providers.http.hooks.http import _is_connect_failure\n")
    monkeypatch.setattr(test_architecture, "PROJECT_DIR", tmp_path)
    assert private_imports() == [
        "plugins/pkg/mod.py:1: airflow.providers.http.hooks.http._is_connect_failure"
    ]
