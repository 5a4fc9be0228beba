"""README.rst's examples, run as written against a throwaway cluster, so the documentation cannot rot.

Each top-level README section with blocks marked ``.. test: shell``, ``sql`` or ``cron`` (see
tests/support/readme.py) is one test: a new database holding the example tables, the earlier
``setup`` blocks (of "PostgreSQL prerequisites" and "Running"; only the shell ones when the
section starts ``fresh``), then its blocks in order. Shell blocks run in bash (``set -e``) from a
scratch directory, with the README's example hosts, paths and placeholder secrets replaced by the
test's (``SUBSTITUTIONS``, ``PLACEHOLDERS``); ``export`` lines carry over to the later blocks. A
block ending in ``wal2http run`` starts in the background and must stream; before the next one
starts, or at the end of the section, an event must have reached its sink (rows are inserted into
``customers`` and ``orders`` when the section made no change), then SIGTERM must stop it with
exit status 0.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import readme, wait_until
from tests.support.events import event
from tests.support.fake_hook0 import FakeHook0
from tests.support.pgcluster import Database, PgCluster, started_cluster
from tests.support.process import Wal2http, run_once
from tests.support.receiver import Receiver
from wal2http.delivery.deadletter import DeadLetterFile

ROLE = "wal2http"  # the role "PostgreSQL prerequisites" creates; its DSN is used once it exists
EXAMPLE_TABLES = """
    CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL DEFAULT 'a customer');
    CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers,
                         status text NOT NULL DEFAULT 'new', total numeric(12,2) NOT NULL DEFAULT 0,
                         notes text);
    CREATE TABLE invoices (id int PRIMARY KEY, status text NOT NULL);
    INSERT INTO invoices VALUES (42, 'open');
