"""MLink's protobuf wire form (`/mlink/proto`), without I/O.

A protobuf message travels as a framed message of kind P (`\\r\\nP` + 5-digit message number +
6-digit length + binary body; see framing.py). `ProtoCodec` turns such a body into exactly what
the JSON path produces — the `{"header": ..., "message": ...}` envelope with MLink's JSON
(camelCase) field names, then the same AdminMessage / Ack / CheckPoint / DataRecord — so that
everything downstream (transforms, Avro) cannot tell the two forms apart. It also encodes
envelopes (requests; the simulator's output) the other way.

Facts it relies on (SpiderRock's MLink-Samples, proto_files/ and client-python/PROTO):

* Messages live in package `spiderrock.protobuf`; every one has `MessageMetadata _meta = 1`
  (message_type, is_deleted, time_sent, sender_id, ...). `is_deleted` marks a deleted live-data
  object, the JSON header's `isDel`.
* Live-data messages nest their primary key as `PKey pkey = 2`; the other field numbers are the
  data dictionary's (the catalog's), so names are taken from the catalog by number. Fields the
  catalog does not know use the descriptor's json_name.
* Keys are messages: TickerKey {asset_type, ticker_src, ticker}, ExpiryKey adds a DateKey
  expiration {year, month, day}, OptionKey adds strike and call_put. They become the JSON key
  objects {"at","ts","tk","dt","xx","cp"}.
* Enums are numbers; their JSON names come from the catalog (the same table the JSON path uses).
* DateTime is `google.protobuf.Timestamp`, TimeSpan `google.protobuf.Duration`: they become
  MLink's JSON text (`YYYY-MM-DD HH:MM:SS.ffffff`, `HH:MM:SS.ffffff`).
* `float` is 32-bit: a value becomes the shortest decimal that reads back as the same float32,
  which is what MLink's JSON prints (141.69, not 141.69000244140625).
* The frame's message number names the type (3310 MLinkQuery, 3315 MLinkResponse, data numbers
  from the dictionary). MLink publishes no number for most websocket admin messages, which then
  travel as 00000: the type is read from `_meta.message_type`.

Proto3 cannot tell a zero from a missing field; live data omits both, as MLink's JSON omits
defaults. In client requests numeric zeros are kept (activeLatency 0 means "no delay", not
"wait for MLinkSignalReady").
"""

from __future__ import annotations

import math
import re
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor
from google.protobuf.message import DecodeError, EncodeError, Message

from bridge.errors import ConfigError, MessageError
from bridge.mlink.catalog import Catalog, FieldSpec, default_catalog
from bridge.mlink.framing import encode_frame
from bridge.mlink.messages import (
    DELETE_HEADER,
    Request,
    ServerMessage,
    classify,
    envelope,
    format_stamp,
    parse_stamp,
)

PACKAGE = "spiderrock.protobuf"
BUNDLED_DESCRIPTORS = "data/mlink.protoset"
_TIMESTAMP = "google.protobuf.Timestamp"
_DURATION = "google.protobuf.Duration"
_KEYS = {f"{PACKAGE}.TickerKey", f"{PACKAGE}.ExpiryKey", f"{PACKAGE}.OptionKey"}
_DATEKEY = f"{PACKAGE}.DateKey"
_NS = 1_000_000_000

