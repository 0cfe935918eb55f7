from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.mlink.catalog import MessageSpec, default_catalog
from bridge.mlink.where import OPS, WhereError, compile_view, compile_where

CAT = default_catalog()


def _spec(name: str) -> MessageSpec:
    spec = CAT.get(name)
    assert spec is not None, name
    return spec


BOOK = _spec("StockBookQuote")
NBBO = _spec("OptionNbboQuote")
ATM = _spec("LiveAtmVol")
IMPLIED = _spec("LiveImpliedQuote")

AMZN = {
    "pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AMZN"}},
    "updateType": "PrcChange",
    "bidPrice1": 141.69,
    "bidSize1": 9,
    "bidExch1": "EDGX",
    "askPrice1": 141.71,
    "askSize1": 1,
    "srcTimestamp": 1_727_000_000_123_456_789,
}
MSFT_OPTION = {
    "pkey": {
        "okey": {
            "at": "EQT",
            "ts": "NMS",
            "tk": "MSFT",
            "dt": "2024-09-20",
            "xx": 580,
            "cp": "Call",
        }
    },
    "bidPrice": 12.5,
    "bidSize": 10,
    "bidExch": "CBOE",
}
# LiveAtmVol keys on an ExpiryKey and carries a separate (underlier) ticker field.
SPXW_ATM = {
    "pkey": {"ekey": {"at": "EQT", "ts": "NMS", "tk": "SPXW", "dt": "2024-12-20"}},
    "ticker": {"at": "EQT", "ts": "NMS", "tk": "SPX"},
    "atmVol": 0.14,
}
# LiveImpliedQuote keys on an OptionKey and also carries a non-key ticker field.
SPXW_IMPLIED = {
    "pkey": {
        "okey": {
            "at": "EQT",
            "ts": "NMS",
            "tk": "SPXW",
            "dt": "2024-12-20",
            "xx": 5822.5,
            "cp": "Put",
        }
    },
    "ticker": {"at": "IDX", "ts": "CBOE", "tk": "SPX"},
    "oBid": 41.2,
}


def matches(text: str, spec: MessageSpec, message: dict[str, Any]) -> bool:
    return compile_where(text, spec)(message)


# --------------------------------------------------------------------------------------------
# Examples from MLink's documentation and sample clients


@pytest.mark.parametrize(
    ("text", "amzn", "aapl"),
    [
        ("ticker.tk:eq:AMZN", True, False),
        ("ticker.tk:eq:AAPL & ticker.at:eq:EQT & ticker.ts:eq:NMS", False, True),
        ("ticker.tk:eq:AAPL | ticker.at:eq:EQT | ticker.ts:eq:NMS", True, True),
        ("ticker.tk:eq:AAPL | ticker.at:eq:IDX", False, True),
        ("ticker:eq:AMZN-NMS-EQT", True, False),
        ("(bidsize1:eq:1&asksize1:eq:1)|(bidsize1:eq:10&asksize1:eq:1)", False, True),
        ("(bidExch1:eq:CBOE) & bidsize1:ge:100", False, False),
        ("(bidExch1:eq:EDGX) & bidsize1:ge:9", True, False),
        ("ticker.tk:sw:A", True, True),
        ("ticker.tk:sw:AM", True, False),
    ],
)
def test_documented_examples(text: str, amzn: bool, aapl: bool) -> None:
    aapl_message = {
        "pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}},
        "bidSize1": 10,
        "askSize1": 1,
        "bidExch1": "CBSX",
    }
    predicate = compile_where(text, BOOK)
    assert predicate(AMZN) is amzn
    assert predicate(aapl_message) is aapl


# --------------------------------------------------------------------------------------------
# Every op


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "9", True),
        ("eq", "8", False),
        ("ne", "9", False),
        ("ne", "8", True),
        ("gt", "8", True),
        ("gt", "9", False),
        ("ge", "9", True),
        ("ge", "10", False),
        ("lt", "10", True),
        ("lt", "9", False),
        ("le", "9", True),
        ("le", "8", False),
    ],
)
def test_numeric_ops(op: str, value: str, expected: bool) -> None:
    assert matches(f"bidSize1:{op}:{value}", BOOK, AMZN) is expected


