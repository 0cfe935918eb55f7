"""The simulator's seeded market: a cache of live-data objects and a stream of updates to it.

A `Market` holds one live object per (message type, primary key) over a small universe of
equity tickers, their next few Friday expiries and a few strikes around each underlier's price.
Construction fills the whole cache; every `step()` changes one object (or deletes it, or brings a
deleted one back) and returns it, ready to be wrapped in an MLink header and sent.

Messages look like MLink's JSON: `pkey` holds the key structs, field names and enum names come
from the catalog, and fields holding their default (0, "", the enum's "None") are left out.
Values are plausible rather than real: each underlier's bid random-walks in whole cents, option
quotes follow Black-Scholes prices at a skewed implied vol, greeks have the right signs, print
volumes only grow. The six DEFAULT_TYPES have hand-written generators; any other catalog type
gets a generic one that picks values by field type and name.

Everything random comes from one `random.Random(seed)` and every time from the injected clock,
so the same seed and the same clock readings give the same cache and the same steps.

Speed matters (the server streams from here), so the hot path works on per-key state kept in
flat lists and changes message dicts in place: the dict in a returned `LiveObject` is that
object's own and the next `step()` may change it, so serialize it before stepping again. Key
structs (`pkey` parts, `ticker` values) are shared between messages: treat them as read-only.
"""

from __future__ import annotations

import itertools
import math
import random
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, NamedTuple

from bridge.mlink.catalog import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    KEY_TYPES,
    Catalog,
    FieldSpec,
    MessageSpec,
)
from bridge.mlink.keys import ExpiryKey, OptionKey, TickerKey, canonical_key

__all__ = ["DEFAULT_TYPES", "LiveObject", "Market"]

DEFAULT_TYPES: tuple[str, ...] = (
    "StockBookQuote",
    "StockPrint",
    "OptionNbboQuote",
    "LiveImpliedQuote",
    "LiveAtmVol",
    "TickerDefinition",
)

Message = dict[str, Any]

# Bound once: the pricing functions run on most steps and attribute lookups add up.
_floor, _sqrt, _log, _exp, _erf = math.floor, math.sqrt, math.log, math.exp, math.erf
_NS = 1_000_000_000
_NS_PER_YEAR = 365 * 86_400 * _NS
_RATE = 0.0433  # one flat risk-free rate for every expiry; a guess at "recent" levels
_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)
_VOL_MIN, _VOL_MAX = 0.1, 0.9
# Options expire at the 4 pm New York close; 20:00 UTC ignores daylight saving, close enough.
_EXPIRY_UTC_HOUR = 20

# Integer ranges of the wire types, so that generic values always fit the real field.
_INT_MAX = {
    "byte": 255,
    "short": 32_767,
    "ushort": 65_535,
    "int": 2_147_483_647,
    "uint": 4_294_967_295,
    "long": 9_223_372_036_854_775_807,
}

# Venues quoted most often, in rough order of share; only names the catalog's enum has are used.
_STOCK_VENUES = ("NSDQ", "ARCA", "EDGX", "BATS", "IEX", "MEMX", "NYSE", "EDGA", "BTSY", "MPRL")
_OPTION_VENUES = ("CBOE", "ISE", "PHLX", "AMEX", "BOX", "NSDQ", "BATS", "C2", "MIAX", "GMNI")


@dataclass(slots=True)
class LiveObject:
    """One cached live-data object; `message` is the wire body including `pkey`.

    Objects are reused: `step()` changes `message`, `version`, `deleted` and `src_ns` of the
    object it returns, in place.
    """

    msg_name: str
    key: str
    message: dict[str, Any]
    version: int
    deleted: bool = False
    src_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Symbol:
    tk: str
    name: str
    kind: str  # SymbolType: Equity | Etf
    price: float  # a rough recent level, in dollars
    vol: float  # at-the-money implied vol
    mic: str  # listing market: XNAS | XNYS | ARCX


# Real symbols first so that demos look familiar; BRK.B is tenth so that any universe of ten or
# more tickers exercises a symbol with a dot in it.
_SYMBOLS = (
    _Symbol("AAPL", "Apple Inc", "Equity", 228.52, 0.24, "XNAS"),
    _Symbol("MSFT", "Microsoft Corp", "Equity", 415.26, 0.22, "XNAS"),
    _Symbol("AMZN", "Amazon.com Inc", "Equity", 185.41, 0.30, "XNAS"),
    _Symbol("SPY", "SPDR S&P 500 ETF Trust", "Etf", 582.31, 0.13, "ARCX"),
    _Symbol("QQQ", "Invesco QQQ Trust Series 1", "Etf", 495.12, 0.18, "XNAS"),
    _Symbol("NVDA", "NVIDIA Corp", "Equity", 121.44, 0.50, "XNAS"),
    _Symbol("TSLA", "Tesla Inc", "Equity", 248.93, 0.55, "XNAS"),
    _Symbol("META", "Meta Platforms Inc Class A", "Equity", 560.75, 0.33, "XNAS"),
    _Symbol("GOOGL", "Alphabet Inc Class A", "Equity", 165.32, 0.28, "XNAS"),
    _Symbol("BRK.B", "Berkshire Hathaway Inc Class B", "Equity", 455.61, 0.16, "XNYS"),
    _Symbol("IWM", "iShares Russell 2000 ETF", "Etf", 220.15, 0.21, "ARCX"),
    _Symbol("AMD", "Advanced Micro Devices Inc", "Equity", 152.30, 0.45, "XNAS"),
    _Symbol("NFLX", "Netflix Inc", "Equity", 705.20, 0.35, "XNAS"),
    _Symbol("JPM", "JPMorgan Chase & Co", "Equity", 212.40, 0.20, "XNYS"),
    _Symbol("XOM", "Exxon Mobil Corp", "Equity", 118.70, 0.22, "XNYS"),
    _Symbol("V", "Visa Inc Class A", "Equity", 280.10, 0.18, "XNYS"),
    _Symbol("UNH", "UnitedHealth Group Inc", "Equity", 590.35, 0.25, "XNYS"),
    _Symbol("AVGO", "Broadcom Inc", "Equity", 170.25, 0.42, "XNAS"),
    _Symbol("COST", "Costco Wholesale Corp", "Equity", 890.45, 0.20, "XNAS"),
    _Symbol("DIA", "SPDR Dow Jones Industrial Average ETF Trust", "Etf", 420.80, 0.12, "ARCX"),
    _Symbol("GLD", "SPDR Gold Shares", "Etf", 245.60, 0.15, "ARCX"),
    _Symbol("XLF", "Financial Select Sector SPDR Fund", "Etf", 46.12, 0.17, "ARCX"),
    _Symbol("BAC", "Bank of America Corp", "Equity", 40.35, 0.26, "XNYS"),
    _Symbol("INTC", "Intel Corp", "Equity", 22.41, 0.48, "XNAS"),
)
# Listing market -> (exchString, Bloomberg exchange code, tape)
_LISTING = {"XNAS": ("NSDQ", "UW", "C"), "XNYS": ("NYSE", "UN", "A"), "ARCX": ("ARCA", "UP", "B")}


