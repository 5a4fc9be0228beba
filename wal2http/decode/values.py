"""Column values: PostgreSQL text output, as pgoutput sends it, to JSON-ready values."""

from __future__ import annotations

import re
from binascii import b2a_base64
from collections.abc import Callable
from functools import cache
from itertools import product
from math import isfinite
from typing import TypeAlias

import orjson

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None
Converter: TypeAlias = Callable[[str], JsonValue]

# The replication session sets DateStyle=ISO, TimeZone=UTC, extra_float_digits=3,
# IntervalStyle=postgres and bytea_output=hex, so each converter expects exactly one
# spelling and the common case needs no parsing beyond a suffix test.


class _BoolTable(dict[str, bool]):
    # A dict subclass keeps lookups in C while turning a bad value into the ValueError
    # every other converter raises, rather than a KeyError the caller would not expect.
    def __missing__(self, key: str) -> bool:
        raise ValueError(f"not a boolean: {key!r}")


_bool: Converter = _BoolTable(t=True, f=False).__getitem__


def _float(text: str) -> JsonValue:
    value = float(text)
    # JSON has no NaN or Infinity; PostgreSQL's own spelling is kept as a string.
    return value if isfinite(value) else text


def _bytea(text: str) -> str:
    if not text.startswith("\\x"):
        raise ValueError("bytea is not in hex format (bytea_output must be hex)")
    return b2a_base64(bytes.fromhex(text[2:]), newline=False).decode("ascii")


def _timestamptz(text: str) -> str:
    # TimeZone=UTC makes "+00" the only offset in practice; years may have more than
    # four digits, so the date/time separator is found rather than indexed.
    if text.endswith("+00"):
        return text[:-3].replace(" ", "T", 1) + "Z"
    return _timestamptz_other(text)


_TIMESTAMPTZ_RE = re.compile(r"(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)(?::(\d\d))?(:\d\d)?")


def _timestamptz_other(text: str) -> str:
    if text in ("infinity", "-infinity") or text.endswith(" BC"):
        return text
    match = _TIMESTAMPTZ_RE.fullmatch(text)
    if match is None:
        raise ValueError(f"not an ISO timestamptz: {text!r}")
    date, time, hours, minutes, seconds = match.groups()
    if seconds is not None:
        # Historical local-mean-time offsets carry seconds, which RFC 3339 cannot express.
        return text
    return f"{date}T{time}{hours}:{minutes or '00'}"


class JsonText(str):
    """JSON text from PostgreSQL, embedded in events verbatim.

    Re-parsing would lose what a float or a 64-bit integer cannot hold (``1e400``, long
    decimals) and cost time; PostgreSQL has already validated it.
    """

    __slots__ = ()


def _json(text: str) -> JsonText:
    # PostgreSQL rejects raw control characters inside JSON strings, so a raw newline or
    # carriage return can only be whitespace between tokens: flatten it to keep one event a line.
    if "\n" in text or "\r" in text:
        text = text.replace("\n", " ").replace("\r", " ")
    return JsonText(text)


def _timestamp(text: str) -> str:
    if text.endswith(" BC"):
        return text
    return text.replace(" ", "T", 1)


_SCALARS: dict[int, Converter] = {
    16: _bool,
    17: _bytea,
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    26: int,  # oid
    114: _json,  # json
    700: _float,  # float4
    701: _float,  # float8
    1114: _timestamp,
    1184: _timestamptz,
    1700: str,  # numeric: a string keeps every digit
    3802: _json,  # jsonb
}

