"""Security keys: MLink's JSON form <-> canonical strings.

    TickerKey {"at":"EQT","ts":"NMS","tk":"AAPL"}   <-> AAPL-NMS-EQT
    ExpiryKey  ... + "dt":"2024-09-20"               <-> AAPL-NMS-EQT-2024-09-20
    OptionKey  ... + "xx":580, "cp":"Call"           <-> MSFT-NMS-EQT-2024-09-20-580-C

Canonical strings are parsed from the right, so symbols may hold `-`, `#`, `_` or `.`.
A record's whole primary key (`message.pkey`) becomes one string by joining its fields
with `-` in the catalog's field order (`canonical_key`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bridge.errors import KeyFormatError
from bridge.mlink.catalog import FieldSpec, MessageSpec

CALL_PUT_CODES = {"Call": "C", "Put": "P", "Pair": "B"}
CALL_PUT_NAMES = {code: name for name, code in CALL_PUT_CODES.items()}

_TICKER_RE = re.compile(r"^(?P<tk>.+)-(?P<ts>[A-Za-z0-9]+)-(?P<at>[A-Za-z0-9]+)$")
_EXPIRY_RE = re.compile(
    r"^(?P<tk>.+)-(?P<ts>[A-Za-z0-9]+)-(?P<at>[A-Za-z0-9]+)-(?P<dt>\d{4}-\d{2}-\d{2})$"
)
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_OPTION_RE = re.compile(
    r"^(?P<tk>.+)-(?P<ts>[A-Za-z0-9]+)-(?P<at>[A-Za-z0-9]+)-(?P<dt>\d{4}-\d{2}-\d{2})"
    r"-(?P<xx>-?(?:\d+(?:\.\d*)?|\.\d+))-(?P<cp>[CPB])$"
)


def format_strike(strike: float) -> str:
    """Shortest decimal text that reads back as the same float: 580 -> '580', 22.5 -> '22.5'."""
    strike = float(strike)
    if strike.is_integer() and abs(strike) < 1e15:
        return str(int(strike))
    return format(Decimal(repr(strike)).normalize(), "f")


@dataclass(frozen=True, slots=True)
class TickerKey:
    at: str
    ts: str
    tk: str

    def canonical(self) -> str:
        return f"{self.tk}-{self.ts}-{self.at}"

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ts": self.ts, "tk": self.tk}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> TickerKey:
        return cls(_code(obj, "at"), _code(obj, "ts"), _symbol(obj))

    @classmethod
    def parse(cls, text: str) -> TickerKey:
        match = _TICKER_RE.fullmatch(text)
        if match is None:
            raise KeyFormatError(f"not a TickerKey (SYMBOL-TS-AT): {text!r}")
        return cls(match["at"], match["ts"], match["tk"])


@dataclass(frozen=True, slots=True)
class ExpiryKey:
    at: str
    ts: str
    tk: str
    dt: str

    def canonical(self) -> str:
        return f"{self.tk}-{self.ts}-{self.at}-{self.dt}"

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "ts": self.ts, "tk": self.tk, "dt": self.dt}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ExpiryKey:
        return cls(_code(obj, "at"), _code(obj, "ts"), _symbol(obj), _date(obj))

    @classmethod
    def parse(cls, text: str) -> ExpiryKey:
        match = _EXPIRY_RE.fullmatch(text)
        if match is None:
            raise KeyFormatError(f"not an ExpiryKey (SYMBOL-TS-AT-YYYY-MM-DD): {text!r}")
        return cls(match["at"], match["ts"], match["tk"], match["dt"])


@dataclass(frozen=True, slots=True)
class OptionKey:
    at: str
    ts: str
    tk: str
    dt: str
    xx: float
    cp: str  # Call | Put | Pair, as on the JSON wire

    def canonical(self) -> str:
        code = CALL_PUT_CODES.get(self.cp)
        if code is None:
            raise KeyFormatError(f"OptionKey cp must be Call, Put or Pair, not {self.cp!r}")
        return f"{self.tk}-{self.ts}-{self.at}-{self.dt}-{format_strike(self.xx)}-{code}"

    def to_json(self) -> dict[str, Any]:
        xx: float | int = int(self.xx) if float(self.xx).is_integer() else self.xx
        return {"at": self.at, "ts": self.ts, "tk": self.tk, "dt": self.dt, "xx": xx, "cp": self.cp}

    @property
    def expiry(self) -> ExpiryKey:
        return ExpiryKey(self.at, self.ts, self.tk, self.dt)

    @property
    def ticker(self) -> TickerKey:
        return TickerKey(self.at, self.ts, self.tk)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> OptionKey:
        xx = obj.get("xx", 0)
        if isinstance(xx, bool) or not isinstance(xx, int | float) or not math.isfinite(xx):
            raise KeyFormatError(f"OptionKey strike xx must be a finite number, not {xx!r}")
        cp = _text(obj, "cp")
        if cp not in CALL_PUT_CODES:
            raise KeyFormatError(f"OptionKey cp must be Call, Put or Pair, not {cp!r}")
        return cls(_code(obj, "at"), _code(obj, "ts"), _symbol(obj), _date(obj), float(xx), cp)

    @classmethod
    def parse(cls, text: str) -> OptionKey:
        match = _OPTION_RE.fullmatch(text)
        if match is None:
            raise KeyFormatError(f"not an OptionKey (SYMBOL-TS-AT-YYYY-MM-DD-STRIKE-C|P): {text!r}")
        return cls(
            match["at"],
            match["ts"],
            match["tk"],
            match["dt"],
            float(match["xx"]),
            CALL_PUT_NAMES[match["cp"]],
        )


SecurityKey = TickerKey | ExpiryKey | OptionKey
KEY_CLASSES: dict[str, type[TickerKey] | type[ExpiryKey] | type[OptionKey]] = {
    "TickerKey": TickerKey,
    "ExpiryKey": ExpiryKey,
    "OptionKey": OptionKey,
}


def _text(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise KeyFormatError(f"key field {name!r} missing or not a non-empty string")
    return value


def _code(obj: Mapping[str, Any], name: str) -> str:
    """Asset type / ticker source: letters and digits, so the canonical string parses back."""
    value = _text(obj, name)
    if not value.isascii() or not value.isalnum():
        raise KeyFormatError(f"key field {name!r} must be letters and digits, not {value!r}")
    return value


def _symbol(obj: Mapping[str, Any]) -> str:
    value = _text(obj, "tk")
    if any(c in value for c in "\r\n\t"):
        raise KeyFormatError(f"key field 'tk' holds a control character: {value!r}")
    return value


def _date(obj: Mapping[str, Any]) -> str:
    value = _text(obj, "dt")
    if not _DATE_RE.fullmatch(value):
        raise KeyFormatError(f"key field 'dt' must be YYYY-MM-DD, not {value!r}")
    return value


def security_key(type_name: str, obj: Any) -> SecurityKey:
    """Decode a TickerKey/ExpiryKey/OptionKey JSON object."""
    if not isinstance(obj, Mapping):
        raise KeyFormatError(f"{type_name} must be a JSON object, not {type(obj).__name__}")
    return KEY_CLASSES[type_name].from_json(obj)


def parse_security_key(type_name: str, text: str) -> SecurityKey:
    """Decode a canonical key string of the given type."""
    return KEY_CLASSES[type_name].parse(text)


def _component(spec: FieldSpec, value: Any) -> str:
    if spec.is_security_key:
        return security_key(spec.type, value).canonical()
    if value is None:
        raise KeyFormatError(f"primary-key field {spec.name!r} is missing")
    if isinstance(value, float):
        return format_strike(value)
    return str(value)


def key_default(spec: FieldSpec) -> Any:
    """The value MLink means when it omits a non-struct primary-key field."""
    if spec.type in ("enum", "flag"):
        return spec.default or "None"
    if spec.type in ("string", "DateTime", "DateKey", "TimeSpan"):
        return None
    return 0


def canonical_key(message: MessageSpec, pkey: Any) -> str:
    """The Kafka key for a record: its primary-key fields joined with `-` in schema order.

    Security-key structs are required; other key fields that MLink omitted take their default.
    Raises KeyFormatError when the key is missing or malformed; never returns an empty string.
    """
    if not isinstance(pkey, Mapping):
        raise KeyFormatError(f"{message.name}: message.pkey missing or not an object")
    parts = []
    for spec in message.key_fields:
        value = pkey.get(spec.name)
        if value is None and not spec.is_security_key:
            value = key_default(spec)
        if value is None:
            raise KeyFormatError(f"{message.name}: primary-key field {spec.name!r} is missing")
        parts.append(_component(spec, value))
    key = "-".join(parts)
    if not key:
        raise KeyFormatError(f"{message.name}: empty primary key")
    return key
