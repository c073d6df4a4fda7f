"""Imports go one way: `workers` may import `gateway`; below the entry points that compose
everything, `gateway` never imports `workers` (docs: DESIGN "Conventions"). Read from the
source with `ast`, so an import inside a function (a lazy workaround) counts too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = ROOT / "gateway"
# The entry points that compose the gateway and the workers into one program.
COMPOSERS = {GATEWAY / "cli.py", GATEWAY / "run_all.py"}


def imported_modules(source: str, filename: str) -> list[tuple[int, str]]:
    """(line, module) of every import anywhere in the module: top level, in functions, in
    `if TYPE_CHECKING:` blocks. Relative imports stay inside their package and are left out."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (  # importlib.import_module("workers...")
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
            == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def imports_of_workers(path: Path) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for line, module in imported_modules(path.read_text(), str(path))
        if module == "workers" or module.startswith("workers.")
    ]


def test_gateway_never_imports_workers_below_the_entry_points() -> None:
    modules = sorted(GATEWAY.rglob("*.py"))
    assert len(modules) > 50, f"expected the gateway's modules under {GATEWAY}, found {modules}"
    offenders = [
        hit for path in modules if path not in COMPOSERS for hit in imports_of_workers(path)
    ]
    assert offenders == [], "gateway must not import workers:\n" + "\n".join(offenders)


def test_the_check_sees_lazy_and_top_level_imports() -> None:
    """The reader finds each form of import, so an empty list above means none."""
    source = (
        "import workers.tasks\n"
        "from workers import celery_app\n"
        "def f():\n"
        "    from workers.jobs.runner import JobRunner\n"
        "    import importlib\n"
        "    return importlib.import_module('workers.inference.client')\n"
        "from . import sibling\n"
    )
    modules = sorted(module for _, module in imported_modules(source, "example.py"))
    assert modules == [
        "importlib",
        "workers",
        "workers.inference.client",
        "workers.jobs.runner",
        "workers.tasks",
    ]


def test_the_entry_points_still_compose_the_workers() -> None:
    """cli.py and run_all.py are exempt because they start the workers; if they no longer
    did, the exemption would hide nothing and should go."""
    for path in sorted(COMPOSERS):
        assert imports_of_workers(path), f"expected {path.name} to import workers, found none"
