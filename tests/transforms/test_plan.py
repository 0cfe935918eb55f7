from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from bridge.errors import BridgeError, KeyFormatError
from bridge.mlink.catalog import MessageSpec, default_catalog
from bridge.simulator.market import DEFAULT_TYPES, Market
from transforms import (
    NormalizedRecord,
    RecordPlan,
    TransformError,
    TransformOptions,
    compile_plan,
    infer_kind,
)

CAT = default_catalog()
NOW = 1_726_000_000_123_456_789
AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}
MSFT_580_C = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580, "cp": "Call"}


def spec(name: str) -> MessageSpec:
    found = CAT.get(name)
    assert found is not None
    return found


def plan(name: str, **options: Any) -> RecordPlan:
    return compile_plan(spec(name), TransformOptions(**options), CAT)


def market_messages(names: tuple[str, ...], steps: int = 300) -> list[tuple[str, dict[str, Any]]]:
    """Independent copies of the cache and of some updates (the market changes dicts in place)."""
    market = Market(CAT, msg_names=names, tickers=3, expiries=2, strikes=2, clock=lambda: NOW)
    out = [
        (name, orjson.loads(orjson.dumps(obj.message)))
        for name in market.names()
        for obj in market.objects(name)
    ]
    for _ in range(steps):
        obj = market.step()
        if not obj.deleted:
            out.append((obj.msg_name, orjson.loads(orjson.dumps(obj.message))))
    return out


# --- options


def test_options_are_immutable_hashable_and_compare_by_value() -> None:
    a = TransformOptions(view=["bidPrice"], rename={"bidPrice": "bid"}, drop=["askExch"])  # type: ignore[arg-type]
    b = TransformOptions(view=("bidPrice",), rename={"bidPrice": "bid"}, drop=("askExch",))
    assert a == b
    assert hash(a) == hash(b)
    assert {a: 1}[b] == 1
    assert a != TransformOptions()
    with pytest.raises(TypeError):
        a.rename["x"] = "y"  # type: ignore[index]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"view": ("bidPrice", "nope")}, "view: OptionNbboQuote has no field 'nope'"),
        ({"drop": ("nope",)}, "drop: OptionNbboQuote has no field 'nope'"),
        ({"rename": {"nope": "x"}}, "rename: OptionNbboQuote has no field 'nope'"),
        ({"drop": ("okey",)}, "drop: 'okey' is part of OptionNbboQuote's primary key"),
        ({"rename": {"okey": "k"}}, "rename: 'okey' is part of OptionNbboQuote's primary key"),
        ({"rename": {"bidPrice": "bid-price"}}, "rename: 'bid-price' cannot be a field name"),
        ({"rename": {"bidPrice": "pkey"}}, "rename: 'pkey' cannot be a field name"),
        ({"rename": {"bidPrice": "askPrice"}}, "two output fields would be called 'askPrice'"),
        ({"view": ("askPrice",), "rename": {"bidPrice": "b"}}, "'bidPrice' is not in the output"),
        ({"drop": ("bidPrice",), "rename": {"bidPrice": "b"}}, "'bidPrice' is not in the output"),
    ],
)
def test_options_are_checked_against_the_catalog(options: dict[str, Any], message: str) -> None:
    with pytest.raises(TransformError) as raised:
        plan("OptionNbboQuote", **options)
    assert message in str(raised.value)
    assert isinstance(raised.value, BridgeError)
    assert not raised.value.retryable


def test_view_drop_and_rename_shape_the_output() -> None:
    p = plan(
        "OptionNbboQuote",
        view=("BIDPRICE", "askPrice", "bidSize", "okey"),  # any case; key fields are allowed
        drop=("bidSize",),
        rename={"askprice": "ask"},
    )
    assert [(f.name, f.source) for f in p.output_fields] == [
        ("bidPrice", "bidPrice"),
        ("ask", "askPrice"),
    ]
    message = {"pkey": {"okey": MSFT_580_C}, "bidPrice": 3.1, "askPrice": 3, "bidSize": 7}
    record = p.apply(message)
    assert record.value == {"pkey": {"okey": MSFT_580_C}, "bidPrice": 3.1, "ask": 3.0}
    assert record.unknown == {}  # fields outside the view are known, just not wanted


def test_renames_can_chain_without_clobbering() -> None:
    p = plan("OptionNbboQuote", rename={"bidPrice": "askPrice", "askPrice": "ask"})
    record = p.apply({"pkey": {"okey": MSFT_580_C}, "bidPrice": 1.5, "askPrice": 2.5})
    assert record.value["askPrice"] == 1.5
    assert record.value["ask"] == 2.5
    assert "bidPrice" not in record.value


