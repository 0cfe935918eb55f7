"""Property tests for the compiled encoder's tricks, each against fastavro.schemaless_writer:

- longs: the table indexed by the value itself (-8192..8191), the two-table path below 2**27,
  and the remembered high bytes of large values (timestamps), at every boundary;
- strings: the shared table (`S[text]`), new, long (not remembered) and non-ASCII text;
- doubles: runs packed by one struct call, with ints converted, nulls and omissions defaulted,
  and one NaN/infinity test per record that still names the field;
- shapes: encoders compiled for one set of present keys (in dict order), with the absent
  fields' defaults as constant bytes, must agree with the generic encoder on every value,
  including values that it refuses.

Every test runs twice: with the Python encoder alone, and with the C extension in front of it
(values the C code does not take, refusals among them, go to the Python encoder).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mlink.catalog import default_catalog
from bridge.sink import avro
from bridge.sink.avro import _SHAPE_AFTER, SchemaHistory, SchemaMismatch, WriterSchema
from transforms import TransformOptions, compile_plan

CAT = default_catalog()
AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}
MSFT_580_C = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580, "cp": "Call"}
INT64 = st.integers(-(2**63), 2**63 - 1)
BOUNDARIES = [
    0,
    1,
    -1,
    8191,
    8192,
    -8192,
    -8193,
    2**27 - 1,
    2**27,
    2**28 - 1,
    2**28,
    2**63 - 1,
    -(2**63),
    1_726_000_000_123_456_789,
]
LONGS = st.one_of(st.sampled_from(BOUNDARIES), INT64, st.integers(-(2**30), 2**30))
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def history(name: str) -> SchemaHistory:
    spec = CAT.get(name)
    assert spec is not None
    return SchemaHistory(compile_plan(spec, TransformOptions(), CAT))


@pytest.fixture(scope="module", autouse=True, params=["python", "native"])
def implementation(request: pytest.FixtureRequest) -> Iterator[str]:
    """The encoder under test: WriterSchemas made while it is active use it."""
    built = avro._native
    if request.param == "native" and built is None:
        pytest.fail("the C extension bridge.sink._avro_native is not built")
    avro._native = built if request.param == "native" else None
    yield request.param
    avro._native = built


def writer(name: str) -> WriterSchema:
    """A fresh writer schema (its encoder has seen no shapes yet)."""
    return history(name).current


@functools.cache
def _shared(name: str, native: bool) -> WriterSchema:
    return writer(name)


def shared(name: str) -> WriterSchema:
    """One writer schema per type and implementation, shared by the tests (shapes accumulate)."""
    return _shared(name, avro._native is not None)


def book() -> WriterSchema:
    return shared("StockBookQuote")


def quote() -> WriterSchema:
    return shared("OptionNbboQuote")


def implied() -> WriterSchema:
    return shared("LiveImpliedQuote")


def defaults(w: WriterSchema) -> dict[str, Any]:
    return {f["name"]: f["default"] for f in w.schema["fields"] if "default" in f}


def fastavro_bytes(w: WriterSchema, value: dict[str, Any]) -> bytes:
    """fastavro's bytes for `value` with omitted and null fields set to their defaults (what
    the compiled encoder does; fastavro itself would refuse a null double)."""
    full = defaults(w)
    full.update({k: v for k, v in value.items() if v is not None})
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, w.parsed, full)
    return buffer.getvalue()


def encode_repeatedly(w: WriterSchema, value: dict[str, Any]) -> bytes:
    """Encode until the value's shape has its own encoder; every result must be the same."""
    results = {w.encode(dict(value)) for _ in range(_SHAPE_AFTER + 2)}
    assert len(results) == 1
    return results.pop()


def refusal(w: WriterSchema, value: dict[str, Any]) -> str | None:
    try:
        w.encode(dict(value))
    except SchemaMismatch as exc:
        return str(exc)
    return None


@given(st.lists(LONGS, min_size=6, max_size=6))
def test_longs_encode_like_fastavro(numbers: list[int]) -> None:
    names = ("bidSize1", "bidMask1", "askSize2", "askMask2", "srcTimestamp", "netTimestamp")
    value: dict[str, Any] = {"pkey": {"ticker": AAPL}, **dict(zip(names, numbers, strict=True))}
    assert encode_repeatedly(book(), value) == fastavro_bytes(book(), value)


