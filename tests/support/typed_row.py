"""A table with a column of every supported type, one row of it, and the JSON values README prescribes."""

from __future__ import annotations

from typing import Any

__all__ = ["EXPECTED", "ROW_SQL", "SCHEMA", "TEXT"]

SCHEMA = [
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    "CREATE TYPE point2 AS (x int, y text)",
    """CREATE TABLE everything (
        id serial PRIMARY KEY,
        b bool, i2 int2, i4 int4, i8 int8, o oid,
        f4 float4, f8 float8, n numeric,
        j json, jb jsonb, by bytea,
        tz timestamptz, ts timestamp, d date, t time, ttz timetz, iv interval,
        u uuid, ip inet, net cidr, mac macaddr, m money, e mood, tx text, vc varchar(20), ch char(3),
        x xml, r int4range, c point2,
        ai int[], at text[], ab bool[], an numeric[], ajb jsonb[], atz timestamptz[], ae mood[],
        af float8[], aby bytea[]
    )""",
]

TEXT = "it's \"quoted\" \\ back\nslash\ttab zoë ✓ 𝄞"

ROW_SQL = """INSERT INTO everything (b, i2, i4, i8, o, f4, f8, n, j, jb, by, tz, ts, d, t, ttz, iv, u, ip,
    net, mac, m, e, tx, vc, ch, x, r, c, ai, at, ab, an, ajb, atz, ae, af, aby) VALUES (
    true, 32767, -2147483648, 9223372036854775807, 4294967295,
    1.5, 0.1, '12345678901234567890.0123456789',
    '{"a": [1, 2.5, null],
      "b": "x\\ny"}', '{"k": {"nested": true}}', '\\x00ff10',
    '2026-11-28 01:02:03.456789+00', '2026-11-28 01:02:03', '2026-11-28', '01:02:03.5', '01:02:03+02',
    '1 day 02:03:04', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '192.168.0.1/24', '10.0.0.0/8',
    '08:00:2b:01:02:03', 12.34, 'happy', %s, 'short', 'ab', '<a>1</a>', '[1,5)', ROW(1, 'a b'),
    '{{1,2},{3,NULL}}', '{"a,b","c\\"d",NULL,"NULL","","{x}"}', '{t,f}', '{1.50,NaN}',
    ARRAY['{"a":1}'::jsonb, 'null'::jsonb], '{"2026-01-02 03:04:05+00",infinity}', '{happy,sad}',
    '{NaN,Infinity,-Infinity,1e308}', ARRAY['\\x00'::bytea, '\\xff'::bytea]
)"""

EXPECTED: dict[str, Any] = {
    "b": True, "i2": 32767, "i4": -2147483648, "i8": 9223372036854775807, "o": 4294967295,
    "f4": 1.5, "f8": 0.1, "n": "12345678901234567890.0123456789",
    "j": {"a": [1, 2.5, None], "b": "x\ny"}, "jb": {"k": {"nested": True}}, "by": "AP8Q",
    "tz": "2026-11-28T01:02:03.456789Z", "ts": "2026-11-28T01:02:03", "d": "2026-11-28",
    "t": "01:02:03.5", "ttz": "01:02:03+02", "iv": "1 day 02:03:04",
    "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "ip": "192.168.0.1/24", "net": "10.0.0.0/8",
    "mac": "08:00:2b:01:02:03", "m": "$12.34", "e": "happy", "tx": TEXT, "vc": "short", "ch": "ab ",
    "x": "<a>1</a>", "r": "[1,5)", "c": '(1,"a b")',
    "ai": [[1, 2], [3, None]], "at": ["a,b", 'c"d', None, "NULL", "", "{x}"], "ab": [True, False],
    "an": ["1.50", "NaN"], "ajb": [{"a": 1}, None], "atz": ["2026-01-02T03:04:05Z", "infinity"],
    "ae": ["happy", "sad"], "af": ["NaN", "Infinity", "-Infinity", 1e308], "aby": ["AA==", "/w=="],
}
