"""The simulator's seeded market: deterministic, valid MLink-shaped records, plausible values."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import orjson
import pytest

from bridge.mlink.catalog import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    KEY_TYPES,
    Catalog,
    FieldSpec,
    MessageSpec,
    default_catalog,
)
from bridge.mlink.keys import canonical_key, parse_security_key, security_key
from bridge.mlink.messages import format_stamp
from bridge.simulator.market import DEFAULT_TYPES, LiveObject, Market

CATALOG = default_catalog()
START_NS = 1_725_978_600_000_000_000  # 2024-09-10 14:30:00 UTC, a Tuesday
GENERIC_TYPES = [name for name in CATALOG.names() if name not in DEFAULT_TYPES]

INT_RANGES = {
    "byte": (0, 2**8 - 1),
    "short": (-(2**15), 2**15 - 1),
    "ushort": (0, 2**16 - 1),
    "int": (-(2**31), 2**31 - 1),
    "uint": (0, 2**32 - 1),
    "long": (-(2**63), 2**63 - 1),
}
DATETIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
DATEKEY_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TIMESPAN_RE = re.compile(r"^\d{2}:\d{2}:\d{2}(\.\d+)?$")


def fake_clock(start: int = START_NS, step: int = 1_234_567) -> Callable[[], int]:
    """A clock that moves `step` ns per reading, the same on every run."""
    now = start - step

    def clock() -> int:
        nonlocal now
        now += step
        return now

    return clock


def make_market(**kwargs: Any) -> Market:
    kwargs.setdefault("clock", fake_clock())
    return Market(CATALOG, **kwargs)


def spec_of(name: str) -> MessageSpec:
    spec = CATALOG.get(name)
    assert spec is not None
    return spec


def all_objects(market: Market) -> list[LiveObject]:
    return [obj for name in market.names() for obj in market.objects(name)]


def is_default(catalog: Catalog, f: FieldSpec, value: Any) -> bool:
    if f.type in ("enum", "flag"):
        return value in (f.default, catalog.enums[f.enum].default if f.enum else "None")
    if isinstance(value, str):
        return value == ""
    return bool(value == 0) and not isinstance(value, dict)


def check_value(catalog: Catalog, f: FieldSpec, value: Any) -> None:
    """The value has the JSON type (and form) MLink uses for the field's wire type."""
    where = f"{f.name}={value!r}"
    if f.type in INTEGER_TYPES:
        assert type(value) is int, where
        low, high = INT_RANGES[f.type]
        assert low <= value <= high, where
    elif f.type in FLOAT_TYPES:
        assert type(value) is float, where
        assert math.isfinite(value), where
        assert round(value, 4) == value, f"not a short decimal: {where}"
    elif f.type in ("enum", "flag"):
        assert isinstance(value, str), where
        assert f.enum is not None
        assert value in catalog.enums[f.enum].names.values(), where
    elif f.type == "string":
        assert isinstance(value, str), where
        assert f.max_len is None or len(value) <= f.max_len, where
    elif f.type == "DateTime":
        assert isinstance(value, str), where
        assert DATETIME_RE.match(value), where
    elif f.type == "DateKey":
        assert isinstance(value, str), where
        assert DATEKEY_RE.match(value), where
    elif f.type == "TimeSpan":
        assert isinstance(value, str), where
        assert TIMESPAN_RE.match(value), where
    elif f.type in KEY_TYPES:
        assert isinstance(value, dict), where
        assert security_key(f.type, value).to_json() == value, where
    elif f.is_group:
        assert isinstance(value, list), where
        assert value, where
        members = {m.name: m for m in f.fields}
        for entry in value:
            assert isinstance(entry, dict), where
            for name, item in entry.items():
                assert name in members, f"{where}: {name} is not a member"
                check_value(catalog, members[name], item)
    else:  # pragma: no cover - the catalog has no other types
        pytest.fail(f"unexpected field type {f.type}")


def check_message(catalog: Catalog, spec: MessageSpec, message: dict[str, Any]) -> None:
    """Every field is one of the type's, holds a valid value, and is not a default."""
    pkey = message["pkey"]
    assert set(pkey) == {f.name for f in spec.key_fields}
    for f in spec.key_fields:
        check_value(catalog, f, pkey[f.name])
    for name, value in message.items():
        if name == "pkey":
            continue
        f = spec.field(name)
        assert f is not None, f"{spec.name} has no field {name}"
        assert f.name == name, f"{spec.name}.{name} is spelled {f.name}"
        check_value(catalog, f, value)
        assert not is_default(catalog, f, value), f"{spec.name}.{name}={value!r} is a default"


