"""MLink messages: request builders, wire encoding, and parsing of what the server sends.

Every message on the JSON wire is `{"header": {"mTyp": <type>, ...}, "message": {...}}`.
Requests are small frozen objects with `to_message()`; `encode_request` turns one into the bytes
for a websocket payload in the chosen form. `parse_message` turns a received body into a typed
server message (admin, ack, checkpoint, response) or a data record.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from bridge.errors import MessageError
from bridge.mlink.framing import WireForm, encode_frame

# The header flag that marks a deleted live-data object (MessageMetadata.is_deleted on the wire).
DELETE_HEADER = "isDel"

# --------------------------------------------------------------------------------------------
# Timestamps: headers carry "YYYY-MM-DD HH:MM:SS.ffffff" (UTC, microseconds); bodies carry ns.


def format_stamp(ns: int) -> str:
    """Nanoseconds since the epoch -> MLink's header time text (microsecond precision)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{rest // 1000:06d}"


def parse_stamp(text: str) -> int:
    """MLink's header time text -> nanoseconds since the epoch."""
    try:
        moment = datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    except ValueError as exc:
        raise MessageError(f"bad header time {text!r}") from exc
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000


# --------------------------------------------------------------------------------------------
# Requests


class QueryType(StrEnum):
    FULL_QUERY = "FullQuery"  # cache, then nothing more
    INCR_QUERY = "IncrQuery"  # cache after highwaterTs, then nothing more
    FULL_SUBSCRIPTION = "FullSubscription"  # cache, then live updates
    INCR_SUBSCRIPTION = "IncrSubscription"  # cache after highwaterTs, then live updates

    @property
    def is_subscription(self) -> bool:
        return self in (QueryType.FULL_SUBSCRIPTION, QueryType.INCR_SUBSCRIPTION)


@dataclass(frozen=True, slots=True)
class MLinkLogon:
    """Authenticate (or re-authenticate) a session. Secrets never appear in repr()."""

    api_key: str | None = field(default=None, repr=False)
    api_password: str | None = field(default=None, repr=False)
    jwt_token: str | None = field(default=None, repr=False)

    mtyp = "MLinkLogon"

    def __post_init__(self) -> None:
        if not (self.api_key or self.jwt_token):
            raise ValueError("MLinkLogon needs an API key or a JWT")

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.api_key:
            out["apiKey"] = self.api_key
        if self.api_password:
            out["apiPassword"] = self.api_password
        if self.jwt_token:
            out["jwtToken"] = self.jwt_token
        return out


@dataclass(frozen=True, slots=True)
class MLinkStream:
    """Stream every record of one message type that matches `where` (snapshot, then live)."""

    query_label: str
    msg_name: str
    where: str | None = None
    view: str | None = None
    active_latency: int = 1
    highwater_ts: int | None = None

    mtyp = "MLinkStream"

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queryLabel": self.query_label,
            "activeLatency": self.active_latency,
            "msgName": self.msg_name,
        }
        if self.where:
            out["where"] = self.where
        if self.view:
            out["view"] = self.view
        if self.highwater_ts:
            out["highwaterTs"] = self.highwater_ts
        return out


@dataclass(frozen=True, slots=True)
class MLinkSubscribe:
    """Subscribe to individual primary keys: `subscribe` is ((msgName, msgPKey), ...)."""

    subscribe: Sequence[tuple[str, str]]
    views: Sequence[tuple[str, str]] = ()
    unsubscribe: Sequence[tuple[str, str]] = ()
    active_latency: int = 1
    do_reset: bool = False

    mtyp = "MLinkSubscribe"

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "activeLatency": self.active_latency,
            "doReset": "Yes" if self.do_reset else "No",
        }
        if self.views:
            out["View"] = [{"msgName": name, "view": view} for name, view in self.views]
        if self.subscribe:
            out["Subscribe"] = [{"msgName": n, "msgPKey": k} for n, k in self.subscribe]
        if self.unsubscribe:
            out["Unsubscribe"] = [{"msgName": n, "msgPKey": k} for n, k in self.unsubscribe]
        return out


