"""MLink's `where` and `view` clauses, compiled once into fast functions over wire messages.

A where clause is comparisons `field:op:value` joined by `&` (AND) and `|` (OR), AND binding
tighter, with parentheses to group:

    ticker.tk:eq:AAPL & ticker.at:eq:EQT
    (bidsize1:eq:1&asksize1:eq:1)|(bidsize1:eq:10&asksize1:eq:1)

Ops (any case): eq ne gt ge lt le, sw (starts with), ew (ends with), cv (contains), nv (does
not contain). Field names ignore case; `ticker.tk`, `okey.xx`, `ekey.dt`... address parts of
security keys, and a bare key name (`okey`) compares the key's canonical string. A message with
an OptionKey or ExpiryKey primary key but no `ticker` field answers `ticker` from that key, and
an OptionKey message answers `ekey` likewise. Numeric fields compare as numbers, everything else
as text ignoring case. MLink omits fields holding their default, so a missing field compares as
its default (0, "", or the enum's name for 0).

`compile_where` returns a predicate over the message body (`{"pkey": {...}, "bidPrice1": ...}`);
`compile_view` returns a projection that keeps `pkey` and only the listed fields.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.mlink.catalog import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    Catalog,
    FieldSpec,
    MessageSpec,
    default_catalog,
)
from bridge.mlink.keys import CALL_PUT_CODES, CALL_PUT_NAMES, format_strike

Message = Mapping[str, Any]
Predicate = Callable[[Message], bool]
Projection = Callable[[Message], dict[str, Any]]

__all__ = ["OPS", "Predicate", "Projection", "WhereError", "compile_view", "compile_where"]

_ORDER_OPS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES

# Parts of each security-key struct and whether the part is a number (only the strike is).
_KEY_PARTS: dict[str, dict[str, bool]] = {
    "TickerKey": {"at": False, "ts": False, "tk": False},
    "ExpiryKey": {"at": False, "ts": False, "tk": False, "dt": False},
    "OptionKey": {"at": False, "ts": False, "tk": False, "dt": False, "xx": True, "cp": False},
}

# REST examples URL-encode the operators; accept those spellings anywhere a token may start.
_ENCODED = {"%26": "&", "%7c": "|"}
_PUNCTUATION = frozenset("()&|")


class WhereError(ValueError):
    """A where or view clause that cannot be compiled; says what is wrong and where."""

    def __init__(
        self, message: str, *, position: int | None = None, token: str | None = None
    ) -> None:
        super().__init__(message)
        self.position = position
        self.token = token


def _error(problem: str, text: str, position: int, token: str) -> WhereError:
    return WhereError(
        f"{problem} at position {position} ({token!r}) in where clause {text!r}",
        position=position,
        token=token,
    )


# --------------------------------------------------------------------------------------------
# Tokens and parsing


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "(", ")", "&", "|", or "cmp" for a field:op:value comparison
    text: str
    position: int


def _encoded_at(text: str, i: int) -> str | None:
    return _ENCODED.get(text[i : i + 3].lower()) if text.startswith("%", i) else None


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in _PUNCTUATION:
            tokens.append(_Token(char, char, i))
            i += 1
        elif (encoded := _encoded_at(text, i)) is not None:
            tokens.append(_Token(encoded, text[i : i + 3], i))
            i += 3
        else:
            # A comparison runs to the next operator or parenthesis. Inner spaces stay part of
            # the value (`description:eq:Apple Inc`); trailing ones are layout.
            start = i
            while i < n and text[i] not in _PUNCTUATION and _encoded_at(text, i) is None:
                i += 1
            tokens.append(_Token("cmp", text[start:i].rstrip(), start))
    return tokens


class _Parser:
    """Recursive descent: or := and ('|' and)* ; and := atom ('&' atom)* ; atom := cmp | (or)."""

    def __init__(self, text: str, compile_comparison: Callable[[_Token], Predicate]) -> None:
        self._text = text
        self._tokens = _tokenize(text)
        self._index = 0
        self._compile_comparison = compile_comparison

    def parse(self) -> Predicate:
        if not self._tokens:
            raise WhereError(f"empty where clause {self._text!r}", position=0, token="")
        self._check_parentheses()
        predicate = self._or()
        token = self._peek()
        if token is not None:
            raise _error("expected '&' or '|'", self._text, token.position, token.text)
        return predicate

    def _check_parentheses(self) -> None:
        # Checked before anything compiles, so `(a:eq:1` reports the parenthesis rather than
        # whatever the descent trips over first.
        opened: list[_Token] = []
        for token in self._tokens:
            if token.kind == "(":
                opened.append(token)
            elif token.kind == ")":
                if not opened:
                    raise _error("unbalanced ')'", self._text, token.position, token.text)
                opened.pop()
        if opened:
            raise _error("unbalanced '('", self._text, opened[-1].position, opened[-1].text)

    def _peek(self) -> _Token | None:
        return self._tokens[self._index] if self._index < len(self._tokens) else None

    def _or(self) -> Predicate:
        terms = [self._and()]
        while (token := self._peek()) is not None and token.kind == "|":
            self._index += 1
            terms.append(self._and())
        return _any(terms)

    def _and(self) -> Predicate:
        factors = [self._atom()]
        while (token := self._peek()) is not None and token.kind == "&":
            self._index += 1
            factors.append(self._atom())
        return _all(factors)

    def _atom(self) -> Predicate:
        token = self._peek()
        if token is None:
            end = len(self._text)
            raise _error("expected a comparison, found the end", self._text, end, "")
        self._index += 1
        if token.kind == "cmp":
            return self._compile_comparison(token)
        if token.kind == "(":
            inner = self._or()
            close = self._peek()
            if close is None or close.kind != ")":
                # Parentheses balance, so what stands here is a stray token, not a missing ')'.
                found = close or token
                raise _error("expected '&', '|' or ')'", self._text, found.position, found.text)
            self._index += 1
            return inner
        if token.kind == ")":
            raise _error("expected a comparison before ')'", self._text, token.position, ")")
        raise _error(
            f"expected a comparison before {token.text!r}", self._text, token.position, token.text
        )


def _all(predicates: list[Predicate]) -> Predicate:
    # One and two operands (by far the common case) get straight-line closures: the predicate
    # runs per record per subscriber, and a generator costs noticeably more than two calls.
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates

        def both(message: Message) -> bool:
            return first(message) and second(message)

        return both
    chain = tuple(predicates)

    def every(message: Message) -> bool:
        return all(predicate(message) for predicate in chain)

    return every


def _any(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates

        def either(message: Message) -> bool:
            return first(message) or second(message)

        return either
    chain = tuple(predicates)

    def some(message: Message) -> bool:
        return any(predicate(message) for predicate in chain)

    return some


# --------------------------------------------------------------------------------------------
# Field resolution: a where-clause name -> a function reading that value from a message


@dataclass(frozen=True, slots=True)
class _Target:
    """What a field name denotes: a plain field, a key struct, or one part of a key struct."""

    getter: Callable[[Message], Any]  # raw wire value, or None when omitted
    kind: str  # "number", "text", "enum" or "key"
    default: Any
    key_type: str | None = None  # for "key": TickerKey | ExpiryKey | OptionKey
    part: str | None = None  # the key part name, for parts (cp needs special values)
    enum_numbers: Mapping[str, int] | None = None  # lower-case name -> number, for "enum"


def _field_map(spec: MessageSpec) -> dict[str, FieldSpec]:
    # The first field of a name wins: a few messages repeat a name in a repeated group after
    # the primary key (ProductDefinitionV2.secKey), and the key is what a clause means.
    fields: dict[str, FieldSpec] = {}
    for field in spec.fields:
        fields.setdefault(field.name.lower(), field)
    return fields


def _struct_getter(field: FieldSpec) -> Callable[[Message], Any]:
    name = field.name
    if not field.key:
        return lambda message: message.get(name)

    def from_pkey(message: Message) -> Any:
        pkey = message.get("pkey")
        if pkey is not None:
            value = pkey.get(name)
            if value is not None:
                return value
        return message.get(name)

    return from_pkey


def _derived_source(spec: MessageSpec, base: str) -> FieldSpec | None:
    """The primary-key struct that answers `ticker` or `ekey` when the message lacks one."""
    wanted = {"ticker": ("ExpiryKey", "OptionKey"), "ekey": ("OptionKey",)}.get(base)
    if wanted is None:
        return None
    return next((f for f in spec.key_fields if f.type in wanted), None)


def _resolve(name: str, spec: MessageSpec, catalog: Catalog) -> _Target | str:
    """The target a name denotes, or a sentence saying why it denotes nothing."""
    fields = _field_map(spec)
    base, dot, part = name.lower().partition(".")
    field = fields.get(base)
    key_type: str | None
    if field is not None:
        key_type = field.type if field.is_security_key else None
        if not dot:
            return _plain_target(field, catalog)
        if key_type is None:
            return f"{field.name} is a {field.type}, not a key with parts"
    else:
        source = _derived_source(spec, base)
        if source is None:
            return f"{spec.name} has no field {name!r}"
        field = source
        key_type = "TickerKey" if base == "ticker" else "ExpiryKey"
        if not dot:
            return _Target(_struct_getter(field), "key", "", key_type=key_type)
    parts = _KEY_PARTS[key_type]
    if part not in parts:
        return f"{key_type} has no part {part!r} (parts: {', '.join(parts)})"
    struct = _struct_getter(field)
    default: Any = 0 if parts[part] else ""

    def key_part(message: Message) -> Any:
        value = struct(message)
        return None if value is None else value.get(part)

    return _Target(key_part, "number" if parts[part] else "text", default, part=part)


def _plain_target(field: FieldSpec, catalog: Catalog) -> _Target:
    getter = _struct_getter(field)
    if field.is_security_key:
        return _Target(getter, "key", "", key_type=field.type)
    if field.type in _NUMERIC_TYPES:
        return _Target(getter, "number", 0)
    if field.type in ("enum", "flag"):
        enum = catalog.enums.get(field.enum) if field.enum else None
        default = field.default or (enum.default if enum is not None else "None")
        if field.type == "enum" and enum is not None:
            numbers = {name.lower(): number for number, name in enum.names.items()}
            return _Target(getter, "enum", default, enum_numbers=numbers)
        return _Target(getter, "text", default)
    # string, DateTime, DateKey, TimeSpan: text whose natural order is also its text order.
    return _Target(getter, "text", "")


# --------------------------------------------------------------------------------------------
# Comparisons


def _number_text(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return format_strike(value)
    return str(value).lower()


def _canonical(key_type: str, struct: Any) -> str:
    """A key struct's canonical string, lower-cased; lenient, since omitted parts are defaults."""
    if not isinstance(struct, Mapping):
        return ""
    text = f"{struct.get('tk', '')}-{struct.get('ts', '')}-{struct.get('at', '')}"
    if key_type != "TickerKey":
        text += f"-{struct.get('dt', '')}"
    if key_type == "OptionKey":
        strike = struct.get("xx", 0)
        cp = struct.get("cp", "")
        text += f"-{_number_text(float(strike))}-{CALL_PUT_CODES.get(cp, cp)}"
    return text.lower()