def test_numeric_compare_is_numeric_not_textual() -> None:
    # As text "9" > "10"; as numbers it is not.
    assert matches("bidSize1:lt:10", BOOK, AMZN)
    assert matches("bidPrice1:gt:99.5", BOOK, AMZN)
    assert matches("bidPrice1:eq:141.69", BOOK, AMZN)
    assert matches("bidPrice1:eq:1.4169e2", BOOK, AMZN)
    assert not matches("bidPrice1:eq:141.7", BOOK, AMZN)


def test_long_fields_compare_exactly() -> None:
    # Nanosecond stamps differ in the last digit; a float would round both to the same value.
    assert matches("srcTimestamp:eq:1727000000123456789", BOOK, AMZN)
    assert not matches("srcTimestamp:eq:1727000000123456788", BOOK, AMZN)
    assert matches("srcTimestamp:gt:1727000000123456788", BOOK, AMZN)


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "AMZN", True),
        ("eq", "AMZ", False),
        ("ne", "AMZN", False),
        ("ne", "AAPL", True),
        ("gt", "AAPL", True),
        ("gt", "MSFT", False),
        ("ge", "AMZN", True),
        ("ge", "AMZO", False),
        ("lt", "MSFT", True),
        ("lt", "AMZN", False),
        ("le", "AMZN", True),
        ("le", "AAPL", False),
        ("sw", "AM", True),
        ("sw", "MZ", False),
        ("ew", "ZN", True),
        ("ew", "AM", False),
        ("cv", "MZ", True),
        ("cv", "ZZ", False),
        ("nv", "ZZ", True),
        ("nv", "MZ", False),
    ],
)
def test_text_ops(op: str, value: str, expected: bool) -> None:
    assert matches(f"ticker.tk:{op}:{value}", BOOK, AMZN) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bidPrice1:sw:141.6", True),
        ("bidPrice1:ew:69", True),
        ("bidPrice1:cv:1.6", True),
        ("bidPrice1:nv:1.6", False),
        ("bidSize1:sw:1", False),
        ("askSize1:ew:1", True),
        ("okey.xx:ew:.5", False),
    ],
)
def test_text_ops_on_numbers_use_wire_text(text: str, expected: bool) -> None:
    spec = NBBO if text.startswith("okey") else BOOK
    message = MSFT_OPTION if spec is NBBO else AMZN
    assert matches(text, spec, message) is expected


def test_every_op_is_covered() -> None:
    assert {"eq", "ne", "gt", "ge", "lt", "le", "sw", "ew", "cv", "nv"} == OPS


# --------------------------------------------------------------------------------------------
# Precedence, parentheses, layout


def test_and_binds_tighter_than_or() -> None:
    true, false = "bidSize1:eq:9", "bidSize1:eq:0"
    # true | (false & false) is true; (true | false) & false would be false.
    assert matches(f"{true} | {false} & {false}", BOOK, AMZN)
    # (false & false) | true is true; false & (false | true) would be false.
    assert matches(f"{false} & {false} | {true}", BOOK, AMZN)


def test_parentheses_override_precedence() -> None:
    true, false = "bidSize1:eq:9", "bidSize1:eq:0"
    assert not matches(f"({true} | {false}) & {false}", BOOK, AMZN)
    assert not matches(f"{false} & ({false} | {true})", BOOK, AMZN)
    assert matches(f"(({true}))", BOOK, AMZN)
    assert not matches(f"(({false}) | ({false} & {true}))", BOOK, AMZN)


def test_long_chains() -> None:
    parts = [f"bidSize1:ne:{n}" for n in range(10, 15)]
    assert matches(" & ".join(parts), BOOK, AMZN)
    assert not matches(" & ".join([*parts, "bidSize1:eq:0"]), BOOK, AMZN)
    ors = [f"bidSize1:eq:{n}" for n in range(10, 15)]
    assert not matches(" | ".join(ors), BOOK, AMZN)
    assert matches(" | ".join([*ors, "bidSize1:eq:9"]), BOOK, AMZN)


