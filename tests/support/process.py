"""Run the installed ``wal2http`` command as a subprocess, the way an operator does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["Result", "Start", "Wal2http", "check", "cli", "failures", "run_once"]


class Wal2http:
    """One ``wal2http`` process with its output captured to files (no pipe can fill up).

    The files live in a temporary directory that close() removes (keeping the output readable), and
    that goes at the latest when the object is garbage-collected or the test run ends.
    """

    def __init__(self, binary: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.binary = binary
        self.args = list(args)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WAL2HTTP_")}
        self.env.update(env or {})
        self._dir = Path(tempfile.mkdtemp(prefix="wal2http-proc-"))
        self._remove_dir = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self.stdout_path = self._dir / "stdout"
        self.stderr_path = self._dir / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self._closed_output: tuple[str, str] | None = None

    def start(self) -> Wal2http:
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen([self.binary, *self.args], stdout=out, stderr=err,
                                         stdin=subprocess.DEVNULL, env=self.env)
        return self

    def wait_streaming(self, timeout: float = 30.0) -> None:
        """Block until the process logged that it streams, or fail with its output."""
        deadline = time.monotonic() + timeout
        while "streaming from slot" not in self.stderr:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"wal2http exited with {self.proc.returncode}:\n{self.stderr}")
            if time.monotonic() > deadline:
                raise AssertionError(f"wal2http did not start streaming in {timeout}s:\n{self.stderr}")
            time.sleep(0.05)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"wal2http did not exit within {timeout}s:\n{self.stderr}") from None

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def close(self) -> None:
        """Kill the process if it still runs and remove its output files; stdout and stderr stay readable."""
        if self._closed_output is not None:
            return
        self.kill()
        self._closed_output = (self._read(self.stdout_path), self._read(self.stderr_path))
        self._remove_dir()

    @property
    def stdout(self) -> str:
        return self._closed_output[0] if self._closed_output is not None else self._read(self.stdout_path)

    @property
    def stderr(self) -> str:
        return self._closed_output[1] if self._closed_output is not None else self._read(self.stderr_path)

    @staticmethod
    def _read(path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:  # the process never started
            return ""


# The start_wal2http fixture (tests/integration/conftest.py): start_wal2http(*run_args, env=None, wait=True).
Start = Callable[..., Wal2http]


class Result(NamedTuple):
    """A finished command: ``code, out, err = run_once(...)`` unpacks it."""

    code: int
    out: str
    err: str

    @property
    def first_line(self) -> str:
        return self.out.splitlines()[0] if self.out else ""

    def json(self) -> Any:
        return json.loads(self.out)


def run_once(binary: str, args: Sequence[str], env: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> Result:
    """Run a command to completion; return its exit code, stdout and stderr."""
    process = Wal2http(binary, args, env).start()
    try:
        code = process.wait(timeout)
    finally:
        process.close()
    return Result(code, process.stdout, process.stderr)


def cli(binary: str, *args: str, dsn: str | None = None, env: Mapping[str, str] | None = None,
        timeout: float = 60.0) -> Result:
    """Run ``wal2http ARGS`` to completion (with WAL2HTTP_DSN=dsn when given); a traceback fails the test."""
    result = run_once(binary, args, {**({"WAL2HTTP_DSN": dsn} if dsn is not None else {}), **(env or {})},
                      timeout)
    assert "Traceback" not in result.err, result.err
    return result


def check(binary: str, dsn: str, *args: str, env: Mapping[str, str] | None = None) -> tuple[Result, dict[str, Any]]:
    """Run check-config twice, as text and as JSON; both must agree on the exit code. The checks by name."""
    text = cli(binary, "check-config", *args, dsn=dsn, env=env)
    as_json = cli(binary, "check-config", "--json", *args, dsn=dsn, env=env)
    assert as_json.code == text.code
    return text, {c["name"]: c for c in as_json.json()["checks"]}


def failures(checks: dict[str, Any]) -> list[str]:
    """The names of the failed checks of a check() result."""
    return [name for name, c in checks.items() if c["status"] == "failed"]