def _extra_symbol(rng: random.Random, n: int) -> _Symbol:
    """Symbols past the built-in list: four letters (QA.., QB..), price and vol from the seed."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    tk = "Q" + letters[(n // 676) % 26] + letters[(n // 26) % 26] + letters[n % 26]
    price = round(20 + rng.random() * 280, 2)
    return _Symbol(
        tk, f"Simulated Holdings {tk} Inc", "Equity", price, 0.2 + rng.random() * 0.4, "XNAS"
    )


# ---------------------------------------------------------------------------------------------
# Small numeric helpers


# n / 10**k is the double nearest that k-place decimal, so it prints as one; and unlike
# round(x, k), which goes through decimal strings, this is cheap (about 7x faster).
def _r2(x: float) -> float:
    return _floor(x * 100.0 + 0.5) / 100.0


def _r4(x: float) -> float:
    return _floor(x * 10_000.0 + 0.5) / 10_000.0


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _clamp(x: float, lo: float, hi: float) -> float:
    return lo if x < lo else hi if x > hi else x


def _put(msg: Message, name: str, value: Any) -> None:
    """Set a field, or drop it when the value is a default MLink would omit (0, "", None)."""
    if value:
        msg[name] = value
    else:
        msg.pop(name, None)


def _bs_price(spot: float, strike: float, years: float, vol: float, call: bool) -> float:
    """Black-Scholes value (no dividends), never below intrinsic value."""
    vs = vol * _sqrt(years)
    d1 = (_log(spot / strike) + (_RATE + 0.5 * vol * vol) * years) / vs
    nd1 = 0.5 + 0.5 * _erf(d1 * _INV_SQRT2)
    nd2 = 0.5 + 0.5 * _erf((d1 - vs) * _INV_SQRT2)
    kdf = strike * _exp(-_RATE * years)
    if call:
        value, intrinsic = spot * nd1 - kdf * nd2, spot - strike
    else:
        value, intrinsic = kdf * (1 - nd2) - spot * (1 - nd1), strike - spot
    # Plain comparisons rather than max(): this runs for most steps.
    value = intrinsic if value < intrinsic else value
    return value if value > 0.0 else 0.0


class _Greeks(NamedTuple):
    """Black-Scholes value and sensitivities; a NamedTuple because it is made on hot paths."""

    price: float
    de: float  # delta
    ga: float  # gamma
    th: float  # theta per calendar day
    ve: float  # vega per vol point
    va: float  # vanna
    vo: float  # volga
    ro: float  # rho per rate point
    ph: float  # phi (dividend rho)
    de_decay: float  # charm per day

    def named(self) -> dict[str, float]:
        """By lower-case wire name, as the generic book looks them up."""
        return {
            "de": self.de,
            "ga": self.ga,
            "th": self.th,
            "ve": self.ve,
            "va": self.va,
            "vo": self.vo,
            "ro": self.ro,
            "ph": self.ph,
            "dedecay": self.de_decay,
        }


def _bs_greeks(spot: float, strike: float, years: float, vol: float, call: bool) -> _Greeks:
    sqrt_t = math.sqrt(years)
    vs = vol * sqrt_t
    d1 = (math.log(spot / strike) + (_RATE + 0.5 * vol * vol) * years) / vs
    d2 = d1 - vs
    nd1 = 0.5 * (1 + math.erf(d1 * _INV_SQRT2))
    nd2 = 0.5 * (1 + math.erf(d2 * _INV_SQRT2))
    pdf = math.exp(-0.5 * d1 * d1) * _INV_SQRT_2PI
    kdf = strike * math.exp(-_RATE * years)
    decay = -spot * pdf * vol / (2 * sqrt_t)
    if call:
        price = max(spot * nd1 - kdf * nd2, spot - strike, 0.0)
        delta = nd1
        theta = (decay - _RATE * kdf * nd2) / 365
        rho = kdf * years * nd2 / 100
        phi = -years * spot * nd1 / 100
    else:
        price = max(kdf * (1 - nd2) - spot * (1 - nd1), strike - spot, 0.0)
        delta = nd1 - 1
        theta = (decay + _RATE * kdf * (1 - nd2)) / 365
        rho = -kdf * years * (1 - nd2) / 100
        phi = years * spot * (1 - nd1) / 100
    vega = spot * pdf * sqrt_t / 100
    return _Greeks(
        price,
        delta,
        pdf / (spot * vs),
        theta,
        vega,
        -pdf * d2 / vol / 100,
        vega * d1 * d2 / vol / 100,
        rho,
        phi,
        -pdf * (2 * _RATE * years - d2 * vs) / (2 * years * vs) / 365,
    )


def _fridays_after(today: date, count: int) -> list[date]:
    """Weekly Fridays after `today` for the first four, then monthly (third-Friday) expiries."""
    out: list[date] = []
    day = today + timedelta(days=1)
    while day.weekday() != 4:  # Friday
        day += timedelta(days=1)
    while len(out) < min(count, 4):
        out.append(day)
        day += timedelta(days=7)
    while len(out) < count:
        if 15 <= day.day <= 21:
            out.append(day)
        day += timedelta(days=7)
    return out


def _strike_step(price: float) -> float:
    if price < 25:
        return 0.5
    if price < 100:
        return 1.0
    return 2.5  # 580, 582.5, 585: fractional strikes on the bigger names


def _cusip(rng: random.Random) -> str:
    base = "".join(str(int(rng.random() * 10)) for _ in range(6)) + "10"
    total = 0
    for i, ch in enumerate(base):
        v = int(ch) * (2 if i % 2 else 1)
        total += v // 10 + v % 10
    return base + str((10 - total % 10) % 10)


def _isin(cusip: str) -> str:
    digits = "".join(str(int(c, 36)) for c in "US" + cusip)
    total = 0
    for i, ch in enumerate(reversed(digits)):
        v = int(ch) * (2 if i % 2 == 0 else 1)
        total += v // 10 + v % 10
    return f"US{cusip}{(10 - total % 10) % 10}"


def _alnum(rng: random.Random, n: int, alphabet: str = "0123456789BCDFGHJKLMNPQRSTVWXYZ") -> str:
    return "".join(alphabet[int(rng.random() * len(alphabet))] for _ in range(n))


def _lei(rng: random.Random) -> str:
    base = _alnum(rng, 18, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    number = int("".join(str(int(c, 36)) for c in base + "00"))
    return f"{base}{98 - number % 97:02d}"


# ---------------------------------------------------------------------------------------------
# The universe and its shared state: underliers, expiries, options


class _World:
    """Tickers, expiries and options, the state that moves them, and time formatting."""

    def __init__(
        self,
        catalog: Catalog,
        rng: random.Random,
        now: int,
        *,
        tickers: int,
        expiries: int,
        strikes: int,
    ) -> None:
        self.catalog = catalog
        self.rng = rng
        self.now0 = now
        self.n_exp = expiries
        self.n_strikes = strikes
        today = datetime.fromtimestamp(now // _NS, UTC).date()
        self.today = today.isoformat()
        self.today_midnight = f"{self.today} 00:00:00.000000"

        self.symbols = [
            _SYMBOLS[t] if t < len(_SYMBOLS) else _extra_symbol(rng, t) for t in range(tickers)
        ]
        self.tkeys = [TickerKey("EQT", "NMS", s.tk).to_json() for s in self.symbols]
        # Underlier state in whole cents: best bid, spread, the level it reverts to, last close.
        self.bid_c: list[int] = []
        self.spread_c: list[int] = []
        self.anchor_c: list[int] = []
        self.close_c: list[int] = []
        self.sdiv: list[float] = []
        for s in self.symbols:
            cents = round(s.price * 100 * (1 + (rng.random() - 0.5) * 0.04))
            self.bid_c.append(cents)
            self.anchor_c.append(cents)
            self.spread_c.append(1)
            self.close_c.append(round(cents * (1 + (rng.random() - 0.5) * 0.02)))
            self.sdiv.append(_r4(rng.random() * 0.01))

        dates = _fridays_after(today, expiries)
        self.exp_dates = [d.isoformat() for d in dates]
        self.exp_ns = [
            int(datetime(d.year, d.month, d.day, _EXPIRY_UTC_HOUR, tzinfo=UTC).timestamp()) * _NS
            for d in dates
        ]

        # Ticker-expiry pairs, te = t * expiries + e.
        self.ekeys: list[dict[str, Any]] = []
        self.te_ticker: list[int] = []
        self.te_exp: list[int] = []
        self.atm: list[float] = []
        self.atm_anchor: list[float] = []
        self.atm_ema: list[float] = []
        for t, s in enumerate(self.symbols):
            for e, dt in enumerate(self.exp_dates):
                self.ekeys.append(ExpiryKey("EQT", "NMS", s.tk, dt).to_json())
                self.te_ticker.append(t)
                self.te_exp.append(e)
                # A gently rising term structure, jittered per seed.
                vol = _clamp(s.vol * (1 + 0.03 * e) * (0.95 + rng.random() * 0.1), 0.11, 0.85)
                self.atm.append(vol)
                self.atm_anchor.append(vol)
                self.atm_ema.append(vol)

        # Options, o = (te * strikes + k) * 2 + (0 for the call, 1 for the put).
        self.okeys: list[dict[str, Any]] = []
        self.o_te: list[int] = []
        self.o_ticker: list[int] = []
        self.o_strike: list[float] = []
        self.o_call: list[bool] = []
        for te, t in enumerate(self.te_ticker):
            s = self.symbols[t]
            step = _strike_step(s.price)
            atm_steps = round(self.bid_c[t] / 100 / step)
            low = atm_steps - (strikes - 1) // 2
            low = max(low, 1)  # strikes stay positive for cheap underliers
            for k in range(strikes):
                strike = (low + k) * step
                for cp in ("Call", "Put"):
                    self.okeys.append(
                        OptionKey(
                            "EQT", "NMS", s.tk, self.exp_dates[self.te_exp[te]], strike, cp
                        ).to_json()
                    )
                    self.o_te.append(te)
                    self.o_ticker.append(t)
                    self.o_strike.append(strike)
                    self.o_call.append(cp == "Call")

        self._stamp_sec = -1
        self._stamp_prefix = ""
        self._years_sec = -1
        self._years: list[float] = []

    # --- time

    def stamp(self, ns: int) -> str:
        """MLink's DateTime text, UTC with microseconds; the second's prefix is cached."""
        sec, rest = divmod(ns, _NS)
        if sec != self._stamp_sec:
            self._stamp_sec = sec
            self._stamp_prefix = time.strftime("%Y-%m-%d %H:%M:%S.", time.gmtime(sec))
        return f"{self._stamp_prefix}{rest // 1000:06d}"

    def net(self, src: int) -> int:
        """When the record reached SpiderRock's network: 15-90 us later, in 100 ns ticks."""
        return (src + 15_000 + int(self.rng.random() * 75_000)) // 100 * 100

    def years(self, te: int, now: int) -> float:
        """Time to te's expiry in years, as of the start of `now`'s second (cached per second)."""
        sec = now // _NS
        if sec != self._years_sec:
            self._years_sec = sec
            # An hour is the floor so that a clock run past expiry still prices sanely.
            self._years = [max((x - sec * _NS) / _NS_PER_YEAR, 1 / 8760) for x in self.exp_ns]
        return self._years[self.te_exp[te]]

    # --- underliers

    def mid(self, t: int) -> float:
        return (2 * self.bid_c[t] + self.spread_c[t]) / 200

    def walk(self, t: int) -> bool:
        """Move ticker t's quote a few cents, pulled back towards its anchor; True if it moved."""
        r = self.rng.random
        if r() < 0.35:
            return False
        bid = self.bid_c[t]
        scale = 3 + bid // 5000  # bigger prices move more cents per tick
        pull = (self.anchor_c[t] - bid) * 0.002
        bid = max(bid + int((r() - 0.5) * 2 * scale + pull), 100)
        u = r()
        spread = 1 if u < 0.7 else 2 if u < 0.9 else 3
        self.bid_c[t] = bid
        self.spread_c[t] = spread
        return True

    # --- options

    def vol_at(self, o: int, spot: float) -> float:
        """The surface vol at o's strike: ATM vol plus a put skew and a little smile."""
        m = math.log(self.o_strike[o] / spot)
        return _clamp(self.atm[self.o_te[o]] - 0.15 * m + 0.5 * m * m, _VOL_MIN, _VOL_MAX)

    def theo(self, o: int, now: int) -> float:
        spot = self.mid(self.o_ticker[o])
        years = self.years(self.o_te[o], now)
        return _bs_price(spot, self.o_strike[o], years, self.vol_at(o, spot), self.o_call[o])

    @staticmethod
    def option_market(theo: float) -> tuple[int, int]:
        """Bid and ask in cents around a value: pennies under $3, nickels above, >= 1 tick."""
        tick = 1 if theo < 3 else 5
        value_c = theo * 100
        half = value_c * 0.015
        half = tick * 0.5 if half < tick * 0.5 else half
        low = (value_c - half) / tick
        bid = int(low) * tick if low >= 1 else tick  # int() floors positive numbers
        high = (value_c + half) / tick
        ask = int(high)
        if ask < high:
            ask += 1
        ask *= tick
        if ask <= bid:
            ask = bid + tick
        return bid, ask

    def atm_walk(self, te: int) -> None:
        vol = self.atm[te]
        vol += (self.rng.random() - 0.5) * 0.004 + (self.atm_anchor[te] - vol) * 0.01
        self.atm[te] = _clamp(vol, _VOL_MIN, _VOL_MAX)
        self.atm_ema[te] = self.atm_ema[te] * 0.9 + self.atm[te] * 0.1


