"""Build pgoutput protocol messages byte by byte, as PostgreSQL 15 writes them (for fixtures)."""

from __future__ import annotations

import struct
from collections.abc import Sequence

PG_EPOCH_OFFSET_US = 946_684_800_000_000

Value = str | None | bytes  # None = NULL; b"u" = unchanged TOAST


def cstr(text: str) -> bytes:
    return text.encode() + b"\x00"


def begin(commit_lsn: int, commit_time_us: int, xid: int) -> bytes:
    return b"B" + struct.pack(">QqI", commit_lsn, commit_time_us - PG_EPOCH_OFFSET_US, xid)


def commit(commit_lsn: int, commit_end_lsn: int, commit_time_us: int) -> bytes:
    return b"C" + struct.pack(">bQQq", 0, commit_lsn, commit_end_lsn, commit_time_us - PG_EPOCH_OFFSET_US)


def relation(oid: int, schema: str, table: str, columns: Sequence[tuple[str, int, bool]],
             replident: str = "d") -> bytes:
    out = b"R" + struct.pack(">I", oid) + cstr(schema) + cstr(table) + replident.encode()
    out += struct.pack(">h", len(columns))
    for name, type_oid, is_key in columns:
        out += bytes([1 if is_key else 0]) + cstr(name) + struct.pack(">Ii", type_oid, -1)
    return out


def type_message(oid: int, schema: str, name: str) -> bytes:
    return b"Y" + struct.pack(">I", oid) + cstr(schema) + cstr(name)


def tuple_data(values: Sequence[Value]) -> bytes:
    out = struct.pack(">h", len(values))
    for value in values:
        if value is None:
            out += b"n"
        elif value == b"u":
            out += b"u"
        elif isinstance(value, bytes):
            out += b"b" + struct.pack(">i", len(value)) + value
        else:
            raw = value.encode()
            out += b"t" + struct.pack(">i", len(raw)) + raw
    return out


def insert(oid: int, values: Sequence[Value]) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + tuple_data(values)


def update(oid: int, new: Sequence[Value], old: Sequence[Value] | None = None,
           key: Sequence[Value] | None = None) -> bytes:
    out = b"U" + struct.pack(">I", oid)
    if key is not None:
        out += b"K" + tuple_data(key)
    if old is not None:
        out += b"O" + tuple_data(old)
    return out + b"N" + tuple_data(new)


def delete(oid: int, old: Sequence[Value] | None = None, key: Sequence[Value] | None = None) -> bytes:
    out = b"D" + struct.pack(">I", oid)
    if key is not None:
        return out + b"K" + tuple_data(key)
    assert old is not None
    return out + b"O" + tuple_data(old)


def truncate(oids: Sequence[int], cascade: bool = False, restart_identity: bool = False) -> bytes:
    flags = (1 if cascade else 0) | (2 if restart_identity else 0)
    return b"T" + struct.pack(">iB", len(oids), flags) + b"".join(struct.pack(">I", o) for o in oids)


def message(prefix: str, content: bytes, lsn: int, transactional: bool = True) -> bytes:
    return (b"M" + bytes([1 if transactional else 0]) + struct.pack(">Q", lsn) + cstr(prefix)
            + struct.pack(">i", len(content)) + content)


def origin(commit_lsn: int, name: str) -> bytes:
    return b"O" + struct.pack(">Q", commit_lsn) + cstr(name)