def check_finite(value: Any) -> None:
    if isinstance(value, float):
        assert math.isfinite(value)
    elif isinstance(value, dict):
        for item in value.values():
            check_finite(item)
    elif isinstance(value, list):
        for item in value:
            check_finite(item)


def check_key(spec: MessageSpec, obj: LiveObject) -> None:
    pkey = obj.message["pkey"]
    assert canonical_key(spec, pkey) == obj.key
    for f in spec.key_fields:
        if f.is_security_key:
            text = security_key(f.type, pkey[f.name]).canonical()
            assert parse_security_key(f.type, text).to_json() == pkey[f.name]
    if len(spec.key_fields) == 1 and spec.key_fields[0].is_security_key:
        f = spec.key_fields[0]
        assert parse_security_key(f.type, obj.key).to_json() == pkey[f.name]


def snapshot(obj: LiveObject) -> tuple[str, str, int, bool, int, bytes]:
    return (obj.msg_name, obj.key, obj.version, obj.deleted, obj.src_ns, orjson.dumps(obj.message))


# ---------------------------------------------------------------------------------------------


def test_same_seed_and_clock_give_the_same_cache_and_steps() -> None:
    one = make_market(seed=11, delete_rate=0.01)
    two = make_market(seed=11, delete_rate=0.01)
    assert [snapshot(o) for o in all_objects(one)] == [snapshot(o) for o in all_objects(two)]
    for _ in range(3000):
        assert snapshot(one.step()) == snapshot(two.step())


def test_different_seeds_give_different_markets() -> None:
    one = make_market(seed=1)
    two = make_market(seed=2)
    assert [snapshot(o) for o in all_objects(one)] != [snapshot(o) for o in all_objects(two)]
    assert [snapshot(one.step()) for _ in range(50)] != [snapshot(two.step()) for _ in range(50)]


@pytest.mark.parametrize(("tickers", "expiries", "strikes"), [(12, 2, 4), (3, 1, 1), (10, 5, 3)])
def test_key_counts_per_type(tickers: int, expiries: int, strikes: int) -> None:
    market = make_market(tickers=tickers, expiries=expiries, strikes=strikes)
    assert market.names() == list(DEFAULT_TYPES)
    options = tickers * expiries * strikes * 2
    expected = {
        "StockBookQuote": tickers,
        "StockPrint": tickers,
        "TickerDefinition": tickers,
        "LiveAtmVol": tickers * expiries,
        "OptionNbboQuote": options,
        "LiveImpliedQuote": options,
    }
    for name, count in expected.items():
        objects = market.objects(name)
        assert len(objects) == count, name
        assert len({o.key for o in objects}) == count, f"{name} keys are not unique"
        assert all(o.version == 1 and not o.deleted for o in objects)
    assert market.size() == sum(expected.values())


def test_every_key_is_canonical_and_parses_back() -> None:
    market = make_market()
    for name in market.names():
        spec = spec_of(name)
        for obj in market.objects(name):
            assert obj.msg_name == name
            check_key(spec, obj)
            assert market.get(name, obj.key) is obj
            assert market.get(name.lower(), obj.key) is obj


def test_universe_symbols_expiries_and_strikes() -> None:
    market = make_market(tickers=12, expiries=3, strikes=4)
    symbols = [o.message["pkey"]["ticker"]["tk"] for o in market.objects("StockBookQuote")]
    assert symbols[:3] == ["AAPL", "MSFT", "AMZN"]
    assert "BRK.B" in symbols
    assert all(
        o.message["pkey"]["ticker"]["at"] == "EQT" for o in market.objects("TickerDefinition")
    )

    today = datetime.fromtimestamp(START_NS / 1e9, UTC).date()
    expiries = sorted({o.message["pkey"]["ekey"]["dt"] for o in market.objects("LiveAtmVol")})
    assert len(expiries) == 3
    for text in expiries:
        day = date.fromisoformat(text)
        assert day > today
        assert day.weekday() == 4  # Friday

    quotes = {
        o.message["pkey"]["ticker"]["tk"]: o.message for o in market.objects("StockBookQuote")
    }
    strikes: dict[str, set[float]] = {}
    for obj in market.objects("OptionNbboQuote"):
        okey = obj.message["pkey"]["okey"]
        strikes.setdefault(okey["tk"], set()).add(float(okey["xx"]))
    assert any(not xx.is_integer() for xx in strikes["SPY"]), "expected a strike like 582.5"
    for tk, found in strikes.items():
        assert len(found) == 4
        assert min(found) <= quotes[tk]["bidPrice1"] <= max(found), tk