class _Venues:
    """An exchange enum's names, and quoting choices: (venue, mask of venues at that price).

    Masks have bit n set for enum number n: the quoting venue's bit plus, often, one or two
    more. They are drawn once up front so that a quote costs one random number, not four.
    """

    def __init__(
        self, catalog: Catalog, enum: str, preferred: Sequence[str], rng: random.Random
    ) -> None:
        spec = catalog.enums[enum]
        # Only venues that fit a 32-bit mask, so that no mask is ever 0 (a default).
        numbers = {name: n for n, name in spec.names.items() if 0 < n < 32}
        self.names = [name for name in preferred if name in numbers] or list(numbers)
        self.n = len(self.names)
        bits = [1 << n for n in numbers.values()]
        self.choices: list[tuple[str, int]] = []
        for _ in range(64):
            name = self.names[int(rng.random() ** 2 * self.n)]  # busier venues first
            mask = 1 << numbers[name]
            for _ in range(int(rng.random() * 3)):
                mask |= bits[int(rng.random() * len(bits))]
            self.choices.append((name, mask))
        self.n_choices = len(self.choices)


# ---------------------------------------------------------------------------------------------
# Books: one message type's keys and live objects, and how to make and change its messages


class _Book:
    weight = 4.0
    # Fields and enums a hand-written book writes; without them in the catalog it is not used.
    fields: frozenset[str] = frozenset()
    enums: frozenset[str] = frozenset()

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        self.spec = spec
        self.world = world
        self.rng = world.rng
        self.pkeys: list[dict[str, Any]] = []
        # Per key: ticker index, ticker-expiry index (-1: none), option index (-1: none).
        self.t: list[int] = []
        self.te: list[int] = []
        self.o: list[int] = []
        self._build_keys()
        self.keys = [canonical_key(spec, pk) for pk in self.pkeys]
        self.index = {key: i for i, key in enumerate(self.keys)}
        self.n = len(self.pkeys)
        self.slots: list[LiveObject] = []

    @classmethod
    def supports(cls, spec: MessageSpec, catalog: Catalog) -> bool:
        names = {f.name for f in spec.fields}
        return cls.fields <= names and all(e in catalog.enums for e in cls.enums)

    def _build_keys(self) -> None:
        w = self.world
        key_fields = self.spec.key_fields
        sec = [f for f in key_fields if f.is_security_key]
        if not sec:
            self._build_plain_keys(key_fields)
            return
        kind = sec[0].type
        if kind == "OptionKey":
            self.o = list(range(len(w.okeys)))
            self.te = list(w.o_te)
            self.t = list(w.o_ticker)
        elif kind == "ExpiryKey":
            self.te = list(range(len(w.ekeys)))
            self.t = list(w.te_ticker)
            self.o = [-1] * len(self.te)
        else:
            self.t = list(range(len(w.tkeys)))
            self.te = [-1] * len(self.t)
            self.o = [-1] * len(self.t)
        # Other key fields take one value per type, so each security key is one object and the
        # counts stay tickers / tickers*expiries / tickers*expiries*strikes*2.
        extra = {f.name: self._extra_key_value(f, kind) for f in key_fields if f not in sec}
        for i in range(len(self.t)):
            pkey: dict[str, Any] = {}
            for f in key_fields:
                if f.is_security_key:
                    pkey[f.name] = self._key_struct(f.type, i)
                else:
                    pkey[f.name] = extra[f.name]
            self.pkeys.append(pkey)

    def _build_plain_keys(self, key_fields: Sequence[FieldSpec]) -> None:
        """Keys without a security key (OpraPrintType): the first `tickers` combinations."""
        w = self.world
        count = len(w.tkeys)
        domains: list[list[Any]] = []
        for f in key_fields:
            if f.type in ("enum", "flag"):
                domains.append(_enum_choices(w.catalog, f) or ["None"])
            elif f.type in INTEGER_TYPES:
                domains.append(list(range(1, min(count, _INT_MAX[f.type]) + 1)))
            elif f.type in FLOAT_TYPES:
                domains.append([float(i) for i in range(1, count + 1)])
            elif f.type == "DateTime":
                domains.append([w.today_midnight])
            elif f.type == "DateKey":
                domains.append([w.today])
            else:
                domains.append([f"K{i}" for i in range(1, count + 1)])
        for i, combo in enumerate(itertools.islice(itertools.product(*domains), count)):
            self.pkeys.append({f.name: v for f, v in zip(key_fields, combo, strict=True)})
            self.t.append(i % count)
            self.te.append(-1)
            self.o.append(-1)

    def _key_struct(self, kind: str, i: int) -> dict[str, Any]:
        w = self.world
        t = self.t[i]
        te = self.te[i] if self.te[i] >= 0 else t * w.n_exp
        if kind == "TickerKey":
            return w.tkeys[t]
        if kind == "ExpiryKey":
            return w.ekeys[te]
        return w.okeys[self.o[i] if self.o[i] >= 0 else te * w.n_strikes * 2]

    def _extra_key_value(self, f: FieldSpec, kind: str) -> Any:
        w = self.world
        lname = f.name.lower()
        if f.type in ("enum", "flag"):
            if f.enum == "SpdrKeyType":
                wanted = {"TickerKey": "Stock", "ExpiryKey": "Future", "OptionKey": "Option"}[kind]
                if wanted in _enum_choices(w.catalog, f):
                    return wanted
            choices = _enum_choices(w.catalog, f)
            return choices[0] if choices else "None"
        if f.type == "DateTime":
            return w.today_midnight
        if f.type == "DateKey":
            return w.today
        if f.type in INTEGER_TYPES:
            if lname == "minute":
                return (w.now0 // (60 * _NS)) % 1440 or 1  # minute of the UTC day
            if lname == "days":
                return 30
            return 1
        if f.type in FLOAT_TYPES:
            return 1.0
        return "Live"

    # --- making and changing messages

    def fill(self, now: int) -> None:
        """The initial cache: every key, version 1, sourced up to 5 s before `now`."""
        for i in range(self.n):
            src = now - int(self.rng.random() * 5 * _NS)
            self.slots.append(
                LiveObject(self.spec.name, self.keys[i], self.make(i, src), 1, False, src)
            )

    def make(self, i: int, now: int) -> Message:
        raise NotImplementedError

    def update(self, i: int, msg: Message, now: int) -> None:
        raise NotImplementedError


class _StockBookQuote(_Book):
    weight = 30.0
    fields = _words(
        "updateType marketStatus bidPrice1 bidSize1 bidExch1 bidMask1 askPrice1 askSize1 "
        "askExch1 askMask1 bidPrice2 bidSize2 bidExch2 bidMask2 askPrice2 askSize2 askExch2 "
        "askMask2 srcTimestamp netTimestamp"
    )
    enums = frozenset({"StkExch"})

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        self.venues = _Venues(world.catalog, "StkExch", _STOCK_VENUES, self.rng)

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i], "updateType": "PrcChange", "marketStatus": "Open"}
        self._quote(i, msg, True)
        msg["srcTimestamp"] = now
        msg["netTimestamp"] = self.world.net(now)
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        moved = self.world.walk(i)
        msg["updateType"] = "PrcChange" if moved else "SizeOnly"
        self._quote(i, msg, moved)
        msg["srcTimestamp"] = now
        msg["netTimestamp"] = self.world.net(now)

    def _quote(self, t: int, msg: Message, moved: bool) -> None:
        r = self.rng.random
        v = self.venues
        bid = self.world.bid_c[t]
        ask = bid + self.world.spread_c[t]
        msg["bidPrice1"] = bid / 100
        msg["bidSize1"] = 1 + int(r() * 30)
        if moved or "bidExch1" not in msg:
            msg["bidExch1"], msg["bidMask1"] = v.choices[int(r() * v.n_choices)]
        msg["askPrice1"] = ask / 100
        msg["askSize1"] = 1 + int(r() * 30)
        if moved or "askExch1" not in msg:
            msg["askExch1"], msg["askMask1"] = v.choices[int(r() * v.n_choices)]
        if moved or "bidPrice2" not in msg:
            # The second level sits a few cents away; a size of 0 (left out) means it is empty.
            u = r()
            msg["bidPrice2"] = (bid - 1 - int(u * 3)) / 100
            msg["bidExch2"], msg["bidMask2"] = v.choices[int(u * v.n_choices)]
            u = r()
            msg["askPrice2"] = (ask + 1 + int(u * 3)) / 100
            msg["askExch2"], msg["askMask2"] = v.choices[int(u * v.n_choices)]
        _put(msg, "bidSize2", int(r() * 12))
        _put(msg, "askSize2", int(r() * 12))


