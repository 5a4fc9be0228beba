"""Tests for the PostgreSQL text value to JSON conversions in wal2http.decode.values."""

from __future__ import annotations

import base64
import math

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from wal2http.decode.events import encode
from wal2http.decode.values import JsonText, JsonValue, converter_for, parse_array

BOOL, BYTEA, INT8, INT2, INT4, OID, JSON = 16, 17, 20, 21, 23, 26, 114
FLOAT4, FLOAT8, TIMESTAMP, TIMESTAMPTZ, NUMERIC, JSONB = (
    700,
    701,
    1114,
    1184,
    1700,
    3802,
)

# array_out quotes around these bytes only (scanner_isspace), not around Unicode spaces.
PG_SPACE = " \t\n\r\v\f"


def array_out(value: list[JsonValue], delimiter: str = ",") -> str:
    """Serialise nested lists of str/None the way PostgreSQL's array_out does."""
    parts = []
    for item in value:
        if isinstance(item, list):
            parts.append(array_out(item, delimiter))
        elif item is None:
            parts.append("NULL")
        else:
            assert isinstance(item, str)
            quote = (
                item == "" or item.upper() == "NULL" or any(c in item for c in '{}"\\' + delimiter + PG_SPACE)
            )
            if quote:
                item = '"' + item.replace("\\", "\\\\").replace('"', '\\"') + '"'
            parts.append(item)
    return "{" + delimiter.join(parts) + "}"


def convert(type_oid: int, text: str, type_name: str | None = None) -> JsonValue:
    return converter_for(type_oid, type_name)(text)


# --- scalars ---------------------------------------------------------------------------


def test_bool() -> None:
    assert convert(BOOL, "t") is True
    assert convert(BOOL, "f") is False


def test_bool_rejects_other_spellings_with_value_error() -> None:
    with pytest.raises(ValueError, match="not a boolean"):
        convert(BOOL, "true")


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (INT2, "-32768", -32768),
        (INT4, "2147483647", 2147483647),
        (INT8, "-9223372036854775808", -9223372036854775808),
        (INT8, "0", 0),
        (OID, "4294967295", 4294967295),
    ],
)
def test_integers(type_oid: int, text: str, expected: int) -> None:
    value = convert(type_oid, text)
    assert type(value) is int
    assert value == expected


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (FLOAT8, "1.5", 1.5),
        (FLOAT8, "0.1", 0.1),
        (FLOAT8, "1e+300", 1e300),
        (FLOAT8, "-1.2345678901234567e-300", -1.2345678901234567e-300),
        (FLOAT4, "3.4028235e+38", 3.4028235e38),
        (FLOAT4, "1.1", 1.1),
    ],
)
def test_finite_floats_are_numbers(type_oid: int, text: str, expected: float) -> None:
    value = convert(type_oid, text)
    assert type(value) is float
    assert value == expected


def test_negative_zero_keeps_its_sign() -> None:
    value = convert(FLOAT8, "-0")
    assert isinstance(value, float)
    assert math.copysign(1.0, value) == -1.0


@pytest.mark.parametrize("oid", [FLOAT4, FLOAT8])
@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_floats_stay_postgres_strings(oid: int, text: str) -> None:
    assert convert(oid, text) == text


@pytest.mark.parametrize(
    "text",
    [
        "12345678901234567890.0123456789",
        "-0.00000000000000000000000000000000000000001",
        "9" * 1000,
        "NaN",
        "Infinity",
        "1.10",
    ],
)
def test_numeric_stays_an_exact_string(text: str) -> None:
    assert convert(NUMERIC, text) == text


def embedded(value: JsonValue) -> object:
    """What a receiver parses after the value was embedded in an event."""
    return orjson.loads(encode({"v": value}))["v"]