def test_whitespace_and_url_encoded_operators() -> None:
    assert matches("  ( ticker.tk:eq:AMZN )\t&\n bidsize1:eq:9  ", BOOK, AMZN)
    assert matches("ticker.tk:eq:AMZN%26bidsize1:eq:9", BOOK, AMZN)
    assert not matches("ticker.tk:eq:AMZN%26bidsize1:eq:8", BOOK, AMZN)
    assert matches("ticker.tk:eq:AAPL%7Cbidsize1:eq:9", BOOK, AMZN)


def _string_field_spec() -> tuple[MessageSpec, str]:
    """Any message with a non-key string field (StockBookQuote has none)."""
    spec = next(s for s in CAT if any(f.type == "string" and not f.key for f in s.fields))
    return spec, next(f.name for f in spec.fields if f.type == "string" and not f.key)


def test_spaces_inside_a_value_are_kept() -> None:
    spec, text_field = _string_field_spec()
    message = {"pkey": {}, text_field: "Apple Inc"}
    assert matches(f"{text_field}:eq:Apple Inc", spec, message)
    assert matches(f"{text_field}:eq: apple inc ", spec, message)
    assert not matches(f"{text_field}:eq:AppleInc", spec, message)


# --------------------------------------------------------------------------------------------
# Case-insensitivity


def test_field_names_ops_and_values_ignore_case() -> None:
    assert matches("BIDSIZE1:EQ:9", BOOK, AMZN)
    assert matches("Ticker.TK:Eq:amzn", BOOK, AMZN)
    assert matches("bidexch1:eq:edgx", BOOK, AMZN)
    assert matches("updatetype:EQ:prcchange", BOOK, AMZN)
    assert matches("TICKER:eq:amzn-nms-eqt", BOOK, AMZN)
    assert not matches("bidexch1:eq:edga", BOOK, AMZN)


# --------------------------------------------------------------------------------------------
# Security keys


def test_ticker_key_parts_and_canonical() -> None:
    assert matches("ticker.at:eq:EQT & ticker.ts:eq:NMS & ticker.tk:eq:AMZN", BOOK, AMZN)
    assert matches("ticker:eq:AMZN-NMS-EQT", BOOK, AMZN)
    assert not matches("ticker:eq:AMZN-NMS-IDX", BOOK, AMZN)
    assert matches("ticker:sw:AMZN-", BOOK, AMZN)
    assert matches("ticker:ew:-EQT", BOOK, AMZN)


def test_option_key_parts() -> None:
    for text in (
        "okey.at:eq:EQT",
        "okey.ts:eq:NMS",
        "okey.tk:eq:MSFT",
        "okey.dt:eq:2024-09-20",
        "okey.dt:gt:2024-09-19",
        "okey.dt:lt:2024-10-01",
        "okey.xx:eq:580",
        "okey.xx:gt:579.5",
        "okey.cp:eq:Call",
    ):
        assert matches(text, NBBO, MSFT_OPTION), text
    assert not matches("okey.cp:eq:Put", NBBO, MSFT_OPTION)
    assert not matches("okey.xx:lt:580", NBBO, MSFT_OPTION)


def test_option_side_accepts_canonical_codes() -> None:
    assert matches("okey.cp:eq:C", NBBO, MSFT_OPTION)
    assert not matches("okey.cp:eq:P", NBBO, MSFT_OPTION)
    assert matches("okey.cp:ne:p", NBBO, MSFT_OPTION)


def test_option_key_canonical_compare() -> None:
    assert matches("okey:eq:MSFT-NMS-EQT-2024-09-20-580-C", NBBO, MSFT_OPTION)
    assert matches("okey:eq:msft-nms-eqt-2024-09-20-580-c", NBBO, MSFT_OPTION)
    # The strike is written as canonical keys write it, whatever the clause says.
    assert matches("okey:eq:MSFT-NMS-EQT-2024-09-20-580.00-C", NBBO, MSFT_OPTION)
    assert not matches("okey:eq:MSFT-NMS-EQT-2024-09-20-580-P", NBBO, MSFT_OPTION)
    assert not matches("okey:eq:MSFT-NMS-EQT-2024-09-20-585-C", NBBO, MSFT_OPTION)
    assert matches("okey:sw:MSFT-NMS-EQT-2024-09", NBBO, MSFT_OPTION)