def test_a_narrow_view_picks_fields_one_by_one() -> None:
    p = plan("LiveSurfaceCurve", view=("atmVol",), rename={"atmVol": "vol"})
    assert "v = dict(m)" not in p.source  # copying 130 fields to keep one would waste time
    ekey = {"at": "EQT", "ts": "NMS", "tk": "AAPL", "dt": "2024-09-20"}
    record = p.apply({"pkey": {"ekey": ekey, "surfaceType": "Live"}, "atmVol": 0.25, "uPrc": 1.0})
    assert record.value == {"pkey": {"ekey": ekey, "surfaceType": "Live"}, "vol": 0.25}
    assert record.key == "AAPL-NMS-EQT-2024-09-20-Live"


# --- apply


def test_apply_normalizes_a_quote() -> None:
    p = plan("StockBookQuote")
    message = {
        "pkey": {"ticker": AAPL},
        "bidPrice1": 141,  # a JSON integer in a float field
        "askPrice1": 141.69,
        "bidSize1": 3,
        "bidExch1": "EDGX",
        "srcTimestamp": 1_725_999_995_556_337_352,
        "netTimestamp": 1_725_999_995_556_400_600,
    }
    record = p.apply(message)
    assert isinstance(record, NormalizedRecord)
    assert record.key == "AAPL-NMS-EQT"
    assert record.value["pkey"] == {"ticker": AAPL}
    assert record.value["bidPrice1"] == 141.0
    assert type(record.value["bidPrice1"]) is float
    assert type(record.value["bidSize1"]) is int
    assert record.value["bidExch1"] == "EDGX"
    assert "askSize1" not in record.value  # omitted: the encoder writes its default
    assert record.src_ns == 1_725_999_995_556_337_352
    assert record.unknown == {}
    assert message["bidPrice1"] == 141  # the wire body is not changed


def test_datetime_fields_become_ns_in_value_and_key_record() -> None:
    p = plan("StockExchImbalanceV2")
    pkey = {
        "ticker": AAPL,
        "auctionTime": "2024-09-10 00:00:00.000000",
        "auctionType": "Open",
        "exchange": "NYSE",
    }
    record = p.apply({"pkey": pkey, "netTimestamp": 5})
    assert record.value["pkey"]["auctionTime"] == 1_725_926_400_000_000_000
    assert pkey["auctionTime"] == "2024-09-10 00:00:00.000000"  # converted in a copy
    assert record.key == "AAPL-NMS-EQT-2024-09-10 00:00:00.000000-Open-NYSE"
    assert record.src_ns == 5  # its only long *Timestamp field is netTimestamp

    printed = plan("StockPrint").apply(
        {"pkey": {"ticker": AAPL}, "timestamp": "2024-09-10 20:26:35.556337", "prtTimestamp": 9}
    )
    assert printed.value["timestamp"] == 1_725_999_995_556_337_000
    assert printed.src_ns == 9


def test_a_bad_datetime_names_the_field() -> None:
    with pytest.raises(TransformError, match=r"StockPrint\.timestamp: not an MLink DateTime"):
        plan("StockPrint").apply({"pkey": {"ticker": AAPL}, "timestamp": "yesterday"})


def test_source_time_is_the_first_long_timestamp_field() -> None:
    assert plan("StockBookQuote").src_field == "srcTimestamp"
    assert plan("OptionPrint").src_field == "prtTimestamp"
    assert plan("LiveAtmVol").src_field is None  # only a DateTime `timestamp`
    record = plan("StockBookQuote").apply({"pkey": {"ticker": AAPL}, "srcTimestamp": "soon"})
    assert record.src_ns is None


def test_wrong_types_pass_through_for_the_encoder_to_refuse() -> None:
    p = plan("StockBookQuote")
    record = p.apply(
        {"pkey": {"ticker": AAPL}, "bidPrice1": "1.5", "bidSize1": 2.5, "askPrice1": True}
    )
    assert record.value["bidPrice1"] == "1.5"
    assert record.value["bidSize1"] == 2.5
    assert record.value["askPrice1"] is True  # a bool is not an int to convert


def test_json_null_is_passed_on() -> None:
    record = plan("StockBookQuote").apply({"pkey": {"ticker": AAPL}, "bidPrice1": None})
    assert record.value["bidPrice1"] is None


def test_unknown_fields_are_reported_and_kept_out_of_the_value() -> None:
    p = plan("StockBookQuote")
    record = p.apply({"pkey": {"ticker": AAPL}, "bidPrice1": 1.5, "newField": 7, "more": {"a": 1}})
    assert record.unknown == {"newField": 7, "more": {"a": 1}}
    assert "newField" not in record.value
    assert "more" not in record.value
    assert p.apply({"pkey": {"ticker": AAPL}}).unknown == {}


def test_key_errors_raise_key_format_error() -> None:
    p = plan("OptionNbboQuote")
    with pytest.raises(KeyFormatError):
        p.apply({"bidPrice": 1.0})
    with pytest.raises(KeyFormatError):
        p.apply({"pkey": {"okey": {**MSFT_580_C, "cp": "Straddle"}}})