def test_more_tickers_than_the_built_in_list() -> None:
    market = make_market(tickers=40, expiries=1, strikes=1)
    symbols = [o.message["pkey"]["ticker"]["tk"] for o in market.objects("StockBookQuote")]
    assert len(set(symbols)) == 40
    for name in market.names():
        for obj in market.objects(name):
            check_key(spec_of(name), obj)


def test_messages_hold_valid_non_default_fields_before_and_after_steps() -> None:
    market = make_market(delete_rate=0.01)
    for obj in all_objects(market):
        check_message(CATALOG, spec_of(obj.msg_name), obj.message)
    for _ in range(5000):
        obj = market.step()
        if not obj.deleted:
            check_message(CATALOG, spec_of(obj.msg_name), obj.message)
    for obj in all_objects(market):
        check_message(CATALOG, spec_of(obj.msg_name), obj.message)
        check_finite(obj.message)


def test_omits_empty_second_level_like_the_feed() -> None:
    market = make_market()
    seen_without = False
    for _ in range(5000):
        obj = market.step()
        if obj.msg_name == "StockBookQuote" and not obj.deleted:
            assert obj.message.get("bidSize2", 1) != 0
            seen_without = seen_without or "bidSize2" not in obj.message
    assert seen_without, "bidSize2 0 should appear (as a missing field) now and then"


def test_quotes_are_positive_and_ordered() -> None:
    market = make_market(delete_rate=0.0)
    for _ in range(20_000):
        obj = market.step()
        m = obj.message
        if obj.msg_name == "StockBookQuote":
            assert 0 < m["bidPrice1"] < m["askPrice1"]
            assert m["bidPrice2"] < m["bidPrice1"]
            assert m["askPrice2"] > m["askPrice1"]
            assert m["bidSize1"] > 0
            assert m["askSize1"] > 0
        elif obj.msg_name == "OptionNbboQuote":
            assert 0 < m["bidPrice"] <= m["askPrice"]
            assert m["cumBidSize"] >= m["bidSize"] > 0
            assert m["cumAskSize"] >= m["askSize"] > 0
        elif obj.msg_name == "LiveImpliedQuote":
            assert 0 < m["oBid"] <= m["oAsk"]
            assert m["oBidIv"] <= m["oAskIv"]
            for name in ("oBidIv", "oAskIv", "sVol", "atmVol"):
                assert 0.1 <= m[name] <= 0.9, name
        elif obj.msg_name == "StockPrint":
            assert m["prtPrice"] > 0
            assert m["prtSize"] > 0
            assert m["ebid"] <= m["prtPrice"] <= m["eask"]
        elif obj.msg_name == "LiveAtmVol":
            assert 0.1 <= m["atmVol"] <= 0.9
            assert m["uPrc"] > 0
            assert m["years"] > 0


def test_greeks_have_the_right_signs() -> None:
    market = make_market()
    for _ in range(5000):
        market.step()
    implied = market.objects("LiveImpliedQuote")
    assert implied
    for obj in implied:
        m = obj.message
        delta = m.get("de", 0.0)
        if m["pkey"]["okey"]["cp"] == "Call":
            assert 0.0 <= delta <= 1.0, obj.key
        else:
            assert -1.0 <= delta <= 0.0, obj.key
        assert m.get("ga", 0.0) >= 0.0
        assert m.get("ve", 0.0) >= 0.0