# Built-in array type OID -> element type OID, from PostgreSQL's pg_type.dat.
# Elements without an entry in _SCALARS stay text.
_ARRAY_ELEMENTS: dict[int, int] = {
    1000: 16,  # bool
    1001: 17,  # bytea
    1002: 18,  # char
    1003: 19,  # name
    1016: 20,  # int8
    1005: 21,  # int2
    1006: 22,  # int2vector
    1007: 23,  # int4
    1008: 24,  # regproc
    1009: 25,  # text
    1028: 26,  # oid
    1010: 27,  # tid
    1011: 28,  # xid
    1012: 29,  # cid
    1013: 30,  # oidvector
    199: 114,  # json
    143: 142,  # xml
    271: 5069,  # xid8
    1017: 600,  # point
    1018: 601,  # lseg
    1019: 602,  # path
    1020: 603,  # box
    1027: 604,  # polygon
    629: 628,  # line
    1021: 700,  # float4
    1022: 701,  # float8
    719: 718,  # circle
    791: 790,  # money
    1040: 829,  # macaddr
    1041: 869,  # inet
    651: 650,  # cidr
    775: 774,  # macaddr8
    1034: 1033,  # aclitem
    1014: 1042,  # bpchar
    1015: 1043,  # varchar
    1182: 1082,  # date
    1183: 1083,  # time
    1115: 1114,  # timestamp
    1185: 1184,  # timestamptz
    1187: 1186,  # interval
    1270: 1266,  # timetz
    1561: 1560,  # bit
    1563: 1562,  # varbit
    1231: 1700,  # numeric
    2201: 1790,  # refcursor
    2207: 2202,  # regprocedure
    2208: 2203,  # regoper
    2209: 2204,  # regoperator
    2210: 2205,  # regclass
    4192: 4191,  # regcollation
    2211: 2206,  # regtype
    4097: 4096,  # regrole
    4090: 4089,  # regnamespace
    2951: 2950,  # uuid
    3221: 3220,  # pg_lsn
    3643: 3614,  # tsvector
    3645: 3615,  # tsquery
    3735: 3734,  # regconfig
    3770: 3769,  # regdictionary
    3807: 3802,  # jsonb
    4073: 4072,  # jsonpath
    2949: 2970,  # txid_snapshot
    5039: 5038,  # pg_snapshot
    3905: 3904,  # int4range
    3907: 3906,  # numrange
    3909: 3908,  # tsrange
    3911: 3910,  # tstzrange
    3913: 3912,  # daterange
    3927: 3926,  # int8range
    6150: 4451,  # int4multirange
    6151: 4532,  # nummultirange
    6152: 4533,  # tsmultirange
    6153: 4534,  # tstzmultirange
    6155: 4535,  # datemultirange
    6157: 4536,  # int8multirange
    2287: 2249,  # record
}

# box is the only built-in type whose typdelim is not ",": its text contains commas.
_BOX_OID = 603


def converter_for(type_oid: int, type_name: str | None = None) -> Converter:
    """Return the function converting this type's text to JSON.

    type_name is the Type-message name for non-built-in OIDs (None when unknown).
    """
    scalar = _SCALARS.get(type_oid)
    if scalar is not None:
        return scalar
    element_oid = _ARRAY_ELEMENTS.get(type_oid)
    if element_oid is not None:
        element = _SCALARS.get(element_oid, str)
        if element is int:
            return _int_array
        delimiter = ";" if element_oid == _BOX_OID else ","
        return _array_converter(element, delimiter)
    # PostgreSQL names an array type after its element with a leading underscore; the
    # element of a user-defined array (enum, composite, domain) is only known as text.
    if type_name is not None and type_name.startswith("_"):
        return _array_converter(str, ",")
    return str


def _int_array(text: str) -> JsonValue:
    """An int2/int4/int8/oid array; a flat one of plain integers is read by orjson's C parser.

    Three times faster than parse_array (0.5 vs 1.7 us for ten elements), with the same result:
    the text holds only digits, minus signs and commas, so whatever orjson accepts is a list of
    integers, read exactly as int() reads them because PostgreSQL's integer types fit in 64 bits
    (orjson would make a float of a larger one, which these types cannot hold). Anything else,
    NULL elements included, takes the general path.
    """
    inner = text[1:-1]
    if text[:1] == "{" and text[-1:] == "}" and inner.replace(",", "").replace("-", "").isdigit():
        try:  # not contextlib.suppress, which would double the cost of the call
            value: list[JsonValue] = orjson.loads(f"[{inner}]")
        except orjson.JSONDecodeError:
            pass
        else:
            return value
    return parse_array(text, int)


def _array_converter(element: Converter, delimiter: str) -> Converter:
    # A closure, not functools.partial with keywords: partial builds a kwargs dict per call.
    def convert(text: str) -> JsonValue:
        return parse_array(text, element, delimiter)

    return convert