def _does_not_contain(value: str, wanted: str) -> bool:
    return wanted not in value


# Every op as a two-argument function (message value, clause value). The text ops only ever
# see strings: numbers are turned into their wire text before sw/ew/cv/nv.
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
    "sw": str.startswith,
    "ew": str.endswith,
    "cv": operator.contains,
    "nv": _does_not_contain,
}
OPS = frozenset(_COMPARE)


def _parse_number(value: str) -> int | float | None:
    # Integers stay exact: nanosecond timestamps (long) do not survive a trip through float.
    try:
        return int(value)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _accessor(target: _Target, as_text: bool) -> Callable[[Message], Any]:
    """Read the value to compare: defaults applied, text lower-cased, keys made canonical."""
    getter, default = target.getter, target.default
    if target.kind == "key":
        key_type = target.key_type or "TickerKey"
        return lambda message: _canonical(key_type, getter(message))
    if target.kind == "number":
        if as_text:
            default_text = _number_text(default)

            def number_text(message: Message) -> str:
                value = getter(message)
                return default_text if value is None else _number_text(value)

            return number_text

        def number(message: Message) -> Any:
            value = getter(message)
            return default if value is None else value

        return number
    default_lower = str(default).lower()

    def text(message: Message) -> str:
        value = getter(message)
        return default_lower if value is None else str(value).lower()

    return text


