"""The suite's own rules: skips fail on CI, property tests have no per-example deadline, helpers live in support."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import settings

from tests import conftest
from tests.support import ci
from tests.support.ci import CI_ENV

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = '''
import pytest

def test_needs_a_tool():
    pytest.skip("the tool is not installed")
'''


def run_pytest(test_file: Path, ci: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, CI_ENV: ci, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "tests.support.ci", "-p", "no:randomly",
               "-p", "no:cacheprovider", str(test_file)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=test_file.parent, env=env,
                          check=False)


def test_a_skip_is_reported_with_its_reason_and_fails_on_ci(tmp_path: Path) -> None:
    test_file = tmp_path / "test_skipping.py"
    test_file.write_text(SKIPPING)
    local = run_pytest(test_file, "")
    assert local.returncode == 0, local.stdout
    assert "SKIPPED [1]" in local.stdout and "the tool is not installed" in local.stdout
    ci = run_pytest(test_file, "1")
    assert ci.returncode == 1, ci.stdout
    assert "skipped on CI (WAL2HTTP_CI=1)" in ci.stdout and "the tool is not installed" in ci.stdout


def test_the_suite_loads_the_ci_rule() -> None:
    assert conftest.pytest_runtest_makereport is ci.pytest_runtest_makereport


def test_property_tests_have_no_deadline() -> None:
    loaded = settings.default
    assert loaded is not None and loaded.deadline is None


def imported_modules(path: Path) -> set[str]:
    """The modules a file imports from, ``from tests.x import y`` counting as tests.x and tests.x.y."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    """Helpers shared by test modules live in tests/support: a test module can be renamed, moved or run alone."""
    offending: dict[str, list[str]] = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        modules = sorted(m for m in imported_modules(path) if m.rsplit(".", 1)[-1].startswith("test_"))
        if modules:
            offending[str(path.relative_to(ROOT))] = modules
    assert offending == {}