def test_option_prices_follow_moneyness() -> None:
    market = make_market()
    spots = {
        o.message["pkey"]["ticker"]["tk"]: (o.message["bidPrice1"] + o.message["askPrice1"]) / 2
        for o in market.objects("StockBookQuote")
    }
    chains: dict[tuple[str, str, str], list[tuple[float, float, float]]] = {}
    for obj in market.objects("OptionNbboQuote"):
        okey = obj.message["pkey"]["okey"]
        strike = float(okey["xx"])
        bid, ask = obj.message["bidPrice"], obj.message["askPrice"]
        spot = spots[okey["tk"]]
        intrinsic = max(spot - strike, 0.0) if okey["cp"] == "Call" else max(strike - spot, 0.0)
        assert ask >= intrinsic, obj.key
        chains.setdefault((okey["tk"], okey["dt"], okey["cp"]), []).append(
            (strike, (bid + ask) / 2, intrinsic)
        )
    for (tk, _dt, cp), chain in chains.items():
        mids = [mid for _strike, mid, _intrinsic in sorted(chain)]
        pairs = list(itertools.pairwise(mids))
        if cp == "Call":  # calls get cheaper as the strike rises, puts dearer
            assert all(b <= a + 0.02 for a, b in pairs), (tk, mids)
        else:
            assert all(b >= a - 0.02 for a, b in pairs), (tk, mids)


def test_nothing_is_nan_or_infinite() -> None:
    market = make_market(msg_names=CATALOG.names(), tickers=4, expiries=2, strikes=2)
    for _ in range(5000):
        obj = market.step()
        check_finite(obj.message)
        orjson.dumps(obj.message)  # raises on values JSON cannot hold
    for obj in all_objects(market):
        check_finite(obj.message)


def test_timestamps_come_from_the_clock() -> None:
    readings: list[int] = []
    inner = fake_clock()

    def clock() -> int:
        readings.append(inner())
        return readings[-1]

    market = Market(CATALOG, clock=clock)
    start = readings[-1]
    for obj in all_objects(market):
        assert start - 5_000_000_000 <= obj.src_ns <= start
    for _ in range(3000):
        obj = market.step()
        assert obj.src_ns == readings[-1]
        if obj.deleted:
            continue
        m = obj.message
        src = m.get("srcTimestamp", m.get("prtTimestamp"))
        if src is not None:
            assert src == obj.src_ns
            assert src < m["netTimestamp"] < src + 1_000_000
        if "timestamp" in m:
            assert m["timestamp"] == format_stamp(obj.src_ns)


def test_delete_then_re_create() -> None:
    market = make_market(
        msg_names=["StockBookQuote"], tickers=1, expiries=1, strikes=1, delete_rate=1.0
    )
    (first,) = market.objects("StockBookQuote")
    pkey = first.message["pkey"]
    assert market.size() == 1

    gone = market.step()
    assert gone.deleted
    assert gone.key == first.key
    assert gone.version == 2
    assert gone.message == {"pkey": pkey}
    assert market.objects("StockBookQuote") == []
    assert market.get("StockBookQuote", first.key) is None
    assert market.size() == 0

    back = market.step()
    assert not back.deleted
    assert back.version == 3
    assert back.message["pkey"] == pkey
    assert back.message["bidPrice1"] < back.message["askPrice1"]
    assert market.get("StockBookQuote", first.key) is back
    assert market.size() == 1

    assert market.step().deleted  # and so on: versions keep counting
    assert back.version == 4


def test_deletes_happen_at_about_the_rate_and_size_tracks_them() -> None:
    market = make_market(delete_rate=0.05)
    deletes = re_creates = 0
    live = {(o.msg_name, o.key) for o in all_objects(market)}
    for _ in range(10_000):
        obj = market.step()
        ident = (obj.msg_name, obj.key)
        if obj.deleted:
            deletes += 1
            live.discard(ident)
        elif ident not in live:
            re_creates += 1
            live.add(ident)
    assert 200 < deletes < 800
    assert re_creates > 0
    assert market.size() == len(live) == len(all_objects(market))


def test_no_deletes_at_rate_zero() -> None:
    market = make_market(delete_rate=0.0)
    assert not any(market.step().deleted for _ in range(10_000))
    assert market.size() == len(all_objects(market))


def test_versions_count_every_change() -> None:
    market = make_market(delete_rate=0.01)
    versions = {(o.msg_name, o.key): o.version for o in all_objects(market)}
    for _ in range(5000):
        obj = market.step()
        ident = (obj.msg_name, obj.key)
        assert obj.version == versions[ident] + 1
        versions[ident] = obj.version


def test_print_volume_only_grows() -> None:
    market = make_market(delete_rate=0.02)
    volume = {o.key: o.message["prtVolume"] for o in market.objects("StockPrint")}
    cluster = {o.key: o.message["prtClusterNum"] for o in market.objects("StockPrint")}
    seen = 0
    for _ in range(10_000):
        obj = market.step()
        if obj.msg_name != "StockPrint" or obj.deleted:
            continue
        m = obj.message
        assert m["prtVolume"] == volume[obj.key] + m["prtSize"]
        assert m["prtClusterNum"] > cluster[obj.key]
        volume[obj.key] = m["prtVolume"]
        cluster[obj.key] = m["prtClusterNum"]
        seen += 1
    assert seen > 100


