"""Avro for MLink records: one schema per message type, its versions, and a fast encoder.

`avro_schema(plan)` derives the writer schema from the same `RecordPlan` that normalizes the
records, so schema and values cannot drift apart:

- record `<MsgName>` in namespace `mlink`, fields named as on the MLink wire (after rename);
- `pkey`: a nested record `<MsgName>Key` with the primary-key fields; TickerKey, ExpiryKey and
  OptionKey are the named records `mlink.TickerKey`, ... (defined once, then referenced);
- enums and flags are strings defaulting to the catalog's default name, so new enum values never
  break readers; float and double are `double`; every integer type is `long`; DateTime is
  `long` ns since the epoch; DateKey, TimeSpan and string are `string`; other security-key
  fields are `["null", <key record>]`; repeated groups are arrays of records;
- every value field has a default (0, 0.0, "", the enum default, null, []), so omitted wire
  fields decode as MLink means them and new versions stay backward compatible.

`SchemaHistory` keeps a message type's versions. `evolve(unknown)` adds newly seen wire fields as
optional (`["null", T]`, default null; a JSON object or list is kept as compact JSON text).

`WriterSchema.encode(value, prefix)` is compiled once per schema into straight-line Python that
writes exactly the bytes `fastavro.schemaless_writer` writes for valid values, two to three
times faster (see benchmarks/transform_encode.py), and refuses what fastavro would write wrong or
silently convert: a float, bool or numeric string in a `long`, a bool or string in a `double`,
NaN or infinity anywhere (JSON consumers cannot carry them). A refused value raises
SchemaMismatch naming the field; the caller dead-letters the record. A field that is omitted or
None gets its default, as MLink leaves defaults out.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, NoReturn

import fastavro
import fastavro.schema

from bridge.errors import BridgeError
from bridge.mlink.catalog import FLOAT_TYPES, INTEGER_TYPES
from transforms.plan import STRING_TYPES, OutputField, RecordPlan

__all__ = [
    "NAMESPACE",
    "SchemaHistory",
    "SchemaMismatch",
    "WriterSchema",
    "avro_schema",
    "canonical_form",
    "compile_encoder",
    "fingerprint",
]

NAMESPACE = "mlink"
DATETIME_DOC = "nanoseconds since the Unix epoch (UTC)"
JSON_DOC = "compact JSON text of a nested wire value"
INFERRED_DOC = "seen on the MLink wire after the catalog was built"

# Members of the security-key records, in the order of MLink's JSON.
_KEY_MEMBERS: dict[str, tuple[tuple[str, str], ...]] = {
    "TickerKey": (("at", "string"), ("ts", "string"), ("tk", "string")),
    "ExpiryKey": (("at", "string"), ("ts", "string"), ("tk", "string"), ("dt", "string")),
    "OptionKey": (
        ("at", "string"),
        ("ts", "string"),
        ("tk", "string"),
        ("dt", "string"),
        ("xx", "double"),
        ("cp", "string"),
    ),
}
_INFERRED_TYPES = {
    "boolean": "boolean",
    "long": "long",
    "double": "double",
    "string": "string",
    "json": "string",
}


class SchemaMismatch(BridgeError):
    """A value does not fit its writer schema (wrong type, NaN, out of range, missing key).

    Retrying cannot help: the record goes to the dead-letter topic."""


# ---------------------------------------------------------------------------------------------
# Schemas from plans


class _SchemaBuilder:
    def __init__(self, msg_name: str) -> None:
        self.msg_name = msg_name
        self.defined: set[str] = set()

    def key_record(self, type_name: str) -> dict[str, Any] | str:
        full = f"{NAMESPACE}.{type_name}"
        if full in self.defined:
            return full
        self.defined.add(full)
        return {
            "type": "record",
            "name": type_name,
            "namespace": NAMESPACE,
            "fields": [
                {"name": name, "type": kind, "default": 0.0 if kind == "double" else ""}
                for name, kind in _KEY_MEMBERS[type_name]
            ],
        }

    def field(self, out: OutputField, in_key: bool = False) -> dict[str, Any]:
        kind = out.spec.type
        entry: dict[str, Any] = {"name": out.name}
        if out.inferred:
            entry["type"] = ["null", _INFERRED_TYPES[kind]]
            entry["default"] = None
            entry["doc"] = JSON_DOC if kind == "json" else INFERRED_DOC
        elif out.spec.is_security_key:
            record = self.key_record(kind)
            if in_key:
                entry["type"] = record
            else:
                entry["type"] = ["null", record]
                entry["default"] = None
        elif out.spec.is_group:
            entry["type"] = {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": self.msg_name + out.source[:1].upper() + out.source[1:],
                    "fields": [self.field(member) for member in out.members],
                },
            }
            entry["default"] = []
        elif kind in FLOAT_TYPES:
            entry["type"] = "double"
            entry["default"] = 0.0
        elif kind in INTEGER_TYPES:
            entry["type"] = "long"
            entry["default"] = 0
        elif kind == "DateTime":
            entry["type"] = "long"
            entry["default"] = 0
            entry["doc"] = DATETIME_DOC
        elif kind in ("enum", "flag"):
            entry["type"] = "string"
            entry["default"] = out.default
        elif kind in STRING_TYPES:
            entry["type"] = "string"
            entry["default"] = ""
        else:  # compile_plan refuses such types; this guards against new catalog types
            raise SchemaMismatch(f"{self.msg_name}.{out.source}: no Avro type for {kind!r}")
        return entry


def avro_schema(plan: RecordPlan) -> dict[str, Any]:
    """The writer schema (a JSON-able dict) for records normalized by `plan`."""
    name = plan.spec.name
    builder = _SchemaBuilder(name)
    key_record = {
        "type": "record",
        "name": f"{name}Key",
        "fields": [builder.field(out, in_key=True) for out in plan.key_fields],
    }
    fields = [{"name": "pkey", "type": key_record}]
    fields += [builder.field(out) for out in plan.output_fields]
    return {
        "type": "record",
        "name": name,
        "namespace": NAMESPACE,
        "doc": f"MLink {name}: the latest value of one live-data object; pkey is its key",
        "fields": fields,
    }


def canonical_form(schema: Mapping[str, Any]) -> str:
    """Avro's Parsing Canonical Form of a schema (what fingerprints are computed from)."""
    return str(fastavro.schema.to_parsing_canonical_form(dict(schema)))