@given(st.sampled_from([2**63, -(2**63) - 1, 2**64, -(2**100)]))
def test_longs_out_of_range_are_refused_by_name(number: int) -> None:
    value = {"pkey": {"ticker": AAPL}, "srcTimestamp": number}
    for _ in range(_SHAPE_AFTER + 2):
        with pytest.raises(SchemaMismatch, match=r"StockBookQuote\.srcTimestamp: .* does not fit"):
            book().encode(dict(value))


@given(st.text(), st.text(min_size=65, max_size=200), st.sampled_from(["IEX", "é€𝄞", ""]))
def test_strings_encode_like_fastavro(symbol: str, long_text: str, venue: str) -> None:
    value = {"pkey": {"ticker": {**AAPL, "tk": symbol}}, "bidExch1": venue, "askExch1": long_text}
    assert encode_repeatedly(book(), value) == fastavro_bytes(book(), value)


@given(
    st.lists(
        st.one_of(FINITE, st.integers(-(2**53), 2**53), st.none(), st.just("absent")),
        min_size=8,
        max_size=8,
    )
)
def test_double_runs_encode_like_fastavro(doubles: list[Any]) -> None:
    names = ("uPrc", "years", "rate", "sdiv", "oBid", "oAsk", "oBidIv", "oAskIv")  # one run
    value: dict[str, Any] = {"pkey": {"okey": MSFT_580_C}}
    value.update({n: d for n, d in zip(names, doubles, strict=True) if d != "absent"})
    expected = {k: float(v) if isinstance(v, int) and k != "pkey" else v for k, v in value.items()}
    assert encode_repeatedly(implied(), value) == fastavro_bytes(implied(), expected)


@given(st.integers(0, 7), st.sampled_from([math.nan, math.inf, -math.inf]), st.booleans())
def test_a_non_finite_double_is_named_in_any_shape(where: int, bad: float, warm: bool) -> None:
    names = ("uPrc", "years", "rate", "sdiv", "oBid", "oAsk", "oBidIv", "sMark")
    value: dict[str, Any] = {"pkey": {"okey": MSFT_580_C}, **dict.fromkeys(names, 1.5)}
    if warm:  # the shape has its own encoder by now
        encode_repeatedly(implied(), value)
    value[names[where]] = bad
    message = refusal(implied(), value)
    assert message is not None
    assert message.startswith(f"mlink.LiveImpliedQuote.{names[where]}: ")
    assert "NaN or infinity" in message


QUOTE_FIELDS = {
    "updateType": st.sampled_from(["SizeOnly", "PrcChange"]),
    "bidPrice": FINITE,
    "askPrice": FINITE,
    "bidSize": LONGS,
    "cumBidSize": LONGS,
    "bidExch": st.sampled_from(["CBOE", "PHLX", ""]),
    "askMask": LONGS,
    "askMktType": st.sampled_from(["Regular", "None"]),
    "bidPrice2": FINITE,
    "askTime": LONGS,
    "srcTimestamp": LONGS,
}


@given(
    st.permutations(list(QUOTE_FIELDS)),
    st.integers(0, len(QUOTE_FIELDS)),
    st.fixed_dictionaries(QUOTE_FIELDS),
    st.sets(st.sampled_from(list(QUOTE_FIELDS))),
)
def test_every_shape_encodes_like_fastavro(
    order: list[str], keep: int, values: dict[str, Any], nulls: set[str]
) -> None:
    value: dict[str, Any] = {name: values[name] for name in order[:keep]}
    value.update(dict.fromkeys(nulls & set(value)))  # JSON nulls: the default, as when omitted
    value["pkey"] = {"okey": MSFT_580_C}  # last: the shapes do not assume where pkey is
    assert encode_repeatedly(quote(), value) == fastavro_bytes(quote(), value)


WRONG = [
    ("bidPrice", "1.5", "expected double, got str '1.5'"),
    ("bidPrice", True, "expected double, got bool True"),
    ("bidSize", 2.0, "expected long, got float 2.0"),
    ("bidSize", False, "expected long, got bool False"),
    ("srcTimestamp", 2**63, "does not fit a 64-bit long"),
    ("bidExch", 5, "expected string, got int 5"),
    ("bidExch", "\ud800", "string is not valid Unicode"),
    ("askMktType", ["x"], "expected string, got list"),
]