class _StockPrint(_Book):
    weight = 12.0
    fields = _words(
        "prtExch prtSize prtPrice prtClusterNum prtClusterSize prtVolume mrkPrice clsPrice "
        "prtType ebid eask ebsz easz eage prtSide prtTimestamp netTimestamp timestamp"
    )
    enums = frozenset({"StkExch", "StkPrintType", "PrtSide"})

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        self.venues = _Venues(world.catalog, "StkExch", _STOCK_VENUES, self.rng)
        # Day volume and cluster numbers live outside the message so they keep growing across a
        # delete and re-create of the key.
        self.volume = [int(1_000_000 + self.rng.random() * 40_000_000) for _ in range(self.n)]
        self.cluster = [int(10_000 + self.rng.random() * 90_000) for _ in range(self.n)]

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i]}
        self.update(i, msg, now)
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        w = self.world
        r = self.rng.random
        t = self.t[i]
        bid = w.bid_c[t]
        ask = bid + w.spread_c[t]
        u = r()
        if u < 0.45:
            price, side = bid / 100, "Bid"
        elif u < 0.9:
            price, side = ask / 100, "Ask"
        else:
            price, side = (bid + ask) / 200, "Mid"  # midpoint crosses print at half a cent
        odd = r() < 0.25
        size = 1 + int(r() * 99) if odd else 100 * (1 + int(r() * 10))
        self.volume[i] += size
        self.cluster[i] += 1
        msg["prtExch"] = self.venues.names[int(r() ** 2 * self.venues.n)]
        msg["prtSize"] = size
        msg["prtPrice"] = price
        msg["prtClusterNum"] = self.cluster[i]
        msg["prtClusterSize"] = size
        msg["prtVolume"] = self.volume[i]
        msg["mrkPrice"] = w.mid(t)
        msg["clsPrice"] = w.close_c[t] / 100
        msg["prtType"] = "OddLot" if odd else "RegularSequence"
        msg["ebid"] = bid / 100
        msg["eask"] = ask / 100
        msg["ebsz"] = 1 + int(r() * 30)
        msg["easz"] = 1 + int(r() * 30)
        _put(msg, "eage", _r4(r() * 0.05))
        msg["prtSide"] = side
        msg["prtTimestamp"] = now
        msg["netTimestamp"] = w.net(now)
        msg["timestamp"] = w.stamp(now)