"""
PROBE = ("INSERT INTO customers (name) VALUES ('probe from test_readme');"
         "INSERT INTO orders (status, total) VALUES ('probe from test_readme', 1.5)")
RUNNABLE = ("shell", "sql", "cron")
CRON_SCHEDULE_RE = r"^\s*(\S+\s+){5}"


def scenarios() -> dict[str, list[readme.Block]]:
    found: dict[str, list[readme.Block]] = {}
    for block in readme.blocks():
        if block.kind in RUNNABLE:
            found.setdefault(block.section, []).append(block)
    return found


SCENARIOS = scenarios()
SETUP = [b for b in readme.blocks() if "setup" in b.flags]


@pytest.fixture(scope="module")
def cluster() -> Iterator[PgCluster]:
    """A cluster of its own: the README changes server settings and creates a role."""
    with started_cluster() as pg:
        yield pg


@dataclass
class Session:
    """What an operator following one README section has: a database, a shell, receivers."""

    db: Database
    workdir: Path
    receiver: Receiver
    hook0: FakeHook0
    bindir: Path
    exports: list[str] = field(default_factory=list)
    running: Wal2http | None = None
    running_block: readme.Block | None = None
    delivered_at_start: int = 0

    @property
    def url(self) -> str:
        has_role = self.db.cluster.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
        return self.db.cluster.url(self.db.name, user=ROLE if has_role else "postgres")

    def substitute(self, text: str) -> str:
        for pattern, replacement in SUBSTITUTIONS:
            value = replacement(self)
            text = re.sub(pattern, lambda _, v=value: v, text)
        return re.sub(PLACEHOLDER_RE, self._placeholder, text, flags=re.MULTILINE)

    def _placeholder(self, found: re.Match[str]) -> str:
        name = found.group(1)
        assert name in PLACEHOLDERS, f"README placeholder {name}=... has no test value: add it to PLACEHOLDERS"
        return f"export {name}={PLACEHOLDERS[name](self)}"

    def env(self) -> dict[str, str]:
        """PATH finds the wal2http under test; CI's variables name the test database and receiver."""
        return {"PATH": f"{self.bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "STAGING_DSN": self.url, "HOOK_URL": self.receiver.url}

    def delivered(self) -> int:
        """Events that reached any sink so far: receiver, Hook0, standard output, files."""
        count = len(self.receiver.events()) + len(self.hook0.events())
        if self.running is not None:
            count += len(self.running.stdout.splitlines())
        state = self.workdir / "state"
        count += sum(len(p.read_bytes().splitlines()) for p in state.iterdir() if p.is_file())
        return count


# README example values -> the test's. Keep README examples realistic; add a line here instead.
SUBSTITUTIONS: list[tuple[str, Callable[[Session], str]]] = [
    (r"postgresql://[^\s'\"]+", lambda s: s.url),
    (r"https://hooks\.example\.com/pg", lambda s: s.receiver.url),
    (r"https://app\.hook0\.com/api/v1", lambda s: s.hook0.url),
    (r"6f1c8a52-0d3e-4b7a-9c2f-5e8d1a4b7c90", lambda s: s.hook0.application_id),
    (r"/var/lib/wal2http/", lambda s: f"{s.workdir}/state/"),
    (r"/run/secrets/", lambda s: f"{s.workdir}/secrets/"),
]
# ``export NAME=...`` in the README: the secret the reader fills in.
PLACEHOLDER_RE = r"export (\w+)='?\.\.\.'?(?=\s|$)"
PLACEHOLDERS: dict[str, Callable[[Session], str]] = {
    "HOOK0_API_TOKEN": lambda s: s.hook0.token,
    "HOOKS_API_KEY": lambda s: "api-key-of-test-readme",
}


def write_dead_letters(session: Session) -> None:
    """'Replaying refused events' replays dead.jsonl: two events a receiver refused, as run writes them."""
    dead = DeadLetterFile(str(session.workdir / "dead.jsonl"))
    for seq in (1, 2):
        event_id = f"0000000001A2B3C8-{seq}"
        record: dict[str, Any] = {"id": event_id, "op": "insert", "schema": "public", "table": "orders",
                  "key": {"id": seq}, "new": {"id": seq, "status": "new"}, "old": None, "unchanged_toast": [],
                  "lsn": "0/1A2B300", "commit_lsn": "0/1A2B3C8", "commit_time": "2026-11-28T01:02:03.456789Z",
                  "xid": 1234, "seq": seq}
        dead.append(event(0x1A2B3C8, seq, xid=1234, record=record),
                    "receiver rejected it with 422 Unprocessable Entity", 422, "bad order")
    dead.close()


PREPARE: dict[str, Callable[[Session], None]] = {"Replaying refused events": write_dead_letters}


@pytest.mark.parametrize("section", list(SCENARIOS))
def test_readme_section_runs_as_written(cluster: PgCluster, wal2http_bin: str, tmp_path: Path, section: str) -> None:
    blocks = SCENARIOS[section]
    name = "readme_" + re.sub(r"[^a-z0-9]+", "_", section.lower()).strip("_")
    db = cluster.create_database(name)
    (tmp_path / "state").mkdir()
    (tmp_path / "secrets").mkdir()
    try:
        with Receiver() as receiver, FakeHook0() as hook0:
            session = Session(db, tmp_path, receiver, hook0, Path(wal2http_bin).parent)
            db.execute(EXAMPLE_TABLES)
            fresh = "fresh" in blocks[0].flags
            for block in [b for b in SETUP if b.line < blocks[0].line and not (fresh and b.kind == "sql")]:
                run_block(session, block)
            (tmp_path / "secrets" / "hook0").write_text(hook0.token + "\n")
            (tmp_path / "secrets" / "hooks-token").write_text("bearer-token-of-test-readme\n")
            PREPARE.get(section, lambda s: None)(session)
            try:
                for i, block in enumerate(blocks):
                    if i and "fresh" in block.flags:  # a new database; the shell keeps its exports
                        stop_running(session)
                        session.db.drop()
                        session.db = db = cluster.create_database(name)
                        db.execute(EXAMPLE_TABLES)
                    run_block(session, block)
                stop_running(session)
            finally:
                if session.running is not None:
                    session.running.kill()
    finally:
        db.drop()
        cluster.execute(f"DROP ROLE IF EXISTS {ROLE}")


def run_block(session: Session, block: readme.Block) -> None:
    if block.kind == "sql":
        run_sql(session.db, block)
        return
    script = session.substitute(block.text)
    if block.kind == "cron":  # the command of each crontab line, without its schedule
        script = re.sub(CRON_SCHEDULE_RE, "", script, flags=re.MULTILINE)
    elif re.search(r"^\$ ", script, flags=re.MULTILINE):  # a transcript: its commands, not its output
        script = "\n".join(transcript_commands(script))
    commands = logical_lines(script)
    prefix = f"set -e\ncd {session.workdir}\n" + "".join(line + "\n" for line in session.exports)
    session.exports.extend(c for c in commands if c.startswith("export "))
    if commands and commands[-1].startswith("wal2http run"):
        stop_running(session)
        start_running(session, block, prefix + script.replace(commands[-1], "exec " + commands[-1]))
        return
    code, out, err = run_once("bash", ["-c", prefix + script], session.env(), timeout=60)
    assert code == block.exit, (f"{block.where}: exit status {code}, expected {block.exit}\n"
                                f"--- script\n{script}\n--- stdout\n{out}\n--- stderr\n{err}")


def run_sql(db: Database, block: readme.Block) -> None:
    """One statement at a time on one autocommit connection, as psql sends them."""
    with contextlib.closing(db.connect()) as conn, conn.cursor() as cur:
        for statement in block.statements():
            try:
                cur.execute(statement)
            except Exception as e:
                raise AssertionError(f"{block.where}: SQL failed: {e}\n{statement}") from None


def start_running(session: Session, block: readme.Block, script: str) -> None:
    process = Wal2http("bash", ["-c", script], session.env()).start()
    session.running, session.running_block = process, block
    try:
        process.wait_streaming()
    except AssertionError as e:
        raise AssertionError(f"{block.where}: {e}\n--- script\n{script}") from None
    session.delivered_at_start = session.delivered()


def stop_running(session: Session) -> None:
    """The running ``wal2http run`` delivered an event (a probe row if nothing else); SIGTERM stops it."""
    process, block = session.running, session.running_block
    if process is None or block is None:
        return
    if session.delivered() == session.delivered_at_start:
        session.db.execute(PROBE)
    try:
        wait_until(lambda: session.delivered() > session.delivered_at_start, timeout=30,
                   what=f"an event from the wal2http run of {block.where}")
    except TimeoutError as e:
        raise AssertionError(f"{e}\n--- stderr\n{process.stderr}") from None
    process.signal(signal.SIGTERM)
    code = process.wait()
    assert code == 0, f"{block.where}: wal2http run exited with {code} after SIGTERM\n{process.stderr}"
    session.running = session.running_block = None


def transcript_commands(transcript: str) -> list[str]:
    """The lines typed after ``$ `` prompts, with their continuation lines; the output left out."""
    commands: list[str] = []
    continued = False
    for line in transcript.splitlines():
        if line.startswith("$ ") or continued:
            commands.append(line[2:] if line.startswith("$ ") else line)
            continued = line.endswith("\\")
    return commands


def logical_lines(script: str) -> list[str]:
    """The script's commands, continuation lines joined, comments and blank lines left out."""
    commands: list[str] = []
    pending = ""
    for line in script.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line + "\n"
            continue
        commands.append(pending + line)
        pending = ""
    if pending:
        commands.append(pending.rstrip("\\\n"))
    return commands
