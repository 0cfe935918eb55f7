"""The C encoder (bridge/sink/_avro_native.c) against the Python one it stands in front of.

For values of every catalog type, drawn from the writer schema itself with wrong types, NaN,
out-of-range longs, bad Unicode, non-dict mappings, tuples and missing keys mixed in, both
implementations must give the same bytes, or refuse with the same SchemaMismatch message.
"""

from __future__ import annotations

import functools
import io
import math
from types import MappingProxyType
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import KeyFormatError
from bridge.mlink.catalog import default_catalog
from bridge.simulator.market import Market
from bridge.sink import avro
from bridge.sink.avro import SchemaHistory, SchemaMismatch, WriterSchema, compile_encoder
from transforms import TransformError, TransformOptions, compile_plan

CAT = default_catalog()
WRITERS: dict[str, WriterSchema] = {
    spec.name: SchemaHistory(compile_plan(spec, TransformOptions(), CAT)).current for spec in CAT
}
ODD = st.sampled_from(
    [None, True, False, 0, -1, 2**63, -(2**63) - 1, 1.5, math.nan, math.inf, "", "\ud800", [], {}]
)


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    if avro._native is None:
        pytest.fail("the C extension bridge.sink._avro_native is not built")


def values_of(kind: Any, named: dict[str, Any], namespace: str | None) -> st.SearchStrategy[Any]:
    """Mostly values that fit `kind`, sometimes values that do not."""
    if isinstance(kind, str) and kind not in ("double", "long", "string", "boolean"):
        full = kind if "." in kind else f"{namespace}.{kind}"
        kind = named.get(full, named.get(kind))
    if isinstance(kind, list):  # ["null", T]
        return st.one_of(st.none(), values_of(kind[1], named, namespace))
    if isinstance(kind, dict):
        if kind["type"] == "array":
            items = values_of(kind["items"], named, namespace)
            return st.one_of(st.lists(items, max_size=3), st.lists(items, max_size=2).map(tuple))
        if kind["type"] == "record":
            namespace = kind.get("namespace", namespace)
            fields = {f["name"]: values_of(f["type"], named, namespace) for f in kind["fields"]}
            return records(fields)
        kind = kind["type"]
    good = {
        "double": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers()),
        "long": st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-300, 300)),
        "string": st.text(max_size=80),
        "boolean": st.booleans(),
    }[kind]
    return st.one_of(good, good, good, ODD)


@st.composite
def records(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> Any:
    names = draw(st.lists(st.sampled_from(sorted(fields)), unique=True)) if fields else []
    value = {name: draw(fields[name]) for name in names}
    value["junk"] = draw(st.one_of(st.just("absent"), ODD))
    if value["junk"] == "absent":
        del value["junk"]
    how = draw(st.sampled_from(["dict", "dict", "dict", "mapping", "not a record"]))
    if how == "mapping":
        return MappingProxyType(value)
    return value if how == "dict" else draw(ODD)


@functools.cache
def encoders(name: str) -> tuple[avro.Encoder, avro.Encoder]:
    schema = WRITERS[name].schema
    return compile_encoder(schema, native=True), compile_encoder(schema, native=False)


def outcome(encode: avro.Encoder, value: Any, prefix: bytes) -> bytes | str:
    try:
        return encode(value, prefix)
    except SchemaMismatch as exc:
        return f"refused: {exc}"


@pytest.mark.parametrize("name", sorted(WRITERS))
@settings(max_examples=60)
@given(data=st.data(), prefix=st.sampled_from([b"", b"\xc3\x01" + bytes(8)]))
def test_same_bytes_or_same_refusal_as_python(
    name: str, data: st.DataObject, prefix: bytes
) -> None:
    w = WRITERS[name]
    named: dict[str, Any] = {}
    avro._collect_named(w.schema, w.schema.get("namespace"), named)
    value = data.draw(values_of(w.name, {w.name: w.schema, **named}, None))
    native, python = encoders(name)
    assert outcome(native, value, prefix) == outcome(python, value, prefix)


def test_large_values_grow_the_buffer() -> None:
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "é" * 5000}}
    native, python = encoders("StockBookQuote")
    for size in (0, 1000, 2040, 2048, 100_000):
        value = {"pkey": pkey, "bidExch1": "x" * size}
        prefix = b"p" * (size % 7)
        assert native(value, prefix) == python(value, prefix)


def test_the_simulators_records_are_encoded_in_c() -> None:
    """Every record of every catalog type the simulator makes takes the C path itself (the
    Python encoder is for the odd value), with the bytes fastavro writes."""
    market = Market(CAT, msg_names=[spec.name for spec in CAT], tickers=5)
    seen: set[str] = set()
    for _ in range(3000):
        obj = market.step()
        if obj.deleted:
            continue
        w = WRITERS[obj.msg_name]
        value = w.plan.apply(obj.message).value
        program = avro._native_program(w.schema)
        body = avro._native.encode(program, value, b"")  # type: ignore[union-attr]
        assert body is not None, obj.msg_name
        buffer = io.BytesIO()
        fastavro.schemaless_writer(buffer, w.parsed, with_defaults(w, value))
        assert body == buffer.getvalue(), obj.msg_name
        seen.add(obj.msg_name)
    assert seen == set(WRITERS)


def with_defaults(w: WriterSchema, value: dict[str, Any]) -> dict[str, Any]:
    """fastavro needs every field; the bridge's encoders fill in the defaults MLink left out."""
    full = {f["name"]: f["default"] for f in w.schema["fields"] if "default" in f}
    full.update({k: v for k, v in value.items() if v is not None})
    return full


