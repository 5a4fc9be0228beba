"""Reproducible benchmark workloads: tables, publications and the SQL that fills them.

Every value is computed from the row number, so two runs at the same scale write the same rows.
Single-row transactions come from one DO block that commits after each insert: a client issuing
100,000 statements would measure its own round trips, not replication.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.pgcluster import Database

SIMPLE_COLUMNS = (
    "id bigint PRIMARY KEY, account integer, amount numeric(12,2), status text, note text, "
    "created_at timestamptz"
)
# A row of the 6-column table from its number ``{i}``.
SIMPLE_ROW = (
    "{i}, {i} % 1000, ({i} % 100000) / 100.0, (ARRAY['new','paid','shipped','cancelled'])[1 + {i} % 4], "
    "'order ' || md5({i}::text), timestamptz '2024-01-01 00:00:00+00' + {i} * interval '1 second'"
)


def _wide_columns() -> list[tuple[str, str, str]]:
    """(name, type, value from ``{i}``) for the 32-column table: about 1 KB of text per row."""
    cols = [("id", "bigint PRIMARY KEY", "{i}")]
    cols += [(f"big{k}", "bigint", f"{{i}}::bigint * {7919 * k + 1}") for k in range(1, 6)]
    cols += [(f"num{k}", "numeric(18,4)", f"{{i}} * {k}.0625 + 0.1234") for k in range(1, 6)]
    cols += [(f"txt{k}", "text", f"repeat(md5(({{i}} + {k})::text), 3)") for k in range(1, 7)]
    cols += [
        (f"ts{k}", "timestamptz",
         f"timestamptz '2024-01-01 00:00:00+00' + ({{i}} * {k}) * interval '1.5 second'")
        for k in range(1, 6)
    ]
    cols += [(f"flag{k}", "boolean", f"({{i}} + {k}) % {k + 1} = 0") for k in range(1, 5)]
    cols += [
        (f"doc{k}", "jsonb",
         f"jsonb_build_object('n', {{i}}, 'kind', 'k{k}', 'tags', jsonb_build_array('a', 'b', {{i}} % 7), "
         f"'ref', md5(({{i}} * {k})::text))")
        for k in range(1, 4)
    ]
    cols += [
        (f"ints{k}", "integer[]", "ARRAY[" + ", ".join(f"{{i}} + {k * 10 + j}" for j in range(10)) + "]")
        for k in range(1, 4)
    ]
    return cols


WIDE = _wide_columns()


@dataclass(frozen=True)
class Workload:
    """Rows written by one workload, and where it ended in the WAL."""

    table: str
    publication: str
    events: int  # row changes the consumers receive
    commit_end_lsn: str  # pg_current_wal_insert_lsn() once written: pg_recvlogical's --endpos


def create_table(db: Database, table: str, columns: str) -> str:
    """Create ``table`` and a publication for it alone; return the publication name."""
    publication = f"{table}_pub"
    db.execute(f"DROP PUBLICATION IF EXISTS {publication}")
    db.execute(f"DROP TABLE IF EXISTS {table}")
    db.execute(f"CREATE TABLE {table} ({columns})")
    db.execute(f"CREATE PUBLICATION {publication} FOR TABLE {table}")
    return publication


def insert_rows(db: Database, table: str, row: str, first: int, count: int, per_transaction: int) -> None:
    """Insert rows ``first .. first+count-1``, committing every ``per_transaction`` rows."""
    if count <= 0:
        return
    per_transaction = max(1, per_transaction)
    last = first + count - 1
    values = row.format(i="g")
    if per_transaction >= count:
        db.execute(f"INSERT INTO {table} SELECT {values} FROM generate_series({first}, {last}) g")
        return
    db.execute(f"""
        DO $$
        BEGIN
          FOR start IN {first}..{last} BY {per_transaction} LOOP
            INSERT INTO {table}
              SELECT {values} FROM generate_series(start, least(start + {per_transaction} - 1, {last})) g;
            COMMIT;
          END LOOP;
        END $$""")


def commit_end_lsn(db: Database) -> str:
    """Where the workload ended; a checkpoint first, so none runs during the measured runs."""
    db.execute("CHECKPOINT")
    return str(db.execute("SELECT pg_current_wal_insert_lsn()")[0][0])


def prepare_simple(db: Database, table: str) -> str:
    """The 6-column table and its publication."""
    return create_table(db, table, SIMPLE_COLUMNS)


def fill_simple(db: Database, table: str, big_transaction: int, single_rows: int) -> Workload:
    """One ``big_transaction``-row transaction, then ``single_rows`` single-row transactions."""
    insert_rows(db, table, SIMPLE_ROW, 1, big_transaction, big_transaction)
    insert_rows(db, table, SIMPLE_ROW, big_transaction + 1, single_rows, 1)
    return Workload(table, f"{table}_pub", big_transaction + single_rows, commit_end_lsn(db))


def prepare_wide(db: Database) -> str:
    return create_table(db, "bench_wide", ", ".join(f"{name} {type_}" for name, type_, _ in WIDE))


def fill_wide(db: Database, rows: int, per_transaction: int = 1000) -> Workload:
    insert_rows(db, "bench_wide", ", ".join(value for _, _, value in WIDE), 1, rows, per_transaction)
    return Workload("bench_wide", "bench_wide_pub", rows, commit_end_lsn(db))


def wide_row_bytes(db: Database) -> int:
    """Average text size of a wide row, as pgoutput sends it."""
    return int(db.execute("SELECT avg(length(w::text))::int FROM bench_wide w")[0][0])


# pgbench script for the latency scenario: one single-row transaction per execution.
LATENCY_COLUMNS = "id bigserial PRIMARY KEY, account integer, amount numeric(12,2), note text"
LATENCY_SCRIPT = (
    "\\set aid random(1, 1000000)\n"
    "INSERT INTO bench_latency (account, amount, note) VALUES (:aid, :aid / 100.0, 'latency probe');\n"
)

MEMORY_COLUMNS = "id bigint PRIMARY KEY, account integer, note text, blob text"
MEMORY_ROW = "{i}, {i} % 1000, 'row ' || md5({i}::text), NULL"
# About 1 MB of hex that pglz cannot shrink, so it is stored out of line (TOASTed) and pgoutput
# sends it whole.
MEMORY_BLOB_ROW = (
    "{i}, {i} % 1000, 'blob ' || md5({i}::text), "
    "(SELECT string_agg(md5({i}::text || ':' || k), '') FROM generate_series(1, 31250) k)"
)


@dataclass(frozen=True)
class MemoryPlan:
    """The memory workload in stages, so RSS can be read after the first stage."""

    warmup_rows: int  # small transactions first: RSS after them is the baseline
    big_transaction: int
    blob_rows: int  # rows carrying a 1 MB TOASTed value, one transaction each
    tail_rows: int  # more small transactions after the big ones

    @property
    def total(self) -> int:
        return self.warmup_rows + self.big_transaction + self.blob_rows + self.tail_rows


def memory_plan(scale: float) -> MemoryPlan:
    total = max(10_000, round(1_000_000 * scale))
    warmup = max(1_000, round(100_000 * scale))
    big = max(2_000, round(200_000 * scale))
    blobs = max(5, round(50 * scale))
    return MemoryPlan(warmup, big, blobs, total - warmup - big - blobs)


def prepare_memory(db: Database) -> str:
    return create_table(db, "bench_memory", MEMORY_COLUMNS)


def fill_memory(db: Database, plan: MemoryPlan) -> Workload:
    first = 1
    for row, count, per_transaction in (
        (MEMORY_ROW, plan.warmup_rows, 1000),
        (MEMORY_ROW, plan.big_transaction, plan.big_transaction),
        (MEMORY_BLOB_ROW, plan.blob_rows, 1),
        (MEMORY_ROW, plan.tail_rows, 1000),
    ):
        insert_rows(db, "bench_memory", row, first, count, per_transaction)
        first += count
    return Workload("bench_memory", "bench_memory_pub", plan.total, commit_end_lsn(db))
