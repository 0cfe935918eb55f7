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

`WriterSchema.encode(value, prefix)` writes exactly the bytes `fastavro.schemaless_writer`
writes for valid values, and refuses what fastavro would write wrong or silently convert: a
float, bool or numeric string in a `long`, a bool or string in a `double`, NaN or infinity
anywhere (JSON consumers cannot carry them). A refused value raises SchemaMismatch naming the
field; the caller dead-letters the record. A field that is omitted or None gets its default, as
MLink leaves defaults out. Two implementations, the same bytes and errors:

- in C (`_avro_native.c`, when the extension is built): plain values are encoded there, ~4x
  faster than the Python below; anything else goes to the careful Python encoder;
- in Python: compiled once per schema (and once per frequent set of present fields) into
  straight-line code, about twice as fast as fastavro (see benchmarks/transform_encode.py).

`WriterSchema.encode_wire(body, prefix)` is the plan's `apply` and `encode` in one C call, for
the bridge's hot path (see compile_wire_encoder).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import struct
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, NamedTuple, NoReturn

import fastavro
import fastavro.schema

from bridge.errors import BridgeError
from bridge.mlink.catalog import FLOAT_TYPES, INTEGER_TYPES
from transforms.plan import STRING_TYPES, OutputField, RecordPlan

_native: ModuleType | None
try:
    import bridge.sink._avro_native as _native
except ImportError:  # not built (no C compiler where it was installed): Python alone
    _native = None

