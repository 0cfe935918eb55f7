from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.errors import KeyFormatError
from bridge.mlink.catalog import default_catalog
from bridge.mlink.keys import canonical_key
from bridge.simulator.market import Market
from transforms.record_key import compile_key

CAT = default_catalog()
NOW = 1_726_000_000_123_456_789


def outcome(function: Any, spec: Any, pkey: Any) -> tuple[str, str]:
    try:
        return ("key", function(pkey) if spec is None else function(spec, pkey))
    except KeyFormatError:
        return ("error", "KeyFormatError")


def test_documented_examples() -> None:
    option = compile_key(CAT.get("OptionNbboQuote"))  # type: ignore[arg-type]
    okey = {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580, "cp": "Call"}
    assert option({"okey": okey}) == "MSFT-NMS-EQT-2024-09-20-580-C"
    assert option({"okey": {**okey, "xx": 582.5, "cp": "Put"}}) == "MSFT-NMS-EQT-2024-09-20-582.5-P"
    ticker = compile_key(CAT.get("StockBookQuote"))  # type: ignore[arg-type]
    assert ticker({"ticker": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}}) == "AAPL-NMS-EQT"


def test_every_catalog_type_matches_canonical_key_on_market_records() -> None:
    market = Market(CAT, msg_names=CAT.names(), tickers=3, expiries=2, strikes=2, clock=lambda: NOW)
    checked = 0
    for spec in CAT:
        key = compile_key(spec)
        for obj in market.objects(spec.name):
            pkey = obj.message["pkey"]
            assert key(pkey) == canonical_key(spec, pkey) == obj.key
            checked += 1
    assert checked > 100


@pytest.mark.parametrize(
    "pkey",
    [
        None,
        [],
        "AAPL-NMS-EQT",
        {},
        {"okey": None},
        {"okey": "MSFT-NMS-EQT-2024-09-20-580-C"},
        {"okey": {"at": "EQT", "ts": "NMS", "tk": "MSFT", "dt": "2024-09-20", "xx": 580}},
        {"okey": {"at": "EQT", "ts": "NMS", "tk": "", "dt": "2024-09-20", "xx": 5, "cp": "Call"}},
        {"okey": {"at": "EQT", "ts": 7, "tk": "A", "dt": "2024-09-20", "xx": 5, "cp": "Call"}},
        {
            "okey": {
                "at": "EQT",
                "ts": "NMS",
                "tk": "A",
                "dt": "2024-09-20",
                "xx": True,
                "cp": "Put",
            }
        },
        {"okey": {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-09-20", "xx": "5", "cp": "Put"}},
        {"okey": {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-09-20", "xx": [5], "cp": "Put"}},
        {"okey": {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-09-20", "xx": 5, "cp": "C"}},
    ],
)
def test_malformed_option_keys_raise_like_canonical_key(pkey: Any) -> None:
    spec = CAT.get("OptionNbboQuote")
    with pytest.raises(KeyFormatError):
        canonical_key(spec, pkey)  # type: ignore[arg-type]
    with pytest.raises(KeyFormatError):
        compile_key(spec)(pkey)  # type: ignore[arg-type]


def test_a_bool_strike_is_refused_even_after_strike_one_was_seen() -> None:
    key = compile_key(CAT.get("OptionNbboQuote"))  # type: ignore[arg-type]
    okey = {"at": "EQT", "ts": "NMS", "tk": "A", "dt": "2024-09-20", "xx": 1, "cp": "Call"}
    assert key({"okey": okey}) == "A-NMS-EQT-2024-09-20-1-C"
    with pytest.raises(KeyFormatError):
        key({"okey": {**okey, "xx": True}})


def test_plain_key_fields_take_their_defaults_when_omitted() -> None:
    spec = CAT.get("LiveSurfaceCurve")
    ekey = {"at": "EQT", "ts": "NMS", "tk": "AAPL", "dt": "2024-09-20"}
    key = compile_key(spec)  # type: ignore[arg-type]
    assert key({"ekey": ekey}) == canonical_key(spec, {"ekey": ekey})  # type: ignore[arg-type]
    assert key({"ekey": ekey}).endswith("-None")


texts = st.one_of(st.text(max_size=6), st.sampled_from(["EQT", "NMS", "AAPL", "2024-09-20"]))
values = st.one_of(
    texts,
    st.none(),
    st.booleans(),
    st.integers(-(10**16), 10**16),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["Call", "Put", "Pair", "C"]),
    st.lists(st.integers(), max_size=1),
)


@st.composite
def structs(draw: st.DrawFn, members: tuple[str, ...]) -> Any:
    if draw(st.integers(0, 20)) == 0:
        return draw(values)
    struct = {}
    for member in members:
        if draw(st.integers(0, 15)) > 0:
            struct[member] = draw(values)
    return struct


OPTION = ("at", "ts", "tk", "dt", "xx", "cp")


@given(st.fixed_dictionaries({"okey": structs(OPTION)}))
def test_option_keys_agree_with_canonical_key(pkey: dict[str, Any]) -> None:
    spec = CAT.get("OptionNbboQuote")
    assert outcome(compile_key(spec), None, pkey) == outcome(canonical_key, spec, pkey)  # type: ignore[arg-type]


@given(
    st.fixed_dictionaries(
        {
            "ticker": structs(("at", "ts", "tk")),
            "auctionTime": values,
            "auctionType": values,
            "exchange": values,
        }
    )
)
def test_mixed_keys_agree_with_canonical_key(pkey: dict[str, Any]) -> None:
    spec = CAT.get("StockExchImbalanceV2")
    assert outcome(compile_key(spec), None, pkey) == outcome(canonical_key, spec, pkey)  # type: ignore[arg-type]