def test_objects_order_is_stable() -> None:
    market = make_market(delete_rate=0.0)
    before = {name: [o.key for o in market.objects(name)] for name in market.names()}
    for _ in range(2000):
        market.step()
    after = {name: [o.key for o in market.objects(name)] for name in market.names()}
    assert before == after
    assert before == {
        name: [o.key for o in make_market(delete_rate=0.0).objects(name)] for name in before
    }


def test_unknown_types_and_keys() -> None:
    market = make_market()
    assert market.objects("LiveSurfaceCurve") == []  # a catalog type this market does not make
    assert market.get("StockBookQuote", "NOPE-NMS-EQT") is None
    assert market.get("NoSuchType", "AAPL-NMS-EQT") is None


@pytest.mark.parametrize(
    "kwargs",
    [
        {"msg_names": ["NoSuchType"]},
        {"msg_names": []},
        {"tickers": 0},
        {"expiries": 0},
        {"strikes": 0},
        {"delete_rate": 1.5},
    ],
)
def test_rejects_bad_arguments(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        make_market(**kwargs)


@pytest.mark.parametrize("name", GENERIC_TYPES)
def test_generic_types(name: str) -> None:
    spec = spec_of(name)
    tickers, expiries, strikes = 3, 2, 2
    market = make_market(
        msg_names=[name], tickers=tickers, expiries=expiries, strikes=strikes, delete_rate=0.01
    )
    assert market.names() == [name]
    objects = market.objects(name)
    security = [f.type for f in spec.key_fields if f.is_security_key]
    expected = {
        "TickerKey": tickers,
        "ExpiryKey": tickers * expiries,
        "OptionKey": tickers * expiries * strikes * 2,
    }[security[0]] if security else tickers  # fmt: skip
    assert len(objects) == expected
    assert len({o.key for o in objects}) == expected
    for obj in objects:
        check_key(spec, obj)
        check_message(CATALOG, spec, obj.message)
        assert len(obj.message) > 1, "a made object has values, not just a key"
    for _ in range(500):
        obj = market.step()
        assert obj.msg_name == name
        if not obj.deleted:
            check_message(CATALOG, spec, obj.message)
        check_finite(obj.message)


def test_multi_field_keys() -> None:
    market = make_market(
        msg_names=["LiveSurfaceCurve", "OptionAtmMinuteBarData", "ProductDefinitionV2"]
    )
    curve = market.objects("LiveSurfaceCurve")[0]
    assert set(curve.message["pkey"]) == {"ekey", "surfaceType"}
    assert curve.message["pkey"]["surfaceType"] == "Live"
    assert curve.key == f"AAPL-NMS-EQT-{curve.message['pkey']['ekey']['dt']}-Live"

    bar = market.objects("OptionAtmMinuteBarData")[0]
    assert set(bar.message["pkey"]) == {"ekey", "tradingDate", "minute"}
    assert bar.key.endswith(f"-{bar.message['pkey']['minute']}")

    product = market.objects("ProductDefinitionV2")[0]
    assert product.message["pkey"]["secType"] == "Option"
    # secKey/secType also name members of the repeated `legs` group, not top-level fields.
    assert "secKey" not in product.message
    legs = product.message["legs"]
    assert isinstance(legs, list)
    assert legs[0]["secKey"] == product.message["pkey"]["secKey"]
    assert legs[0]["secType"] == "Option"


def test_generic_quotes_keep_bid_below_ask() -> None:
    market = make_market(msg_names=["FutureBookQuote"], delete_rate=0.0)
    for _ in range(3000):
        m = market.step().message
        for level in range(1, 5):
            bid, ask = m.get(f"bidPrice{level}"), m.get(f"askPrice{level}")
            if bid is not None and ask is not None:
                assert 0 < bid <= ask, (level, m)


def test_all_catalog_types_in_one_market() -> None:
    market = make_market(msg_names=CATALOG.names(), tickers=2, expiries=1, strikes=1)
    assert sorted(market.names()) == CATALOG.names()
    made = {market.step().msg_name for _ in range(5000)}
    assert set(DEFAULT_TYPES) <= made
    assert len(made) > len(CATALOG.names()) // 2