def _compile_comparison(token: _Token, text: str, spec: MessageSpec, catalog: Catalog) -> Predicate:
    pieces = token.text.split(":", 2)
    if len(pieces) != 3:
        raise _error("expected field:op:value", text, token.position, token.text)
    name, op, value = pieces[0].strip(), pieces[1].strip().lower(), pieces[2].strip()
    if not name:
        raise _error("missing field name", text, token.position, token.text)
    target = _resolve(name, spec, catalog)
    if isinstance(target, str):
        raise _error(f"unknown field: {target}", text, token.position, name)
    if op not in OPS:
        known = " ".join(sorted(OPS))
        raise _error(f"unknown op {op!r} (ops: {known})", text, token.position, token.text)

    if target.kind == "number" and op in _ORDER_OPS:
        number = _parse_number(value)
        if number is None:
            problem = f"{name} is numeric but {value!r} is not a number"
            raise _error(problem, text, token.position, token.text)
        return _bind(_accessor(target, as_text=False), _COMPARE[op], number)

    if target.kind == "enum" and op in _ORDER_OPS - {"eq", "ne"}:
        # Enums order by number, as MLink's typed fields do; names alone would sort A-Z.
        return _enum_order(target, op, value, text, token)

    wanted = value.lower()
    if target.key_type == "OptionKey":
        wanted = _normalize_strike(wanted)
    elif target.kind == "enum" and target.enum_numbers is not None and op in ("eq", "ne"):
        wanted = _enum_name(target.enum_numbers, value) or wanted
    elif target.part == "cp" and value.upper() in CALL_PUT_NAMES:
        # Canonical keys spell the side C/P/B while the JSON says Call/Put/Pair: take both.
        wanted = CALL_PUT_NAMES[value.upper()].lower()
    return _bind(_accessor(target, as_text=True), _COMPARE[op], wanted)


