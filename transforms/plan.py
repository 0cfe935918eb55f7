"""Record plans: one MLink message type + subscription options -> a fast record normalizer.

`compile_plan(spec, options, catalog)` checks the options against the catalog once and compiles
a `RecordPlan`. `RecordPlan.apply(message)` then turns one wire body into a `NormalizedRecord`:

- `key`: the canonical primary-key string (`bridge.mlink.keys.canonical_key`), never empty;
  a missing or malformed key raises KeyFormatError (the caller dead-letters the record).
- `value`: the dict for the Avro encoder. `pkey` is the nested key record; DateTime text becomes
  int ns since the epoch (UTC); JSON integers in float fields become floats; enums stay the
  names MLink's JSON uses. Fields MLink omitted are left out and a JSON null is passed on: the
  encoder writes the field's default for both. Only fields in the view, minus dropped ones,
  appear, under their renamed names. A value of the wrong JSON type is passed on unchanged so
  that the encoder refuses it with one clear error (SchemaMismatch) naming the field.
- `src_ns`: the record's source time in ns (`srcTimestamp`, `prtTimestamp`, ...: the first
  `long` field whose name ends in `Timestamp`) when present, else None.
- `unknown`: the wire fields the catalog does not know (name -> value), for schema evolution;
  empty (and shared) in the usual case.

`RecordPlan.output_fields` describes the value exactly (output name, wire name, FieldSpec,
default), so the Avro schema is generated from the same plan. A plan is immutable;
`with_extra_fields(unknown)` returns a plan that also carries newly seen wire fields.

Dicts inside the value that need no conversion (the wire `pkey`, security-key structs) are the
message's own objects, shared rather than copied: treat the value as read-only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple

from bridge.errors import BridgeError
from bridge.mlink.catalog import (
    FLOAT_TYPES,
    INTEGER_TYPES,
    KEY_TYPES,
    Catalog,
    EnumSpec,
    FieldSpec,
    MessageSpec,
)
from transforms.record_key import compile_key
from transforms.timestamps import DateTimeParser

__all__ = [
    "INFERRED_KINDS",
    "NormalizedRecord",
    "OutputField",
    "RecordPlan",
    "TransformError",
    "TransformOptions",
    "compile_plan",
    "infer_kind",
]

# Kinds of fields learned from the wire (FieldSpec.type of an inferred OutputField).
INFERRED_KINDS = frozenset({"boolean", "long", "double", "string", "json"})
STRING_TYPES = frozenset({"string", "DateKey", "TimeSpan"})
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMPTY: Mapping[str, Any] = MappingProxyType({})
_MISSING: Any = object()


class TransformError(BridgeError):
    """Options that do not fit the catalog, or a record value the plan cannot convert."""


@dataclass(frozen=True, slots=True)
class TransformOptions:
    """What a subscription asks for: `view` keeps only the named value fields (the primary key
    always stays), `rename` maps wire names to output names, `drop` removes fields.

    Names are matched without regard to case, as MLink's own view clause does."""

    view: tuple[str, ...] = ()
    rename: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    drop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists and plain dicts, but keep the object immutable and hashable.
        object.__setattr__(self, "view", tuple(self.view))
        object.__setattr__(self, "drop", tuple(self.drop))
        object.__setattr__(self, "rename", MappingProxyType(dict(self.rename)))

    def __hash__(self) -> int:
        return hash((self.view, tuple(sorted(self.rename.items())), self.drop))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TransformOptions):
            return NotImplemented
        return (self.view, dict(self.rename), self.drop) == (
            other.view,
            dict(other.rename),
            other.drop,
        )


@dataclass(frozen=True, slots=True)
class OutputField:
    """One field of the normalized value.

    `spec` is the catalog's FieldSpec; for a field learned from the wire (`inferred`) it is a
    synthetic one whose type is one of INFERRED_KINDS. `default` is what an omitted field means,
    in normalized form (0.0, 0, "", the enum's default name, None, []). `members` describes the
    entries of a repeated group.
    """

    name: str
    source: str
    spec: FieldSpec
    default: Any
    members: tuple[OutputField, ...] = ()
    inferred: bool = False


class NormalizedRecord(NamedTuple):
    """One record ready for the encoder: Kafka key, Avro value, source time, unknown fields."""

    key: str
    value: dict[str, Any]
    src_ns: int | None
    unknown: Mapping[str, Any]


def infer_kind(value: Any) -> str | None:
    """The kind of a wire value never seen before; None when it says nothing (JSON null)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "long"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict | list):
        return "json"
    return None


def compact_json(value: Any) -> str:
    """Compact JSON text for a nested wire value stored in a string field."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TransformError(f"value cannot be stored as JSON text: {exc}") from None


