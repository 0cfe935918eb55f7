"""The Kafka key of a record, fast: `compile_key(spec)` -> function(pkey) -> canonical key string.

The result is always exactly `bridge.mlink.keys.canonical_key(spec, pkey)`. The compiled function
reads the common shapes (well-formed TickerKey/ExpiryKey/OptionKey structs, string and integer
key fields) with plain lookups and hands anything unusual to `canonical_key`, which either
returns the same string or raises KeyFormatError with its precise message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.mlink.catalog import FieldSpec, MessageSpec
from bridge.mlink.keys import CALL_PUT_CODES, canonical_key, format_strike, key_default

__all__ = ["KeyFunction", "compile_key"]

KeyFunction = Callable[[Any], str]

# Members of each key struct in canonical order (symbol first, as the canonical text reads).
_STRUCT_PARTS = {
    "TickerKey": ("tk", "ts", "at"),
    "ExpiryKey": ("tk", "ts", "at", "dt"),
    "OptionKey": ("tk", "ts", "at", "dt"),  # then strike and call/put, handled apart
}
_MAX_STRIKES = 65_536


class _StrikeText:
    """Strike -> canonical text, remembered: option chains repeat a few hundred strikes."""

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[float, str] = {}

    def __call__(self, strike: float) -> str:
        text = self._cache.get(strike)
        if text is None:
            text = format_strike(strike)
            if len(self._cache) >= _MAX_STRIKES:
                self._cache.clear()
            self._cache[strike] = text
        return text


def _struct_lines(index: int, spec: FieldSpec, parts: list[str]) -> list[str]:
    """Code that reads one security-key struct into local names, or falls back."""
    s = f"s{index}"
    lines = [f"    {s} = p[{spec.name!r}]"]
    for member in _STRUCT_PARTS[spec.type]:
        name = f"{s}_{member}"
        lines.append(f"    {name} = {s}[{member!r}]")
        lines.append(f"    if {name}.__class__ is not str or not {name}:")
        lines.append("        return SLOW(p)")
        parts.append("{" + name + "}")
    if spec.type == "OptionKey":
        lines.append(f"    {s}_xx = {s}.get('xx', 0)")
        lines.append(f"    if {s}_xx.__class__ is not float and {s}_xx.__class__ is not int:")
        lines.append("        return SLOW(p)")
        lines.append(f"    {s}_cp = CP.get({s}['cp'])")
        lines.append(f"    if {s}_cp is None:")
        lines.append("        return SLOW(p)")
        parts.append("{STRIKE(" + s + "_xx)}")
        parts.append("{" + s + "_cp}")
    return lines


def _plain_lines(index: int, spec: FieldSpec, parts: list[str]) -> list[str]:
    """Code for a key field that is not a struct: its text, or its default when omitted."""
    v = f"v{index}"
    default = key_default(spec)
    lines = [f"    {v} = p.get({spec.name!r})"]
    if default is None:
        lines += [f"    if {v} is None:", "        return SLOW(p)"]
    else:
        lines += [f"    if {v} is None:", f"        {v} = {default!r}"]
    lines += [
        f"    if {v}.__class__ is int:",
        f"        {v} = str({v})",
        f"    elif {v}.__class__ is not str:",
        "        return SLOW(p)",
    ]
    parts.append("{" + v + "}")
    return lines


def compile_key(spec: MessageSpec) -> KeyFunction:
    """A function pkey -> canonical key, equal to canonical_key(spec, pkey) for every input."""
    key_fields = spec.key_fields

    def slow(pkey: Any) -> str:
        return canonical_key(spec, pkey)

    if not key_fields:
        return slow
    lines = ["def key(p):", "  try:"]
    parts: list[str] = []
    for index, field in enumerate(key_fields):
        make = _struct_lines if field.is_security_key else _plain_lines
        lines += ["  " + line for line in make(index, field, parts)]
    joined = "-".join(parts)
    lines += [
        "  except (KeyError, TypeError, AttributeError):",
        "    return SLOW(p)",
        f"  k = f{joined!r}",
        "  return k if k else SLOW(p)",
    ]
    namespace: dict[str, Any] = {"SLOW": slow, "CP": dict(CALL_PUT_CODES), "STRIKE": _StrikeText()}
    exec(compile("\n".join(lines), f"<key {spec.name}>", "exec"), namespace)
    function: KeyFunction = namespace["key"]
    return function
