"""The Kafka key of a record, fast: `compile_key(spec)` -> function(pkey) -> canonical key string.

The result is always exactly `bridge.mlink.keys.canonical_key(spec, pkey)`, including its
errors (KeyFormatError). canonical_key checks each part of a security key on its own (asset type
and ticker source are codes, the symbol has no control characters, the date is YYYY-MM-DD, the
strike is a finite number, call/put is known), so the compiled function remembers the parts it
has already seen pass (a few hundred symbols, dates and strikes cover a whole stream) and joins
them with plain lookups. Anything it has not seen yet goes through canonical_key, whose success
adds the parts to what is remembered, and whose failure is the caller's error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.mlink.catalog import FieldSpec, MessageSpec
from bridge.mlink.keys import CALL_PUT_CODES, canonical_key, format_strike, key_default

__all__ = ["KeyFunction", "compile_key"]

KeyFunction = Callable[[Any], str]

# Which remembered set vouches for each struct member; strike and call/put are handled apart.
_MEMBER_SETS = {"at": "CODES", "ts": "CODES", "tk": "SYMBOLS", "dt": "DATES"}
_STRUCT_MEMBERS = {
    "TickerKey": ("tk", "ts", "at"),  # in the order the canonical text shows them
    "ExpiryKey": ("tk", "ts", "at", "dt"),
    "OptionKey": ("tk", "ts", "at", "dt"),
}
_MAX_REMEMBERED = 65_536


class _Accepted:
    """Key parts canonical_key has accepted, per kind; bounded (emptied when full)."""

    __slots__ = ("codes", "dates", "strikes", "symbols")

    def __init__(self) -> None:
        self.codes: set[str] = set()
        self.symbols: set[str] = set()
        self.dates: set[str] = set()
        self.strikes: dict[float, str] = {}

    def learn(self, spec: MessageSpec, pkey: Any) -> str:
        """canonical_key(spec, pkey), remembering the parts of a key it accepts."""
        key = canonical_key(spec, pkey)
        for field in spec.key_fields:
            if not field.is_security_key:
                continue
            struct = pkey[field.name]
            self._add(self.codes, struct["at"])
            self._add(self.codes, struct["ts"])
            self._add(self.symbols, struct["tk"])
            if field.type != "TickerKey":
                self._add(self.dates, struct["dt"])
            if field.type == "OptionKey":
                strike = struct.get("xx", 0)
                if len(self.strikes) >= _MAX_REMEMBERED:
                    self.strikes.clear()
                self.strikes[strike] = format_strike(strike)
        return key

    @staticmethod
    def _add(accepted: set[str], part: str) -> None:
        if len(accepted) >= _MAX_REMEMBERED:
            accepted.clear()
        accepted.add(part)


def _struct_lines(index: int, spec: FieldSpec, parts: list[str]) -> list[str]:
    """Code that reads one security-key struct, or falls back unless every part is known."""
    s = f"s{index}"
    lines = [f"s{index} = p[{spec.name!r}]"]
    known = []
    for member in _STRUCT_MEMBERS[spec.type]:
        name = f"{s}_{member}"
        lines.append(f"{name} = {s}[{member!r}]")
        known.append(f"{name} in {_MEMBER_SETS[member]}")
        parts.append("{" + name + "}")
    if spec.type == "OptionKey":
        lines += [
            f"{s}_xx = {s}.get('xx', 0)",
            f"{s}_strike = STRIKES.get({s}_xx)",
            f"{s}_cp = CP.get({s}['cp'])",
        ]
        # True and False would find the strikes 1 and 0; canonical_key refuses bools.
        known += [f"{s}_strike is not None", f"{s}_cp is not None", f"{s}_xx.__class__ is not bool"]
        parts += ["{" + s + "_strike}", "{" + s + "_cp}"]
    lines.append(f"if not ({' and '.join(known)}):")
    lines.append("    return LEARN(p)")
    return lines


def _plain_lines(index: int, spec: FieldSpec, parts: list[str]) -> list[str]:
    """Code for a key field that is not a struct: its text, or its default when omitted."""
    v = f"v{index}"
    default = key_default(spec)
    lines = [f"{v} = p.get({spec.name!r})", f"if {v} is None:"]
    lines.append("    return LEARN(p)" if default is None else f"    {v} = {default!r}")
    lines += [
        f"if {v}.__class__ is int:",
        f"    {v} = str({v})",
        f"elif {v}.__class__ is not str:",
        "    return LEARN(p)",  # floats, bools and the rest: canonical_key decides
    ]
    parts.append("{" + v + "}")
    return lines


def compile_key(spec: MessageSpec) -> KeyFunction:
    """A function pkey -> canonical key, equal to canonical_key(spec, pkey) for every input."""
    accepted = _Accepted()

    def learn(pkey: Any) -> str:
        return accepted.learn(spec, pkey)

    key_fields = spec.key_fields
    if not key_fields:
        return learn
    body: list[str] = []
    parts: list[str] = []
    for index, field in enumerate(key_fields):
        make = _struct_lines if field.is_security_key else _plain_lines
        body += make(index, field, parts)
    lines = ["def key(p):", "    try:"]
    lines += ["        " + line for line in body]
    lines += [
        "    except (KeyError, TypeError, AttributeError):",  # not a dict, missing, unhashable
        "        return LEARN(p)",
        f"    k = f{'-'.join(parts)!r}",
        "    return k if k else LEARN(p)",
    ]
    namespace: dict[str, Any] = {
        "LEARN": learn,
        "CP": dict(CALL_PUT_CODES),
        "CODES": accepted.codes,
        "SYMBOLS": accepted.symbols,
        "DATES": accepted.dates,
        "STRIKES": accepted.strikes,
    }
    exec(compile("\n".join(lines), f"<key {spec.name}>", "exec"), namespace)
    function: KeyFunction = namespace["key"]
    return function
