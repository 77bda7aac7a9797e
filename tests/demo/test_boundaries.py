"""The engine and the web face never import the demo; only the demo, tests and tools do."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Where `import demo` is allowed: the demo itself and what runs beside the product.
ALLOWED = ("demo", "tests", "bench", "docs")
# Not the project's code: virtualenvs, data, vendored assets.
SKIPPED = {".venv", "venv", ".git", "var", "static", "node_modules", "build", "dist"}


def python_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(REPO).parts
        if not SKIPPED.intersection(parts) and not any(p.endswith(".egg-info") for p in parts):
            yield path


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, root: Path) -> Iterator[tuple[int, str]]:
    """Every module the file imports, relative imports resolved, ``import_module("…")`` too."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module_name(path, root).split(".")
    if path.name != "__init__.py":
        package.pop()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join([*base, *filter(None, [node.module])])
            else:
                yield node.lineno, node.module or ""
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            yield node.lineno, node.args[0].value


def imports_demo(path: Path, root: Path = REPO) -> list[str]:
    return [
        f"{path.relative_to(root)}:{line}: {name}"
        for line, name in imported_modules(path, root)
        if name == "demo" or name.startswith("demo.")
    ]


@pytest.mark.parametrize("app", ["monitoring", "dashboard"])
def test_the_app_never_imports_the_demo(app: str) -> None:
    files = list(python_files(REPO / app))
    assert files, f"no modules found under {app}/"
    offenders = [hit for path in files for hit in imports_demo(path)]
    assert offenders == []


def test_only_the_demo_tests_bench_and_docs_import_the_demo() -> None:
    offenders = [
        hit
        for path in python_files(REPO)
        if path.relative_to(REPO).parts[0] not in ALLOWED
        for hit in imports_demo(path)
    ]
    assert offenders == []


@pytest.mark.parametrize(
    ("source", "where", "found"),
    [
        ("import demo.sandbox\n", "monitoring/x.py", True),
        ("from demo.scenario import seed_history\n", "monitoring/x.py", True),
        ("from demo import scenario\n", "monitoring/x.py", True),
        ("import importlib\nimportlib.import_module('demo.scenario')\n", "monitoring/x.py", True),
        ("from . import scenario\n", "demo/x.py", True),
        ("from .. import scenario\n", "demo/management/x.py", True),
        ("from . import rollup\n", "monitoring/x.py", False),
        ("import demographics\nfrom monitoring import demo_data\n", "monitoring/x.py", False),
        ("demo = 'not an import'\n", "monitoring/x.py", False),
    ],
)
def test_the_check_sees_every_form_of_import(tmp_path, source, where, found):
    # The walk above is only as good as this: a form it missed would pass silently.
    path = tmp_path / where
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert bool(imports_demo(path, tmp_path)) is found