@pytest.mark.parametrize("oid", [JSON, JSONB])
def test_json_is_embedded_verbatim_on_one_line(oid: int) -> None:
    text = '{\n  "a": [1, 2.5, "x\\ny"],\r\n  "b": {"c": null, "d": true}\n}'
    value = convert(oid, text)
    assert isinstance(value, JsonText) and "\n" not in value and "\r" not in value
    assert embedded(value) == {"a": [1, 2.5, "x\ny"], "b": {"c": None, "d": True}}


def test_json_scalars_and_null() -> None:
    assert embedded(convert(JSONB, "null")) is None
    assert embedded(convert(JSONB, '"é"')) == "é"
    assert embedded(convert(JSON, " 42 ")) == 42


def test_json_numbers_keep_every_digit() -> None:
    text = '{"big": 123456789012345678901234567890, "dec": 0.10000000000000000000001, "huge": 1e400}'
    out = encode({"v": convert(JSONB, text)})
    assert out == b'{"v":' + text.encode() + b"}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\x", ""),
        ("\\x00", "AA=="),
        ("\\x00ff10", "AP8Q"),
        ("\\x68656c6c6f00776f726c64", "aGVsbG8Ad29ybGQ="),
    ],
)
def test_bytea_becomes_padded_base64(text: str, expected: str) -> None:
    assert convert(BYTEA, text) == expected


@pytest.mark.parametrize("text", ["hello", "\\x0", "\\xzz"])
def test_bytea_not_in_hex_raises(text: str) -> None:
    with pytest.raises(ValueError):
        convert(BYTEA, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28 01:02:03.456789+00", "2026-11-28T01:02:03.456789Z"),
        ("2026-11-28 01:02:03+00", "2026-11-28T01:02:03Z"),
        ("0001-01-01 00:00:00+00", "0001-01-01T00:00:00Z"),
        ("12026-11-28 01:02:03.5+00", "12026-11-28T01:02:03.5Z"),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
        ("0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC"),
        # Only if TimeZone were not UTC: keep the offset, in RFC 3339 form.
        ("2026-11-28 01:02:03.25+05:30", "2026-11-28T01:02:03.25+05:30"),
        ("2026-11-28 01:02:03+05", "2026-11-28T01:02:03+05:00"),
        ("2026-11-28 01:02:03-03:30", "2026-11-28T01:02:03-03:30"),
        # An offset with seconds has no RFC 3339 form: left as PostgreSQL printed it.
        ("1850-01-01 00:00:00+00:53:28", "1850-01-01 00:00:00+00:53:28"),
    ],
)
def test_timestamptz(text: str, expected: str) -> None:
    assert convert(TIMESTAMPTZ, text) == expected


@pytest.mark.parametrize("text", ["2026-11-28", "tomorrow", "2026-11-28 01:02+01"])
def test_malformed_timestamptz_raises(text: str) -> None:
    with pytest.raises(ValueError):
        convert(TIMESTAMPTZ, text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-28 01:02:03.5", "2026-11-28T01:02:03.5"),
        ("2026-11-28 01:02:03", "2026-11-28T01:02:03"),
        ("infinity", "infinity"),
        ("-infinity", "-infinity"),
        ("0044-03-15 12:00:00 BC", "0044-03-15 12:00:00 BC"),
    ],
)
def test_timestamp(text: str, expected: str) -> None:
    assert convert(TIMESTAMP, text) == expected


@pytest.mark.parametrize(
    ("type_oid", "text"),
    [
        (1082, "2026-11-28"),  # date
        (1083, "01:02:03.5"),  # time
        (1266, "01:02:03+05:30"),  # timetz
        (1186, "1 year 2 mons 3 days 04:05:06"),  # interval
        (2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),  # uuid
        (869, "192.168.0.1/24"),  # inet
        (650, "10.0.0.0/8"),  # cidr
        (829, "08:00:2b:01:02:03"),  # macaddr
        (790, "$1,000.00"),  # money
        (25, "héllo\nwörld"),  # text
        (1043, ""),  # varchar
        (1042, "ab  "),  # bpchar keeps its padding
        (142, "<a>b</a>"),  # xml
        (3904, "[1,10)"),  # int4range
        (18, "x"),  # "char"
        (22, "1 2 3"),  # int2vector prints without braces
    ],
)
def test_other_builtins_pass_text_through(type_oid: int, text: str) -> None:
    assert convert(type_oid, text) == text