# JSON names the documentation uses where protoc's json_name differs.
_ALIASES = {
    ("MLinkQuery", "msgTypes"): "MsgTypes",
    ("MLinkQuery", "tkeyFilters"): "TKeyFilters",
    ("MLinkQuery", "ekeyFilters"): "EKeyFilters",
    ("MLinkQuery", "okeyFilters"): "OKeyFilters",
}
# Admin states the documentation prints that the AdminState enum spells differently.
_ENUM_ALIASES = {
    "AdminState": {"waitingforlogon": "WaitingLogon", "autherror": "LogonFailed"},
}
# Client requests: a numeric zero is a value the server reads (activeLatency 0: no delay).
_REQUESTS = frozenset(
    {"MLinkLogon", "MLinkQuery", "MLinkStream", "MLinkSubscribe", "MLinkSignalReady"}
)
_FLOAT32 = struct.Struct("<f")
_TIMESPAN = re.compile(r"(-)?(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
_NUMERIC = frozenset(
    {
        FieldDescriptor.CPPTYPE_INT32,
        FieldDescriptor.CPPTYPE_INT64,
        FieldDescriptor.CPPTYPE_UINT32,
        FieldDescriptor.CPPTYPE_UINT64,
        FieldDescriptor.CPPTYPE_DOUBLE,
        FieldDescriptor.CPPTYPE_FLOAT,
    }
)


# --------------------------------------------------------------------------------------------
# Value conversions


_SHORTEST: dict[float, float] = {}  # a stream repeats its prices: remember, bounded


def shortest_float32(value: float) -> float:
    """The shortest decimal that reads back as the same 32-bit float, as a Python float."""
    known = _SHORTEST.get(value)
    if known is not None:
        return known
    if value == 0.0 or not math.isfinite(value):
        return value
    shortest = value
    for digits in (6, 7, 8, 9):
        candidate = float(f"{value:.{digits}g}")
        if _FLOAT32.unpack(_FLOAT32.pack(candidate))[0] == value:
            shortest = candidate
            break
    if len(_SHORTEST) >= 65_536:
        _SHORTEST.clear()
    _SHORTEST[value] = shortest
    return shortest


_SECONDS: dict[int, str] = {}  # "YYYY-MM-DD HH:MM:SS" per second seen, bounded


def format_datetime(ns: int) -> str:
    """ns since the epoch -> MLink's DateTime text; nine fraction digits only when needed."""
    seconds, rest = divmod(ns, _NS)
    prefix = _SECONDS.get(seconds)
    if prefix is None:
        prefix = format_stamp(seconds * _NS)[:-7]
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        _SECONDS[seconds] = prefix
    if rest % 1000 == 0:
        return f"{prefix}.{rest // 1000:06d}"
    return f"{prefix}.{rest:09d}"


def parse_datetime(text: str) -> int:
    """MLink's DateTime text (0-9 fraction digits, T or space) -> ns since the epoch."""
    whole, _, fraction = text.rstrip("Z").partition(".")
    try:
        moment = datetime.strptime(whole.replace("T", " "), "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise MessageError(f"bad DateTime {text!r}") from None
    if len(fraction) > 9 or (fraction and not fraction.isdigit()):
        raise MessageError(f"bad DateTime {text!r}")
    seconds = int(moment.replace(tzinfo=UTC).timestamp())
    return seconds * _NS + int(fraction.ljust(9, "0") or 0)


def format_timespan(ns: int) -> str:
    """A duration -> `[-][D.]HH:MM:SS.ffffff` (nine fraction digits only when needed)."""
    sign = "-" if ns < 0 else ""
    seconds, rest = divmod(abs(ns), _NS)
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    fraction = f"{rest // 1000:06d}" if rest % 1000 == 0 else f"{rest:09d}"
    prefix = f"{days}." if days else ""
    return f"{sign}{prefix}{hours:02d}:{minutes:02d}:{seconds:02d}.{fraction}"


def parse_timespan(text: str) -> int:
    """`[-][D.]HH:MM:SS[.fraction]` -> ns."""
    match = _TIMESPAN.fullmatch(text)
    if match is None:
        raise MessageError(f"bad TimeSpan {text!r}")
    sign, days, hours, minutes, seconds, fraction = match.groups()
    total = ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)
    ns = total * _NS + int((fraction or "").ljust(9, "0"))
    return -ns if sign else ns


def _date_text(key: Message) -> str:
    year, month, day = key.year, key.month, key.day  # type: ignore[attr-defined]
    return f"{year:04d}-{month:02d}-{day:02d}"


def _set_date(key: Message, text: str) -> None:
    parts = text.split("-")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        raise MessageError(f"bad date {text!r} (YYYY-MM-DD)")
    key.year, key.month, key.day = (int(p) for p in parts)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------------
# Descriptor sets


def _pool_from(data: bytes, source: str) -> descriptor_pool.DescriptorPool:
    files = descriptor_pb2.FileDescriptorSet()
    try:
        files.ParseFromString(data)
    except DecodeError as exc:
        raise ConfigError(f"{source}: not a compiled descriptor set: {exc}") from None
    if not files.file:
        raise ConfigError(f"{source}: the descriptor set holds no .proto files")
    pool = descriptor_pool.DescriptorPool()
    pending = list(files.file)
    added: set[str] = set()
    while pending:  # dependencies first, whatever order the set lists them in
        ready = [f for f in pending if set(f.dependency) <= added]
        if not ready:
            missing = sorted({d for f in pending for d in f.dependency} - added)
            raise ConfigError(
                f"{source}: imports missing from the set: {', '.join(missing)} "
                "(compile with --include_imports)"
            )
        for proto in ready:
            try:
                pool.Add(proto)  # type: ignore[no-untyped-call]
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{source}: {proto.name}: {exc}") from None
            added.add(proto.name)
            pending.remove(proto)
    return pool


@cache
def bundled_codec() -> ProtoCodec:
    """A codec for the bundled descriptor set and catalog, built once."""
    return ProtoCodec.load()


@cache
def _bundled_bytes() -> bytes:
    return resources.files("bridge.mlink").joinpath(BUNDLED_DESCRIPTORS).read_bytes()


# --------------------------------------------------------------------------------------------
# Per-type plans: how each field of a message type maps to and from JSON.


@dataclass(slots=True)
class _FieldPlan:
    descriptor: FieldDescriptor
    json: str
    to_json: Callable[[Any], Any]
    specs: tuple[FieldSpec, ...] = ()  # the catalog's members of a nested group / pkey


@dataclass(slots=True)
class _TypePlan:
    by_number: dict[int, _FieldPlan]
    by_name: dict[str, _FieldPlan]  # lower-cased JSON names (and proto names)
    zeros: dict[str, Any] = field(default_factory=dict)  # requests: numeric defaults
    # The decoding hot path: field descriptor -> (JSON name, converter).
    by_field: dict[FieldDescriptor, tuple[str, Callable[[Any], Any]]] = field(default_factory=dict)


class ProtoCodec:
    """Protobuf <-> MLink's JSON envelope, for the message types of one or two descriptor sets.

    `descriptor_sets` are tried in order for each message name (a user's set first, then the
    bundled one, say). `numbers` maps names to frame numbers where they differ from the catalog.
    """

    def __init__(
        self,
        descriptor_sets: Sequence[tuple[bytes, str]],
        catalog: Catalog | None = None,
        numbers: Mapping[str, int] | None = None,
    ) -> None:
        self.catalog = catalog or default_catalog()
        self._pools = [_pool_from(data, source) for data, source in descriptor_sets]
        self._classes: dict[str, type[Message] | None] = {}
        self._numbers: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self.learn({name: n for name, n in self.catalog.admin_numbers.items() if n})
        self.learn({spec.name: spec.number for spec in self.catalog})
        if numbers:
            self.learn(numbers)
        self._plans: dict[str, _TypePlan] = {}
        self._enums: dict[str, tuple[dict[int, str], dict[str, int]]] = {}
        self._meta_class = self._class_of_full(f"{PACKAGE}.MessageMetadata")

    @classmethod
    def load(cls, path: Path | None = None, catalog: Catalog | None = None) -> ProtoCodec:
        """The bundled descriptor set, after the one at `path` when given."""
        sets: list[tuple[bytes, str]] = []
        if path is not None:
            try:
                sets.append((path.read_bytes(), f"MLINK_PROTO_DESCRIPTORS {path}"))
            except OSError as exc:
                raise ConfigError(f"MLINK_PROTO_DESCRIPTORS: cannot read {path}: {exc}") from None
        sets.append((_bundled_bytes(), "bundled descriptor set"))
        return cls(sets, catalog)

    # -- names and numbers ------------------------------------------------------------------

    def learn(self, numbers: Mapping[str, int]) -> None:
        """Frame numbers by message name (from getmsgtypes, say); later calls win."""
        for name, number in numbers.items():
            old = self._numbers.get(name)
            if old is not None and self._names.get(old) == name:
                del self._names[old]
            self._numbers[name] = number
            self._names[number] = name

    def number_of(self, name: str) -> int:
        return self._numbers.get(name, 0)

    def name_of(self, number: int) -> str | None:
        return self._names.get(number)

    def _class_of_full(self, full_name: str) -> type[Message] | None:
        for pool in self._pools:
            try:
                desc = pool.FindMessageTypeByName(full_name)  # type: ignore[no-untyped-call]
            except KeyError:
                continue
            return message_factory.GetMessageClass(desc)
        return None

    def message_class(self, name: str) -> type[Message] | None:
        """The class of `spiderrock.protobuf.<name>`, from the first set that has it."""
        if name not in self._classes:
            self._classes[name] = self._class_of_full(f"{PACKAGE}.{name}")
        return self._classes[name]

    # -- decoding ---------------------------------------------------------------------------

    def decode(self, number: int, body: bytes) -> ServerMessage:
        """One P frame -> the message the JSON path would have produced. MessageError if the
        type is unknown or the bytes are not that type."""
        return classify(self.to_envelope(number, body), body)

    def to_envelope(self, number: int, body: bytes) -> dict[str, Any]:
        """One P frame -> {"header": {...}, "message": {...}} with MLink's JSON names."""
        name = self._names.get(number) if number else None
        cls = self.message_class(name) if name else None
        meta_name = None
        if cls is None:
            meta_name = self._meta_type(body)
            cls = self.message_class(meta_name) if meta_name else None
            if cls is None:
                what = f"protobuf message number {number}"
                if meta_name:
                    what += f" ({meta_name})"
                raise MessageError(f"{what} is not in the descriptor set")
            name = meta_name
        assert name is not None
        msg = cls()
        try:
            msg.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise MessageError(f"{name}: not a valid protobuf body: {exc}") from None
        plan = self._plan(cast(Descriptor, msg.DESCRIPTOR), name)
        header: dict[str, Any] = {"mTyp": name}
        message: dict[str, Any] = dict(plan.zeros)
        fast = plan.by_field
        for fd, value in msg.ListFields():
            entry = fast.get(fd)
            if entry is not None:
                message[entry[0]] = entry[1](value)
            elif fd.number == 1 and fd.message_type is not None and fd.name == "_meta":
                self._header(value, header)
            else:
                fp = plan.by_number.get(fd.number) or self._field_plan(fd, name, None)
                message[fp.json] = fp.to_json(value)
        return {"header": header, "message": message}

    def _meta_type(self, body: bytes) -> str | None:
        """`_meta.message_type` read straight off the wire (field 1, length-delimited)."""
        if self._meta_class is None:
            return None
        raw = _field_one(body)
        if raw is None:
            return None
        meta = self._meta_class()
        try:
            meta.ParseFromString(raw)
        except (DecodeError, RuntimeError, ValueError):
            return None
        text: str = meta.message_type  # type: ignore[attr-defined]
        return text or None

    @staticmethod
    def _header(meta: Any, header: dict[str, Any]) -> None:
        if meta.time_sent:
            header["sTim"] = format_datetime(meta.time_sent - meta.time_sent % 1000)
        if meta.sender_id:
            header["sID"] = meta.sender_id
        if meta.is_deleted:
            header[DELETE_HEADER] = True

    # -- encoding ---------------------------------------------------------------------------

    def from_envelope(self, doc: Mapping[str, Any]) -> tuple[int, bytes]:
        """A JSON envelope -> (frame number, protobuf body). Fields the type lacks are left out."""
        header = doc.get("header") or {}
        name = header.get("mTyp")
        if not isinstance(name, str) or not name:
            raise MessageError("envelope header has no mTyp")
        cls = self.message_class(name)
        if cls is None:
            raise MessageError(f"{name} is not in the descriptor set")
        msg = cls()
        desc = cast(Descriptor, msg.DESCRIPTOR)
        plan = self._plan(desc, name)
        meta_fd = desc.fields_by_number.get(1)
        if meta_fd is not None and meta_fd.message_type is not None:
            meta = getattr(msg, meta_fd.name)
            meta.message_type = name
            if header.get(DELETE_HEADER):
                meta.is_deleted = True
            stamp = header.get("sTim")
            if isinstance(stamp, str) and stamp:
                meta.time_sent = parse_stamp(stamp)
            if isinstance(header.get("sID"), int):
                meta.sender_id = header["sID"]
        self._fill(msg, plan, doc.get("message") or {})
        try:
            body = msg.SerializeToString()
        except EncodeError as exc:
            raise MessageError(f"{name}: {exc}") from None
        return self.number_of(name), body

    def encode_frame(self, doc: Mapping[str, Any]) -> bytes:
        number, body = self.from_envelope(doc)
        return encode_frame(body, number, "P")

    def encode_request(self, request: Request, sent_ns: int | None = None) -> bytes:
        """A request as the `\\r\\nP` framed protobuf message MLink's /mlink/proto expects."""
        return self.encode_frame(envelope(request.mtyp, request.to_message(), sent_ns))

    def _fill(self, msg: Message, plan: _TypePlan, data: Mapping[str, Any]) -> None:
        for key, value in data.items():
            if value is None:
                continue
            fp = plan.by_name.get(key.lower())
            if fp is None:
                continue  # not in this type: MLink's server would not know it either
            fd = fp.descriptor
            if fd.is_repeated:
                target = getattr(msg, fd.name)
                for item in value if isinstance(value, list) else [value]:
                    if fd.message_type is not None:
                        self._set_message(target.add(), fd, item, fp)
                    else:
                        target.append(self._scalar(fd, item))
            elif fd.message_type is not None:
                self._set_message(getattr(msg, fd.name), fd, value, fp)
            else:
                try:
                    setattr(msg, fd.name, self._scalar(fd, value))
                except (TypeError, ValueError) as exc:
                    raise MessageError(f"{fd.full_name}: {exc}") from None

    def _set_message(self, target: Any, fd: FieldDescriptor, value: Any, fp: _FieldPlan) -> None:
        full = fd.message_type.full_name
        if full == _TIMESTAMP:
            ns = value if isinstance(value, int) else parse_datetime(str(value))
            target.seconds, target.nanos = divmod(ns, _NS)
        elif full == _DURATION:
            ns = value if isinstance(value, int) else parse_timespan(str(value))
            seconds, nanos = divmod(abs(ns), _NS)
            sign = -1 if ns < 0 else 1
            target.seconds, target.nanos = sign * seconds, sign * nanos
        elif full == _DATEKEY:
            _set_date(target, str(value))
        elif full in _KEYS:
            self._set_key(target, value)
        elif isinstance(value, Mapping):
            target.SetInParent()
            self._fill(target, self._plan(fd.message_type, None, fp.specs), value)
        else:
            raise MessageError(f"{fd.full_name}: expected an object, got {value!r}")

    def _set_key(self, target: Any, value: Any) -> None:
        if not isinstance(value, Mapping):
            raise MessageError(f"a security key must be an object, got {value!r}")
        desc = target.DESCRIPTOR
        target.SetInParent()
        for short, proto in (("at", "asset_type"), ("ts", "ticker_src"), ("cp", "call_put")):
            if short in value and proto in desc.fields_by_name:
                fd = desc.fields_by_name[proto]
                setattr(target, proto, self._enum_number(fd.enum_type, value[short]))
        if "tk" in value:
            target.ticker = str(value["tk"])
        if "dt" in value and "expiration" in desc.fields_by_name:
            _set_date(target.expiration, str(value["dt"]))
        if "xx" in value and "strike" in desc.fields_by_name:
            target.strike = float(value["xx"])

    def _scalar(self, fd: FieldDescriptor, value: Any) -> Any:
        if fd.enum_type is not None:
            return self._enum_number(fd.enum_type, value)
        if fd.cpp_type in (FieldDescriptor.CPPTYPE_FLOAT, FieldDescriptor.CPPTYPE_DOUBLE):
            return float(value)
        if fd.cpp_type == FieldDescriptor.CPPTYPE_BOOL:
            return bool(value) if not isinstance(value, str) else value.lower() in ("yes", "true")
        return value

    # -- enums ------------------------------------------------------------------------------

    def _enum_tables(self, enum: EnumDescriptor) -> tuple[dict[int, str], dict[str, int]]:
        tables = self._enums.get(enum.full_name)
        if tables is None:
            names: dict[int, str] = {}
            known = self.catalog.enums.get(enum.name)
            prefix = enum.name.upper() + "_"
            for value in enum.values:
                bare = value.name.removeprefix(prefix)
                derived = (
                    "None"
                    if bare == "UNSPECIFIED"
                    else "".join(p[:1] + p[1:].lower() for p in bare.split("_"))
                )
                names.setdefault(value.number, derived)
            if known is not None:
                names.update(known.names)
            numbers = {text.lower(): number for number, text in names.items()}
            for value in enum.values:
                numbers.setdefault(value.name.lower(), value.number)
            for alias, target in _ENUM_ALIASES.get(enum.name, {}).items():
                if target.lower() in numbers:
                    numbers[alias] = numbers[target.lower()]
            tables = self._enums[enum.full_name] = (names, numbers)
        return tables

    def _enum_number(self, enum: EnumDescriptor, value: Any) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        number = self._enum_tables(enum)[1].get(str(value).lower())
        if number is None:
            raise MessageError(f"{enum.name} has no value {value!r}")
        return number

    def _enum_namer(self, enum: EnumDescriptor) -> Callable[[int], str]:
        names = self._enum_tables(enum)[0]

        def name(number: int) -> str:
            text = names.get(number)
            return text if text is not None else str(number)  # a value newer than our tables

        return name

    # -- plans ------------------------------------------------------------------------------

    def _plan(
        self, desc: Descriptor, msg_name: str | None, specs: tuple[FieldSpec, ...] | None = None
    ) -> _TypePlan:
        """How each field of `desc` maps to JSON. `msg_name` names a top-level message (the
        catalog's fields apply to a live-data one); `specs` are a nested group's members."""
        cache_key = f"{desc.full_name}|{msg_name}|{id(specs) if specs else 0}"
        plan = self._plans.get(cache_key)
        if plan is not None:
            return plan
        spec = self.catalog.get(msg_name) if msg_name else None
        if spec is not None and spec.name != msg_name:
            spec = None
        if specs is None and spec is not None:
            specs = spec.value_fields
        by_number: dict[int, _FieldPlan] = {}
        by_name: dict[str, _FieldPlan] = {}
        zeros: dict[str, Any] = {}
        for fd in desc.fields:
            if fd.number == 1 and fd.name == "_meta":
                continue
            fp = self._field_plan(fd, msg_name, specs, spec.key_fields if spec else None)
            by_number[fd.number] = fp
            for alias in (fp.json, _json_name(fd), fd.name):
                by_name.setdefault(alias.lower(), fp)
            if (
                msg_name in _REQUESTS
                and not fd.is_repeated
                and fd.enum_type is None
                and fd.cpp_type in _NUMERIC
            ):
                zeros[fp.json] = 0.0 if fd.cpp_type in _FLOATS else 0
        by_field = {fp.descriptor: (fp.json, fp.to_json) for fp in by_number.values()}
        plan = self._plans[cache_key] = _TypePlan(by_number, by_name, zeros, by_field)
        return plan

    def _field_plan(
        self,
        fd: FieldDescriptor,
        msg_name: str | None,
        specs: Iterable[FieldSpec] | None,
        key_specs: tuple[FieldSpec, ...] | None = None,
    ) -> _FieldPlan:
        known = {s.number: s for s in specs or ()}
        spec = known.get(fd.number)
        if fd.name == "pkey" and fd.message_type is not None and key_specs is not None:
            json_name = "pkey"
            members: tuple[FieldSpec, ...] = key_specs
        else:
            default = _json_name(fd)
            json_name = spec.name if spec else _ALIASES.get((msg_name or "", default), default)
            members = spec.fields if spec else ()
        return _FieldPlan(fd, json_name, self._converter(fd, members), members)

    def _converter(
        self, fd: FieldDescriptor, members: tuple[FieldSpec, ...]
    ) -> Callable[[Any], Any]:
        one = self._one_converter(fd, members)
        if not fd.is_repeated:
            return one
        return lambda values: [one(v) for v in values]

    def _one_converter(
        self, fd: FieldDescriptor, members: tuple[FieldSpec, ...]
    ) -> Callable[[Any], Any]:
        if fd.message_type is not None:
            full = fd.message_type.full_name
            if full == _TIMESTAMP:
                return lambda ts: format_datetime(ts.seconds * _NS + ts.nanos)
            if full == _DURATION:
                return lambda d: format_timespan(d.seconds * _NS + d.nanos)
            if full == _DATEKEY:
                return _date_text
            if full in _KEYS:
                return self._key_converter(fd.message_type)
            desc = fd.message_type
            nested = tuple(members) or None
            return lambda m: self._nested(m, desc, nested)
        if fd.enum_type is not None:
            return self._enum_namer(fd.enum_type)
        if fd.cpp_type == FieldDescriptor.CPPTYPE_FLOAT:
            return _checked_float32
        if fd.cpp_type == FieldDescriptor.CPPTYPE_DOUBLE:
            return _checked_double
        return _identity

    def _nested(self, msg: Any, desc: Descriptor, specs: tuple[FieldSpec, ...] | None) -> Any:
        fast = self._plan(desc, None, specs).by_field
        out: dict[str, Any] = {}
        for fd, value in msg.ListFields():
            json_name, convert = fast[fd]
            out[json_name] = convert(value)
        return out

    def _key_converter(self, desc: Descriptor) -> Callable[[Any], dict[str, Any]]:
        fields = desc.fields_by_name
        asset = self._enum_namer(fields["asset_type"].enum_type)
        source = self._enum_namer(fields["ticker_src"].enum_type)
        has_date = "expiration" in fields
        call_put = self._enum_namer(fields["call_put"].enum_type) if "call_put" in fields else None

        def convert(key: Any) -> dict[str, Any]:
            out: dict[str, Any] = {
                "at": asset(key.asset_type),
                "ts": source(key.ticker_src),
                "tk": key.ticker,
            }
            if has_date:
                out["dt"] = _date_text(key.expiration)
            if call_put is not None:
                out["xx"] = _checked_double(key.strike)
                out["cp"] = call_put(key.call_put)
            return out

        return convert


_FLOATS = frozenset({FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT})


def _json_name(fd: FieldDescriptor) -> str:
    """protoc's camelCase name of a field (the stubs do not declare the attribute)."""
    return str(fd.json_name)  # type: ignore[attr-defined]


def _identity(value: Any) -> Any:
    return value


def _checked_double(value: float) -> float:
    if not math.isfinite(value):
        raise MessageError(f"non-finite number {value} (MLink's JSON has no NaN or Infinity)")
    return value


def _checked_float32(value: float) -> float:
    return shortest_float32(_checked_double(value))


def _field_one(body: bytes) -> bytes | None:
    """The bytes of top-level field 1 when it is length-delimited; None if absent or garbled."""
    pos, end = 0, len(body)

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= end or shift > 63:
                raise ValueError("truncated varint")
            byte = body[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    try:
        while pos < end:
            tag = varint()
            number, wire = tag >> 3, tag & 7
            if wire == 0:
                varint()
            elif wire == 1:
                pos += 8
            elif wire == 5:
                pos += 4
            elif wire == 2:
                length = varint()
                if number == 1:
                    return body[pos : pos + length] if pos + length <= end else None
                pos += length
            else:
                return None
    except ValueError:
        return None
    return None


__all__ = [
    "BUNDLED_DESCRIPTORS",
    "ProtoCodec",
    "bundled_codec",
    "format_datetime",
    "format_timespan",
    "parse_datetime",
    "parse_timespan",
    "shortest_float32",
]
