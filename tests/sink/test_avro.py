from __future__ import annotations

import io
import json
import math
import struct
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import BridgeError
from bridge.mlink.catalog import default_catalog
from bridge.sink.avro import (
    DATETIME_DOC,
    SchemaHistory,
    SchemaMismatch,
    WriterSchema,
    avro_schema,
    canonical_form,
    compile_encoder,
    fingerprint,
)
from transforms import RecordPlan, TransformOptions, compile_plan

CAT = default_catalog()
AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}
MSFT_580_C = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580, "cp": "Call"}
Messages = list[tuple[str, dict[str, Any]]]


def plan(name: str, **options: Any) -> RecordPlan:
    spec = CAT.get(name)
    assert spec is not None
    return compile_plan(spec, TransformOptions(**options), CAT)


def fields_of(schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["name"]: f for f in schema["fields"]}


def fastavro_bytes(writer: WriterSchema, value: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, writer.parsed, value)
    return buffer.getvalue()


def read(writer: WriterSchema, body: bytes, reader: Any = None) -> dict[str, Any]:
    record = fastavro.schemaless_reader(io.BytesIO(body), writer.parsed, reader)
    assert isinstance(record, dict)
    return record


# --- schemas


def test_schema_shape_for_a_quote() -> None:
    schema = avro_schema(plan("OptionNbboQuote"))
    assert (schema["type"], schema["name"], schema["namespace"]) == (
        "record",
        "OptionNbboQuote",
        "mlink",
    )
    fields = fields_of(schema)
    assert next(iter(fields)) == "pkey"
    key_record = fields["pkey"]["type"]
    assert key_record["name"] == "OptionNbboQuoteKey"
    okey = fields_of(key_record)["okey"]["type"]
    assert okey["name"] == "OptionKey"
    assert okey["namespace"] == "mlink"
    assert [(f["name"], f["type"]) for f in okey["fields"]] == [
        ("at", "string"),
        ("ts", "string"),
        ("tk", "string"),
        ("dt", "string"),
        ("xx", "double"),
        ("cp", "string"),
    ]
    assert fields["bidPrice"] == {"name": "bidPrice", "type": "double", "default": 0.0}
    assert fields["bidSize"] == {"name": "bidSize", "type": "long", "default": 0}
    assert fields["bidExch"] == {"name": "bidExch", "type": "string", "default": "None"}
    assert fields["bidMktType"]["type"] == "string"  # a flag, like an enum
    assert fields["srcTimestamp"]["type"] == "long"
    fastavro.parse_schema(schema)


def test_named_key_records_are_defined_once_then_referenced() -> None:
    schema = avro_schema(plan("LiveSurfaceCurve"))
    fields = fields_of(schema)
    assert fields_of(fields["pkey"]["type"])["ekey"]["type"]["name"] == "ExpiryKey"
    assert fields["ticker"] == {
        "name": "ticker",
        "type": ["null", fields["ticker"]["type"][1]],
        "default": None,
    }
    assert fields["ticker"]["type"][1]["name"] == "TickerKey"  # first TickerKey: defined here
    assert fields["fkey"]["type"] == ["null", "mlink.ExpiryKey"]  # already defined: referenced
    assert json.dumps(schema).count('"name": "ExpiryKey"') == 1
    surface = fields_of(fields["pkey"]["type"])["surfaceType"]
    assert surface == {"name": "surfaceType", "type": "string", "default": "None"}
    fastavro.parse_schema(schema)


def test_datetime_is_long_ns_with_a_doc_and_strings_default_empty() -> None:
    fields = fields_of(avro_schema(plan("StockPrint")))
    assert fields["timestamp"] == {
        "name": "timestamp",
        "type": "long",
        "default": 0,
        "doc": DATETIME_DOC,
    }
    product = fields_of(avro_schema(plan("ProductDefinitionV2")))
    assert product["maturity"] == {"name": "maturity", "type": "string", "default": ""}  # DateKey
    assert product["securityID"] == {"name": "securityID", "type": "string", "default": ""}


def test_enum_defaults_come_from_the_catalog() -> None:
    fields = fields_of(avro_schema(plan("ProductDefinitionV2")))
    assert fields["productClass"]["default"] == "None"
    assert fields["tradeCurr"]["default"] == CAT.enum("Currency").default


def test_groups_are_arrays_of_records() -> None:
    fields = fields_of(avro_schema(plan("ProductDefinitionV2")))
    legs = fields["legs"]
    assert legs["default"] == []
    items = legs["type"]["items"]
    assert legs["type"]["type"] == "array"
    assert items["name"] == "ProductDefinitionV2Legs"
    members = fields_of(items)
    assert members["secKey"]["type"] == ["null", "mlink.OptionKey"]  # defined in pkey already
    assert members["refDelta"] == {"name": "refDelta", "type": "double", "default": 0.0}
    assert members["ratio"] == {"name": "ratio", "type": "long", "default": 0}
    root = fields_of(avro_schema(plan("RootDefinition")))
    assert root["underlying"]["type"]["items"]["name"] == "RootDefinitionUnderlying"