class _OptionNbboQuote(_Book):
    weight = 35.0
    fields = _words(
        "updateType bidPrice askPrice bidSize askSize cumBidSize cumAskSize bidExch askExch "
        "bidMask askMask bidMktType askMktType srcTimestamp netTimestamp"
    )
    enums = frozenset({"OptExch", "OpraMktType", "UpdateType"})

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        self.venues = _Venues(world.catalog, "OptExch", _OPTION_VENUES, self.rng)
        self.bid_c = [0] * self.n
        self.ask_c = [0] * self.n

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i]}
        self.update(i, msg, now)
        msg["updateType"] = "PrcChange"
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        w = self.world
        r = self.rng.random
        v = self.venues
        bid, ask = w.option_market(w.theo(self.o[i], now))
        changed = bid != self.bid_c[i] or ask != self.ask_c[i]
        self.bid_c[i] = bid
        self.ask_c[i] = ask
        msg["updateType"] = "PrcChange" if changed else "SizeOnly"
        msg["bidPrice"] = bid / 100
        msg["askPrice"] = ask / 100
        bid_size = 1 + int(r() * 50)
        ask_size = 1 + int(r() * 50)
        msg["bidSize"] = bid_size
        msg["askSize"] = ask_size
        msg["cumBidSize"] = bid_size + int(r() * 300)
        msg["cumAskSize"] = ask_size + int(r() * 300)
        if changed or "bidExch" not in msg:
            msg["bidExch"], msg["bidMask"] = v.choices[int(r() * v.n_choices)]
            msg["askExch"], msg["askMask"] = v.choices[int(r() * v.n_choices)]
        # OPRA market-type flags are rare; "None" is the default and so left out.
        u = r()
        _put(msg, "bidMktType", "CustInterest" if u < 0.04 else "Rotation" if u < 0.05 else None)
        _put(msg, "askMktType", "CustInterest" if 0.5 < u < 0.54 else None)
        msg["srcTimestamp"] = now
        msg["netTimestamp"] = w.net(now)


_IMPLIED_ROUNDED = (
    "xAxis", "sPrc", "veSlope", "de", "ga", "th", "ve", "va", "vo", "ro", "ph", "deDecay",
    "up50", "dn50", "up15", "dn15", "up06", "dn08",
)  # fmt: skip


class _LiveImpliedQuote(_Book):
    weight = 12.0
    fields = _words(
        "ticker uPrc years xAxis rate sdiv oBid oAsk oBidIv oAskIv atmVol sVol sPrc sMark "
        "veSlope de ga th ve va vo ro ph deDecay up50 dn50 up15 dn15 up06 dn08 calcSource "
        "srcTimestamp netTimestamp timestamp"
    )
    enums = frozenset({"CalcSource"})

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i], "ticker": self.world.tkeys[self.t[i]]}
        self.update(i, msg, now)
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        w = self.world
        o = self.o[i]
        te = self.te[i]
        t = self.t[i]
        spot = w.mid(t)
        strike = w.o_strike[o]
        years = w.years(te, now)
        svol = w.vol_at(o, spot)
        g = _bs_greeks(spot, strike, years, svol, w.o_call[o])
        price, de, ga = g.price, g.de, g.ga
        bid_c, ask_c = w.option_market(price)
        # Implied vols of the bid and ask: the surface vol shifted by price distance / vega.
        vega_pt = max(g.ve * 100, 1e-6)
        bid_iv = _clamp(svol - (price - bid_c / 100) / vega_pt, _VOL_MIN, _VOL_MAX)
        ask_iv = _clamp(svol + (ask_c / 100 - price) / vega_pt, bid_iv, _VOL_MAX)
        atm = w.atm[te]
        msg["uPrc"] = spot
        msg["years"] = max(_r4(years), 0.0001)
        msg["rate"] = _RATE
        _put(msg, "sdiv", w.sdiv[t])
        msg["oBid"] = bid_c / 100
        msg["oAsk"] = ask_c / 100
        msg["oBidIv"] = _r4(bid_iv)
        msg["oAskIv"] = _r4(ask_iv)
        msg["atmVol"] = _r4(atm)
        msg["sVol"] = _r4(svol)
        msg["sMark"] = (bid_c + ask_c) // 2 / 100
        # Value changes for underlier moves of 5%, 1.5%, 0.6% and 0.8% are delta-gamma guesses.
        up50, up15, up06, dn08 = spot * 0.05, spot * 0.015, spot * 0.006, spot * -0.008
        half_ga = 0.5 * ga
        rounded = (
            math.log(strike / (spot * math.exp(_RATE * years))) / (atm * math.sqrt(years)),
            price,
            g.vo * 0.1,
            de,
            ga,
            g.th,
            g.ve,
            g.va,
            g.vo,
            g.ro,
            g.ph,
            g.de_decay,
            (de + half_ga * up50) * up50,
            (half_ga * up50 - de) * up50,
            (de + half_ga * up15) * up15,
            (half_ga * up15 - de) * up15,
            (de + half_ga * up06) * up06,
            (de + half_ga * dn08) * dn08,
        )
        # One loop instead of 18 helper calls: this is the costliest message to make.
        for name, x in zip(_IMPLIED_ROUNDED, rounded, strict=True):
            value = _floor(x * 10_000.0 + 0.5) / 10_000.0
            if value:
                msg[name] = value
            elif name in msg:
                del msg[name]
        msg["calcSource"] = "Tick" if self.rng.random() < 0.9 else "Loop"
        msg["srcTimestamp"] = now
        msg["netTimestamp"] = w.net(now)
        msg["timestamp"] = w.stamp(now)


class _LiveAtmVol(_Book):
    weight = 5.0
    fields = _words(
        "ticker uPrc years rate atmVol atmEMA uPrcOffset uPrcOffsetEMA sdiv sdivEMA axisFUPrc "
        "vWidth numAtmStrikes tradeableStatus surfaceResult timestamp"
    )
    enums = frozenset({"TradeableStatus", "SurfaceAdjResult"})

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        self.offset_ema = [0.0] * self.n

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i], "ticker": self.world.tkeys[self.t[i]]}
        self._fill(i, msg, now)
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        self.world.atm_walk(self.te[i])
        self._fill(i, msg, now)

    def _fill(self, i: int, msg: Message, now: int) -> None:
        w = self.world
        r = self.rng.random
        te = self.te[i]
        t = self.t[i]
        spot = w.mid(t)
        years = w.years(te, now)
        offset = _r4((r() - 0.5) * 0.02)
        self.offset_ema[i] = self.offset_ema[i] * 0.9 + offset * 0.1
        msg["uPrc"] = spot
        msg["years"] = max(_r4(years), 0.0001)
        msg["rate"] = _RATE
        msg["atmVol"] = _r4(w.atm[te])
        msg["atmEMA"] = _r4(w.atm_ema[te])
        _put(msg, "uPrcOffset", offset)
        _put(msg, "uPrcOffsetEMA", _r4(self.offset_ema[i]))
        _put(msg, "sdiv", w.sdiv[t])
        _put(msg, "sdivEMA", w.sdiv[t])
        msg["axisFUPrc"] = _r2(spot * math.exp((_RATE - w.sdiv[t]) * years))
        msg["vWidth"] = _r4(0.002 + r() * 0.018)
        msg["numAtmStrikes"] = 2 + int(r() * 7)
        msg["tradeableStatus"] = "Ok"
        msg["surfaceResult"] = "Ok"
        msg["timestamp"] = w.stamp(now)