def fingerprint(schema: Mapping[str, Any]) -> str:
    """CRC-64-AVRO fingerprint as 16 lowercase hex chars: the 8 bytes of single-object
    encoding, in the order they appear there (little-endian)."""
    return str(fastavro.schema.fingerprint(canonical_form(schema), "CRC-64-AVRO"))


# ---------------------------------------------------------------------------------------------
# The compiled encoder

_MISSING: Any = object()
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SMALL = 1 << 14  # zig-zagged values below this are looked up, not computed
_MAX_CACHED = 65_536  # entries per cache; a full cache is emptied and refills
_MAX_CACHED_STRING_CHARS = 64
_PACK_DOUBLE = struct.Struct("<d").pack


def _varint(z: int) -> bytes:
    """Avro's variable-length encoding of a non-negative (already zig-zagged) integer."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_VARINT = tuple(_varint(z) for z in range(_SMALL))
# 14 bits as two varint bytes that both say "more follows".
_CONTINUED = tuple(bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(_SMALL))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _bad(path: str, expected: str, value: Any) -> NoReturn:
    if value is _MISSING:
        raise SchemaMismatch(f"{path}: required {expected} is missing")
    raise SchemaMismatch(f"{path}: expected {expected}, got {_describe(value)}")


def _as_double(value: Any, path: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    _bad(path, "double", value)


def _as_long(value: Any, path: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    _bad(path, "long", value)


class _Longs:
    """Varint bytes of longs that do not fit the small table. The bytes above the low 28 bits
    are remembered: nanosecond timestamps share them for about a tenth of a second."""

    __slots__ = ("high",)

    def __init__(self) -> None:
        self.high: dict[int, bytes] = {}  # z >> 28 -> its varint bytes, for in-range values

    def encode(self, value: int, path: str) -> bytes:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise SchemaMismatch(f"{path}: {value} does not fit a 64-bit long")
        z = (value << 1) ^ (value >> 63)
        if z < _SMALL:
            return _VARINT[z]
        if z < 1 << 28:
            return _CONTINUED[z & 0x3FFF] + _VARINT[z >> 14]
        high = self.high.get(z >> 28)
        if high is None:
            high = _varint(z >> 28)
            if len(self.high) >= _MAX_CACHED:
                self.high.clear()
            self.high[z >> 28] = high
        return _CONTINUED[z & 0x3FFF] + _CONTINUED[(z >> 14) & 0x3FFF] + high


def _not_finite(values: tuple[float, ...], paths: tuple[str, ...]) -> NoReturn:
    for value, path in zip(values, paths, strict=True):
        if value - value:
            raise SchemaMismatch(
                f"{path}: {value!r} is not allowed (JSON consumers cannot carry NaN or infinity)"
            )
    raise AssertionError("called without a non-finite value")  # pragma: no cover


def _as_record(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return dict(value)
    _bad(path, "record", value)


def _as_array(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    _bad(path, "array", value)


class _Strings:
    """str -> Avro bytes (length + UTF-8), remembered for short strings: enum names, venues and
    symbols repeat in almost every record."""

    __slots__ = ("table",)

    def __init__(self) -> None:
        self.table: dict[str, bytes] = {}

    def encode(self, text: Any, path: str, default: str = "") -> bytes:
        if text is None:
            text = default
        if not isinstance(text, str):
            _bad(path, "string", text)
        try:
            data = text.encode()
        except UnicodeEncodeError:
            raise SchemaMismatch(f"{path}: string is not valid Unicode") from None
        n = len(data) << 1
        out = (_VARINT[n] if n < _SMALL else _varint(n)) + data
        if len(text) <= _MAX_CACHED_STRING_CHARS and text.__class__ is str:
            if len(self.table) >= _MAX_CACHED:
                self.table.clear()
            self.table[text] = out
        return out


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


Encoder = Callable[[Mapping[str, Any], bytes], bytes]


class _At(NamedTuple):
    """Where generated code is being written: indentation, field path (for messages), record
    nesting depth (names the getter variables) and the enclosing Avro namespace."""

    indent: int
    path: str
    depth: int
    namespace: str | None


def _string_bytes(text: str) -> bytes:
    data = text.encode()
    return _varint(len(data) << 1) + data


# The encoded bytes of a primitive field's default value, by Avro type.
_PRIMITIVE_DEFAULTS: dict[str, Callable[[Any], bytes]] = {
    "double": lambda value: _PACK_DOUBLE(float(value)),
    "long": lambda value: _varint((int(value) << 1) ^ (int(value) >> 63)),
    "string": _string_bytes,
    "boolean": lambda value: b"\x01" if value else b"\x00",
}


class _EncoderCompiler:
    """Writes one straight-line Python function per schema. Supports what `avro_schema` makes:
    records, named references, double, long, string, boolean, arrays, and ["null", T].

    Every value becomes one or more "parts" (local bytes variables) joined once at the end.
    Each value is first checked by its exact class (one cheap test), so only values that need
    converting or refusing reach the helpers. None in a field that is not nullable means the
    field's default, like an omitted field (a JSON null carries no value).

    The `careful` variant also checks that strings are strings before the cache lookup; the
    fast one lets an unhashable value raise TypeError and then runs the careful one to name the
    field."""

    def __init__(self, careful: bool) -> None:
        self.careful = careful
        self.lines: list[str] = []
        self.count = 0
        strings = _Strings()
        longs = _Longs()
        self.namespace: dict[str, Any] = {
            "MISSING": _MISSING,
            "MISMATCH": SchemaMismatch,
            "VAR": _VARINT,
            "CONT": _CONTINUED,
            "S": strings.table,
            "STRING": strings.encode,
            "DOUBLE": _as_double,
            "PACK1": _PACK_DOUBLE,
            "LONG": _as_long,
            "LONGBYTES": longs.encode,
            "HIGH": longs.high,
            "NOTFINITE": _not_finite,
            "RECORD": _as_record,
            "ARRAY": _as_array,
            "BAD": _bad,
        }
        self.named: dict[str, Mapping[str, Any]] = {}

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def part(self) -> str:
        self.count += 1
        return f"a{self.count}"

    def constant(self, value: Any) -> str:
        if value is None or isinstance(value, bool | int | float | str):
            return repr(value)
        name = f"C{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def compile(self, schema: Mapping[str, Any], careful: Encoder | None = None) -> Encoder:
        name = _full_name(schema["name"], schema.get("namespace"))
        self.namespace["CAREFUL"] = careful
        self.emit(0, "def encode(v, prefix=b''):")
        self.emit(1, "try:")
        self.emit(2, "g0 = v.get")
        parts = self.record_fields(schema, "g0", _At(2, name, 0, schema.get("namespace")))
        self.emit(2, f"return b''.join((prefix, {', '.join(parts)}))")
        self.emit(1, "except (TypeError, ValueError, AttributeError, OverflowError) as exc:")
        if careful is not None:
            self.emit(2, "CAREFUL(v, prefix)")  # raises SchemaMismatch naming the field
        self.emit(2, f"raise MISMATCH(f'{name}: value does not fit the schema: {{exc}}') from None")
        source = "\n".join(self.lines)
        exec(compile(source, f"<avro encoder {name}>", "exec"), self.namespace)
        encode: Encoder = self.namespace["encode"]
        return encode

    def resolve(self, kind: Any, namespace: str | None) -> Any:
        """A named type's definition, or `kind` itself."""
        if isinstance(kind, str):
            for candidate in (_full_name(kind, namespace), kind):
                if candidate in self.named:
                    return self.named[candidate]
        return kind

    def type_name(self, kind: Any, namespace: str | None) -> Any:
        kind = self.resolve(kind, namespace)
        return kind["type"] if isinstance(kind, Mapping) else kind

    def default_of(self, field: Mapping[str, Any]) -> str:
        return self.constant(field["default"]) if "default" in field else "MISSING"

    def record_fields(self, schema: Mapping[str, Any], getter: str, at: _At) -> list[str]:
        """Code for a record's fields, read with `getter`; returns their parts in order."""
        at = at._replace(namespace=schema.get("namespace", at.namespace))
        self.named[_full_name(schema["name"], at.namespace)] = schema
        fields = list(schema["fields"])
        parts: list[str] = []
        i = 0
        while i < len(fields):
            run = 0
            while (
                i + run < len(fields)
                and self.type_name(fields[i + run]["type"], at.namespace) == "double"
            ):
                run += 1
            if run >= 2:
                parts.append(self.double_run(fields[i : i + run], getter, at))
                i += run
                continue
            f = fields[i]
            default = self.default_of(f)
            here = at._replace(path=f"{at.path}.{f['name']}")
            kind = self.type_name(f["type"], at.namespace)
            if "default" in f and isinstance(kind, str) and kind in _PRIMITIVE_DEFAULTS:
                # Omitted (or null) is common, as MLink leaves defaults out: write the default's
                # bytes, computed once, without looking at the value any further.
                part = self.part()
                encoded = self.constant(_PRIMITIVE_DEFAULTS[kind](f["default"]))
                self.emit(at.indent, f"x = {getter}({f['name']!r})")
                self.emit(at.indent, "if x is None:")
                self.emit(at.indent + 1, f"{part} = {encoded}")
                self.emit(at.indent, "else:")
                self.primitive(kind, "x", here._replace(indent=at.indent + 1), default, part)
                parts.append(part)
            else:
                self.emit(at.indent, f"x = {getter}({f['name']!r}, {default})")
                parts += self.value(f["type"], "x", here, default)
            i += 1
        return parts

    def double_run(self, fields: list[Mapping[str, Any]], getter: str, at: _At) -> str:
        """Consecutive doubles: checked one by one, then packed with one struct call."""
        names = [f"d{j}" for j in range(len(fields))]
        paths = tuple(f"{at.path}.{f['name']}" for f in fields)
        for var, f, fpath in zip(names, fields, paths, strict=True):
            default = self.default_of(f)
            self.emit(at.indent, f"{var} = {getter}({f['name']!r}, {default})")
            self.emit(at.indent, f"if {var}.__class__ is not float:")
            self.emit(at.indent + 1, f"{var} = DOUBLE({var}, {fpath!r}, {default})")
        # For finite values each `d - d` is exactly 0.0; NaN or infinity makes the sum NaN.
        args = ", ".join(names)
        self.emit(at.indent, "if " + " + ".join(f"{var} - {var}" for var in names) + ":")
        self.emit(at.indent + 1, f"NOTFINITE(({args},), {self.constant(paths)})")
        part = self.part()
        pack = self.constant(struct.Struct(f"<{len(fields)}d").pack)
        self.emit(at.indent, f"{part} = {pack}({args})")
        return part

    def value(self, kind: Any, var: str, at: _At, default: str) -> list[str]:
        """Code that encodes `var` (present, not the missing marker) as `kind`."""
        kind = self.resolve(kind, at.namespace)
        if isinstance(kind, list):
            return [self.union(kind, var, at)]
        if isinstance(kind, Mapping):
            if kind["type"] == "record":
                self.emit(at.indent, f"if {var}.__class__ is not dict:")
                self.emit(at.indent + 1, f"{var} = RECORD({var}, {at.path!r})")
                getter = f"g{at.depth + 1}"
                self.emit(at.indent, f"{getter} = {var}.get")
                return self.record_fields(kind, getter, at._replace(depth=at.depth + 1))
            if kind["type"] == "array":
                return [self.array(kind, var, at)]
            kind = kind["type"]
        return [self.primitive(kind, var, at, default)]

    def primitive(self, kind: Any, var: str, at: _At, default: str, part: str | None = None) -> str:
        p, i, a = repr(at.path), at.indent, part or self.part()
        if kind == "double":
            self.emit(i, f"if {var}.__class__ is not float:")
            self.emit(i + 1, f"{var} = DOUBLE({var}, {p}, {default})")
            self.emit(i, f"if {var} - {var}:")
            self.emit(i + 1, f"NOTFINITE(({var},), ({p},))")
            self.emit(i, f"{a} = PACK1({var})")
        elif kind == "long":
            self.emit(i, f"if {var}.__class__ is not int:")
            self.emit(i + 1, f"{var} = LONG({var}, {p}, {default})")
            self.emit(i, f"z = ({var} << 1) ^ ({var} >> 63)")
            self.emit(i, "if z < 16384:")
            self.emit(i + 1, f"{a} = VAR[z]")
            self.emit(i, "elif z < 268435456:")
            self.emit(i + 1, f"{a} = CONT[z & 16383] + VAR[z >> 14]")
            self.emit(i, "else:")
            # Large values (ns timestamps): their high bytes are usually cached already.
            self.emit(i + 1, "b = HIGH.get(z >> 28)")
            self.emit(i + 1, "if b is None:")
            self.emit(i + 2, f"{a} = LONGBYTES({var}, {p})")
            self.emit(i + 1, "else:")
            self.emit(i + 2, f"{a} = CONT[z & 16383] + CONT[(z >> 14) & 16383] + b")
        elif kind == "string":
            if self.careful:
                self.emit(i, f"{a} = S.get({var}) if {var}.__class__ is str else None")
            else:
                self.emit(i, f"{a} = S.get({var})")
            self.emit(i, f"if {a} is None:")
            self.emit(i + 1, f"{a} = STRING({var}, {p}, {default})")
        elif kind == "boolean":
            self.emit(i, f"if {var} is True:")
            self.emit(i + 1, f"{a} = b'\\x01'")
            self.emit(i, f"elif {var} is False:")
            self.emit(i + 1, f"{a} = b'\\x00'")
            self.emit(i, "else:")
            self.emit(i + 1, f"BAD({p}, 'boolean', {var})")
        else:
            raise TypeError(f"{at.path}: the compiled encoder does not support {kind!r}")
        return a

    def union(self, branches: list[Any], var: str, at: _At) -> str:
        if len(branches) != 2 or branches[0] != "null":
            raise TypeError(f"{at.path}: the compiled encoder supports only ['null', T] unions")
        a = self.part()
        self.emit(at.indent, f"if {var} is None:")
        self.emit(at.indent + 1, f"{a} = b'\\x00'")
        self.emit(at.indent, "else:")
        parts = self.value(branches[1], var, at._replace(indent=at.indent + 1), "MISSING")
        self.emit(at.indent + 1, f"{a} = b''.join((b'\\x02', {', '.join(parts)}))")
        return a

    def array(self, kind: Mapping[str, Any], var: str, at: _At) -> str:
        a, i = self.part(), at.indent
        item, out = f"i{at.depth}", f"w{at.depth}"
        self.emit(i, f"if {var}.__class__ is not list:")
        self.emit(i + 1, f"{var} = ARRAY({var}, {at.path!r})")
        self.emit(i, f"if {var}:")
        # Avro arrays are blocks: count, items, then a zero count to end.
        self.emit(i + 1, f"{out} = [LONGBYTES(len({var}), {at.path!r})]")
        self.emit(i + 1, f"for {item} in {var}:")
        inner = _At(i + 2, f"{at.path}[]", at.depth + 1, at.namespace)
        parts = self.value(kind["items"], item, inner, "MISSING")
        self.emit(i + 2, f"{out} += ({', '.join(parts)},)")
        self.emit(i + 1, f"{out}.append(b'\\x00')")
        self.emit(i + 1, f"{a} = b''.join({out})")
        self.emit(i, "else:")
        self.emit(i + 1, f"{a} = b'\\x00'")
        return a