def test_key_of_serves_tombstones() -> None:
    p = plan("OptionNbboQuote")
    assert p.key_of({"pkey": {"okey": MSFT_580_C}}) == "MSFT-NMS-EQT-2024-09-20-580-C"
    with pytest.raises(KeyFormatError):
        p.key_of({})


def test_groups_are_converted_entry_by_entry() -> None:
    p = plan("ProductDefinitionV2")
    legs = [
        {"secKey": MSFT_580_C, "side": "Buy", "ratio": 1, "refDelta": 1, "refPrc": 3.2},
        "not an entry",
    ]
    pkey = {"secKey": MSFT_580_C, "secType": "Option"}
    record = p.apply({"pkey": pkey, "legs": legs, "expiration": "2024-09-20 20:00:00.000000"})
    first = record.value["legs"][0]
    assert first["refDelta"] == 1.0
    assert type(first["refDelta"]) is float
    assert first["secKey"] is MSFT_580_C
    assert record.value["legs"][1] == "not an entry"  # left for the encoder to refuse
    assert legs[0]["refDelta"] == 1  # entries are converted in copies
    assert record.value["expiration"] == 1_726_862_400_000_000_000


def test_every_default_type_normalizes_market_records() -> None:
    names = (*DEFAULT_TYPES, "LiveSurfaceCurve", "ProductDefinitionV2", "RootDefinition")
    plans = {name: plan(name) for name in names}
    seen = set()
    for name, message in market_messages(names):
        record = plans[name].apply(message)
        seen.add(name)
        assert record.key
        assert record.unknown == {}
        assert record.value["pkey"] is message["pkey"]  # shared when nothing needs converting
        output = {f.name: f for f in plans[name].output_fields}
        for field_name, value in record.value.items():
            if field_name == "pkey":
                continue
            kind = output[field_name].spec.type
            if kind in ("float", "double"):
                assert type(value) is float, field_name
            elif kind == "DateTime":
                assert type(value) is int, field_name
    assert seen == set(names)


# --- evolution


def test_infer_kind() -> None:
    assert [infer_kind(v) for v in (True, 1, 1.5, "x", {}, [], None)] == [
        "boolean",
        "long",
        "double",
        "string",
        "json",
        "json",
        None,
    ]


def test_with_extra_fields_learns_new_wire_fields() -> None:
    p = plan("StockBookQuote")
    message = {
        "pkey": {"ticker": AAPL},
        "zeta": 1,
        "alpha": {"b": [1, 2], "a": "é"},
        "flag": False,
        "later": None,
        "bad-name": 3,
    }
    learned = p.with_extra_fields(p.apply(message).unknown)
    extras = [(f.name, f.spec.type, f.inferred, f.default) for f in learned.extra_fields]
    assert extras == [
        ("alpha", "json", True, None),
        ("flag", "boolean", True, None),
        ("zeta", "long", True, None),
    ]
    assert learned.output_fields[: len(p.output_fields)] == p.output_fields
    record = learned.apply(message)
    assert record.value["alpha"] == '{"b":[1,2],"a":"é"}'
    assert json.loads(record.value["alpha"]) == message["alpha"]
    assert record.value["flag"] is False
    assert record.value["zeta"] == 1
    # A null says nothing about a type: still unknown. An impossible name is ignored from now on.
    assert record.unknown == {"later": None}
    assert "bad-name" in learned.ignored
    assert "bad-name" not in record.value
    assert learned.with_extra_fields({}) is learned
    assert learned.with_extra_fields({"zeta": 2}) is learned


def test_learned_double_fields_are_floats() -> None:
    p = plan("StockBookQuote")
    learned = p.with_extra_fields({"ratio": 0.5})
    assert learned.apply({"pkey": {"ticker": AAPL}, "ratio": 2}).value["ratio"] == 2.0
    assert type(learned.apply({"pkey": {"ticker": AAPL}, "ratio": 2}).value["ratio"]) is float


def test_a_learned_name_that_clashes_with_a_rename_is_ignored() -> None:
    p = plan("StockBookQuote", rename={"bidPrice1": "bid"})
    learned = p.with_extra_fields({"bid": 1.0})
    assert learned.extra_fields == ()
    assert "bid" in learned.ignored
    record = learned.apply({"pkey": {"ticker": AAPL}, "bidPrice1": 2.0, "bid": 1.0})
    assert record.value["bid"] == 2.0
    assert record.unknown == {}


def test_a_view_wants_no_new_fields() -> None:
    p = plan("StockBookQuote", view=("bidPrice1",))
    record = p.apply({"pkey": {"ticker": AAPL}, "bidPrice1": 1.5, "brandNew": 1})
    assert record.unknown == {"brandNew": 1}
    learned = p.with_extra_fields(record.unknown)
    assert learned.extra_fields == ()
    assert "brandNew" in learned.ignored
    again = learned.apply({"pkey": {"ticker": AAPL}, "bidPrice1": 1.5, "brandNew": 1})
    assert again.unknown == {}
    assert again.value == {"pkey": {"ticker": AAPL}, "bidPrice1": 1.5}