def test_fractional_strike_canonical() -> None:
    assert matches("okey:eq:SPXW-NMS-EQT-2024-12-20-5822.5-P", IMPLIED, SPXW_IMPLIED)
    assert matches("okey:eq:SPXW-NMS-EQT-2024-12-20-5822.50-P", IMPLIED, SPXW_IMPLIED)
    assert matches("okey.xx:eq:5822.5", IMPLIED, SPXW_IMPLIED)
    assert not matches("okey.xx:eq:5822", IMPLIED, SPXW_IMPLIED)


def test_option_message_answers_ticker_and_expiry_from_its_key() -> None:
    # OptionNbboQuote has no ticker or ekey field: both come from okey.
    assert matches("ticker:eq:MSFT-NMS-EQT", NBBO, MSFT_OPTION)
    assert matches("ticker.tk:eq:MSFT & ticker.at:eq:EQT & ticker.ts:eq:NMS", NBBO, MSFT_OPTION)
    assert not matches("ticker.tk:eq:AAPL", NBBO, MSFT_OPTION)
    assert matches("ekey:eq:MSFT-NMS-EQT-2024-09-20", NBBO, MSFT_OPTION)
    assert matches("ekey.dt:eq:2024-09-20", NBBO, MSFT_OPTION)
    assert not matches("ekey:eq:MSFT-NMS-EQT-2024-10-18", NBBO, MSFT_OPTION)


def test_expiry_key_message() -> None:
    assert matches("ekey:eq:SPXW-NMS-EQT-2024-12-20", ATM, SPXW_ATM)
    assert matches("ekey.tk:eq:SPXW & ekey.dt:ge:2024-12-20", ATM, SPXW_ATM)
    assert not matches("ekey.dt:gt:2024-12-20", ATM, SPXW_ATM)
    # LiveAtmVol has its own ticker field, which wins over the key's ticker.
    assert matches("ticker:eq:SPX-NMS-EQT", ATM, SPXW_ATM)
    assert matches("ticker.tk:eq:SPX", ATM, SPXW_ATM)
    assert not matches("ticker.tk:eq:SPXW", ATM, SPXW_ATM)


def test_expiry_message_derives_ticker_without_a_ticker_field() -> None:
    # FutureBookQuote keys on an ExpiryKey (named fkey) and has no ticker field.
    spec = _spec("FutureBookQuote")
    assert spec.field("ticker") is None
    message = {"pkey": {"fkey": {"at": "FUT", "ts": "CME", "tk": "ES", "dt": "2024-12-20"}}}
    assert matches("ticker:eq:ES-CME-FUT", spec, message)
    assert matches("ticker.tk:eq:ES & fkey.dt:eq:2024-12-20", spec, message)
    assert not matches("ticker.tk:eq:NQ", spec, message)
    with pytest.raises(WhereError, match="TickerKey has no part 'dt'"):
        compile_where("ticker.dt:eq:2024-12-20", spec)


def test_option_message_with_its_own_ticker_field() -> None:
    assert matches("ticker.tk:eq:SPX & ticker.at:eq:IDX", IMPLIED, SPXW_IMPLIED)
    assert matches("ticker:eq:SPX-CBOE-IDX", IMPLIED, SPXW_IMPLIED)
    assert not matches("ticker.tk:eq:SPXW", IMPLIED, SPXW_IMPLIED)
    assert matches("okey.tk:eq:SPXW & okey.cp:eq:Put", IMPLIED, SPXW_IMPLIED)
    assert matches("ekey:eq:SPXW-NMS-EQT-2024-12-20", IMPLIED, SPXW_IMPLIED)


def test_key_found_at_top_level_when_not_in_pkey() -> None:
    flat = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AMZN"}}
    assert matches("ticker.tk:eq:AMZN", BOOK, flat)
    assert matches("ticker:eq:AMZN-NMS-EQT", BOOK, flat)


def test_pkey_wins_over_top_level() -> None:
    both = {**AMZN, "ticker": {"at": "EQT", "ts": "NMS", "tk": "OTHER"}}
    assert matches("ticker.tk:eq:AMZN", BOOK, both)