def _normalize_strike(option_key: str) -> str:
    """Write an OptionKey's strike as canonical keys do, so `...-580.0-c` finds `...-580-c`."""
    head, dash, rest = option_key.rpartition("-")
    body, dash2, strike = head.rpartition("-")
    number = _parse_number(strike) if dash and dash2 else None
    if number is None:
        return option_key  # a partial key, fine for sw/ew/cv/nv; eq simply never matches
    return f"{body}-{_number_text(float(number))}-{rest}"


def _enum_name(numbers: Mapping[str, int], value: str) -> str | None:
    """A number given for an enum (`updateType:eq:1`) means the name MLink sends for it."""
    number = _parse_number(value)
    if not isinstance(number, int):
        return None
    return next((name for name, n in numbers.items() if n == number), None)


def _enum_order(target: _Target, op: str, value: str, text: str, token: _Token) -> Predicate:
    numbers = target.enum_numbers or {}
    wanted = numbers.get(value.lower())
    if wanted is None:
        parsed = _parse_number(value)
        if not isinstance(parsed, int):
            problem = f"{value!r} is not a value of this enum"
            raise _error(problem, text, token.position, token.text)
        wanted = parsed
    read = _accessor(target, as_text=True)

    def ordinal(message: Message) -> int:
        # A name the catalog does not know sorts below everything rather than failing a stream.
        return numbers.get(read(message), -1)

    return _bind(ordinal, _COMPARE[op], wanted)


def _bind(
    read: Callable[[Message], Any], compare: Callable[[Any, Any], bool], wanted: Any
) -> Predicate:
    def predicate(message: Message) -> bool:
        return compare(read(message), wanted)

    return predicate


# --------------------------------------------------------------------------------------------
# Public API


def compile_where(text: str, spec: MessageSpec, *, catalog: Catalog | None = None) -> Predicate:
    """Compile a where clause for one message type into a predicate over message bodies.

    `catalog` supplies enum defaults and numbers; the packaged catalog when omitted.
    Raises WhereError naming the problem and its position.
    """
    resolved = catalog if catalog is not None else default_catalog()
    return _Parser(text, lambda token: _compile_comparison(token, text, spec, resolved)).parse()


def compile_view(text: str, spec: MessageSpec) -> Projection:
    """Compile a view (field names split by `|`, `,` or spaces) into a projection.

    The projection keeps `pkey` and those listed fields present in the message, spelled and
    ordered as the catalog has them; omitted fields stay omitted, as MLink sends them.
    """
    fields = _field_map(spec)
    chosen: set[str] = set()
    for word in text.replace("|", " ").replace(",", " ").split():
        field = fields.get(word.lower())
        if field is None:
            raise WhereError(f"{spec.name} has no field {word!r} in view {text!r}", token=word)
        chosen.add(field.name)
    if not chosen:
        raise WhereError(f"view {text!r} names no fields", token=text)
    names = tuple(dict.fromkeys(f.name for f in spec.fields if f.name in chosen))

    def project(message: Message) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "pkey" in message:
            out["pkey"] = message["pkey"]
        for name in names:
            if name in message:
                out[name] = message[name]
        return out

    return project
