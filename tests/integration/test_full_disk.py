"""A full disk under the file sink and the dead-letter file: whole lines, nothing confirmed past the disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_until
from tests.support.events import assert_confirmed_past
from tests.support.pgcluster import Database
from tests.support.process import Start, Wal2http
from tests.support.receiver import Receiver
from tests.support.replication import publish
from wal2http.lsn import parse_lsn

TRANSACTIONS, ROWS_EACH = 20, 10


class SmallDisk:
    """A 256 KiB tmpfs; ``fill(leave)`` takes all but ``leave`` bytes, ``free()`` gives them back."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="wal2http-disk-"))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(self.dir)], check=True)
        self.filler = self.dir / "filler"

    def fill(self, leave: int) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        size = self.filler.stat().st_size
        os.truncate(self.filler, max(0, size - leave))

    def free(self) -> None:
        self.filler.unlink()

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.dir)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def disk() -> Iterator[SmallDisk]:
    small = SmallDisk()
    yield small
    small.unmount()


def insert_transactions(db: Database) -> list[int]:
    """TRANSACTIONS transactions of ROWS_EACH rows; after each, a WAL position before the next one begins."""
    after = []
    for k in range(TRANSACTIONS):
        db.execute("INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series(%s, %s) i",
                   (k * ROWS_EACH + 1, (k + 1) * ROWS_EACH))
        after.append(int(db.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0]))
    return after


def whole_lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n"), f"{path} ends in a partial line: {data[-80:]!r}"
    return [json.loads(line) for line in data.splitlines()]


def assert_confirmed_within(db: Database, after: list[int], ids_on_disk: set[int]) -> None:
    """The slot is confirmed no further than the last transaction whose rows are all on disk (or delivered)."""
    whole = 0
    while whole < TRANSACTIONS and all(i in ids_on_disk for i in range(whole * ROWS_EACH + 1,
                                                                        (whole + 1) * ROWS_EACH + 1)):
        whole += 1
    assert whole < TRANSACTIONS, "the disk was not full"
    # The first transaction not wholly on disk is streamed again as long as the slot is confirmed short
    # of its commit's end (after[whole]). A position between the last whole one and that commit is fine:
    # the walsender's keepalives report how far it read, and an idle wal2http confirms that.
    confirmed = db.cluster.confirmed_flush_lsn("wal2http") or 0
    assert confirmed < after[whole], f"confirmed past what is on disk ({whole} whole transactions)"