# --------------------------------------------------------------------------------------------
# Omitted fields take their defaults


def test_omitted_numbers_are_zero() -> None:
    assert matches("askSize2:eq:0", BOOK, AMZN)
    assert matches("bidPrice2:le:0", BOOK, AMZN)
    assert not matches("askSize2:gt:0", BOOK, AMZN)
    assert matches("askSize2:sw:0", BOOK, AMZN)


def test_omitted_enums_are_their_zero_name() -> None:
    # bidExch2 has no default in the catalog entry: the StkExch enum's 0 name applies.
    assert not any(f.default for f in BOOK.fields if f.name == "bidExch2")
    assert matches("bidExch2:eq:None", BOOK, AMZN)
    assert matches("marketStatus:eq:none", BOOK, AMZN)
    # updateType carries an explicit catalog default.
    assert matches("updateType:eq:None", BOOK, {"pkey": AMZN["pkey"]})
    assert not matches("updateType:eq:None", BOOK, AMZN)


def test_omitted_strings_are_empty() -> None:
    spec, text_field = _string_field_spec()
    assert matches(f"{text_field}:eq:", spec, {"pkey": {}})
    assert not matches(f"{text_field}:ne:", spec, {"pkey": {}})
    assert matches(f"{text_field}:nv:x", spec, {"pkey": {}})


def test_null_value_counts_as_omitted() -> None:
    assert matches("bidSize1:eq:0", BOOK, {**AMZN, "bidSize1": None})


def test_omitted_key_parts_are_defaults() -> None:
    no_strike = {"pkey": {"okey": {"at": "EQT", "ts": "NMS", "tk": "X", "dt": "2024-09-20"}}}
    assert matches("okey.xx:eq:0", NBBO, no_strike)
    assert matches("okey.cp:eq:", NBBO, no_strike)
    assert matches("ticker.tk:eq:", BOOK, {"bidSize1": 1})
    assert matches("ticker:eq:", BOOK, {"bidSize1": 1})


# --------------------------------------------------------------------------------------------
# Enums


def test_enum_numbers_and_order() -> None:
    # UpdateType: None=0, PrcChange=1, SizeOnly=2.
    assert matches("updateType:eq:1", BOOK, AMZN)
    assert not matches("updateType:eq:2", BOOK, AMZN)
    assert matches("updateType:gt:None", BOOK, AMZN)
    assert matches("updateType:lt:SizeOnly", BOOK, AMZN)
    assert matches("updateType:ge:1 & updateType:le:1", BOOK, AMZN)
    # MarketStatus: Open=4, AfterHours=7; alphabetical order would say the opposite.
    after_hours = {**AMZN, "marketStatus": "AfterHours"}
    assert matches("marketStatus:gt:Open", BOOK, after_hours)
    assert not matches("marketStatus:lt:open", BOOK, after_hours)


def test_enum_text_ops() -> None:
    assert matches("bidExch1:sw:ED", BOOK, AMZN)
    assert matches("bidExch1:cv:dg", BOOK, AMZN)
    assert not matches("bidExch1:nv:dg", BOOK, AMZN)