class _TickerDefinition(_Book):
    weight = 1.0  # reference data: it hardly changes
    fields = _words(
        "securityID symbolType name country parValue parValueCurrency mic micSeg symbol "
        "sharesOutstanding cusip indNum subNum grpNum nbrNum sic cik gics lei naics cfi fisn "
        "isin figi bbgCompositeTicker bbgExchangeTicker bbgCompositeGlobalID bbgGlobalID "
        "bbgCurrency stkPriceInc tkDefSource statusFlag tapeCode stkVolume optVolume "
        "exchString numOptions timeMetric timestamp hasOptions"
    )
    enums = frozenset({"SymbolType", "StkPriceInc", "TkDefSource", "TkStatusFlag", "TapeCode"})

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        # Static fields are drawn once, so a re-created definition matches the deleted one.
        self.static = [self._static(i) for i in range(self.n)]

    def _static(self, i: int) -> Message:
        rng = self.rng
        s = self.world.symbols[self.t[i]]
        exch, bbg_exch, tape = _LISTING[s.mic]
        cusip = _cusip(rng)
        bbg_tk = s.tk.replace(".", "/")
        etf = s.kind == "Etf"
        out: Message = {
            "securityID": 100_000 + int(rng.random() * 900_000),
            "symbolType": s.kind,
            "name": s.name[:72],
            "country": "US",
            "parValue": 0.0 if etf else 0.01,
            "parValueCurrency": "USD",
            "mic": s.mic,
            "micSeg": s.mic,
            "symbol": s.tk,
            "sharesOutstanding": int(200_000_000 + rng.random() * 1_900_000_000),
            "cusip": cusip,
            "indNum": 1 + int(rng.random() * 60),
            "subNum": 1 + int(rng.random() * 200),
            "grpNum": 1 + int(rng.random() * 30),
            "nbrNum": 1 + int(rng.random() * 900),
            "sic": "6726" if etf else str(1000 + int(rng.random() * 8999)),
            "cik": f"{int(rng.random() * 2_000_000):010d}",
            "gics": "" if etf else str(10_000_000 + int(rng.random() * 50_000_000)),
            "lei": _lei(rng),
            "naics": str(100_000 + int(rng.random() * 899_999)),
            "cfi": "CEOGEU" if etf else "ESVUFR",
            "fisn": (s.name.upper()[:30] + ("/ETF" if etf else "/SH"))[:40],
            "isin": _isin(cusip),
            "figi": "BBG000" + _alnum(rng, 6),
            "bbgCompositeTicker": f"{bbg_tk} US",
            "bbgExchangeTicker": f"{bbg_tk} {bbg_exch}",
            "bbgCompositeGlobalID": "BBG000" + _alnum(rng, 6),
            "bbgGlobalID": "BBG000" + _alnum(rng, 6),
            "bbgCurrency": "USD",
            "stkPriceInc": "FullPenny",
            "tkDefSource": "Vendor",
            "statusFlag": "Active",
            "tapeCode": tape,
            "stkVolume": float(int(5_000 + rng.random() * 80_000) * 1000),
            "optVolume": float(int(10 + rng.random() * 2_000) * 1000),
            "exchString": exch,
            "numOptions": 500 + int(rng.random() * 6_000),
            "timeMetric": "D252",
            "hasOptions": "Yes",
        }
        return {k: v for k, v in out.items() if v}

    def make(self, i: int, now: int) -> Message:
        msg: Message = {"pkey": self.pkeys[i], **self.static[i]}
        msg["timestamp"] = self.world.stamp(now)
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        # Vendors refresh volumes and share counts; the identifiers stay put.
        r = self.rng.random
        msg["stkVolume"] = float(int(5_000 + r() * 80_000) * 1000)
        msg["optVolume"] = float(int(10 + r() * 2_000) * 1000)
        if r() < 0.2:
            msg["numOptions"] = max(1, msg.get("numOptions", 500) + int((r() - 0.5) * 40))
        msg["timestamp"] = self.world.stamp(now)


# ---------------------------------------------------------------------------------------------
# The generic book: any catalog type, values chosen by field type and name

# maker(i, now, previous value) -> new value, or None/0/"" to leave the field out
_Maker = Callable[[int, int, Any], Any]

_COUNTER_WORDS = ("volume", "count", "cnt", "openint")
_SIZE_WORDS = ("size", "sz", "qty", "quan", "orders")
_PRICE_WORDS = (
    "prc", "price", "px", "mark", "mrk", "bid", "ask", "vwap", "twap", "open", "high", "low",
    "last", "close", "cls", "strike", "collar",
)  # fmt: skip
# Greek field spellings across the catalog -> the name `_Greeks.named()` uses.
_GREEK_NAMES = {
    "de": "de", "ga": "ga", "th": "th", "ve": "ve", "va": "va", "vo": "vo", "ro": "ro",
    "rh": "ro", "ph": "ph", "dedecay": "dedecay",
}  # fmt: skip
# Fixed values for reference-data multipliers and the like, by a word in the field name.
_FIXED_FLOATS = (
    ("tick", 0.01), ("scal", 1.0), ("ratio", 1.0), ("factor", 1.0), ("pointvalue", 100.0),
    ("mult", 100.0), ("contract", 100.0), ("parvalue", 0.01),
)  # fmt: skip


def _const(value: Any) -> _Maker:
    return lambda i, now, prev: value


def _enum_choices(catalog: Catalog, f: FieldSpec) -> list[str]:
    """An enum field's non-default names (the catalog's default and the field's are excluded)."""
    if f.enum is None or f.enum not in catalog.enums:
        return []
    spec = catalog.enums[f.enum]
    return [v for v in spec.values() if v not in (f.default, spec.default)]