@pytest.mark.parametrize(("field", "bad", "message"), WRONG)
def test_a_shape_refuses_what_the_generic_encoder_refuses(
    field: str, bad: Any, message: str
) -> None:
    good: dict[str, Any] = {"pkey": {"okey": MSFT_580_C}, "bidPrice": 1.0, "bidSize": 3}
    good.update({"bidExch": "CBOE", "askMktType": "Regular", "srcTimestamp": 2**60})
    encode_repeatedly(quote(), good)  # the shape now has its own encoder
    value = {**good, field: bad}
    assert tuple(value) == tuple(good)  # same keys, same order: the specialized encoder runs
    assert refusal(quote(), value) == refusal(writer("OptionNbboQuote"), value)  # fresh: generic
    assert message in (refusal(quote(), value) or "")
    assert f"OptionNbboQuote.{field}" in (refusal(quote(), value) or "")


def test_a_shape_without_the_key_is_refused() -> None:
    value = {"bidPrice": 1.0}
    for _ in range(_SHAPE_AFTER + 2):
        with pytest.raises(SchemaMismatch, match="pkey: required record is missing"):
            quote().encode(dict(value))


def test_extra_keys_and_non_dict_mappings_encode_the_same() -> None:
    value = {"pkey": {"ticker": AAPL}, "bidPrice1": 2.5, "notInTheSchema": [1, 2]}
    expected = fastavro_bytes(book(), {"pkey": {"ticker": AAPL}, "bidPrice1": 2.5})
    assert encode_repeatedly(book(), value) == expected
    assert book().encode(MappingProxyType(value)) == expected


def test_nullable_and_array_fields_in_shapes() -> None:
    w = writer("ProductDefinitionV2")
    pkey = {"secKey": MSFT_580_C, "secType": "Option"}
    for value in (
        {"pkey": pkey},
        {"pkey": pkey, "ticker": AAPL},
        {"pkey": pkey, "ticker": None, "legs": []},
        {"pkey": pkey, "legs": [{"refDelta": 0.5}, {"refDelta": -1}]},
        {"legs": [{"refDelta": 0.25}], "pkey": pkey, "ticker": AAPL},
    ):
        plain = {k: v for k, v in value.items() if v is not None}
        if "legs" in plain:
            legs = [{m: float(x) for m, x in leg.items()} for leg in plain["legs"]]
            plain["legs"] = [{**defaults_of_legs(w), **leg} for leg in legs]
        assert encode_repeatedly(w, value) == fastavro_bytes(w, plain), value


def defaults_of_legs(w: WriterSchema) -> dict[str, Any]:
    legs = next(f for f in w.schema["fields"] if f["name"] == "legs")
    return {m["name"]: m["default"] for m in legs["type"]["items"]["fields"]}


def test_evolved_nullable_fields_in_shapes() -> None:
    w = history("StockBookQuote").evolve({"flag": True, "count": 3, "note": "x", "score": 0.5})
    for extra in (
        {"flag": True, "count": -9000, "note": "hé", "score": 1.5},
        {"flag": False, "count": 2**40},
        {"note": None, "score": None},
        {},
    ):
        value = {"pkey": {"ticker": AAPL}, **extra}
        assert encode_repeatedly(w, value) == fastavro_bytes(w, value), extra
    value = {"pkey": {"ticker": AAPL}, "flag": 1}
    encode_repeatedly(w, {"pkey": {"ticker": AAPL}, "flag": True})
    with pytest.raises(SchemaMismatch, match=r"StockBookQuote\.flag: expected boolean, got int"):
        w.encode(value)


def test_a_shape_without_the_field_that_defines_a_named_type_still_encodes() -> None:
    # LiveSurfaceFixedTerm's eMoveEKey1 defines mlink.ExpiryKey; eMoveEKey2 refers to it by name.
    # MLink omits null keys, so a stream can carry eMoveEKey2 alone.
    w = writer("LiveSurfaceFixedTerm")
    names = [f["name"] for f in w.schema["fields"]]
    assert names.index("eMoveEKey1") < names.index("eMoveEKey2")
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}, "surfaceType": "PrevDay"}
    value = {
        "pkey": pkey,
        "eMoveEKey2": {"at": "EQT", "ts": "NMS", "tk": "AAPL", "dt": "2024-10-18"},
    }
    assert encode_repeatedly(w, value) == fastavro_bytes(w, value)


def test_the_encoder_under_test_is_the_one_named(implementation: str) -> None:
    encode = writer("StockBookQuote").encode
    assert (encode.__name__ == "encode_native") == (implementation == "native")