def _enum_default(spec: FieldSpec, catalog: Catalog) -> str:
    if spec.default:
        return spec.default
    enum: EnumSpec | None = catalog.enums.get(spec.enum or "")
    return enum.default if enum is not None else "None"


def field_default(spec: FieldSpec, catalog: Catalog) -> Any:
    """What MLink means when it leaves a field out, in normalized form."""
    kind = spec.type
    if kind in FLOAT_TYPES:
        return 0.0
    if kind in INTEGER_TYPES or kind == "DateTime":
        return 0
    if kind in ("enum", "flag"):
        return _enum_default(spec, catalog)
    if kind in STRING_TYPES:
        return ""
    if kind in KEY_TYPES:
        return None
    if kind == "group":
        return []
    raise TransformError(f"field {spec.name!r} has a type the bridge cannot map: {kind!r}")


class _Group:
    """Converts a repeated group's entries (groups are rare, so no code generation): floats
    and DateTime text as in the top level, in copies of the entries."""

    def __init__(self, members: tuple[OutputField, ...], parse: DateTimeParser) -> None:
        self._parse = parse
        self._floats = tuple(m.source for m in members if m.spec.type in FLOAT_TYPES)
        self._datetimes = tuple(m.source for m in members if m.spec.type == "DateTime")

    def __call__(self, entries: Any, path: str) -> Any:
        if entries.__class__ is not list:
            return entries  # the encoder refuses it, naming the field
        out: list[Any] = []
        for entry in entries:
            if entry.__class__ is not dict:
                out.append(entry)  # the encoder refuses it
                continue
            converted = dict(entry)
            for name in self._floats:
                x = converted.get(name)
                if x.__class__ is int:
                    converted[name] = float(x)
            for name in self._datetimes:
                x = converted.get(name)
                if x.__class__ is str:
                    converted[name] = _parse_datetime(self._parse, x, f"{path}.{name}")
            out.append(converted)
        return out


def _parse_datetime(parse: DateTimeParser, text: str, path: str) -> int:
    try:
        return parse(text)
    except ValueError as exc:
        raise TransformError(f"{path}: {exc}") from None