# --------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("text", "match", "position"),
    [
        ("", "empty", 0),
        ("   ", "empty", 0),
        ("nosuch:eq:1", "unknown field.*nosuch", 0),
        ("bidSize1:eq:9 & nosuch:eq:1", "unknown field.*nosuch", 16),
        ("okey.tk:eq:MSFT", "unknown field.*okey", 0),
        ("ticker.xx:eq:1", "TickerKey has no part 'xx'", 0),
        ("bidSize1.tk:eq:1", "not a key with parts", 0),
        ("bidSize1:xx:9", "unknown op 'xx'", 0),
        ("bidSize1:like:9", "unknown op 'like'", 0),
        ("(bidSize1:eq:9", r"unbalanced '\('", 0),
        ("bidSize1:eq:9 & ((askSize1:eq:1)", r"unbalanced '\('", 16),
        ("bidSize1:eq:9)", r"unbalanced '\)'", 13),
        ("(bidSize1:eq:9))", r"unbalanced '\)'", 15),
        ("bidSize1:eq:abc", "numeric but 'abc' is not a number", 0),
        ("bidPrice1:gt:nan", "not a number", 0),
        ("okey.xx:eq:x", "not a number", None),
        ("bidSize1:eq:", "not a number", 0),
        ("bidSize1:eq", "expected field:op:value", 0),
        ("bidSize1", "expected field:op:value", 0),
        (":eq:1", "missing field name", 0),
        ("bidSize1:eq:9 &", "expected a comparison", 15),
        ("& bidSize1:eq:9", "expected a comparison before '&'", 0),
        ("bidSize1:eq:9 | | askSize1:eq:1", "expected a comparison before '|'", 16),
        ("()", r"expected a comparison before '\)'", 1),
        ("bidSize1:eq:9 (askSize1:eq:1)", "expected '&' or '|'", 14),
        ("(bidSize1:eq:9 (askSize1:eq:1))", r"expected '&', '\|' or '\)'", 15),
        ("marketStatus:gt:Sideways", "not a value of this enum", 0),
    ],
)
def test_errors(text: str, match: str, position: int | None) -> None:
    spec = NBBO if text.startswith("okey.xx") else BOOK
    with pytest.raises(WhereError, match=match) as info:
        compile_where(text, spec)
    assert isinstance(info.value, ValueError)
    if position is not None:
        assert info.value.position == position


def test_error_names_the_token() -> None:
    with pytest.raises(WhereError) as info:
        compile_where("bidSize1:eq:9 & bidSise1:eq:1", BOOK)
    assert info.value.token == "bidSise1"
    assert "bidSise1" in str(info.value)
    assert "position 16" in str(info.value)


def test_errors_surface_at_compile_time_not_per_record() -> None:
    predicate = compile_where("bidSize1:eq:9", BOOK)
    # A predicate over a message missing everything still answers (with defaults).
    assert predicate({}) is False
    assert compile_where("bidSize1:eq:0", BOOK)({}) is True


# --------------------------------------------------------------------------------------------
# Views


def test_view_keeps_pkey_and_listed_present_fields() -> None:
    project = compile_view("bidPrice1|bidSize1|askSize2", BOOK)
    assert project(AMZN) == {"pkey": AMZN["pkey"], "bidPrice1": 141.69, "bidSize1": 9}


@pytest.mark.parametrize(
    "text", ["bidprice1,BIDSIZE1", "bidPrice1 bidSize1", " bidPrice1 ,| bidSize1 "]
)
def test_view_separators_and_case(text: str) -> None:
    project = compile_view(text, BOOK)
    out = project(AMZN)
    assert out == {"pkey": AMZN["pkey"], "bidPrice1": 141.69, "bidSize1": 9}


def test_view_uses_wire_spelling_and_catalog_order() -> None:
    out = compile_view("asksize1 BIDPRICE1 bidprice1", BOOK)(AMZN)
    assert list(out) == ["pkey", "bidPrice1", "askSize1"]


def test_view_does_not_mutate_and_keeps_non_key_ticker() -> None:
    before = dict(SPXW_IMPLIED)
    out = compile_view("ticker|oBid", IMPLIED)(SPXW_IMPLIED)
    assert out == {"pkey": SPXW_IMPLIED["pkey"], "ticker": SPXW_IMPLIED["ticker"], "oBid": 41.2}
    assert before == SPXW_IMPLIED
    assert out is not SPXW_IMPLIED


def test_view_of_only_absent_fields_is_just_the_key() -> None:
    assert compile_view("askSize2", BOOK)(AMZN) == {"pkey": AMZN["pkey"]}


@pytest.mark.parametrize(
    ("text", "match"), [("bidPrice1|nosuch", "nosuch"), (" , | ", "no fields")]
)
def test_view_errors(text: str, match: str) -> None:
    with pytest.raises(WhereError, match=match):
        compile_view(text, BOOK)


# --------------------------------------------------------------------------------------------
# Properties: composition agrees with Python's own and/or

_TICKERS = ["AMZN", "AAPL", "A", "amzn", "MSFT"]
_EXCHANGES = ["None", "EDGX", "NYSE", "edgx", "ARCA"]

