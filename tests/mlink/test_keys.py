from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import KeyFormatError
from bridge.mlink.catalog import default_catalog
from bridge.mlink.keys import (
    ExpiryKey,
    OptionKey,
    TickerKey,
    canonical_key,
    format_strike,
    parse_security_key,
    security_key,
)

CAT = default_catalog()


def test_documented_examples() -> None:
    assert TickerKey.from_json({"at": "EQT", "ts": "NMS", "tk": "AAPL"}).canonical() == (
        "AAPL-NMS-EQT"
    )
    expiry = {"at": "EQT", "ts": "NMS", "tk": "AAPL", "dt": "2024-09-20"}
    assert ExpiryKey.from_json(expiry).canonical() == "AAPL-NMS-EQT-2024-09-20"
    option = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580, "cp": "Call"}
    assert OptionKey.from_json(option).canonical() == "MSFT-NMS-EQT-2024-09-20-580-C"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (
            "MSFT-NMS-EQT-2024-09-20-580-C",
            OptionKey("EQT", "NMS", "MSFT", "2024-09-20", 580, "Call"),
        ),
        (
            "SPY-NMS-EQT-2024-09-20-582.5-P",
            OptionKey("EQT", "NMS", "SPY", "2024-09-20", 582.5, "Put"),
        ),
        ("AA-NMS-EQT-2023-07-23-1-C", OptionKey("EQT", "NMS", "AA", "2023-07-23", 1.0, "Call")),
        ("BRK.B-NMS-EQT", TickerKey("EQT", "NMS", "BRK.B")),
        ("#SPX0A1F-NMS-SPD", TickerKey("SPD", "NMS", "#SPX0A1F")),
        ("_VIX-CBOE-SYN", TickerKey("SYN", "CBOE", "_VIX")),
        ("VIX_-CBOE-SYN", TickerKey("SYN", "CBOE", "VIX_")),
        ("BF-B-NMS-EQT", TickerKey("EQT", "NMS", "BF-B")),
        ("@CL-NYMEX-FUT-2023-06-16", ExpiryKey("FUT", "NYMEX", "@CL", "2023-06-16")),
        (
            "CL-NYMEX-FUT-2024-01-19--2.5-P",
            OptionKey("FUT", "NYMEX", "CL", "2024-01-19", -2.5, "Put"),
        ),
    ],
)
def test_parse_and_format(text: str, key: TickerKey | ExpiryKey | OptionKey) -> None:
    assert parse_security_key(type(key).__name__, text) == key
    assert key.canonical() == text


@pytest.mark.parametrize(
    ("type_name", "text"),
    [
        ("TickerKey", "AAPL"),
        ("TickerKey", "AAPL-NMS"),
        ("ExpiryKey", "AAPL-NMS-EQT-2024-9-20"),
        ("OptionKey", "MSFT-NMS-EQT-2024-09-20-580-X"),
        ("OptionKey", "MSFT-NMS-EQT-2024-09-20-abc-C"),
        ("OptionKey", "MSFT-NMS-EQT-580-C"),
    ],
)
def test_malformed_strings(type_name: str, text: str) -> None:
    with pytest.raises(KeyFormatError):
        parse_security_key(type_name, text)