class _Codegen:
    """Writes the source of a plan's `apply` function; helpers go into `namespace`."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.namespace: dict[str, Any] = {}

    def constant(self, prefix: str, value: Any) -> str:
        name = f"{prefix}{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)


def _widened(out: OutputField) -> OutputField:
    """An inferred long field as double; any other field as it is."""
    if out.spec.type != "long":
        return out
    return replace(out, spec=replace(out.spec, type="double"))


def _unknown_of(known: frozenset[str]) -> Callable[[Mapping[str, Any]], Mapping[str, Any]]:
    def unknown(message: Mapping[str, Any]) -> Mapping[str, Any]:
        return {name: message[name] for name in message if name not in known}

    return unknown


class RecordPlan:
    """A compiled normalizer for one message type and one set of options. Immutable.

    `apply(message) -> NormalizedRecord` normalizes one wire body (the `message` of a data
    record; see the module docstring). It is the generated function itself, not a method that
    calls it, to save a call per record; `source` holds its text.
    """

    apply: Callable[[Mapping[str, Any]], NormalizedRecord]

    def __init__(
        self,
        spec: MessageSpec,
        options: TransformOptions,
        catalog: Catalog,
        key_fields: tuple[OutputField, ...],
        output_fields: tuple[OutputField, ...],
        *,
        ignored: frozenset[str] = frozenset(),
    ) -> None:
        self.spec = spec
        self.options = options
        self.catalog = catalog
        self.key_fields = key_fields
        self.output_fields = output_fields
        self.ignored = ignored  # wire names seen, but not representable: never reported again
        self.src_field = next(
            (f.name for f in spec.fields if f.type == "long" and f.name.endswith("Timestamp")),
            None,
        )
        # Top-level wire names the plan knows; key fields live inside pkey, so not among them.
        self.known = frozenset(
            {"pkey", *(f.name for f in spec.value_fields), *(f.source for f in output_fields)}
            | ignored
        )
        self._key = compile_key(spec)
        self.datetime_parser = DateTimeParser()  # MLink DateTime text -> int ns, as apply does
        self.source, self.apply = self._compile()

    def key_of(self, message: Mapping[str, Any]) -> str:
        """Only the canonical key, e.g. for a deleted object's tombstone."""
        return self._key(message.get("pkey"))

    # --- evolution

    @property
    def extra_fields(self) -> tuple[OutputField, ...]:
        return tuple(f for f in self.output_fields if f.inferred)

    def with_extra_fields(self, unknown: Mapping[str, Any]) -> RecordPlan:
        """A plan that also outputs the given wire fields, typed by their values (infer_kind).

        Names are added in sorted order so that every instance seeing the same fields builds
        the same plan. A JSON null tells nothing about a field's type: such fields stay unknown
        until a value arrives. Names that cannot be field names (`a-b`), or that clash with an
        output name, are ignored from then on; so is every new field when the options have a
        view, which asks for the named fields only.
        """
        taken = {f.name for f in self.output_fields} | {"pkey"}
        added: list[OutputField] = []
        ignored = set(self.ignored)
        outputs = self.output_fields
        for name in sorted(unknown):
            if name in self.known:
                # A field learnt as long from a whole number, now with a fraction: MLink writes
                # whole doubles without ".0". It widens to double (Avro promotes long to double,
                # so the new version stays backward compatible).
                if infer_kind(unknown[name]) == "double":
                    outputs = tuple(
                        _widened(f) if f.inferred and f.source == name else f for f in outputs
                    )
                continue
            if self.options.view:
                ignored.add(name)
                continue
            kind = infer_kind(unknown[name])
            if kind is None:
                continue
            if not _NAME.match(name) or name in taken:
                ignored.add(name)
                continue
            taken.add(name)
            added.append(OutputField(name, name, FieldSpec(name, 0, kind), None, inferred=True))
        if not added and ignored == self.ignored and outputs == self.output_fields:
            return self
        return RecordPlan(
            self.spec,
            self.options,
            self.catalog,
            self.key_fields,
            outputs + tuple(added),
            ignored=frozenset(ignored),
        )

    # --- compilation

    def _compile(self) -> tuple[str, Callable[[Mapping[str, Any]], NormalizedRecord]]:
        """Generate `apply`: gather the output fields, then convert only what needs it."""
        parse = self.datetime_parser
        gen = _Codegen()
        gen.namespace.update(
            KEY=self._key,
            KNOWN=self.known,
            EMPTY=_EMPTY,
            MISSING=_MISSING,
            UNKNOWN=_unknown_of(self.known),
            NR=NormalizedRecord,
            NEW=tuple.__new__,  # builds the NamedTuple without its Python-level __new__
            TS=parse,
            DATETIME=_parse_datetime,
            JSON=compact_json,
        )
        name = self.spec.name
        outputs = self.output_fields
        gen.emit(0, "def apply(m):")
        gen.emit(1, "p = m.get('pkey')")
        gen.emit(1, "k = KEY(p)")
        removed = sorted(self.known - {"pkey"} - {f.source for f in outputs})
        if len(removed) <= len(outputs):
            # Most fields stay: copy the body in one go, then take out what does not belong.
            gen.emit(1, "v = dict(m)")
            gen.emit(1, "if KNOWN.issuperset(m):")
            gen.emit(2, "u = EMPTY")
            gen.emit(1, "else:")
            gen.emit(2, "u = UNKNOWN(m)")
            gen.emit(2, "for n in u:")
            gen.emit(3, "del v[n]")
            if removed:
                gen.emit(1, f"for n in {gen.constant('REMOVED', tuple(removed))}:")
                gen.emit(2, "if n in v:")
                gen.emit(3, "del v[n]")
            # Renames pop every source first, so that `a -> b, b -> c` cannot clobber `b`.
            renamed = [out for out in outputs if out.name != out.source]
            for i, out in enumerate(renamed):
                gen.emit(1, f"r{i} = v.pop({out.source!r}, MISSING)")
            for i, out in enumerate(renamed):
                gen.emit(1, f"if r{i} is not MISSING:")
                gen.emit(2, f"v[{out.name!r}] = r{i}")
        else:
            # A narrow view: pick the fields one by one.
            gen.emit(1, "u = EMPTY if KNOWN.issuperset(m) else UNKNOWN(m)")
            gen.emit(1, "v = {'pkey': p}")
            for out in outputs:
                gen.emit(1, f"x = m.get({out.source!r}, MISSING)")
                gen.emit(1, "if x is not MISSING:")
                gen.emit(2, f"v[{out.name!r}] = x")
        self._emit_key_conversions(gen)
        for out in outputs:
            if out.spec.type in FLOAT_TYPES:
                gen.emit(1, f"x = v.get({out.name!r})")
                gen.emit(1, "if x.__class__ is int:")
                gen.emit(2, f"v[{out.name!r}] = float(x)")
        for out in outputs:
            kind = out.spec.type
            path = f"{name}.{out.source}"
            if kind == "DateTime":
                gen.emit(1, f"x = v.get({out.name!r})")
                gen.emit(1, "if x.__class__ is str:")
                gen.emit(2, f"v[{out.name!r}] = DATETIME(TS, x, {path!r})")
            elif kind == "group":
                group = gen.constant("GROUP", _Group(out.members, parse))
                gen.emit(1, f"x = v.get({out.name!r})")
                gen.emit(1, "if x is not None:")
                gen.emit(2, f"v[{out.name!r}] = {group}(x, {path!r})")
            elif kind == "json":
                gen.emit(1, f"x = v.get({out.name!r})")
                gen.emit(1, "if x is not None:")
                gen.emit(2, f"v[{out.name!r}] = JSON(x)")
        for out in outputs:
            if out.inferred and out.spec.type == "long":
                # A fraction in a field learnt as long: reported with the unknown fields, so
                # that the pipeline evolves the schema (see with_extra_fields) instead of
                # failing the record.
                gen.emit(1, f"x = v.get({out.name!r})")
                gen.emit(1, "if x.__class__ is float:")
                gen.emit(2, f"u = {{**u, {out.source!r}: x}}")
        if self.src_field is None:
            gen.emit(1, "return NEW(NR, (k, v, None, u))")
        else:
            gen.emit(1, f"s = m.get({self.src_field!r})")
            gen.emit(1, "return NEW(NR, (k, v, s if s.__class__ is int else None, u))")
        source = "\n".join(gen.lines)
        exec(compile(source, f"<plan {name}>", "exec"), gen.namespace)
        apply: Callable[[Mapping[str, Any]], NormalizedRecord] = gen.namespace["apply"]
        return source, apply

    def _emit_key_conversions(self, gen: _Codegen) -> None:
        """DateTime key fields: converted in a copy of the wire pkey."""
        converting = [f for f in self.key_fields if f.spec.type == "DateTime"]
        if not converting:
            return
        gen.emit(1, "q = p")
        for out in converting:
            path = f"{self.spec.name}.pkey.{out.source}"
            gen.emit(1, f"x = p.get({out.source!r})")
            gen.emit(1, "if x.__class__ is str:")
            gen.emit(2, "if q is p:")
            gen.emit(3, "q = dict(p)")
            gen.emit(2, f"q[{out.source!r}] = DATETIME(TS, x, {path!r})")
        gen.emit(1, "if q is not p:")
        gen.emit(2, "v['pkey'] = q")