def test_user_defined_types_pass_text_through() -> None:
    assert convert(16385, "happy", "mood") == "happy"
    assert convert(16390, '(1,"a b")', "pair") == '(1,"a b")'
    assert convert(16391, "{a}", None) == "{a}"


def test_hot_path_converters_are_builtins() -> None:
    # The hot path calls these millions of times: no Python-level wrapper for the common types.
    assert converter_for(INT4) is int
    assert converter_for(INT8) is int
    assert converter_for(25) is str
    assert converter_for(NUMERIC) is str
    assert converter_for(16385, "mood") is str


# --- arrays ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("type_oid", "text", "expected"),
    [
        (1007, "{}", []),
        (1007, "{1,2,NULL}", [1, 2, None]),
        (1007, "{{1,2},{3,4}}", [[1, 2], [3, 4]]),
        (1007, "{{{1},{2}},{{3},{4}}}", [[[1], [2]], [[3], [4]]]),
        (1007, "[0:1]={1,2}", [1, 2]),
        (1007, "[1:1][1:2]={{1,2}}", [[1, 2]]),
        (1007, "[-3:-2]={7,8}", [7, 8]),
        (1016, "{9223372036854775807,null,Null}", [9223372036854775807, None, None]),
        (1000, "{t,f,NULL}", [True, False, None]),
        (1022, "{1.5,NaN,Infinity,-Infinity}", [1.5, "NaN", "Infinity", "-Infinity"]),
        (
            1231,
            "{12345678901234567890.0123456789,NaN}",
            ["12345678901234567890.0123456789", "NaN"],
        ),
        (1001, '{"\\\\x00ff",NULL,"\\\\x"}', ["AP8=", None, ""]),
        (3807, '{"{\\"a\\": [1, 2]}","[]",NULL}', ['{"a": [1, 2]}', "[]", None]),
        (199, '{"{\\"k\\":\n \\"v\\"}"}', ['{"k":  "v"}']),  # json's raw newline is flattened
        (
            1185,
            '{"2026-11-28 01:02:03.456789+00",infinity}',
            ["2026-11-28T01:02:03.456789Z", "infinity"],
        ),
        (1115, '{"2026-11-28 01:02:03",NULL}', ["2026-11-28T01:02:03", None]),
        (1182, "{2026-11-28,infinity}", ["2026-11-28", "infinity"]),
        (
            2951,
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"],
        ),
        (3905, '{"[1,10)",empty}', ["[1,10)", "empty"]),
        (1020, "{(1,1),(0,0);(3,3),(2,2)}", ["(1,1),(0,0)", "(3,3),(2,2)"]),
    ],
)
def test_builtin_arrays(type_oid: int, text: str, expected: JsonValue) -> None:
    assert convert(type_oid, text) == expected


def test_text_array_quoting() -> None:
    text = '{"a b","c\\"d","e\\\\f",NULL,"NULL","","{x,y}",héllo,"日本 語",plain}'
    assert convert(1009, text) == [
        "a b",
        'c"d',
        "e\\f",
        None,
        "NULL",
        "",
        "{x,y}",
        "héllo",
        "日本 語",
        "plain",
    ]


def test_whitespace_around_unquoted_elements_is_ignored() -> None:
    assert parse_array(' { a b ,\t"c" , NULL } ', str) == ["a b", "c", None]
    assert parse_array("{ {1} , {2} }", int) == [[1], [2]]


def test_unicode_space_is_part_of_an_unquoted_element() -> None:
    # PostgreSQL neither quotes nor trims a no-break space; only ASCII whitespace counts.
    assert parse_array("{\xa0a\xa0,b}", str) == ["\xa0a\xa0", "b"]