@pytest.mark.parametrize(
    ("type_name", "obj"),
    [
        ("TickerKey", {"at": "EQT", "ts": "NMS"}),
        ("TickerKey", {"at": "EQT", "ts": "NMS", "tk": ""}),
        ("TickerKey", ["AAPL"]),
        (
            "OptionKey",
            {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-01-19", "xx": "5", "cp": "Call"},
        ),
        (
            "OptionKey",
            {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-01-19", "xx": 5, "cp": "C"},
        ),
        ("ExpiryKey", {"at": "EQT", "ts": "NMS", "tk": "A"}),
    ],
)
def test_malformed_json(type_name: str, obj: object) -> None:
    with pytest.raises(KeyFormatError):
        security_key(type_name, obj)


def test_strike_formatting() -> None:
    assert format_strike(580.0) == "580"
    assert format_strike(582.5) == "582.5"
    assert format_strike(0.1) == "0.1"
    assert format_strike(1e-05) == "0.00001"
    assert format_strike(-2.5) == "-2.5"


def test_canonical_key_of_records() -> None:
    quote = CAT.get("StockBookQuote")
    assert quote is not None
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AMZN"}}
    assert canonical_key(quote, pkey) == "AMZN-NMS-EQT"
    curve = CAT.get("LiveSurfaceCurve")  # pkey: ekey + surfaceType (enum, default None)
    assert curve is not None
    ekey = {"at": "EQT", "ts": "NMS", "tk": "SPY", "dt": "2024-09-20"}
    assert canonical_key(curve, {"ekey": ekey, "surfaceType": "Live"}) == (
        "SPY-NMS-EQT-2024-09-20-Live"
    )
    # MLink omits default values, key fields included: the default fills in.
    assert canonical_key(curve, {"ekey": ekey}) == "SPY-NMS-EQT-2024-09-20-None"
    bars = CAT.get("OptionAtmMinuteBarData")  # ekey + tradingDate + minute
    assert bars is not None
    got = canonical_key(bars, {"ekey": ekey, "tradingDate": "2024-09-19 00:00:00.000000"})
    assert got == "SPY-NMS-EQT-2024-09-20-2024-09-19 00:00:00.000000-0"


def test_canonical_key_refuses_missing_keys() -> None:
    quote = CAT.get("StockBookQuote")
    assert quote is not None
    with pytest.raises(KeyFormatError, match="pkey missing"):
        canonical_key(quote, None)
    with pytest.raises(KeyFormatError, match="'ticker' is missing"):
        canonical_key(quote, {"okey": {}})
    bars = CAT.get("OptionAtmMinuteBarData")
    assert bars is not None
    ekey = {"at": "EQT", "ts": "NMS", "tk": "SPY", "dt": "2024-09-20"}
    with pytest.raises(KeyFormatError, match="tradingDate"):
        canonical_key(bars, {"ekey": ekey, "minute": 5})


symbol = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#_.-@"), min_size=1, max_size=10
)
code = st.text(
    alphabet=st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"), min_size=1, max_size=6
)
date = st.dates().map(lambda d: d.isoformat()).filter(lambda s: len(s) == 10)
strike = st.floats(min_value=-1e6, max_value=1e7, allow_nan=False, allow_infinity=False).map(
    lambda x: round(x, 4)
)
option_st = st.builds(
    OptionKey, code, code, symbol, date, strike, st.sampled_from(["Call", "Put", "Pair"])
)


@given(option_st)
def test_option_round_trip(key: OptionKey) -> None:
    assert OptionKey.parse(key.canonical()) == key
    assert OptionKey.from_json(key.to_json()) == key


@given(st.builds(TickerKey, code, code, symbol))
def test_ticker_round_trip(key: TickerKey) -> None:
    assert TickerKey.parse(key.canonical()) == key
    assert TickerKey.from_json(key.to_json()) == key


@given(st.builds(ExpiryKey, code, code, symbol, date))
def test_expiry_round_trip(key: ExpiryKey) -> None:
    assert ExpiryKey.parse(key.canonical()) == key


@pytest.mark.parametrize(
    ("type_name", "obj"),
    [
        ("ExpiryKey", {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-9-20"}),
        ("TickerKey", {"at": "E-QT", "ts": "NMS", "tk": "A"}),
        ("TickerKey", {"at": "EQT", "ts": "NMS", "tk": "A\nB"}),
        (
            "OptionKey",
            {
                "at": "EQT",
                "ts": "NMS",
                "tk": "A",
                "dt": "2024-01-19",
                "xx": float("nan"),
                "cp": "Call",
            },
        ),
        (
            "OptionKey",
            {
                "at": "EQT",
                "ts": "NMS",
                "tk": "A",
                "dt": "2024-01-19",
                "xx": float("inf"),
                "cp": "Put",
            },
        ),
    ],
)
def test_keys_that_could_not_parse_back_are_refused(type_name: str, obj: object) -> None:
    with pytest.raises(KeyFormatError):
        security_key(type_name, obj)


def test_trailing_newline_is_not_a_key() -> None:
    with pytest.raises(KeyFormatError):
        parse_security_key("TickerKey", "AAPL-NMS-EQT\n")
