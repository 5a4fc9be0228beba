"""The suite's own rules: skips fail on CI, and property tests have no per-example deadline."""

from __future__ import annotations

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