__all__ = [
    "NAMESPACE",
    "SchemaHistory",
    "SchemaMismatch",
    "WriterSchema",
    "avro_schema",
    "canonical_form",
    "compile_encoder",
    "compile_wire_encoder",
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


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


_VARINT = tuple(_varint(z) for z in range(_SMALL))
# 14 bits as two varint bytes that both say "more follows".
_CONTINUED = tuple(bytes(((z & 0x7F) | 0x80, ((z >> 7) & 0x7F) | 0x80)) for z in range(_SMALL))
# The same for the low 13 bits of a long n >= 0, whose zig-zag is 2n: CONTINUED[2 * (n & 8191)].
_CONTINUED_EVEN = _CONTINUED[::2]
# The varint of every long in -8192..8191, indexed by the long itself: a negative index counts
# from the end, where the negative longs are. Saves the zig-zag arithmetic for small values.
_SMALL_LONGS = tuple(_varint(_zigzag(n)) for n in (*range(_SMALL // 2), *range(-_SMALL // 2, 0)))


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def _bad(path: str, expected: str, value: Any) -> NoReturn:
    if value is _MISSING:
        raise SchemaMismatch(f"{path}: required {expected} is missing")
    raise SchemaMismatch(f"{path}: expected {expected}, got {_describe(value)}")


def _as_double(value: Any, path: str, default: Any) -> float:
    if value is None and default is not _MISSING:
        return float(default)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            pass
    _bad(path, "double", value)


def _as_long(value: Any, path: str, default: Any) -> int:
    if value is None and default is not _MISSING:
        return int(default)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    _bad(path, "long", value)


class _Longs:
    """Varint bytes of longs that do not fit the small table. The bytes above the low 28 bits of
    the zig-zag are remembered: nanosecond timestamps share them for about a tenth of a second.
    `high` maps those high bits to their varint bytes (a pure function, whatever the sign)."""

    __slots__ = ("high",)

    def __init__(self) -> None:
        self.high: dict[int, bytes] = {}

    def _high(self, bits: int) -> bytes:
        high = self.high.get(bits)
        if high is None:
            high = _varint(bits)
            if len(self.high) >= _MAX_CACHED:
                self.high.clear()
            self.high[bits] = high
        return high

    def encode(self, value: int, path: str) -> bytes:
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise SchemaMismatch(f"{path}: {value} does not fit a 64-bit long")
        z = _zigzag(value)
        if z < _SMALL:
            return _VARINT[z]
        if z < 1 << 28:
            return _CONTINUED[z & 0x3FFF] + _VARINT[z >> 14]
        return _CONTINUED[z & 0x3FFF] + _CONTINUED[(z >> 14) & 0x3FFF] + self._high(z >> 28)

    def high_of(self, value: int, path: str) -> bytes:
        """The varint bytes of `value >> 27` for a long value >= 2**27: with 2n as its zig-zag,
        what follows the four bytes of the low 28 bits."""
        if value > _INT64_MAX:
            raise SchemaMismatch(f"{path}: {value} does not fit a 64-bit long")
        return self._high(value >> 27)


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


def _string_bytes(text: str) -> bytes:
    """Avro string: the zig-zagged UTF-8 length, then the UTF-8 bytes."""
    data = text.encode()
    n = len(data) << 1
    return (_VARINT[n] if n < _SMALL else _varint(n)) + data


class _Strings(dict[str, bytes]):
    """str -> Avro bytes (length + UTF-8), remembered for short strings: enum names, venues and
    symbols repeat in almost every record.

    `strings[text]` is the compiled encoders' fast path: one dict lookup for a string seen
    before; anything that is not exactly a str raises TypeError, a string that cannot be UTF-8
    ValueError (the encoder then runs its careful version, which names the field).
    `encode(text, path, default)` is the careful version."""

    __slots__ = ()

    def __missing__(self, text: Any) -> bytes:
        if text.__class__ is not str:
            raise TypeError(f"expected string, got {_describe(text)}")
        out = _string_bytes(text)  # UnicodeEncodeError is a ValueError
        if len(text) <= _MAX_CACHED_STRING_CHARS:
            if len(self) >= _MAX_CACHED:
                self.clear()
            self[text] = out
        return out

    def encode(self, text: Any, path: str, default: Any = "") -> bytes:
        if text is None and default is not _MISSING:
            text = default
        if not isinstance(text, str):
            _bad(path, "string", text)
        try:
            return self[text] if text.__class__ is str else _string_bytes(text)
        except UnicodeEncodeError:
            raise SchemaMismatch(f"{path}: string is not valid Unicode") from None


def _full_name(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


log = logging.getLogger("mlink.avro")


def _collect_named(kind: Any, namespace: str | None, named: dict[str, Any]) -> None:
    """Every record, enum and fixed type defined anywhere in `kind`, by full name."""
    if isinstance(kind, list):
        for branch in kind:
            _collect_named(branch, namespace, named)
    elif isinstance(kind, Mapping):
        if kind.get("type") in ("record", "enum", "fixed") and "name" in kind:
            namespace = kind.get("namespace", namespace)
            named.setdefault(_full_name(kind["name"], namespace), kind)
        for field in kind.get("fields", ()):
            _collect_named(field["type"], namespace, named)
        for nested in ("items", "values"):
            if nested in kind:
                _collect_named(kind[nested], namespace, named)


Encoder = Callable[[Mapping[str, Any], bytes], bytes]


# The encoded bytes of a primitive field's default value, by Avro type.
_PRIMITIVE_DEFAULTS: dict[str, Callable[[Any], bytes]] = {
    "double": lambda value: _PACK_DOUBLE(float(value)),
    "long": lambda value: _varint(_zigzag(int(value))),
    "string": _string_bytes,
    "boolean": lambda value: b"\x01" if value else b"\x00",
}
_MAX_SHAPES = 64  # specialized encoders per schema; other shapes take the generic one
_SHAPE_AFTER = 32  # a shape gets its encoder when seen this often (compiling takes ms)
_MAX_SHAPES_COUNTED = 1024


def _merged(parts: list[str | bytes]) -> list[str]:
    """Parts as code, adjacent known bytes joined into one literal."""
    code: list[str] = []
    known = b""
    for part in parts:
        if isinstance(part, bytes):
            known += part
            continue
        if known:
            code.append(repr(known))
            known = b""
        code.append(part)
    if known:
        code.append(repr(known))
    return code


class _At(NamedTuple):
    """Where generated code is being written: indentation, field path (for messages) and the
    enclosing Avro namespace."""

    indent: int
    path: str
    namespace: str | None


class _EncoderCompiler:
    """Writes one straight-line Python function per schema. Supports what `avro_schema` makes:
    records, named references, double, long, string, boolean, arrays, and ["null", T].

    A field is read once, `get(name, default)`, so that an omitted field is its default value.
    Every value becomes a "part": an expression in the one `b''.join` at the end (a string is
    just `S[value]`), or a local computed before it (longs, unions, arrays). Doubles are packed
    with one precompiled struct per run of adjacent doubles, after one NaN/infinity test for all
    the doubles of a record (for finite d, d - d is exactly 0.0). Each long or double is first
    checked by its exact class (one cheap test), so only values that need converting or
    refusing reach the helpers. None in a field that is not nullable means the field's default,
    like an omitted field (a JSON null carries no value).

    The fast variant lets anything unexpected raise (TypeError from the string table for a
    non-string, for instance) and then returns what the `careful` variant makes of the value:
    that one checks every string and raises SchemaMismatch naming the field."""

    def __init__(self, careful: bool, strings: _Strings, longs: _Longs) -> None:
        self.careful = careful
        self.lines: list[str] = []
        self.count = 0
        self.finite: list[tuple[str, str]] = []  # doubles (local, path) not checked yet
        self.namespace: dict[str, Any] = {
            "MISSING": _MISSING,
            "MISMATCH": SchemaMismatch,
            "VAR": _VARINT,
            "CONT": _CONTINUED,
            "CONT2": _CONTINUED_EVEN,
            "SMALL": _SMALL_LONGS,
            "S": strings,
            "STRING": strings.encode,
            "DOUBLE": _as_double,
            "PACK1": _PACK_DOUBLE,
            "LONG": _as_long,
            "LONGBYTES": longs.encode,
            "HIGH": longs.high,
            "HIGHBYTES": longs.high_of,
            "NOTFINITE": _not_finite,
            "RECORD": _as_record,
            "ARRAY": _as_array,
            "BAD": _bad,
        }
        self.named: dict[str, Mapping[str, Any]] = {}

    def emit(self, indent: int, line: str) -> None:
        self.lines.append("    " * indent + line)

    def local(self, prefix: str) -> str:
        """A fresh local name: parts are evaluated at the end, so no name is ever reused."""
        self.count += 1
        return f"{prefix}{self.count}"

    def constant(self, value: Any) -> str:
        if value is None or isinstance(value, bool | int | float | str):
            return repr(value)
        name = f"C{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def compile(
        self,
        schema: Mapping[str, Any],
        careful: Encoder | None = None,
        shape: tuple[str, ...] | None = None,
    ) -> Encoder:
        """The encoder function. With a `shape` (a dict's keys, in order), one for dicts with
        exactly those keys: it unpacks `v.values()` instead of looking fields up, and writes
        the bytes of absent fields' defaults as constants."""
        name = _full_name(schema["name"], schema.get("namespace"))
        # Every named type first: a shape may leave out the field that defines one (a key
        # record, say) while a later field refers to it by name.
        _collect_named(schema, schema.get("namespace"), self.named)
        self.namespace["CAREFUL"] = careful
        self.emit(0, "def encode(v, prefix=b''):")
        self.emit(1, "try:")
        present: dict[str, str] | None = None
        if shape is None:
            self.emit(2, "g0 = v.get")
        else:
            present = {key: self.local("k") for key in shape}
            if shape:
                self.emit(2, f"{', '.join(present.values())}, = v.values()")
        at = _At(2, name, schema.get("namespace"))
        parts = self.record_fields(schema, "g0", at, present)
        self.check_finite(2)
        self.emit(2, f"return b''.join((prefix, {', '.join(_merged(parts))}))")
        self.emit(1, "except (TypeError, ValueError, AttributeError, OverflowError) as exc:")
        if careful is None:
            self.emit(
                2, f"raise MISMATCH(f'{name}: value does not fit the schema: {{exc}}') from None"
            )
        else:
            self.emit(2, "pass")
            # Outside the handler, so that the careful version's error stands alone.
            self.emit(
                1, "return CAREFUL(v, prefix)"
            )  # the bytes, or SchemaMismatch naming the field
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

    def record_fields(
        self,
        schema: Mapping[str, Any],
        getter: str,
        at: _At,
        present: Mapping[str, str] | None = None,
    ) -> list[str | bytes]:
        """Code for a record's fields, read with `getter`, or, given `present` (field name ->
        local holding its value), from those locals, absent fields being their defaults.
        Returns the parts in order: code, or the bytes themselves when known already."""
        at = at._replace(namespace=schema.get("namespace", at.namespace))
        self.named[_full_name(schema["name"], at.namespace)] = schema
        fields = list(schema["fields"])
        parts: list[str | bytes] = []
        i = 0
        while i < len(fields):
            run = 0
            while (
                i + run < len(fields)
                and self.type_name(fields[i + run]["type"], at.namespace) == "double"
            ):
                run += 1
            if run >= 2:
                parts.append(self.double_run(fields[i : i + run], getter, at, present))
                i += run
                continue
            f = fields[i]
            default = self.default_of(f)
            here = at._replace(path=f"{at.path}.{f['name']}")
            if present is None:
                parts += self.value(f["type"], f"{getter}({f['name']!r}, {default})", here, default)
            elif f["name"] in present:
                parts += self.value(f["type"], present[f["name"]], here, default)
            else:
                known = self.default_bytes(f, at.namespace)
                parts += (
                    [known] if known is not None else self.value(f["type"], default, here, default)
                )
            i += 1
        return parts

    def default_bytes(self, field: Mapping[str, Any], namespace: str | None) -> bytes | None:
        """The encoded default of a field, when it is a primitive, null or an empty array."""
        if "default" not in field:
            return None
        kind, default = self.resolve(field["type"], namespace), field["default"]
        if isinstance(kind, list):
            return b"\x00" if default is None and kind and kind[0] == "null" else None
        if isinstance(kind, Mapping):
            if kind["type"] == "array" and default == []:
                return b"\x00"
            kind = kind["type"]
        encode = _PRIMITIVE_DEFAULTS.get(kind) if isinstance(kind, str) else None
        return None if encode is None else encode(default)

    def double_run(
        self,
        fields: list[Mapping[str, Any]],
        getter: str,
        at: _At,
        present: Mapping[str, str] | None,
    ) -> str | bytes:
        """Consecutive doubles: checked one by one, then packed with one struct call."""
        args: list[str] = []
        absent: list[float] = []
        for f in fields:
            default = self.default_of(f)
            if present is None:
                value = f"{getter}({f['name']!r}, {default})"
            elif f["name"] in present:
                value = present[f["name"]]
            elif "default" in f:  # absent: the default goes into the struct call as it is
                absent.append(float(f["default"]))
                args.append(repr(absent[-1]))
                continue
            else:
                value = "MISSING"
            args.append(self.double(value, at._replace(path=f"{at.path}.{f['name']}"), default))
        packer = struct.Struct(f"<{len(fields)}d")
        if len(absent) == len(fields):
            return packer.pack(*absent)
        return f"{self.constant(packer.pack)}({', '.join(args)})"

    def double(self, value: str, at: _At, default: str) -> str:
        """A local holding the double `value`, converted or refused; its NaN test is pending."""
        d = self.local("d")
        self.emit(at.indent, f"{d} = {value}")
        self.emit(at.indent, f"if {d}.__class__ is not float:")
        self.emit(at.indent + 1, f"{d} = DOUBLE({d}, {at.path!r}, {default})")
        self.finite.append((d, at.path))
        return d

    def check_finite(self, indent: int) -> None:
        """One test for all the doubles read since the last one (before they are packed)."""
        if not self.finite:
            return
        names = [d for d, _ in self.finite]
        paths = self.constant(tuple(path for _, path in self.finite))
        self.emit(indent, "if " + " + ".join(f"{d} - {d}" for d in names) + ":")
        self.emit(indent + 1, f"NOTFINITE(({', '.join(names)},), {paths})")
        self.finite = []

    def value(self, kind: Any, value: str, at: _At, default: str) -> list[str | bytes]:
        """Parts that encode `value` (an expression evaluated exactly once) as `kind`."""
        kind = self.resolve(kind, at.namespace)
        if isinstance(kind, list):
            return [self.union(kind, value, at)]
        if isinstance(kind, Mapping):
            if kind["type"] == "record":
                r, getter = self.local("r"), self.local("g")
                self.emit(at.indent, f"{r} = {value}")
                self.emit(at.indent, f"if {r}.__class__ is not dict:")
                self.emit(at.indent + 1, f"{r} = RECORD({r}, {at.path!r})")
                self.emit(at.indent, f"{getter} = {r}.get")
                return self.record_fields(kind, getter, at)
            if kind["type"] == "array":
                return [self.array(kind, value, at)]
            kind = kind["type"]
        return [self.primitive(kind, value, at, default)]

    def primitive(self, kind: Any, value: str, at: _At, default: str) -> str:
        p, i = repr(at.path), at.indent
        if kind == "double":
            return f"PACK1({self.double(value, at, default)})"
        if kind == "string":
            return f"STRING({value}, {p}, {default})" if self.careful else f"S[{value}]"
        x, a = self.local("x"), self.local("a")
        self.emit(i, f"{x} = {value}")
        if kind == "long":
            self.emit(i, f"if {x}.__class__ is not int:")
            self.emit(i + 1, f"{x} = LONG({x}, {p}, {default})")
            # With n >= 0 the zig-zag is 2n: its low bits come from the tables as they are.
            self.emit(i, f"if {x} >= 8192:")
            self.emit(i + 1, f"if {x} < 134217728:")
            self.emit(i + 2, f"{a} = CONT2[{x} & 8191] + VAR[{x} >> 13]")
            self.emit(i + 1, "else:")
            # Large values (ns timestamps): their high bytes are usually known already.
            self.emit(i + 2, f"h = HIGH.get({x} >> 27)")
            self.emit(i + 2, "if h is None:")
            self.emit(i + 3, f"h = HIGHBYTES({x}, {p})")
            self.emit(i + 2, f"{a} = CONT2[{x} & 8191] + CONT[({x} >> 13) & 16383] + h")
            self.emit(i, f"elif {x} >= -8192:")
            self.emit(i + 1, f"{a} = SMALL[{x}]")
            self.emit(i, "else:")
            self.emit(i + 1, f"{a} = LONGBYTES({x}, {p})")
        elif kind == "boolean":
            if default != "MISSING":
                self.emit(i, f"if {x} is None:")
                self.emit(i + 1, f"{x} = {default}")
            self.emit(i, f"if {x} is True:")
            self.emit(i + 1, f"{a} = b'\\x01'")
            self.emit(i, f"elif {x} is False:")
            self.emit(i + 1, f"{a} = b'\\x00'")
            self.emit(i, "else:")
            self.emit(i + 1, f"BAD({p}, 'boolean', {x})")
        else:
            raise TypeError(f"{at.path}: the compiled encoder does not support {kind!r}")
        return a

    def union(self, branches: list[Any], value: str, at: _At) -> str:
        if len(branches) != 2 or branches[0] != "null":
            raise TypeError(f"{at.path}: the compiled encoder supports only ['null', T] unions")
        u, a = self.local("u"), self.local("a")
        self.emit(at.indent, f"{u} = {value}")
        self.emit(at.indent, f"if {u} is None:")
        self.emit(at.indent + 1, f"{a} = b'\\x00'")
        self.emit(at.indent, "else:")
        outer, self.finite = self.finite, []
        parts = self.value(branches[1], u, at._replace(indent=at.indent + 1), "MISSING")
        self.check_finite(at.indent + 1)
        self.finite = outer
        code = _merged([b"\x02", *parts])
        if len(code) == 1:
            self.emit(at.indent + 1, f"{a} = {code[0]}")
        elif len(code) == 2:
            self.emit(at.indent + 1, f"{a} = {code[0]} + {code[1]}")
        else:
            self.emit(at.indent + 1, f"{a} = b''.join(({', '.join(code)}))")
        return a

    def array(self, kind: Mapping[str, Any], value: str, at: _At) -> str:
        i = at.indent
        items, a, out, item = self.local("l"), self.local("a"), self.local("w"), self.local("i")
        self.emit(i, f"{items} = {value}")
        self.emit(i, f"if {items}.__class__ is not list:")
        self.emit(i + 1, f"{items} = ARRAY({items}, {at.path!r})")
        self.emit(i, f"if {items}:")
        # Avro arrays are blocks: count, items, then a zero count to end.
        self.emit(i + 1, f"{out} = [LONGBYTES(len({items}), {at.path!r})]")
        self.emit(i + 1, f"for {item} in {items}:")
        outer, self.finite = self.finite, []
        inner = _At(i + 2, f"{at.path}[]", at.namespace)
        parts = self.value(kind["items"], item, inner, "MISSING")
        self.check_finite(i + 2)
        self.finite = outer
        self.emit(i + 2, f"{out} += ({', '.join(_merged(parts))},)")
        self.emit(i + 1, f"{out}.append(b'\\x00')")
        self.emit(i + 1, f"{a} = b''.join({out})")
        self.emit(i, "else:")
        self.emit(i + 1, f"{a} = b'\\x00'")
        return a


def _native_program(schema: Mapping[str, Any], plan: RecordPlan | None = None) -> tuple[Any, ...]:
    """The record program the C encoder walks (see _avro_native.c): per field (name, encoded
    default or None, kind, sub), with named types resolved.

    With the `plan` that normalizes the schema's values, a program for the wire body instead:
    fields under their wire names, DateTime text parsed as the plan parses it (see
    `compile_wire_encoder`)."""
    assert _native is not None
    named: dict[str, Any] = {}
    _collect_named(schema, schema.get("namespace"), named)
    compiler = _EncoderCompiler(False, _Strings(), _Longs())
    compiler.named = named
    kinds = {
        "double": _native.KIND_DOUBLE,
        "long": _native.KIND_LONG,
        "string": _native.KIND_STRING,
        "boolean": _native.KIND_BOOLEAN,
    }
    Outputs = Mapping[str, OutputField] | None

    def of_type(kind: Any, namespace: str | None, outs: Outputs = None) -> tuple[int, Any]:
        kind = compiler.resolve(kind, namespace)
        if isinstance(kind, list):
            if len(kind) != 2 or kind[0] != "null":
                raise TypeError(f"the native encoder supports only ['null', T] unions: {kind}")
            return _native.KIND_NULLABLE, of_type(kind[1], namespace)
        if isinstance(kind, Mapping):
            if kind["type"] == "record":
                return _native.KIND_RECORD, record(kind, namespace, outs)
            if kind["type"] == "array":
                return _native.KIND_ARRAY, of_type(kind["items"], namespace, outs)
            kind = kind["type"]
        if kind not in kinds:
            raise TypeError(f"the native encoder does not support {kind!r}")
        return kinds[kind], None

    def record(kind: Mapping[str, Any], namespace: str | None, outs: Outputs) -> tuple[Any, ...]:
        namespace = kind.get("namespace", namespace)
        fields = []
        for f in kind["fields"]:
            default = compiler.default_bytes(f, namespace)
            out = outs.get(f["name"]) if outs is not None else None
            if out is None:
                # The top record's pkey: its members are the plan's key fields.
                inner = key_outputs if plan is not None and outs is top else None
                fields.append((f["name"], default, *of_type(f["type"], namespace, inner)))
            elif out.spec.type == "DateTime":
                fields.append((out.source, default, _native.KIND_DATETIME, parse))
            else:
                members = {m.name: m for m in out.members} if out.members else None
                fields.append((out.source, default, *of_type(f["type"], namespace, members)))
        return tuple(fields)

    if plan is None:
        program = record(schema, None, None)
    else:
        top = {out.name: out for out in plan.output_fields}
        key_outputs = {out.name: out for out in plan.key_fields}
        parse = plan.datetime_parser
        program = record(schema, None, top)
    _native.check(program)  # the C code trusts a program's shape from here on
    return program


WireEncoder = Callable[[Mapping[str, Any], bytes], bytes | None]


def compile_wire_encoder(schema: Mapping[str, Any], plan: RecordPlan) -> WireEncoder | None:
    """`plan.apply` and the encoder in one step, in C: (wire body, prefix) -> prefix + Avro
    bytes of the normalized value, or None when the Python path must decide (a value to convert
    or refuse, DateTime text the plan cannot parse). Only for bodies whose fields the plan all
    knows (`plan.known.issuperset(body)`) and whose key it has checked (`plan.key_of`).

    None without the C extension, or for a plan with fields it does not cover (nested values
    kept as JSON text)."""
    if _native is None or any(out.spec.type == "json" for out in plan.output_fields):
        return None
    encode_wire: WireEncoder = functools.partial(_native.encode, _native_program(schema, plan))
    return encode_wire


def compile_encoder(schema: Mapping[str, Any], native: bool | None = None) -> Encoder:
    """A function (value, prefix=b"") -> prefix + Avro binary body of `value` under `schema`.

    Byte for byte what fastavro.schemaless_writer writes for valid values; raises
    SchemaMismatch naming the field for a value that does not fit.

    With the C extension (`native`, the default when it is built), values of plain dicts,
    lists, str, int, float, bool and None are encoded in C; anything else (and every value the
    schema refuses) goes to the careful Python encoder, which writes it or names the field.

    In Python, a dict whose keys (in order) were seen a few times before is encoded by a
    function compiled for exactly those keys (at most _MAX_SHAPES per schema); any other value
    by the generic one. Both write the same bytes and raise the same errors."""
    strings, longs = _Strings(), _Longs()
    careful = _EncoderCompiler(True, strings, longs).compile(schema)
    if native is None:
        native = _native is not None
    if native:
        if _native is None:
            raise RuntimeError("the native Avro encoder is not built")
        program, fast = _native_program(schema), _native.encode

        def encode_native(value: Mapping[str, Any], prefix: bytes = b"") -> bytes:
            out = fast(program, value, prefix)
            return careful(value, prefix) if out is None else out

        return encode_native
    generic = _EncoderCompiler(False, strings, longs).compile(schema, careful)
    # MLink leaves defaults out, so a stream's dicts come in a few shapes (sets of keys, in
    # the order of the wire): each frequent one gets an encoder of its own.
    shapes: dict[tuple[str, ...], Encoder] = {}
    seen: dict[tuple[str, ...], int] = {}

    def learn(value: Mapping[str, Any], prefix: bytes = b"") -> bytes:
        if value.__class__ is dict and len(shapes) < _MAX_SHAPES:
            shape = tuple(value)
            count = seen.get(shape, 0) + 1
            if count < _SHAPE_AFTER:
                if len(seen) >= _MAX_SHAPES_COUNTED:
                    seen.clear()
                seen[shape] = count
            else:
                seen.pop(shape, None)
                compiler = _EncoderCompiler(False, strings, longs)
                try:
                    shapes[shape] = compiler.compile(schema, careful, shape)
                except Exception:  # a speed-up only: the generic encoder is always right
                    log.exception("no specialised encoder for a shape of %s", schema["name"])
                    shapes[shape] = generic
        return generic(value, prefix)

    def encode(value: Mapping[str, Any], prefix: bytes = b"") -> bytes:
        if value.__class__ is dict:
            specialized = shapes.get(tuple(value))
            if specialized is not None:
                return specialized(value, prefix)
        return learn(value, prefix)

    return encode


# ---------------------------------------------------------------------------------------------
# Versions


class WriterSchema:
    """One version of a message type's writer schema, ready to encode with.

    `json` is the schema text to register or publish; `fingerprint` its CRC-64-AVRO fingerprint
    in hex, `fingerprint_bytes` the 8 bytes single-object encoding writes; `parsed` the fastavro
    form (for readers); `plan` the record plan whose values it encodes; `encode_wire` that
    plan's `apply` and `encode` in one C call, or None (see compile_wire_encoder).
    """

    __slots__ = (
        "canonical",
        "encode",
        "encode_wire",
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
        # The wire body straight to bytes, for the bridge's hot path (None without C).
        self.encode_wire = compile_wire_encoder(schema, plan)

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

    def fork(self) -> SchemaHistory:
        """A copy to evolve on its own: a version stays out of this history until adopted (the
        registry may refuse it)."""
        fork = copy.copy(self)
        fork._versions = list(self._versions)
        return fork

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