def compile_encoder(schema: Mapping[str, Any]) -> Encoder:
    """A function (value, prefix=b"") -> prefix + Avro binary body of `value` under `schema`.

    Byte for byte what fastavro.schemaless_writer writes for valid values; raises
    SchemaMismatch naming the field for a value that does not fit."""
    careful = _EncoderCompiler(careful=True).compile(schema)
    return _EncoderCompiler(careful=False).compile(schema, careful)


# ---------------------------------------------------------------------------------------------
# Versions


class WriterSchema:
    """One version of a message type's writer schema, ready to encode with.

    `json` is the schema text to register or publish; `fingerprint` its CRC-64-AVRO fingerprint
    in hex, `fingerprint_bytes` the 8 bytes single-object encoding writes; `parsed` the fastavro
    form (for readers); `plan` the record plan whose values it encodes.
    """

    __slots__ = (
        "canonical",
        "encode",
        "fingerprint",
        "fingerprint_bytes",
        "json",
        "name",
        "parsed",
        "plan",
        "schema",
        "version",
    )

    def __init__(self, schema: Mapping[str, Any], version: int, plan: RecordPlan) -> None:
        self.schema = schema
        self.version = version
        self.plan = plan
        self.name = _full_name(schema["name"], schema.get("namespace"))
        self.json = json.dumps(schema, separators=(",", ":")).encode()
        self.parsed = fastavro.parse_schema(dict(schema))
        self.canonical = canonical_form(schema)
        self.fingerprint = fingerprint(schema)
        self.fingerprint_bytes = bytes.fromhex(self.fingerprint)
        self.encode: Encoder = compile_encoder(schema)

    def __repr__(self) -> str:
        return f"WriterSchema({self.name} v{self.version} {self.fingerprint})"


