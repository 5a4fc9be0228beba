"""The measured consumers: pg_recvlogical into a discarded pipe, and ``wal2http run`` posting to the fast receiver.

Each run reads its own copy of a slot created before the workload was written, so every run of
every consumer decodes exactly the same WAL, and workload generation is never part of a timing.
"""

from __future__ import annotations

import os
import selectors
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.bench.receiver import FastReceiver
from tests.support.pgcluster import Database
from tests.support.process import Wal2http

STREAMING_LINE = "streaming from slot"
PG_BINDIR = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")


def pg_program(name: str) -> str:
    """A PostgreSQL client program, from PATH or PG_BINDIR."""
    found = shutil.which(name) or shutil.which(name, path=PG_BINDIR)
    if found is None:
        raise RuntimeError(f"{name} not found: install postgresql-client-15 (`make bench` does)")
    return found


def wal2http_binary() -> str:
    found = shutil.which("wal2http", path=str(Path(sys.executable).parent)) or shutil.which("wal2http")
    if found is None:
        raise RuntimeError("wal2http is not installed: run `make bench` from the repository")
    return found


class Slots:
    """A template slot created before a workload, copied once per run."""

    def __init__(self, db: Database, template: str) -> None:
        self.db = db
        self.template = template
        self._runs = 0
        db.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (template,))

    def copy(self) -> str:
        self._runs += 1
        name = f"{self.template}_{self._runs}"
        self.db.execute("SELECT pg_copy_logical_replication_slot(%s, %s)", (self.template, name))
        return name

    def drop(self, name: str) -> None:
        self.db.execute("SELECT pg_drop_replication_slot(%s)", (name,))

    def close(self) -> None:
        self.drop(self.template)


def recvlogical_seconds(db: Database, slot: str, publication: str, commit_end_lsn: str) -> float:
    """Time pg_recvlogical streaming ``slot`` until it wrote the last change (``commit_end_lsn`` ends it).

    Timed like wal2http: from the moment it says it starts streaming (``-v``) to the last change
    out of it, the bytes of which it writes to a pipe read here and thrown away. Not to its exit:
    that waits for the server to report a position at or past ``--endpos``.
    """
    command = [
        pg_program("pg_recvlogical"), "-d", db.dsn, "--slot", slot, "--start", "-v",
        "-o", "proto_version=1", "-o", f"publication_names={publication}",
        "-f", "-", "--no-loop", "--endpos", commit_end_lsn,
    ]  # fmt: skip
    seconds, written, lines = stream_seconds(command)
    if not written or "starting log streaming" not in (lines[:1] or [""])[0]:
        raise RuntimeError(f"pg_recvlogical wrote {written} bytes: {''.join(lines).strip()}")
    return seconds


def stream_seconds(command: list[str], timeout: float = 600) -> tuple[float, int, list[str]]:
    """Run a consumer writing changes to stdout: seconds from its first stderr line to its last output.

    Returns those seconds, the bytes it wrote and its stderr lines; raises if it fails.
    """
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    started = last_output = 0.0
    written = 0
    errors = bytearray()
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            selector.register(process.stderr, selectors.EVENT_READ)
            while selector.get_map():
                for key, _ in selector.select():
                    chunk = os.read(key.fd, 1 << 16)
                    now = time.perf_counter()
                    if not chunk:
                        selector.unregister(key.fileobj)
                    elif key.fileobj is process.stderr:
                        started = started or now
                        errors += chunk
                    else:
                        written += len(chunk)
                        last_output = now
        code = process.wait()
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
    lines = errors.decode(errors="replace").splitlines(keepends=True)
    if code != 0 or not started:
        raise RuntimeError(f"{Path(command[0]).name} failed (exit {code}): {''.join(lines).strip()}")
    return max(0.0, last_output - started), written, lines


@dataclass
class Wal2httpRun:
    """One ``wal2http run`` process, when it started streaming (``time.time()``) and its CPU time then."""

    process: Wal2http
    streaming_at: float
    cpu_at_start: float = 0.0

    @property
    def pid(self) -> int:
        assert self.process.proc is not None
        return self.process.proc.pid

    def cpu_seconds(self) -> float:
        """CPU time (user and system) used since streaming started."""
        return cpu_seconds(self.pid) - self.cpu_at_start


@dataclass(frozen=True)
class Timing:
    seconds: float  # from streaming start to the last event at the receiver
    cpu_seconds: float  # wal2http's CPU time over the same span


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_streaming(process: Wal2http, timeout: float = 30.0) -> float:
    """Return the time the process logged that it streams (polled every 2 ms)."""
    deadline = time.monotonic() + timeout
    while True:
        if STREAMING_LINE in process.stderr:
            return time.time()
        if not process.running:
            raise RuntimeError(f"wal2http exited early:\n{process.stderr}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"wal2http did not start streaming in {timeout:g}s:\n{process.stderr}")
        time.sleep(0.002)


@contextmanager
def wal2http(db: Database, slot: str, publication: str, receiver: FastReceiver, batch_size: int,
             profile: Path | None = None, extra: Sequence[str] = ()) -> Iterator[Wal2httpRun]:
    """Run ``wal2http run --sink http`` on ``slot``; stop it with SIGTERM and check it exited with 0.

    With ``profile``, the process runs under cProfile and writes its statistics there.
    """
    args = ["run", "--slot", slot, "--publication", publication, "--sink", "http",
            "--http-url", receiver.url, "--batch-size", str(batch_size), *extra]
    binary = wal2http_binary()
    if profile is not None:
        binary, args = sys.executable, ["-m", "cProfile", "-o", str(profile), "-m", "wal2http", *args]
    process = Wal2http(binary, args, {"WAL2HTTP_DSN": db.dsn}).start()
    try:
        run = Wal2httpRun(process, _wait_streaming(process))
        run.cpu_at_start = cpu_seconds(run.pid)
        yield run
        code = process.stop(timeout=120)
        if code != 0:
            raise RuntimeError(f"wal2http exited with {code}:\n{process.stderr}")
    finally:
        process.kill()


def wal2http_seconds(db: Database, slot: str, publication: str, receiver: FastReceiver, events: int,
                     batch_size: int, profile: Path | None = None, record_bodies: bool = False,
                     extra: Sequence[str] = ()) -> Timing:
    """Time from wal2http streaming until the receiver got all ``events``, and the CPU it used."""
    receiver.reset(record_bodies=record_bodies)
    with wal2http(db, slot, publication, receiver, batch_size, profile, extra) as run:
        stats = receiver.wait_for_events(events, timeout=600, alive=lambda: run.process.running)
        cpu = run.cpu_seconds()
    if stats["events"] != events:
        raise RuntimeError(f"the receiver got {stats['events']} events, expected {events}")
    return Timing(float(stats["last_at"]) - run.streaming_at, cpu)


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of a process, in bytes."""
    values: dict[str, int] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0]) * 1024
    return values
