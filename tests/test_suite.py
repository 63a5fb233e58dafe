"""Rules for the test suite itself, so that it stays auditable in one sitting."""

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def imported_modules(path: Path) -> set:
    """Every module name an import statement in the file names, at any depth (lazy imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_no_file_imports_a_test_module():
    """Shared helpers live in conftest.py, shared oracles in spec.py: a test file is never another's library."""
    offenders = {path.name: sorted(name for name in imported_modules(path) if name.split(".")[0].startswith("test_"))
                 for path in sorted(TESTS.rglob("*.py"))}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_import_scan_sees_imports():
    """Guard against a scanner that finds nothing: known imports, a lazy one included, are found."""
    assert {"spec", "conftest"} <= imported_modules(TESTS / "test_cli.py")
    assert "fixtures.hostile_bodies" in imported_modules(TESTS / "test_mcp.py")  # inside a test function