_numeric_comparisons = st.builds(
    lambda field, op, value: f"{field}:{op}:{value}",
    st.sampled_from(["bidSize1", "askSize1", "bidPrice1"]),
    st.sampled_from(sorted(OPS)),
    st.sampled_from(["0", "1", "2", "1.5", "10"]),
)
_text_comparisons = st.builds(
    lambda field, op, value: f"{field}:{op}:{value}",
    st.sampled_from(["ticker.tk", "bidExch1", "ticker"]),
    st.sampled_from(sorted(OPS)),
    st.sampled_from([*_TICKERS, *_EXCHANGES, "AM", "X", "AMZN-NMS-EQT"]),
).filter(lambda text: not text.startswith("bidExch1:g") and not text.startswith("bidExch1:l"))
_comparisons = _numeric_comparisons | _text_comparisons


@st.composite
def _messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {
        "pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": draw(st.sampled_from(_TICKERS))}}
    }
    # MLink omits defaults, so each field is either absent or holds a generated value.
    for name, values in (
        ("bidSize1", st.integers(0, 10)),
        ("askSize1", st.integers(0, 10)),
        ("bidPrice1", st.sampled_from([0.0, 1.0, 1.5, 2.25, 10.0])),
        ("bidExch1", st.sampled_from(_EXCHANGES[1:])),
    ):
        if draw(st.booleans()):
            message[name] = draw(values)
    return message


@given(_comparisons, _comparisons, _comparisons, _messages())
def test_composition_matches_boolean_logic(a: str, b: str, c: str, message: dict[str, Any]) -> None:
    pa, pb, pc = (compile_where(x, BOOK)(message) for x in (a, b, c))
    assert matches(f"{a} | {b}", BOOK, message) == (pa or pb)
    assert matches(f"{a} & {b}", BOOK, message) == (pa and pb)
    assert matches(f"{a} | {b} & {c}", BOOK, message) == (pa or (pb and pc))
    assert matches(f"{a} & {b} | {c}", BOOK, message) == ((pa and pb) or pc)
    assert matches(f"({a} | {b}) & {c}", BOOK, message) == ((pa or pb) and pc)
    assert matches(f"{a}%26({b}|{c})", BOOK, message) == (pa and (pb or pc))


@given(_comparisons, _messages())
def test_negated_ops_are_complements(comparison: str, message: dict[str, Any]) -> None:
    field, op, value = comparison.split(":", 2)
    opposite = {"eq": "ne", "ne": "eq", "gt": "le", "le": "gt", "lt": "ge", "ge": "lt"}
    opposite |= {"cv": "nv", "nv": "cv"}
    if op not in opposite:
        return
    flipped = f"{field}:{opposite[op]}:{value}"
    assert matches(comparison, BOOK, message) != matches(flipped, BOOK, message)


@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_numeric_ops_agree_with_python(wire: int, clause: int) -> None:
    message = {"pkey": AMZN["pkey"], "bidSize1": wire} if wire else {"pkey": AMZN["pkey"]}
    expected = {
        "eq": wire == clause,
        "ne": wire != clause,
        "gt": wire > clause,
        "ge": wire >= clause,
        "lt": wire < clause,
        "le": wire <= clause,
    }
    for op, truth in expected.items():
        assert matches(f"bidSize1:{op}:{clause}", BOOK, message) is truth, op


@given(st.text(alphabet="ABCXYZabcxyz", min_size=1, max_size=6), st.text("ABCab", max_size=3))
def test_text_ops_agree_with_python(symbol: str, clause: str) -> None:
    message = {"pkey": {"ticker": {"at": "EQT", "ts": "NMS", "tk": symbol}}}
    wire, wanted = symbol.lower(), clause.lower()
    expected = {
        "eq": wire == wanted,
        "ne": wire != wanted,
        "sw": wire.startswith(wanted),
        "ew": wire.endswith(wanted),
        "cv": wanted in wire,
        "nv": wanted not in wire,
    }
    for op, truth in expected.items():
        assert matches(f"ticker.tk:{op}:{clause}", BOOK, message) is truth, op