# array_out quotes elements containing these (scanner_isspace), and array_in trims them
# around unquoted elements. Python's \s would also match Unicode spaces PostgreSQL keeps.
_SPACE = " \t\n\r\v\f"
# An unquoted NULL in any letter case is SQL NULL; a set test is cheaper than upper().
_NULL_SPELLINGS = frozenset(map("".join, product(*zip("NULL", "null", strict=True))))
# Characters that a flat array of unquoted elements (ints, floats, dates...) never holds.
_NOT_PLAIN_RE = re.compile(rf'[{_SPACE}"\\{{}}]')
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_BOUND = rf"[{_SPACE}]*[+-]?\d+[{_SPACE}]*"
_DIMENSIONS_RE = re.compile(rf"(?:\[{_BOUND}(?::{_BOUND})?\][{_SPACE}]*)+=")


@cache
def _token_re(delimiter: str) -> re.Pattern[str]:
    d = re.escape(delimiter)
    special = rf'{_SPACE}"\\{{}}{d}'
    # Runs of ordinary characters between escapes ("unrolled loops") keep matching linear
    # and fast, with no nested quantifier to backtrack through.
    plain = rf"(?:[^{special}]|\\.)[^{special}]*(?:\\.[^{special}]*)*"
    quoted = r'"[^"\\]*(?:\\.[^"\\]*)*"'
    # Every character lands in some token, so nothing malformed is skipped silently:
    # braces, delimiter, quoted element, unquoted element (inner spaces kept, outer ones
    # not), a run of spaces, or a single stray character (an unmatched quote or backslash).
    return re.compile(
        rf"[{{}}]|{d}|{quoted}|{plain}(?:[{_SPACE}]+{plain})*|[{_SPACE}]+|.",
        re.DOTALL,
    )


def _unescape(text: str) -> str:
    return _ESCAPE_RE.sub(r"\1", text) if "\\" in text else text


def parse_array(text: str, element: Converter, delimiter: str = ",") -> list[JsonValue]:
    """Parse array_out text into nested lists, converting each non-NULL element.

    Raise ValueError on text that is not a well-formed array.
    """
    if text[:1] == "{" and text[-1:] == "}":
        # Fast path for the common one-dimensional array that array_out left unquoted.
        inner = text[1:-1]
        if not inner:
            return []
        if _NOT_PLAIN_RE.search(inner) is None:
            items = inner.split(delimiter)
            if "" not in items:
                if _NULL_SPELLINGS.isdisjoint(items):
                    return list(map(element, items))
                return [None if item in _NULL_SPELLINGS else element(item) for item in items]
    start = 0
    if text.startswith("["):
        # Explicit bounds ("[0:1]={1,2}") only matter for subscripts, not for JSON.
        bounds = _DIMENSIONS_RE.match(text)
        if bounds is None:
            raise ValueError(f"malformed array dimensions: {text[:40]!r}")
        start = bounds.end()
    result: list[JsonValue] | None = None
    stack: list[list[JsonValue]] = []
    leaf_depth = 0  # nesting depth of the first element; all must share it
    expect_element = True  # false right after an element, until a delimiter
    after_delimiter = False
    for token in _token_re(delimiter).findall(text, start):
        first = token[0]
        if first == "{":
            if not expect_element:
                raise ValueError("malformed array: unexpected '{'")
            if leaf_depth and len(stack) >= leaf_depth:
                raise ValueError("malformed array: mixed nesting depths")
            nested: list[JsonValue] = []
            if stack:
                stack[-1].append(nested)
            else:
                result = nested
            stack.append(nested)
            after_delimiter = False
        elif first == "}":
            if not stack or after_delimiter:
                raise ValueError("malformed array: unexpected '}'")
            stack.pop()
            expect_element = False
        elif first == delimiter:
            if expect_element or not stack:
                raise ValueError("malformed array: unexpected delimiter")
            expect_element = after_delimiter = True
        elif first in _SPACE:
            continue
        else:
            if not expect_element or not stack:
                raise ValueError("malformed array: element outside braces or missing delimiter")
            if leaf_depth == 0:
                leaf_depth = len(stack)
            elif leaf_depth != len(stack):
                raise ValueError("malformed array: mixed nesting depths")
            if first == '"':
                if len(token) < 2:
                    raise ValueError("malformed array: unterminated quoted element")
                stack[-1].append(element(_unescape(token[1:-1])))
            elif token in _NULL_SPELLINGS:
                stack[-1].append(None)
            elif first == "\\" and len(token) == 1:
                raise ValueError("malformed array: trailing backslash")
            else:
                stack[-1].append(element(_unescape(token)))
            expect_element = after_delimiter = False
    if result is None or stack:
        raise ValueError("malformed array: missing or unbalanced braces")
    return result