# --- the wire path: plan.apply + encode in one C call


WIRE_ODD = st.sampled_from(
    [None, True, 1, -(2**64), 2.5, math.nan, "", "x", "2024-09-13 14:30:00.123456", "bad", {}, []]
)


@st.composite
def wire_bodies(draw: st.DrawFn, name: str) -> dict[str, Any]:
    """A simulator body of type `name`, some of its fields replaced by odd values."""
    market = Market(CAT, msg_names=[name], tickers=3, seed=draw(st.integers(0, 2**16)))
    body = None
    while body is None:
        obj = market.step()
        body = None if obj.deleted else dict(obj.message)
    for field in draw(st.lists(st.sampled_from(sorted(body)), max_size=3)):
        body[field] = draw(WIRE_ODD)
    if draw(st.booleans()):
        body.pop(draw(st.sampled_from(sorted(body))))
    return body


def slow_path(w: WriterSchema, body: dict[str, Any], prefix: bytes) -> bytes | str:
    try:
        record = w.plan.apply(body)
        return w.encode(record.value, prefix)
    except (SchemaMismatch, TransformError, KeyFormatError) as exc:
        return f"refused: {type(exc).__name__}"


@pytest.mark.parametrize("name", sorted(WRITERS))
@settings(max_examples=40)
@given(data=st.data())
def test_the_wire_path_writes_what_apply_and_encode_write(name: str, data: st.DataObject) -> None:
    """Bytes from the wire path are the Python path's bytes; a body that path refuses never
    gets bytes from the C path (it answers None, and the Python path decides)."""
    w = WRITERS[name]
    assert w.encode_wire is not None
    body = data.draw(wire_bodies(name))
    prefix = b"\xc3\x01" + bytes(8)
    expected = slow_path(w, body, prefix)
    try:
        w.plan.key_of(body)
    except KeyFormatError:
        assert expected == "refused: KeyFormatError"
        return
    got = w.encode_wire(body, prefix)
    if got is not None:
        assert got == expected


def test_the_wire_path_takes_the_simulators_bodies_itself() -> None:
    market = Market(CAT, msg_names=[spec.name for spec in CAT], tickers=5)
    taken = 0
    for _ in range(3000):
        obj = market.step()
        if obj.deleted:
            continue
        w = WRITERS[obj.msg_name]
        assert w.encode_wire is not None
        got = w.encode_wire(obj.message, b"")
        assert got is not None, obj.msg_name
        assert got == w.encode(w.plan.apply(obj.message).value), obj.msg_name
        taken += 1
    assert taken > 2000


def test_datetime_text_is_parsed_on_the_wire_path() -> None:
    datetimes = [
        (spec.name, f.name)
        for spec in CAT
        for f in spec.value_fields
        if f.type == "DateTime" and spec.name in WRITERS
    ]
    assert datetimes, "the catalog has DateTime fields"
    for name, field in datetimes[:10]:
        w = WRITERS[name]
        assert w.encode_wire is not None
        market = Market(CAT, msg_names=[name], tickers=3)
        obj = market.step()
        while obj.deleted:
            obj = market.step()
        body = {**obj.message, field: "2024-09-13 14:30:00.123456"}
        expected = w.encode(w.plan.apply(body).value)
        assert w.encode_wire(body, b"") == expected
        assert w.encode_wire({**body, field: "2024-13-45 99:00:00"}, b"") is None


@pytest.mark.parametrize(
    "options",
    [
        TransformOptions(rename={"bidPrice": "bid", "askPrice": "ask"}),
        TransformOptions(view=("bidPrice", "srcTimestamp"), rename={"bidPrice": "askPrice"}),
        TransformOptions(drop=("askPrice", "bidSize"), rename={"bidPrice": "askPrice"}),
    ],
)
def test_the_wire_path_follows_view_rename_and_drop(options: TransformOptions) -> None:
    spec = CAT.get("OptionNbboQuote")
    assert spec is not None
    w = SchemaHistory(compile_plan(spec, options, CAT)).current
    assert w.encode_wire is not None
    market = Market(CAT, msg_names=["OptionNbboQuote"], tickers=3)
    for _ in range(200):
        obj = market.step()
        if not obj.deleted:
            body = obj.message
            assert w.encode_wire(body, b"") == w.encode(w.plan.apply(body).value)


@pytest.mark.parametrize(
    ("program", "why"),
    [
        ([("a", None, 0, None)], "not a tuple of fields"),
        ((("a", None, 0),), r"\(name, default, kind, sub\)"),
        (((1, None, 0, None),), "name is not a str"),
        ((("a", "x", 0, None),), "neither bytes nor None"),
        ((("a", None, "0", None),), "kind is not an int"),
        ((("a", None, 99, None),), "unknown kind"),
        ((("a", None, 0, ()),), "primitive with a sub-program"),
        ((("a", None, 5, (0,)),), r"\(kind, sub\)"),
        ((("a", None, 7, None),), "DateTime without its parser"),
        ((("a", None, 4, [("b", None, 0, None)]),), "not a tuple of fields"),
    ],
)
def test_a_malformed_program_is_refused_before_use(program: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        avro._native.check(program)  # type: ignore[union-attr]


def test_every_catalog_program_passes_the_check() -> None:
    for w in WRITERS.values():
        avro._native.check(avro._native_program(w.schema))  # type: ignore[union-attr]
        avro._native.check(avro._native_program(w.schema, w.plan))  # type: ignore[union-attr]