def test_every_catalog_type_has_a_valid_schema_with_defaults_everywhere() -> None:
    for spec in CAT:
        schema = avro_schema(compile_plan(spec, TransformOptions(), CAT))
        fastavro.parse_schema(schema)
        for field in schema["fields"][1:]:
            assert "default" in field, (spec.name, field["name"])


def test_view_and_rename_shape_the_schema() -> None:
    schema = avro_schema(
        plan("OptionNbboQuote", view=("bidPrice", "askPrice"), rename={"askPrice": "ask"})
    )
    assert [f["name"] for f in schema["fields"]] == ["pkey", "bidPrice", "ask"]


# --- canonical form and fingerprints


def crc64_avro(data: bytes) -> int:
    """The reference algorithm from the Avro specification."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_fingerprint_is_the_little_endian_crc64_of_the_canonical_form() -> None:
    schema = avro_schema(plan("StockOpenMark", view=("closePrc", "timestamp")))
    canonical = canonical_form(schema)
    assert '"doc"' not in canonical
    assert '"default"' not in canonical
    expected = crc64_avro(canonical.encode()).to_bytes(8, "little").hex()
    assert fingerprint(schema) == expected == "ea14db045c70fc11"
    writer = WriterSchema(schema, 1, plan("StockOpenMark", view=("closePrc", "timestamp")))
    assert writer.fingerprint_bytes == bytes.fromhex(expected)


def test_docs_and_defaults_do_not_change_the_fingerprint() -> None:
    schema = avro_schema(plan("StockOpenMark"))
    bare = json.loads(json.dumps(schema))
    bare.pop("doc")
    for field in bare["fields"]:
        field.pop("doc", None)
        field.pop("default", None)
    assert fingerprint(bare) == fingerprint(schema)


# --- the encoder


def test_golden_bytes_for_a_tiny_record() -> None:
    p = plan("StockOpenMark", view=("closePrc", "timestamp"))
    writer = SchemaHistory(p).current
    record = p.apply(
        {"pkey": {"ticker": AAPL}, "closePrc": 228.5, "timestamp": "2024-09-10 20:26:35.556337"}
    )
    body = writer.encode(record.value)
    assert body == bytes.fromhex(
        "06455154"  # "EQT": length 3 (zig-zag 6), then the bytes
        "064e4d53"  # "NMS"
        "084141504c"  # "AAPL"
        "0000000000906c40"  # 228.5 as a little-endian double
        "d0d5b097bdf6fdf32f"  # 1725999995556337000 ns, zig-zag varint
    )
    assert struct.unpack("<d", body[13:21]) == (228.5,)
    assert body == fastavro_bytes(writer, record.value)
    assert writer.encode(record.value, b"\xc3\x01") == b"\xc3\x01" + body


def test_same_bytes_as_fastavro_for_every_catalog_type(catalog_messages: Messages) -> None:
    histories = {
        spec.name: SchemaHistory(compile_plan(spec, TransformOptions(), CAT)) for spec in CAT
    }
    seen = set()
    for name, message in catalog_messages:
        history = histories[name]
        value = history.plan.apply(message).value
        body = history.current.encode(value)
        assert body == fastavro_bytes(history.current, value), name
        seen.add(name)
    assert seen == set(CAT.names())


def test_decoded_values_match_the_normalized_ones(round_trip_messages: Messages) -> None:
    histories: dict[str, SchemaHistory] = {}
    for name, message in round_trip_messages:
        history = histories.setdefault(name, SchemaHistory(plan(name)))
        value = history.plan.apply(message).value
        decoded = read(history.current, history.current.encode(value))
        for field in history.plan.output_fields:
            expected = value.get(field.name, field.default)
            if field.members:  # group entries: omitted members read back as their defaults
                expected = [
                    {m.name: e.get(m.name, m.default) for m in field.members} for e in expected
                ]
            assert decoded[field.name] == expected, (name, field.name)
        assert decoded["pkey"] == value["pkey"]  # xx 580 reads back as 580.0, which is equal


def test_omitted_and_null_fields_take_their_defaults() -> None:
    writer = SchemaHistory(plan("OptionNbboQuote")).current
    value = {"pkey": {"okey": MSFT_580_C}, "bidPrice": None, "bidExch": None, "bidSize": None}
    decoded = read(writer, writer.encode(value))
    assert decoded["bidPrice"] == 0.0
    assert decoded["bidExch"] == "None"
    assert decoded["bidSize"] == 0
    assert decoded["askMktType"] == "None"
    assert decoded["pkey"]["okey"]["xx"] == 580.0


def test_large_and_negative_longs(catalog_messages: Messages) -> None:
    writer = SchemaHistory(plan("StockBookQuote")).current
    for number in (0, -1, 1, 8191, 8192, -8193, 2**27, 2**28, 2**31, -(2**40), 2**63 - 1, -(2**63)):
        value = {"pkey": {"ticker": AAPL}, "srcTimestamp": number}
        assert writer.encode(value) == fastavro_bytes(writer, value), number
        assert read(writer, writer.encode(value))["srcTimestamp"] == number


@given(
    st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=4),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(),
)
def test_random_values_encode_like_fastavro(numbers: list[int], price: float, text: str) -> None:
    writer = SchemaHistory(plan("StockBookQuote")).current
    value: dict[str, Any] = {"pkey": {"ticker": {**AAPL, "tk": text}}, "bidPrice1": price}
    names = ("bidSize1", "bidMask1", "srcTimestamp", "netTimestamp")
    for name, number in zip(names[: len(numbers)], numbers, strict=True):
        value[name] = number
    assert writer.encode(value) == fastavro_bytes(writer, value)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("bidPrice", "abc", "OptionNbboQuote.bidPrice: expected double, got str 'abc'"),
        ("bidPrice", "1.5", "OptionNbboQuote.bidPrice: expected double, got str '1.5'"),
        ("bidPrice", True, "OptionNbboQuote.bidPrice: expected double, got bool True"),
        ("askPrice", [1.0], "OptionNbboQuote.askPrice: expected double, got list [1.0]"),
        ("bidSize", 2.5, "OptionNbboQuote.bidSize: expected long, got float 2.5"),
        ("bidSize", 2.0, "OptionNbboQuote.bidSize: expected long, got float 2.0"),
        ("bidSize", "3", "OptionNbboQuote.bidSize: expected long, got str '3'"),
        ("bidSize", False, "OptionNbboQuote.bidSize: expected long, got bool False"),
        ("bidSize", 2**63, "OptionNbboQuote.bidSize: 9223372036854775808 does not fit"),
        ("srcTimestamp", -(2**63) - 1, "OptionNbboQuote.srcTimestamp: -9223372036854775809"),
        ("bidExch", 5, "OptionNbboQuote.bidExch: expected string, got int 5"),
        ("bidExch", ["CBOE"], "OptionNbboQuote.bidExch: expected string, got list"),
        ("bidExch", {"a": 1}, "OptionNbboQuote.bidExch: expected string, got dict"),
        ("bidExch", "\ud800", "OptionNbboQuote.bidExch: string is not valid Unicode"),
    ],
)
def test_values_that_contradict_the_schema_are_refused(
    field: str, value: Any, message: str
) -> None:
    writer = SchemaHistory(plan("OptionNbboQuote")).current
    with pytest.raises(SchemaMismatch) as raised:
        writer.encode({"pkey": {"okey": MSFT_580_C}, field: value})
    assert message in str(raised.value)
    assert isinstance(raised.value, BridgeError)
    assert not raised.value.retryable


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_everywhere(bad: float) -> None:
    quote = SchemaHistory(plan("OptionNbboQuote")).current
    with pytest.raises(SchemaMismatch, match=r"OptionNbboQuote\.askPrice: .* NaN or infinity"):
        quote.encode({"pkey": {"okey": MSFT_580_C}, "bidPrice": 1.0, "askPrice": bad})  # a run
    with pytest.raises(SchemaMismatch, match=r"OptionNbboQuote\.pkey\.okey\.xx"):
        quote.encode({"pkey": {"okey": {**MSFT_580_C, "xx": bad}}})
    book = SchemaHistory(plan("StockBookQuote")).current
    with pytest.raises(SchemaMismatch, match=r"StockBookQuote\.bidPrice1"):
        book.encode({"pkey": {"ticker": AAPL}, "bidPrice1": bad})  # a lone double
    product = SchemaHistory(plan("ProductDefinitionV2")).current
    pkey = {"secKey": MSFT_580_C, "secType": "Option"}
    with pytest.raises(SchemaMismatch, match=r"legs\[\]\.refDelta"):
        product.encode({"pkey": pkey, "legs": [{"refDelta": bad}]})


def test_structural_mismatches_are_refused() -> None:
    quote = SchemaHistory(plan("OptionNbboQuote")).current
    with pytest.raises(SchemaMismatch, match="pkey: required record is missing"):
        quote.encode({"bidPrice": 1.0})
    with pytest.raises(SchemaMismatch, match=r"pkey\.okey: expected record, got str"):
        quote.encode({"pkey": {"okey": "MSFT-NMS-EQT-2024-09-20-580-C"}})
    with pytest.raises(SchemaMismatch, match="value does not fit the schema"):
        quote.encode([1, 2])  # type: ignore[arg-type]
    product = SchemaHistory(plan("ProductDefinitionV2")).current
    pkey = {"secKey": MSFT_580_C, "secType": "Option"}
    with pytest.raises(SchemaMismatch, match=r"ProductDefinitionV2\.legs: expected array"):
        product.encode({"pkey": pkey, "legs": {"refDelta": 1.0}})
    with pytest.raises(SchemaMismatch, match=r"legs\[\]: expected record, got str"):
        product.encode({"pkey": pkey, "legs": ["leg"]})
    with pytest.raises(SchemaMismatch, match=r"ProductDefinitionV2\.ticker: expected record"):
        product.encode({"pkey": pkey, "ticker": 7})


def test_compile_encoder_refuses_schemas_outside_its_subset() -> None:
    with pytest.raises(TypeError, match="does not support"):
        compile_encoder({"type": "record", "name": "R", "fields": [{"name": "f", "type": "bytes"}]})
    with pytest.raises(TypeError, match=r"only \['null', T\] unions"):
        compile_encoder(
            {"type": "record", "name": "R", "fields": [{"name": "f", "type": ["long", "string"]}]}
        )


# --- evolution


def test_evolve_adds_optional_fields_in_a_new_version() -> None:
    history = SchemaHistory(plan("StockBookQuote"))
    first = history.current
    assert first.version == 1
    message = {
        "pkey": {"ticker": AAPL},
        "bidPrice1": 1.5,
        "venueState": {"halted": False, "venues": ["EDGX"]},
        "auctionFlag": True,
        "lotSize": 100,
        "score": 0.5,
        "note": "hi",
    }
    record = history.plan.apply(message)
    second = history.evolve(record.unknown)
    assert second is history.current
    assert second.version == 2
    assert history.versions == (first, second)
    added = fields_of(dict(second.schema))
    assert added["auctionFlag"]["type"] == ["null", "boolean"]
    assert added["lotSize"]["type"] == ["null", "long"]
    assert added["note"]["type"] == ["null", "string"]
    assert added["score"]["type"] == ["null", "double"]
    assert added["venueState"]["type"] == ["null", "string"]
    assert all(added[n]["default"] is None for n in ("auctionFlag", "lotSize", "note", "score"))
    assert [f["name"] for f in second.schema["fields"]][-5:] == sorted(
        ["venueState", "auctionFlag", "lotSize", "score", "note"]
    )
    value = history.plan.apply(message).value
    decoded = read(second, second.encode(value))
    assert json.loads(decoded["venueState"]) == {"halted": False, "venues": ["EDGX"]}
    assert decoded["auctionFlag"] is True
    assert decoded["lotSize"] == 100
    assert second.fingerprint != first.fingerprint


def test_evolve_without_anything_new_keeps_the_version() -> None:
    history = SchemaHistory(plan("StockBookQuote"))
    assert history.evolve({}) is history.current
    assert history.evolve({"bidPrice1": 1.0}) is history.current  # known already
    assert history.evolve({"later": None}) is history.current  # a null tells no type
    history.evolve({"x": 1})
    assert history.evolve({"x": 2}).version == 2


def test_old_readers_read_new_data_and_new_readers_read_old_data() -> None:
    history = SchemaHistory(plan("StockBookQuote"))
    old = history.current
    message = {"pkey": {"ticker": AAPL}, "bidPrice1": 1.5, "newCount": 3}
    old_body = old.encode(history.plan.apply({"pkey": {"ticker": AAPL}, "bidPrice1": 2.5}).value)
    new = history.evolve(history.plan.apply(message).unknown)
    new_body = new.encode(history.plan.apply(message).value)

    # Old consumers (reader = version 1) skip the added field.
    as_old = fastavro.schemaless_reader(io.BytesIO(new_body), new.parsed, old.parsed)
    assert isinstance(as_old, dict)
    assert as_old["bidPrice1"] == 1.5
    assert "newCount" not in as_old
    # New consumers (reader = version 2) read old records with the added field's default.
    as_new = fastavro.schemaless_reader(io.BytesIO(old_body), old.parsed, new.parsed)
    assert isinstance(as_new, dict)
    assert as_new["bidPrice1"] == 2.5
    assert as_new["newCount"] is None


def test_a_value_contradicting_an_evolved_type_is_refused() -> None:
    history = SchemaHistory(plan("StockBookQuote"))
    history.evolve({"newCount": 3})
    value = history.plan.apply({"pkey": {"ticker": AAPL}, "newCount": "three"}).value
    with pytest.raises(SchemaMismatch, match=r"StockBookQuote\.newCount: expected long, got str"):
        history.current.encode(value)