class SchemaHistory:
    """The writer-schema versions of one message type (for one set of options), oldest first.

    Typical use, per record:

        record = history.plan.apply(message)
        if record.unknown:
            history.evolve(record.unknown)
            record = history.plan.apply(message)
        body = history.current.encode(record.value)
    """

    def __init__(self, plan: RecordPlan) -> None:
        self._plan = plan
        self._versions = [WriterSchema(avro_schema(plan), 1, plan)]

    @property
    def plan(self) -> RecordPlan:
        """The plan whose values the current version encodes."""
        return self._plan

    @property
    def current(self) -> WriterSchema:
        return self._versions[-1]

    @property
    def versions(self) -> tuple[WriterSchema, ...]:
        return tuple(self._versions)

    def evolve(self, unknown_fields: Mapping[str, Any]) -> WriterSchema:
        """The version that also holds `unknown_fields` (wire name -> a value seen), each added
        as optional with a type inferred from the value: bool -> boolean, int -> long,
        float -> double, str -> string, object or list -> string of compact JSON.

        Returns the current version when nothing representable is new (null values tell no type;
        names that cannot be Avro names are ignored from then on, see
        RecordPlan.with_extra_fields)."""
        plan = self._plan.with_extra_fields(unknown_fields)
        if plan is self._plan:
            return self.current
        grew = plan.output_fields != self._plan.output_fields
        self._plan = plan
        if grew:
            self._versions.append(WriterSchema(avro_schema(plan), len(self._versions) + 1, plan))
        return self.current