@dataclass(frozen=True, slots=True)
class MsgTypeFilter:
    """One entry of MLinkQuery.MsgTypes: a message type by name or number, with where/view."""

    msg_name: str | None = None
    msg_type: int | None = None
    where: str | None = None
    view: str | None = None

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.msg_name:
            out["msgName"] = self.msg_name
        if self.msg_type:
            out["msgType"] = self.msg_type
        if self.where:
            out["where"] = self.where
        if self.view:
            out["view"] = self.view
        return out


@dataclass(frozen=True, slots=True)
class MLinkQuery:
    """A query or subscription over one or more message types, with key filters."""

    query_label: str
    query_type: QueryType
    msg_types: Sequence[MsgTypeFilter]
    tkey_filters: Sequence[Mapping[str, Any]] = ()
    ekey_filters: Sequence[Mapping[str, Any]] = ()
    okey_filters: Sequence[Mapping[str, Any]] = ()
    active_latency: int = 1
    highwater_ts: int | None = None

    mtyp = "MLinkQuery"

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queryLabel": self.query_label,
            "queryType": str(self.query_type),
            "activeLatency": self.active_latency,
            "MsgTypes": [m.to_message() for m in self.msg_types],
        }
        if self.highwater_ts:
            out["highwaterTs"] = self.highwater_ts
        if self.tkey_filters:
            out["TKeyFilters"] = [{"tickerKey": dict(k)} for k in self.tkey_filters]
        if self.ekey_filters:
            out["EKeyFilters"] = [{"expiryKey": dict(k)} for k in self.ekey_filters]
        if self.okey_filters:
            out["OKeyFilters"] = [{"optionKey": dict(k)} for k in self.okey_filters]
        return out