class _Generic(_Book):
    """Values by wire type, sharpened by the field's name (prices near the underlier, vols in
    0.1-0.9, counters that only grow, ns timestamps from the clock)."""

    def __init__(self, spec: MessageSpec, world: _World) -> None:
        super().__init__(spec, world)
        # The hand-written default types carry most updates; the rest tick along.
        self.weight = 6.0 if "Quote" in spec.name else 2.0
        # In HistoricalVolatilities every unnamed float is some volatility.
        self.vol_type = "volatil" in spec.name.lower()
        self._ref = 0.0  # the reference price of the key being made or updated
        self._greeks: dict[str, float] = {}
        self.plan: list[tuple[str, _Maker]] = []
        always: list[tuple[str, _Maker]] = []
        prices: list[tuple[str, _Maker]] = []
        sometimes: list[list[tuple[str, _Maker]]] = []
        self._needs_greeks = False
        for f in spec.value_fields:
            maker, role = self._maker(f)
            if maker is None:
                continue
            self.plan.append((f.name, maker))
            if role == "always":
                always.append((f.name, maker))
            elif role == "price":
                prices.append((f.name, maker))
            elif role == "sometimes":
                sometimes.append([(f.name, maker)])
        # Prices move together so that bid <= ask holds after every update.
        if prices:
            sometimes.append(prices)
        self.always = always
        self.sometimes = sometimes

    def _prepare(self, i: int, now: int) -> None:
        w = self.world
        o = self.o[i]
        if o >= 0:
            spot = w.mid(self.t[i])
            years = w.years(self.te[i], now)
            vol = w.vol_at(o, spot)
            if self._needs_greeks:
                g = _bs_greeks(spot, w.o_strike[o], years, vol, w.o_call[o])
                self._ref = max(g.price, 0.01)
                self._greeks = g.named()
            else:
                self._ref = max(_bs_price(spot, w.o_strike[o], years, vol, w.o_call[o]), 0.01)
        else:
            self._ref = w.mid(self.t[i])

    def make(self, i: int, now: int) -> Message:
        self._prepare(i, now)
        msg: Message = {"pkey": self.pkeys[i]}
        for name, maker in self.plan:
            value = maker(i, now, None)
            if value:
                msg[name] = value
        return msg

    def update(self, i: int, msg: Message, now: int) -> None:
        self._prepare(i, now)
        for name, maker in self.always:
            _put(msg, name, maker(i, now, msg.get(name)))
        if self.sometimes:
            r = self.rng.random
            for _ in range(1 + int(r() * 3)):
                for name, maker in self.sometimes[int(r() * len(self.sometimes))]:
                    _put(msg, name, maker(i, now, msg.get(name)))

    # --- choosing a maker per field; role: always | sometimes | price | static

    def _maker(self, f: FieldSpec) -> tuple[_Maker | None, str]:
        t = f.type
        if t == "group":
            # A repeated group (RootDefinition.underlying, ProductDefinitionV2.legs): one entry.
            members = [(m.name, self._maker(m)[0]) for m in f.fields]
            made = [(name, maker) for name, maker in members if maker is not None]

            def group(i: int, now: int, prev: Any) -> list[Message]:
                entry = {name: value for name, maker in made if (value := maker(i, now, None))}
                return [entry] if entry else []

            return group, "static"
        if any(k.name == f.name for k in self.spec.key_fields):
            # A value field that repeats a key field (ProductDefinitionV2.secKey) agrees with it.
            name = f.name
            return (lambda i, now, prev: self.pkeys[i][name]), "static"
        if t in KEY_TYPES:
            kind = t
            return (lambda i, now, prev: self._key_struct(kind, i)), "static"
        if t in ("enum", "flag"):
            return self._enum_maker(f), "static"
        if t in ("DateTime", "DateKey", "TimeSpan"):
            return self._time_maker(f)
        if t == "string":
            return self._string_maker(f)
        if t in INTEGER_TYPES:
            return self._int_maker(f)
        if t in FLOAT_TYPES:
            return self._float_maker(f)
        return None, "static"

    def _enum_maker(self, f: FieldSpec) -> _Maker | None:
        choices = _enum_choices(self.world.catalog, f)
        if not choices:
            return None
        rng = self.rng
        return lambda i, now, prev: choices[int(rng.random() * len(choices))]

    def _time_maker(self, f: FieldSpec) -> tuple[_Maker, str]:
        w = self.world
        lname = f.name.lower()

        def expiry_date(i: int) -> str:
            te = self.te[i] if self.te[i] >= 0 else self.t[i] * w.n_exp
            return w.exp_dates[w.te_exp[te]]

        if f.type == "TimeSpan":
            return (lambda i, now, prev: w.stamp(now)[11:]), "always"
        expiryish = "exp" in lname or "matur" in lname
        if f.type == "DateKey":
            if expiryish:
                return (lambda i, now, prev: expiry_date(i)), "static"
            return (lambda i, now, prev: w.today), "static"
        if expiryish:
            return (lambda i, now, prev: f"{expiry_date(i)} {_EXPIRY_UTC_HOUR}:00:00.000000"), (
                "static"
            )
        if "date" in lname:
            return (lambda i, now, prev: w.today_midnight), "static"
        if lname.startswith("start"):
            return (lambda i, now, prev: w.stamp(now - 60 * _NS)), "always"
        return (lambda i, now, prev: w.stamp(now)), "always"

    def _string_maker(self, f: FieldSpec) -> tuple[_Maker | None, str]:
        w = self.world
        lname = f.name.lower()
        limit = f.max_len or 24
        if "err" in lname or lname in ("corpaction", "legid"):
            return None, "static"  # error texts are empty when all is well
        if lname == "date":
            return (lambda i, now, prev: w.today[:limit]), "static"
        if lname == "time" or lname.endswith("minute"):
            return (lambda i, now, prev: w.stamp(now)[11:19][:limit]), "always"
        if "desc" in lname or lname == "name":
            return (lambda i, now, prev: w.symbols[self.t[i]].name[:limit]), "static"
        if "exch" in lname or lname == "marketcenter":
            return (lambda i, now, prev: _LISTING[w.symbols[self.t[i]].mic][0][:limit]), "static"
        if "curr" in lname:
            return (lambda i, now, prev: "USD"[:limit]), "static"
        return (lambda i, now, prev: w.symbols[self.t[i]].tk.replace(".", "")[:limit]), "static"

    def _int_maker(self, f: FieldSpec) -> tuple[_Maker | None, str]:
        w = self.world
        rng = self.rng
        lname = f.name.lower()
        top = _INT_MAX[f.type]
        if "timestamp" in lname and f.type == "long":
            if lname.startswith("net"):
                return (lambda i, now, prev: w.net(now)), "always"
            return (lambda i, now, prev: now), "always"
        if "err" in lname:
            return None, "static"  # error codes are 0, so left out, when all is well
        if "mask" in lname:
            return (lambda i, now, prev: (1 << int(rng.random() * 24)) & top), "sometimes"
        if lname.endswith("year"):
            year = int(w.today[:4])
            return (lambda i, now, prev: year), "static"
        if lname.endswith("month"):
            return (lambda i, now, prev: 1 + int(rng.random() * 12)), "static"
        if lname.endswith("day"):
            return (lambda i, now, prev: 1 + int(rng.random() * 28)), "static"
        if any(word in lname for word in _COUNTER_WORDS):
            cap = min(top, 2_000_000_000)
            start = min(cap // 2, 50 if top <= 255 else 10_000)

            def counter(i: int, now: int, prev: Any) -> int:
                if not isinstance(prev, int):
                    return 1 + int(rng.random() * start)
                return min(prev + 1 + int(rng.random() * 5), cap)

            return counter, "sometimes"
        if any(word in lname for word in _SIZE_WORDS):
            big = min(top, 500)
            return (lambda i, now, prev: 1 + int(rng.random() * big)), "sometimes"
        if lname.endswith("id") or "outstanding" in lname or "limit" in lname:
            big = min(top, 2_000_000_000)
            return (lambda i, now, prev: 1 + int(rng.random() * big)), "static"
        small = min(top, 100)
        return (lambda i, now, prev: 1 + int(rng.random() * small)), "static"

    def _float_maker(self, f: FieldSpec) -> tuple[_Maker | None, str]:
        w = self.world
        rng = self.rng
        name = f.name
        lname = name.lower()
        for word, fixed in _FIXED_FLOATS:
            if word in lname:
                return _const(fixed), "static"
        if any(word in lname for word in _SIZE_WORDS + _COUNTER_WORDS):
            return (lambda i, now, prev: float(1 + int(rng.random() * 500))), "sometimes"
        if lname in _GREEK_NAMES:
            self._needs_greeks = True
            greek = _GREEK_NAMES[lname]
            return (lambda i, now, prev: _r4(self._greeks.get(greek, 0.0))), "sometimes"
        if len(lname) == 4 and lname[:2] in ("up", "dn") and lname[2:].isdigit():
            # Scenario values (up50, dn08): the value change for a move of 5.0%, 0.8%...
            self._needs_greeks = True
            move = int(lname[2:]) / 1000 * (1 if lname[:2] == "up" else -1)

            def scenario(i: int, now: int, prev: Any) -> float:
                ds = w.mid(self.t[i]) * move
                g = self._greeks
                return _r4(g.get("de", 0.0) * ds + 0.5 * g.get("ga", 0.0) * ds * ds)

            return scenario, "sometimes"
        if "div" in lname:  # before the vol test: sdiv ends in "iv"
            return (lambda i, now, prev: _r4(rng.random() * 0.01)), "sometimes"
        if ("vol" in lname and "volume" not in lname) or lname.endswith("iv") or self.vol_type:

            def vol(i: int, now: int, prev: Any) -> float:
                te = self.te[i] if self.te[i] >= 0 else self.t[i] * w.n_exp
                return _r4(_clamp(w.atm[te] + (rng.random() - 0.5) * 0.02, _VOL_MIN, _VOL_MAX))

            return vol, "sometimes"
        if lname in ("years", "yrs"):

            def years(i: int, now: int, prev: Any) -> float:
                te = self.te[i] if self.te[i] >= 0 else self.t[i] * w.n_exp
                return max(_r4(w.years(te, now)), 0.0001)

            return years, "always"
        if "rate" in lname:
            return (lambda i, now, prev: _RATE), "static"
        if "prob" in lname:
            return (lambda i, now, prev: _r4(rng.random())), "sometimes"
        if "width" in lname or "off" in lname or lname.endswith("age"):
            return (lambda i, now, prev: _r4(0.001 + rng.random() * 0.05)), "sometimes"
        # uPrc, uBid, uClose (and LiveImpliedQuoteAdj's lower-case uprc) are underlier prices.
        underlier = (name[:1] == "u" and name[1:2].isupper()) or lname.startswith("uprc")
        if underlier or any(word in lname for word in _PRICE_WORDS):
            return self._price_maker(lname, underlier), "price"
        return (lambda i, now, prev: _r4((rng.random() - 0.5) * 2)), "sometimes"

    def _price_maker(self, lname: str, underlier: bool) -> _Maker:
        """A price near the key's reference, ordered: bids < plain < asks, lows < highs."""
        w = self.world
        rng = self.rng
        level = int(lname[-1]) if lname[-1].isdigit() else 1
        if "bid" in lname:
            side = -level
        elif "ask" in lname:
            side = level
        elif lname.startswith(("min", "low", "lo")) or "low" in lname:
            side = -5
        elif lname.startswith(("max", "high", "hi")) or "high" in lname:
            side = 5
        else:
            side = 0
        underlier = underlier or "fuprc" in lname or "strike" in lname

        def price(i: int, now: int, prev: Any) -> float:
            ref = w.mid(self.t[i]) if underlier else self._ref
            gap = max(0.01, ref * 0.001)
            value = ref + side * gap + (rng.random() - 0.5) * 0.2 * gap
            return max(_r2(value), 0.01)

        return price


_BOOKS: dict[str, type[_Book]] = {
    "StockBookQuote": _StockBookQuote,
    "StockPrint": _StockPrint,
    "OptionNbboQuote": _OptionNbboQuote,
    "LiveImpliedQuote": _LiveImpliedQuote,
    "LiveAtmVol": _LiveAtmVol,
    "TickerDefinition": _TickerDefinition,
}


# ---------------------------------------------------------------------------------------------


class Market:
    """A seeded cache of live-data objects over a small universe, and a stream of updates.

    Key counts per type: `tickers` for TickerKey types, `tickers * expiries` for ExpiryKey
    types and `tickers * expiries * strikes * 2` (calls and puts) for OptionKey types. Other
    primary-key fields (LiveSurfaceCurve's surfaceType, ...) take one value per type.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        seed: int = 7,
        msg_names: Sequence[str] = DEFAULT_TYPES,
        tickers: int = 12,
        expiries: int = 2,
        strikes: int = 4,
        delete_rate: float = 0.002,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        if min(tickers, expiries, strikes) < 1:
            raise ValueError("tickers, expiries and strikes must each be at least 1")
        if not 0.0 <= delete_rate <= 1.0:
            raise ValueError(f"delete_rate must be within 0..1, not {delete_rate}")
        specs: list[MessageSpec] = []
        for name in msg_names:
            spec = catalog.get(name)
            if spec is None:
                raise ValueError(f"unknown message type {name!r}")
            if spec not in specs:
                specs.append(spec)
        if not specs:
            raise ValueError("a market needs at least one message type")
        self._clock = clock
        self._rng = random.Random(seed)
        self._delete_rate = delete_rate
        now = clock()
        self._world = _World(
            catalog, self._rng, now, tickers=tickers, expiries=expiries, strikes=strikes
        )
        self._books: list[_Book] = []
        self._by_name: dict[str, _Book] = {}
        for spec in specs:
            cls = _BOOKS.get(spec.name)
            if cls is None or not cls.supports(spec, catalog):
                cls = _Generic
            book = cls(spec, self._world)
            book.fill(now)
            self._books.append(book)
            self._by_name[spec.name.lower()] = book
        self._cum = list(itertools.accumulate(b.weight for b in self._books))
        self._total = self._cum[-1]
        self._size = sum(b.n for b in self._books)

    def names(self) -> list[str]:
        """The message types this market makes, in catalog spelling."""
        return [b.spec.name for b in self._books]

    def objects(self, msg_name: str, *, include_deleted: bool = False) -> list[LiveObject]:
        """The current objects of a type, in key order; [] for other types.

        Deleted objects are left out unless `include_deleted` (then they hold only `pkey`).
        """
        book = self._by_name.get(msg_name.lower())
        if book is None:
            return []
        if include_deleted:
            return list(book.slots)
        return [obj for obj in book.slots if not obj.deleted]

    def get(self, msg_name: str, key: str) -> LiveObject | None:
        """The current object for a canonical key; None if deleted or never made."""
        book = self._by_name.get(msg_name.lower())
        if book is None:
            return None
        index = book.index.get(key)
        if index is None:
            return None
        obj = book.slots[index]
        return None if obj.deleted else obj

    def size(self) -> int:
        """Live objects across all types."""
        return self._size

    def step(self) -> LiveObject:
        """Apply one change and return the changed object (its own dict: serialize it now).

        A live object is updated, or with probability `delete_rate` deleted (then `deleted` is
        True and `message` holds only `pkey`); a deleted object is re-created. The version goes
        up by one each time.
        """
        now = self._clock()
        rng = self._rng
        book = self._books[bisect_right(self._cum, rng.random() * self._total)]
        i = int(rng.random() * book.n)
        obj = book.slots[i]
        obj.version += 1
        obj.src_ns = now
        if obj.deleted:
            obj.deleted = False
            obj.message = book.make(i, now)
            self._size += 1
        elif rng.random() < self._delete_rate:
            obj.deleted = True
            obj.message = {"pkey": book.pkeys[i]}
            self._size -= 1
        else:
            book.update(i, obj.message, now)
        return obj


if __name__ == "__main__":
    from bridge.mlink.catalog import default_catalog

    market = Market(default_catalog())
    n = 300_000
    started = time.perf_counter()
    for _ in range(n):
        market.step()
    elapsed = time.perf_counter() - started
    print(f"{n / elapsed:,.0f} steps/s over {n:,} steps, {market.size()} live objects")