def test_file_sink_on_a_full_disk(db: Database, disk: SmallDisk, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    out = disk.dir / "events.jsonl"
    disk.fill(leave=12 * 1024)
    wal2http = start_wal2http("--create-slot", "--sink", "file", "--file-path", str(out), "--batch-size", "7",
                              "--breaker-cooldown", "1")
    started = time.monotonic()
    after = insert_transactions(db)
    wait_until(lambda: "No space left on device (ENOSPC)" in wal2http.stderr, timeout=30, what="ENOSPC logged")
    time.sleep(2)  # retried meanwhile, still full
    assert wal2http.running
    events = whole_lines(out)
    assert 0 < len(events) < TRANSACTIONS * ROWS_EACH
    assert_confirmed_within(db, after, {e["new"]["id"] for e in events})
    assert f"cannot write events to {out}: No space left on device (ENOSPC)" in wal2http.stderr
    disk.free()
    wait_until(lambda: len(whole_lines(out)) >= TRANSACTIONS * ROWS_EACH, timeout=30, what="every row on disk")
    assert wal2http.stop() == 0
    events = whole_lines(out)
    assert [e["new"]["id"] for e in events] == list(range(1, TRANSACTIONS * ROWS_EACH + 1))  # once, in order
    assert time.monotonic() - started < 40
    assert_confirmed_past(db, events)
    assert "Traceback" not in wal2http.stderr and "unexpected error" not in wal2http.stderr


def test_dead_letters_on_a_full_disk(db: Database, disk: SmallDisk, receiver: Receiver,
                                     start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    dead = disk.dir / "dead.jsonl"
    receiver.reject_when(lambda event: event["new"]["id"] % 3 == 0, status=422)
    disk.fill(leave=4 * 1024)
    wal2http = start_wal2http("--create-slot", "--sink", "http", "--http-url", receiver.url, "--batch-size", "1",
                              "--on-reject", "dead-letter", "--dead-letter-path", str(dead))
    after = insert_transactions(db)
    wait_until(lambda: "No space left on device (ENOSPC)" in wal2http.stderr, timeout=30, what="ENOSPC logged")
    time.sleep(2)
    assert wal2http.running
    parked = whole_lines(dead)
    on_disk_or_delivered = {e["event"]["new"]["id"] for e in parked} | {e["new"]["id"] for e in receiver.events()}
    assert_confirmed_within(db, after, on_disk_or_delivered)
    assert "cannot write dead letter" in wal2http.stderr and f"to {dead}: No space left on device" in wal2http.stderr
    disk.free()
    rejected = [i for i in range(1, TRANSACTIONS * ROWS_EACH + 1) if i % 3 == 0]
    wait_until(lambda: len(whole_lines(dead)) >= len(rejected), timeout=30, what="every dead letter on disk")
    accepted = [i for i in range(1, TRANSACTIONS * ROWS_EACH + 1) if i % 3]
    wait_until(lambda: len(receiver.events()) >= len(accepted), timeout=30, what="every other row delivered")
    assert wal2http.stop() == 0
    assert [e["event"]["new"]["id"] for e in whole_lines(dead)] == rejected
    events = receiver.events()
    assert [e["new"]["id"] for e in events] == accepted
    confirmed = db.cluster.confirmed_flush_lsn("wal2http") or 0
    assert confirmed > parse_lsn(events[-1]["commit_lsn"])
    assert "Traceback" not in wal2http.stderr


def test_file_sink_halts_when_its_directory_is_gone(db: Database, start_wal2http: Start) -> None:
    publish(db, "CREATE TABLE t (id int PRIMARY KEY, v text)", tables="t")
    base = Path(tempfile.mkdtemp(prefix="wal2http-gone-"))
    out = base / "sub" / "events.jsonl"
    out.parent.mkdir()
    try:
        wal2http = start_wal2http("--create-slot", "--sink", "file", "--file-path", str(out))
        shutil.rmtree(out.parent)
        db.execute("INSERT INTO t VALUES (1, 'x')")
        assert wal2http.wait(30) == 2
        assert f"cannot open --file-path {out}: No such file or directory (ENOENT)" in wal2http.stderr
        assert (db.cluster.confirmed_flush_lsn("wal2http") or 0) < int(
            db.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn")[0][0])
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_replay_rewrite_on_a_full_disk(disk: SmallDisk, receiver: Receiver, wal2http_bin: str) -> None:
    dead = disk.dir / "dead.jsonl"
    entries = [{"dead_lettered_at": "2026-12-06T10:00:00.000000Z", "event_id": f"E{i}", "reason": "refused",
                "status": 400, "response": "", "event": {"id": f"E{i}", "op": "insert", "new": {"id": i},
                                                          "pad": "x" * 200}} for i in range(1, 41)]
    original = "".join(json.dumps(entry) + "\n" for entry in entries)
    dead.write_text(original)
    disk.fill(leave=2 * 1024)  # too little for the rewritten copy
    replay = Wal2http(wal2http_bin, ["replay", "--sink", "http", "--http-url", receiver.url, "--batch-size", "10",
                                     str(dead)]).start()
    try:
        wait_until(lambda: "No space left on device (ENOSPC)" in replay.stderr, timeout=30, what="ENOSPC logged")
        assert f"cannot rewrite {dead} without its delivered lines: No space left on device (ENOSPC)" in replay.stderr
        assert dead.read_text() == original  # unchanged, whole
        assert not (disk.dir / "dead.jsonl.replay-tmp").exists()  # no partial copy left behind
        assert replay.running
        disk.free()
        assert replay.wait(60) == 0
    finally:
        replay.kill()
    assert dead.read_text() == ""
    assert [e["new"]["id"] for e in receiver.events()] == list(range(1, 41))  # each once, in order
    assert "Traceback" not in replay.stderr