@dataclass(frozen=True, slots=True)
class MLinkSignalReady:
    """Ask for the pending updates of a query that waits for signals (activeLatency -1)."""

    query_label: str | None = None
    ready_scan: str | None = None  # Incremental | FullScan

    mtyp = "MLinkSignalReady"

    def to_message(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.query_label:
            out["queryLabel"] = self.query_label
        if self.ready_scan:
            out["readyScan"] = self.ready_scan
        return out


Request = MLinkLogon | MLinkStream | MLinkSubscribe | MLinkQuery | MLinkSignalReady


def envelope(mtyp: str, message: Mapping[str, Any], sent_ns: int | None = None) -> dict[str, Any]:
    """Wrap a message body in MLink's envelope; stamp sTim/encT like the sample clients do."""
    header: dict[str, Any] = {"mTyp": mtyp}
    if sent_ns is not None:
        stamp = format_stamp(sent_ns)
        header["sTim"] = stamp
        header["encT"] = stamp
    return {"header": header, "message": dict(message)}


def encode_envelope(doc: Mapping[str, Any], form: WireForm, number: int = 0) -> bytes:
    """One message as websocket payload bytes: plain JSON, or one framed JSON message."""
    body = orjson.dumps(doc)
    if form is WireForm.JSON:
        return body
    if form is WireForm.FRAMED:
        return encode_frame(body, number, "J")
    raise ValueError("protobuf requests are encoded by the protobuf codec, not here")


def encode_request(
    request: Request, form: WireForm, sent_ns: int | None = None, number: int = 0
) -> bytes:
    return encode_envelope(envelope(request.mtyp, request.to_message(), sent_ns), form, number)


# --------------------------------------------------------------------------------------------
# What the server sends


def decode_json(body: bytes) -> dict[str, Any]:
    """Parse one JSON message and check its envelope. NaN and Infinity are rejected."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MessageError(f"invalid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MessageError(f"message is a JSON {type(doc).__name__}, not an object")
    header = doc.get("header")
    if not isinstance(header, dict):
        raise MessageError("message has no header object")
    mtyp = header.get("mTyp")
    if not isinstance(mtyp, str) or not mtyp:
        raise MessageError("message header has no mTyp")
    message = doc.get("message")
    if message is None:
        doc["message"] = {}
    elif not isinstance(message, dict):
        raise MessageError(f"{mtyp}: message body is not an object")
    return doc


@dataclass(frozen=True, slots=True)
class AdminMessage:
    """MLinkAdmin: the session's authentication state (LoggedOn, AuthError, GoodNight, ...)."""

    state: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Ack:
    """MLinkStreamAck / MLinkSubscribeAck: whether a request was accepted."""

    mtyp: str
    msg_name: str
    result: str
    detail: str = ""
    query_label: str | None = None

    @property
    def ok(self) -> bool:
        return self.result.upper() == "OK"


@dataclass(frozen=True, slots=True)
class CheckPoint:
    """MLinkStreamCheckPt or MLinkResponse: a subscription's progress (Begin .. Complete)."""

    mtyp: str
    state: str
    query_label: str | None = None
    detail: str = ""
    num_messages_sent: int | None = None
    highwater_ts: int | None = None


# Not frozen: one is made per record, and a frozen dataclass takes ~5x longer to build.
@dataclass(slots=True)
class DataRecord:
    """A live-data object (or its deletion) as received; `raw` is the exact body."""

    mtyp: str
    header: dict[str, Any]
    message: dict[str, Any]
    raw: bytes
    deleted: bool = False


ServerMessage = AdminMessage | Ack | CheckPoint | DataRecord


def _opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _label(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# What `classify` makes of a type; every other type is a DataRecord.
ADMIN_TYPE = "MLinkAdmin"
ACK_TYPES = ("MLinkStreamAck", "MLinkSubscribeAck")
CHECKPOINT_TYPES = ("MLinkStreamCheckPt", "MLinkResponse", "QueryResult")
CONTROL_TYPES = frozenset({ADMIN_TYPE, *ACK_TYPES, *CHECKPOINT_TYPES})


def parse_data_record(body: bytes) -> DataRecord | None:
    """The receive path's fast lane: the DataRecord of a well-formed data message, else None
    (then parse_message decides, and names what is wrong). Equal to parse_message(body)
    wherever it returns a record."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    header = doc.get("header") if doc.__class__ is dict else None
    if header.__class__ is not dict:
        return None
    mtyp = header.get("mTyp")
    message = doc.get("message")
    if mtyp.__class__ is not str or not mtyp or mtyp in CONTROL_TYPES:
        return None
    if message.__class__ is not dict:
        return None
    return DataRecord(mtyp, header, message, body, bool(header.get(DELETE_HEADER)))


def parse_message(body: bytes) -> ServerMessage:
    """Classify one received JSON body. Unknown admin-like types are data records."""
    return classify(decode_json(body), body)


def classify(doc: dict[str, Any], body: bytes) -> ServerMessage:
    """Classify one checked envelope (see decode_json); `body` is the bytes it came from."""
    header = doc["header"]
    mtyp: str = header["mTyp"]
    message: dict[str, Any] = doc["message"]
    if mtyp == ADMIN_TYPE:
        return AdminMessage(_text(message.get("state")), _text(message.get("detail")))
    if mtyp in ACK_TYPES:
        return Ack(
            mtyp,
            _text(message.get("msgName")),
            _text(message.get("result")),
            _text(message.get("detail")),
            _label(message.get("queryLabel")),
        )
    if mtyp in CHECKPOINT_TYPES:
        state = _text(message.get("state"))
        if mtyp == "QueryResult" and not state:
            # REST answers end with QueryResult {"result": "Ok"}: the query is complete.
            state = "Complete"
        return CheckPoint(
            mtyp,
            state,
            _label(message.get("queryLabel")),
            _text(message.get("detail")),
            _opt_int(message.get("numMessagesSent")),
            _opt_int(message.get("highwaterTs")),
        )
    return DataRecord(mtyp, header, message, body, bool(header.get(DELETE_HEADER)))