def _resolve(spec: MessageSpec, names: Iterable[str], what: str) -> list[FieldSpec]:
    resolved = []
    for name in names:
        found = spec.field(name)
        if found is None:
            raise TransformError(f"{what}: {spec.name} has no field {name!r}")
        resolved.append(found)
    return resolved


def _output_field(spec: FieldSpec, name: str, catalog: Catalog) -> OutputField:
    members = tuple(_output_field(m, m.name, catalog) for m in spec.fields)
    return OutputField(name, spec.name, spec, field_default(spec, catalog), members)


def compile_plan(spec: MessageSpec, options: TransformOptions, catalog: Catalog) -> RecordPlan:
    """Check `options` against the catalog and compile the plan. Raises TransformError naming
    the field for unknown names, renames that clash or are not valid field names, and attempts
    to drop or rename a primary-key field."""
    view = _resolve(spec, options.view, "view")
    drop = _resolve(spec, options.drop, "drop")
    renamed = _resolve(spec, options.rename, "rename")
    for f in drop:
        if f.key:
            raise TransformError(f"drop: {f.name!r} is part of {spec.name}'s primary key")
    for f in renamed:
        if f.key:
            raise TransformError(f"rename: {f.name!r} is part of {spec.name}'s primary key")
    wanted = {f.name for f in view if not f.key} if view else None
    dropped = {f.name for f in drop}
    kept = [
        f
        for f in spec.value_fields
        if (wanted is None or f.name in wanted) and f.name not in dropped
    ]
    kept_names = {f.name for f in kept}
    new_names = {f.name: dst for f, dst in zip(renamed, options.rename.values(), strict=True)}
    for source, target in new_names.items():
        if source not in kept_names:
            raise TransformError(f"rename: {source!r} is not in the output (view or drop)")
        if not _NAME.match(target) or target == "pkey":
            raise TransformError(f"rename: {target!r} cannot be a field name ({source!r})")
    outputs = tuple(_output_field(f, new_names.get(f.name, f.name), catalog) for f in kept)
    seen: set[str] = set()
    for out in outputs:
        if out.name in seen:
            raise TransformError(f"rename: two output fields would be called {out.name!r}")
        seen.add(out.name)
    keys = tuple(_output_field(f, f.name, catalog) for f in spec.key_fields)
    return RecordPlan(spec, options, catalog, keys, outputs)