def test_backslash_escapes_in_unquoted_elements() -> None:
    assert parse_array("{a\\,b,\\NULL,c\\\\}", str) == ["a,b", "NULL", "c\\"]


def test_user_defined_array_is_a_list_of_strings() -> None:
    assert convert(16386, "{happy,sad,NULL}", "_mood") == ["happy", "sad", None]
    assert convert(16392, '{"(1,\\"a b\\")",NULL}', "_pair") == ['(1,"a b")', None]
    assert convert(16386, "{{a},{b}}", "_mood") == [["a"], ["b"]]


def test_element_errors_propagate_as_value_error() -> None:
    with pytest.raises(ValueError):
        convert(1007, "{1,x}")
    with pytest.raises(ValueError):
        convert(1000, "{t,yes}")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1,2",
        "{",
        "}",
        "{1,2",
        "{1,2}}",
        "{{1,2}",
        "{1,,2}",
        "{,1}",
        "{1,}",
        "{1 2",
        "{1}x",
        "{1}{2}",
        "x{1}",
        '{"a}',
        '{"a"b}',
        '{a"b"}',
        "{a\\}",
        "{{1},2}",
        "{1,{2}}",
        "[1:2]{1,2}",
        "[x]={1}",
        "[1:2]=",
    ],
)
def test_malformed_arrays_raise_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="malformed array"):
        parse_array(text, str)


# --- properties ------------------------------------------------------------------------

# No NUL (PostgreSQL text cannot hold it) and no surrogates (not encodable in UTF-8); the
# sampled characters are the ones array_out and array_in treat specially.
element_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('{}",;\\' + PG_SPACE + "NUL nul\xa0\u2003é日")),
        st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    ),
    max_size=12,
) | st.sampled_from(["NULL", "null", "NuLl", "", " "])


@st.composite
def rectangular_arrays(draw: st.DrawFn) -> list[JsonValue]:
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    size = math.prod(shape)
    flat = draw(st.lists(st.none() | element_text, min_size=size, max_size=size))
    items: list[JsonValue] = list(flat)
    for length in reversed(shape[1:]):
        items = [items[i : i + length] for i in range(0, len(items), length)]
    return items


@given(rectangular_arrays(), st.sampled_from([",", ";"]))
def test_parse_array_inverts_array_out(value: list[JsonValue], delimiter: str) -> None:
    assert parse_array(array_out(value, delimiter), str, delimiter) == value


@given(st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=20))
def test_int8_array_round_trip(value: list[JsonValue]) -> None:
    text = array_out([None if v is None else str(v) for v in value])
    assert convert(1016, text) == value


@given(st.integers(-(2**63), 2**63 - 1))
def test_int8_round_trip(value: int) -> None:
    assert convert(INT8, str(value)) == value


PG_FLOAT_SPELLING = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_float8_round_trip(value: float) -> None:
    text = PG_FLOAT_SPELLING.get(repr(value), repr(value))
    result = convert(FLOAT8, text)
    if math.isfinite(value):
        assert isinstance(result, float)
        assert result == value
        assert math.copysign(1.0, result) == math.copysign(1.0, value)
    else:
        assert result == text
        assert result in ("NaN", "Infinity", "-Infinity")


@given(st.binary(max_size=200))
def test_bytea_round_trip(value: bytes) -> None:
    result = convert(BYTEA, "\\x" + value.hex())
    assert isinstance(result, str)
    assert base64.b64decode(result, validate=True) == value
    assert result == base64.b64encode(value).decode("ascii")


@given(st.text(alphabet=st.sampled_from(list('{}[]:=",;\\ \tNUL1-a')), max_size=20))
def test_any_text_parses_or_raises_value_error(text: str) -> None:
    try:
        result = parse_array(text, str)
    except ValueError:
        return
    assert isinstance(result, list)
