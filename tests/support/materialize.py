"""A receiver that applies events in order, as README says, and the table it should end with."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from tests.support.pgcluster import Database

Rows = dict[tuple[str, str], dict[str, Any]]


def materialize(events: Iterable[dict[str, Any]]) -> dict[str, Rows]:
    """Apply events as README says: read/insert/update upsert ``new`` by ``key`` (an update whose ``old``
    key differs removes that one first), delete removes ``key``, truncate empties the table.

    An update's ``unchanged_toast`` columns keep the value the row had (under its old key for a key
    change); a row that never had one ends without the column, so a comparison with the table fails.
    """
    tables: dict[str, Rows] = {}
    for e in events:
        op = e["op"]
        if op == "message":
            continue
        rows = tables.setdefault(f"{e['schema']}.{e['table']}", {})
        if op == "truncate":
            rows.clear()
            continue
        key = e["key"]
        if op == "delete":
            rows.pop(_key(key), None)
            continue
        new = dict(e["new"])
        previous = rows.get(_key(key))
        if op == "update" and e["old"] is not None:
            old_key = {name: e["old"].get(name) for name in key}
            if old_key != key:
                previous = rows.pop(_key(old_key), None)
        for name in e.get("unchanged_toast") or ():
            if previous is not None and name in previous:
                new[name] = previous[name]
        rows[_key(key)] = new
    return tables


def _key(key: dict[str, Any]) -> tuple[str, str]:
    return ("key", json.dumps(key, sort_keys=True))


def table_rows(db: Database, table: str, key: list[str]) -> Rows:
    """The table as JSON objects by key (columns of plain types: int, text)."""
    rows: Rows = {}
    for (row,) in db.execute(f"SELECT row_to_json(t) FROM {table} t"):
        rows[_key({k: row[k] for k in key})] = row
    return rows
