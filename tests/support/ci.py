"""On CI (``WAL2HTTP_CI=1``, set by .ci/run) a skipped test is a failure: CI installs everything tests need.

Loaded by tests/conftest.py, and usable alone as a plugin (``pytest -p tests.support.ci``).
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

CI_ENV = "WAL2HTTP_CI"


def on_ci() -> bool:
    return os.environ.get(CI_ENV, "") not in ("", "0")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                                             pytest.TestReport]:
    report = yield
    if report.skipped and on_ci() and not hasattr(report, "wasxfail"):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        report.outcome = "failed"
        report.longrepr = (f"skipped on CI ({CI_ENV}=1), where everything a test needs is installed: {reason}; "
                           "install it in `make test`, or fix the test")
    return report
