"""Run the installed ``wal2http`` command as a subprocess, the way an operator does."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


class Wal2http:
    """One ``wal2http`` process with its output captured to files (no pipe can fill up)."""

    def __init__(self, binary: str, args: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.binary = binary
        self.args = list(args)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("WAL2HTTP_")}
        self.env.update(env or {})
        self._dir = Path(tempfile.mkdtemp(prefix="wal2http-proc-"))
        self.stdout_path = self._dir / "stdout"
        self.stderr_path = self._dir / "stderr"
        self.proc: subprocess.Popen[bytes] | None = None

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

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


def run_once(binary: str, args: Sequence[str], env: Mapping[str, str] | None = None,
             timeout: float = 60.0) -> tuple[int, str, str]:
    """Run a command to completion; return exit code, stdout and stderr."""
    process = Wal2http(binary, args, env).start()
    code = process.wait(timeout)
    return code, process.stdout, process.stderr
