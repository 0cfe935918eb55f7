"""The MLink session state machine, without I/O.

Bytes in, events out (the python-websockets / h11 way): the connector feeds every received
websocket payload to `receive()` and sends whatever `data_to_send()` returns. Nothing here
touches a socket, a clock (the clock is injected) or an event loop.

Two explicit tables drive it:

* CONNECTION_TABLE: (ConnState, AdminInput) -> (ConnState, action) — authentication and the
  server going away (connecting -> authenticating -> ready; failed; closing).
* SUBSCRIPTION_TABLE: (SubState, SubInput) -> (SubState, action) — per subscription,
  pending -> acked -> snapshot (Begin .. Active) -> live (Complete); failed; ended.

`phase` combines both into what an operator sees: connecting, authenticating, subscribing,
snapshot, live, closing, closed, failed.

Checkpoints in the documented JSON carry no query label, so they are matched to subscriptions in
the order the requests were sent (MLink answers requests one at a time); a label, when present,
wins. Data that arrives before its ack counts as the start of that subscription's snapshot.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from bridge.errors import BridgeError, MessageError, ProtocolError
from bridge.mlink import framing
from bridge.mlink.framing import WireForm
from bridge.mlink.messages import (
    Ack,
    AdminMessage,
    CheckPoint,
    DataRecord,
    MLinkLogon,
    MLinkQuery,
    MLinkStream,
    MLinkSubscribe,
    Request,
    ServerMessage,
    encode_request,
    parse_data_record,
    parse_message,
    parse_stamp,
)
from bridge.mlink.proto import ProtoCodec, bundled_codec

# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class Authenticated:
    state: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class SubscriptionAcked:
    label: str
    msg_name: str


@dataclass(frozen=True, slots=True)
class SubscriptionFailed:
    label: str
    detail: str


@dataclass(frozen=True, slots=True)
class SnapshotBegin:
    """A subscription's snapshot starts. `resumed`: it was asked for from a highwater mark, so
    it holds only what changed since then, not every object (reconcile nothing against it)."""

    label: str
    resumed: bool = False


# Not frozen: one is made per record, and a frozen dataclass takes ~5x longer to build.
@dataclass(slots=True)
class Record:
    """A data record; `label` is the subscription it belongs to (None if unsolicited)."""

    label: str | None
    record: DataRecord
    snapshot: bool


@dataclass(frozen=True, slots=True)
class SnapshotComplete:
    label: str
    records: int  # data records this session attributed to the snapshot
    num_messages_sent: int | None  # what the server says it sent, when it says
    highwater_ts: int | None


@dataclass(frozen=True, slots=True)
class SubscriptionEnded:
    label: str
    state: str  # Terminated | Replaced | Error
    detail: str


@dataclass(frozen=True, slots=True)
class ServerClosing:
    state: str
    detail: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Something unreadable arrived; `raw` holds the bytes so nothing is lost."""

    error: BridgeError
    raw: bytes


# The issue and the docs call it ProtocolError; the exception of that name lives in errors.py.
Event = (
    Authenticated
    | AuthFailed
    | SubscriptionAcked
    | SubscriptionFailed
    | SnapshotBegin
    | Record
    | SnapshotComplete
    | SubscriptionEnded
    | ServerClosing
    | ProtocolViolation
)

# --------------------------------------------------------------------------------------------
# Connection table


class ConnState(StrEnum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


class AdminInput(StrEnum):
    CONNECTED = "connected"
    LOGGED_ON = "logged_on"
    WAITING_LOGON = "waiting_logon"
    REJECTED = "rejected"
    GOOD_NIGHT = "good_night"
    CLOSED = "closed"


class ConnAction(StrEnum):
    NONE = "none"
    OPEN = "open"  # send the logon (logon auth) or the subscriptions (header auth)
    AUTHENTICATED = "authenticated"  # emit Authenticated; send subscriptions not sent yet
    SEND_LOGON = "send_logon"  # the server did not take the header: log on explicitly
    AUTH_FAILED = "auth_failed"
    SERVER_CLOSING = "server_closing"


_C, _A, _X = ConnState, AdminInput, ConnAction
CONNECTION_TABLE: dict[tuple[ConnState, AdminInput], tuple[ConnState, ConnAction]] = {
    (_C.CONNECTING, _A.CONNECTED): (_C.AUTHENTICATING, _X.OPEN),
    (_C.AUTHENTICATING, _A.LOGGED_ON): (_C.READY, _X.AUTHENTICATED),
    (_C.AUTHENTICATING, _A.WAITING_LOGON): (_C.AUTHENTICATING, _X.SEND_LOGON),
    (_C.AUTHENTICATING, _A.REJECTED): (_C.FAILED, _X.AUTH_FAILED),
    (_C.AUTHENTICATING, _A.GOOD_NIGHT): (_C.CLOSING, _X.SERVER_CLOSING),
    (_C.READY, _A.LOGGED_ON): (_C.READY, _X.AUTHENTICATED),  # answer to a re-logon
    (_C.READY, _A.WAITING_LOGON): (_C.AUTHENTICATING, _X.SEND_LOGON),
    (_C.READY, _A.REJECTED): (_C.FAILED, _X.AUTH_FAILED),
    (_C.READY, _A.GOOD_NIGHT): (_C.CLOSING, _X.SERVER_CLOSING),
    (_C.CONNECTING, _A.CLOSED): (_C.CLOSED, _X.NONE),
    (_C.AUTHENTICATING, _A.CLOSED): (_C.CLOSED, _X.NONE),
    (_C.READY, _A.CLOSED): (_C.CLOSED, _X.NONE),
    (_C.CLOSING, _A.CLOSED): (_C.CLOSED, _X.NONE),
    (_C.FAILED, _A.CLOSED): (_C.FAILED, _X.NONE),
    (_C.CLOSED, _A.CLOSED): (_C.CLOSED, _X.NONE),
}

# MLinkAdmin.state strings: the AdminState enum, plus the names the seed documents print.
ADMIN_INPUTS: dict[str, AdminInput] = {
    "LoggedOn": AdminInput.LOGGED_ON,
    "WaitingLogon": AdminInput.WAITING_LOGON,
    "WaitingForLogon": AdminInput.WAITING_LOGON,
    "LogonFailed": AdminInput.REJECTED,
    "AuthError": AdminInput.REJECTED,
    "OtherError": AdminInput.REJECTED,
    "GoodNight": AdminInput.GOOD_NIGHT,
}

# --------------------------------------------------------------------------------------------
# Subscription table


class SubState(StrEnum):
    UNSENT = "unsent"
    PENDING = "pending"  # request sent, nothing heard yet
    ACKED = "acked"
    SNAPSHOT = "snapshot"  # Begin seen (or data before it): cached records flowing
    ACTIVE = "active"  # Active seen: the server says the request is active
    LIVE = "live"  # Complete seen: the cache is through, live updates follow
    DONE = "done"  # a one-shot query completed
    FAILED = "failed"  # the ack said error
    ENDED = "ended"  # Terminated / Replaced / Error checkpoint


class SubInput(StrEnum):
    SENT = "sent"
    ACK_OK = "ack_ok"
    ACK_ERROR = "ack_error"
    BEGIN = "begin"
    DATA = "data"
    ACTIVE = "active"
    COMPLETE = "complete"
    ENDED = "ended"


class SubAction(StrEnum):
    NONE = "none"
    ACKED = "acked"
    FAILED = "failed"
    BEGIN = "begin"  # emit SnapshotBegin
    BEGIN_AND_RECORD = "begin_and_record"  # data before Begin: emit SnapshotBegin, then Record
    SNAPSHOT_RECORD = "snapshot_record"
    LIVE_RECORD = "live_record"
    COMPLETE = "complete"  # emit SnapshotComplete
    BEGIN_AND_COMPLETE = "begin_and_complete"  # an empty snapshot announced only by Complete
    ENDED = "ended"


_S, _I, _Y = SubState, SubInput, SubAction
SUBSCRIPTION_TABLE: dict[tuple[SubState, SubInput], tuple[SubState, SubAction]] = {
    (_S.UNSENT, _I.SENT): (_S.PENDING, _Y.NONE),
    (_S.PENDING, _I.ACK_OK): (_S.ACKED, _Y.ACKED),
    (_S.PENDING, _I.ACK_ERROR): (_S.FAILED, _Y.FAILED),
    (_S.PENDING, _I.BEGIN): (_S.SNAPSHOT, _Y.BEGIN),
    (_S.PENDING, _I.DATA): (_S.SNAPSHOT, _Y.BEGIN_AND_RECORD),
    (_S.PENDING, _I.COMPLETE): (_S.LIVE, _Y.BEGIN_AND_COMPLETE),
    (_S.PENDING, _I.ENDED): (_S.ENDED, _Y.ENDED),
    (_S.ACKED, _I.BEGIN): (_S.SNAPSHOT, _Y.BEGIN),
    (_S.ACKED, _I.DATA): (_S.SNAPSHOT, _Y.BEGIN_AND_RECORD),
    (_S.ACKED, _I.ACTIVE): (_S.ACTIVE, _Y.BEGIN),
    (_S.ACKED, _I.COMPLETE): (_S.LIVE, _Y.BEGIN_AND_COMPLETE),
    (_S.ACKED, _I.ENDED): (_S.ENDED, _Y.ENDED),
    (_S.SNAPSHOT, _I.ACK_OK): (_S.SNAPSHOT, _Y.ACKED),  # the ack came after the data
    (_S.SNAPSHOT, _I.ACK_ERROR): (_S.FAILED, _Y.FAILED),
    (_S.SNAPSHOT, _I.DATA): (_S.SNAPSHOT, _Y.SNAPSHOT_RECORD),
    (_S.SNAPSHOT, _I.ACTIVE): (_S.ACTIVE, _Y.NONE),
    (_S.SNAPSHOT, _I.COMPLETE): (_S.LIVE, _Y.COMPLETE),
    (_S.SNAPSHOT, _I.ENDED): (_S.ENDED, _Y.ENDED),
    (_S.ACTIVE, _I.ACK_OK): (_S.ACTIVE, _Y.ACKED),
    (_S.ACTIVE, _I.DATA): (_S.ACTIVE, _Y.SNAPSHOT_RECORD),
    (_S.ACTIVE, _I.COMPLETE): (_S.LIVE, _Y.COMPLETE),
    (_S.ACTIVE, _I.ENDED): (_S.ENDED, _Y.ENDED),
    (_S.LIVE, _I.DATA): (_S.LIVE, _Y.LIVE_RECORD),
    (_S.LIVE, _I.BEGIN): (_S.SNAPSHOT, _Y.BEGIN),  # the server starts the cache over
    (_S.LIVE, _I.ACTIVE): (_S.LIVE, _Y.NONE),
    (_S.LIVE, _I.ENDED): (_S.ENDED, _Y.ENDED),
    (_S.DONE, _I.DATA): (_S.DONE, _Y.LIVE_RECORD),
}

# Checkpoint / response states -> inputs (MLinkState enum names).
CHECKPOINT_INPUTS: dict[str, SubInput] = {
    "Begin": SubInput.BEGIN,
    "Active": SubInput.ACTIVE,
    "Complete": SubInput.COMPLETE,
    "Terminated": SubInput.ENDED,
    "Replaced": SubInput.ENDED,
    "Error": SubInput.ENDED,
}

_IN_FLIGHT = frozenset({SubState.PENDING, SubState.ACKED, SubState.SNAPSHOT, SubState.ACTIVE})
_BEGUN = frozenset({SubState.SNAPSHOT, SubState.ACTIVE})
_DELIVERING = frozenset({SubState.LIVE, SubState.DONE})
_WAITING = frozenset({SubState.PENDING, SubState.ACKED})
_MAX_SPELLINGS = 1024  # message-type spellings remembered by MLinkSession._owner_of


# --------------------------------------------------------------------------------------------
# Subscriptions


@dataclass(frozen=True, slots=True)
class Subscription:
    """What the bridge asks MLink for: a label and one request.

    `accepts`, when given, says whether a data record's message belongs to this subscription
    (its where clause, keys or key filters): with several subscriptions of one message type,
    records carry no label on the wire, so this is how they are told apart.
    """

    label: str
    request: MLinkStream | MLinkSubscribe | MLinkQuery
    accepts: Callable[[Mapping[str, Any]], bool] | None = None

    @property
    def resumes(self) -> bool:
        """Whether the request asks only for what changed after a highwater mark."""
        req = self.request
        return not isinstance(req, MLinkSubscribe) and bool(req.highwater_ts)

    @property
    def msg_names(self) -> frozenset[str]:
        """Lower-cased message type names this subscription delivers."""
        req = self.request
        if isinstance(req, MLinkStream):
            return frozenset({req.msg_name.lower()})
        if isinstance(req, MLinkSubscribe):
            return frozenset(name.lower() for name, _ in req.subscribe)
        return frozenset(m.msg_name.lower() for m in req.msg_types if m.msg_name)

    @property
    def channel(self) -> str:
        """Which server messages answer it: stream/subscribe checkpoints, or query responses."""
        return "query" if isinstance(self.request, MLinkQuery) else "stream"

    @property
    def one_shot(self) -> bool:
        req = self.request
        return isinstance(req, MLinkQuery) and not req.query_type.is_subscription


@dataclass(slots=True)
class _SubTrack:
    sub: Subscription
    state: SubState = SubState.UNSENT
    acked: bool = False
    snapshot_records: int = 0
    # Resuming after highwaterTs is only safe from a point where everything older has arrived:
    # the newest send time of a completed snapshot or of a live record. Snapshot records come
    # in no particular time order, so their newest time counts only once Complete arrives.
    highwater_stamp: str = ""  # the header sTim text sorts like the time it names
    snapshot_stamp: str = ""
    highwater_ts: int | None = None  # from MLinkResponse Complete


class Phase(StrEnum):
    CONNECTING = "connecting"
    AUTHENTICATING = "authenticating"
    SUBSCRIBING = "subscribing"
    SNAPSHOT = "snapshot"
    LIVE = "live"
    CLOSING = "closing"
    CLOSED = "closed"
    FAILED = "failed"


# --------------------------------------------------------------------------------------------
# The session


@dataclass
class SessionLimits:
    max_payload: int = framing.DEFAULT_MAX_PAYLOAD
    max_message: int = framing.DEFAULT_MAX_MESSAGE


def _accepts(sub: Subscription, message: Mapping[str, Any]) -> bool:
    """Whether a subscription's where clause or keys take the message. A value the clause
    cannot compare (a string where it expects a number, say) is not taken: the record is then
    no subscription's, and goes to the dead-letter topic instead of stopping the reader."""
    if sub.accepts is None:
        return True
    try:
        return bool(sub.accepts(message))
    except Exception:
        return False


class MLinkSession:
    """One websocket connection's worth of MLink protocol state.

    `logon` given and `header_auth` False: send MLinkLogon first, subscribe after LoggedOn.
    `header_auth` True: credentials went in the HTTP handshake; subscribe at once (as the
    sample clients do) and fall back to MLinkLogon if the server asks for it.
    """

    def __init__(
        self,
        subscriptions: Sequence[Subscription],
        *,
        form: WireForm = WireForm.JSON,
        logon: MLinkLogon | None = None,
        header_auth: bool = True,
        clock: Callable[[], int] | None = None,
        limits: SessionLimits | None = None,
        codec: ProtoCodec | None = None,
    ) -> None:
        labels = [s.label for s in subscriptions]
        if len(set(labels)) != len(labels):
            raise ValueError("subscription labels must be unique")
        if not header_auth and logon is None:
            raise ValueError("logon authentication needs an MLinkLogon")
        if form is WireForm.PROTO and codec is None:
            codec = bundled_codec()
        self._codec = codec if form is WireForm.PROTO else None
        self._tracks = {s.label: _SubTrack(s) for s in subscriptions}
        self._order = labels
        self._form = form
        self._logon = logon
        self._header_auth = header_auth
        self._clock = clock
        self._limits = limits or SessionLimits()
        self._conn = ConnState.CONNECTING
        self._logon_sent = not header_auth
        self._outbox: list[bytes] = []
        self._by_name: dict[str, list[_SubTrack]] = {}
        for track in self._tracks.values():
            for name in track.sub.msg_names:
                self._by_name.setdefault(name, []).append(track)
        self._by_type: dict[str, list[_SubTrack]] = {}  # _by_name by type as received

    # -- public state -----------------------------------------------------------------------

    @property
    def conn_state(self) -> ConnState:
        return self._conn

    def sub_state(self, label: str) -> SubState:
        return self._tracks[label].state

    @property
    def phase(self) -> Phase:
        if self._conn is not ConnState.READY:
            return Phase(self._conn.value)
        states = {t.state for t in self._tracks.values()}
        if states & {SubState.UNSENT, SubState.PENDING, SubState.ACKED}:
            return Phase.SUBSCRIBING
        if states & _BEGUN:
            return Phase.SNAPSHOT
        if states & _DELIVERING:
            return Phase.LIVE
        return Phase.FAILED  # every subscription was refused or ended

    def highwater_ts(self, label: str) -> int | None:
        """Where a resumed subscription may start (ns): everything sent before it has arrived.

        None until a snapshot completed: resuming from the middle of a snapshot would skip the
        records not yet received.
        """
        track = self._tracks[label]
        seen = None
        if track.highwater_stamp:
            try:
                seen = parse_stamp(track.highwater_stamp)
            except MessageError:
                # A header time that is not one sorted above the real ones: forget it. The mark
                # starts again from the next record, and meanwhile falls back to the
                # checkpoint's, so a resume asks for more than it needs, never less.
                track.highwater_stamp = ""
        candidates = [v for v in (seen, track.highwater_ts) if v is not None]
        return max(candidates) if candidates else None

    def data_to_send(self) -> list[bytes]:
        """Payloads to send, in order; each call hands them over once."""
        out, self._outbox = self._outbox, []
        return out

    # -- inputs -------------------------------------------------------------------------------

    def connected(self) -> list[Event]:
        return self._admin(AdminInput.CONNECTED, "", "")

    def connection_lost(self) -> list[Event]:
        return self._admin(AdminInput.CLOSED, "", "")

    def relogon(self, logon: MLinkLogon) -> None:
        """Re-authenticate on a live session (a fresh JWT, say); the server answers MLinkAdmin."""
        self._logon = logon
        self._send(logon)

    def signal_ready(self, request: Request) -> None:
        self._send(request)

    def receive(self, payload: bytes | str) -> list[Event]:
        """Feed one websocket payload; returns the events it produced, in order."""
        events: list[Event] = []
        data = payload.encode() if isinstance(payload, str) else payload
        frames, error = framing.split_messages(
            data,
            self._limits.max_payload,
            self._limits.max_message,
            framed=True if self._form is not WireForm.JSON else None,
        )
        for frame in frames:
            if frame.kind == "J":
                self._receive_body(frame.body, events)
            elif self._codec is None:
                violation = MessageError("protobuf message on a JSON session")
                events.append(ProtocolViolation(violation, frame.body))
            else:
                try:
                    msg = self._codec.decode(frame.number, frame.body)
                except MessageError as exc:
                    events.append(ProtocolViolation(exc, frame.body))
                    continue
                self._dispatch(msg, frame.body, events)
        if error is not None:
            events.append(ProtocolViolation(error, data))
        return events

    # -- internals ----------------------------------------------------------------------------

    def _now(self) -> int | None:
        return self._clock() if self._clock is not None else None

    def _send(self, request: Request) -> None:
        if self._codec is not None:
            self._outbox.append(self._codec.encode_request(request, self._now()))
            return
        self._outbox.append(encode_request(request, self._form, self._now()))

    def _send_subscriptions(self) -> None:
        for label in self._order:
            track = self._tracks[label]
            if track.state is SubState.UNSENT:
                self._send(track.sub.request)
                track.state, _ = SUBSCRIPTION_TABLE[(track.state, SubInput.SENT)]

    def _receive_body(self, body: bytes, events: list[Event]) -> None:
        record = parse_data_record(body)  # the usual message, in fewer steps
        if record is not None:
            self._on_data(record, events)
            return
        try:
            msg = parse_message(body)
        except MessageError as exc:
            events.append(ProtocolViolation(exc, body))
            return
        self._dispatch(msg, body, events)

    def _dispatch(self, msg: ServerMessage, body: bytes, events: list[Event]) -> None:
        if isinstance(msg, DataRecord):
            self._on_data(msg, events)
        elif isinstance(msg, AdminMessage):
            admin_input = ADMIN_INPUTS.get(msg.state)
            if admin_input is None:
                error = ProtocolError(f"unknown MLinkAdmin state {msg.state!r}")
                events.append(ProtocolViolation(error, body))
            else:
                events.extend(self._admin(admin_input, msg.state, msg.detail))
        elif isinstance(msg, Ack):
            self._on_ack(msg, body, events)
        else:
            self._on_checkpoint(msg, body, events)

    def _admin(self, admin_input: AdminInput, state: str, detail: str) -> list[Event]:
        row = CONNECTION_TABLE.get((self._conn, admin_input))
        if row is None:
            if admin_input is AdminInput.CLOSED:
                return []
            error = ProtocolError(f"MLinkAdmin {state or admin_input} in state {self._conn}")
            return [ProtocolViolation(error, b"")]
        self._conn, action = row
        if action is ConnAction.OPEN:
            if self._header_auth:
                self._send_subscriptions()
            else:
                assert self._logon is not None
                self._send(self._logon)
        elif action is ConnAction.AUTHENTICATED:
            self._logon_sent = False
            self._send_subscriptions()
            return [Authenticated(state)]
        elif action is ConnAction.SEND_LOGON:
            if self._logon is None:
                self._conn = ConnState.FAILED
                return [AuthFailed(state, "the server asks for MLinkLogon; no credentials")]
            # The server dropped whatever it got before the logon: ask again after LoggedOn.
            for track in self._tracks.values():
                if track.state in _WAITING:
                    track.state = SubState.UNSENT
                    track.acked = False
            if not self._logon_sent:  # one logon answers any number of WaitingLogon replies
                self._logon_sent = True
                self._send(self._logon)
        elif action is ConnAction.AUTH_FAILED:
            return [AuthFailed(state, detail)]
        elif action is ConnAction.SERVER_CLOSING:
            return [ServerClosing(state, detail)]
        return []

    def _in_flight(self, channel: str) -> list[_SubTrack]:
        return [
            self._tracks[label]
            for label in self._order
            if self._tracks[label].state in _IN_FLIGHT
            and self._tracks[label].sub.channel == channel
        ]

    def _on_ack(self, ack: Ack, body: bytes, events: list[Event]) -> None:
        track = self._tracks.get(ack.query_label) if ack.query_label else None
        if track is None:
            candidates = [t for t in self._in_flight("stream") if not t.acked]
            named = [t for t in candidates if ack.msg_name.lower() in t.sub.msg_names]
            pool = named or candidates
            track = pool[0] if pool else None
        if track is None:
            error = ProtocolError(f"{ack.mtyp} for {ack.msg_name!r} matches no pending request")
            events.append(ProtocolViolation(error, body))
            return
        track.acked = True
        self._step(track, SubInput.ACK_OK if ack.ok else SubInput.ACK_ERROR, events, ack=ack)

    def _on_checkpoint(self, cp: CheckPoint, body: bytes, events: list[Event]) -> None:
        sub_input = CHECKPOINT_INPUTS.get(cp.state)
        if sub_input is None:
            error = ProtocolError(f"{cp.mtyp} with unknown state {cp.state!r}")
            events.append(ProtocolViolation(error, body))
            return
        channel = "stream" if cp.mtyp == "MLinkStreamCheckPt" else "query"
        track = self._tracks.get(cp.query_label) if cp.query_label else None
        if track is None:
            pending = self._in_flight(channel)
            if not pending and sub_input is not SubInput.COMPLETE:
                # A live subscription starting over or ending: only unambiguous if it is alone.
                pending = [
                    t
                    for t in (self._tracks[label] for label in self._order)
                    if t.state is SubState.LIVE and t.sub.channel == channel
                ]
                if len(pending) != 1:
                    pending = []
            track = pending[0] if pending else None
        if track is None:
            error = ProtocolError(f"{cp.mtyp} {cp.state} matches no open subscription")
            events.append(ProtocolViolation(error, body))
            return
        self._step(track, sub_input, events, checkpoint=cp)

    def _on_data(self, record: DataRecord, events: list[Event]) -> None:
        track = self._owner_of(record)
        if track is None:
            events.append(Record(None, record, False))
            return
        stamp = record.header.get("sTim")
        if track.state is SubState.LIVE:
            # The common case, taken without the table walk: SUBSCRIPTION_TABLE maps
            # (LIVE, DATA) to (LIVE, LIVE_RECORD); tests/mlink check the two agree.
            if isinstance(stamp, str) and stamp > track.highwater_stamp:
                track.highwater_stamp = stamp
            events.append(Record(track.sub.label, record, False))
            return
        if isinstance(stamp, str) and stamp > track.snapshot_stamp:
            track.snapshot_stamp = stamp
        self._step(track, SubInput.DATA, events, record=record)

    def _owner_of(self, record: DataRecord) -> _SubTrack | None:
        """Which subscription a record belongs to.

        One subscription of the type: that one. Several: a snapshot under way that accepts the
        record, else a live one that accepts it, else one still waiting for its ack (data before
        the ack starts its snapshot) — so live updates of one subscription are not taken for
        the snapshot of another.
        """
        mtyp = record.mtyp
        tracks = self._by_type.get(mtyp)
        if tracks is None:  # first sight of this spelling: names match case-insensitively
            tracks = self._by_name.get(mtyp.lower(), [])
            if len(self._by_type) < _MAX_SPELLINGS:  # the names come off the wire: bounded
                self._by_type[mtyp] = tracks
        if not tracks:
            return None
        if len(tracks) == 1:
            only = tracks[0]
            return only if only.state in _IN_FLIGHT or only.state in _DELIVERING else None
        message = record.message
        for states in (_BEGUN, _DELIVERING, _WAITING):
            for track in tracks:
                if track.state in states and _accepts(track.sub, message):
                    return track
        return None

    def _step(
        self,
        track: _SubTrack,
        sub_input: SubInput,
        events: list[Event],
        *,
        ack: Ack | None = None,
        checkpoint: CheckPoint | None = None,
        record: DataRecord | None = None,
    ) -> None:
        row = SUBSCRIPTION_TABLE.get((track.state, sub_input))
        label = track.sub.label
        if row is None:
            if record is not None:  # data for a subscription in an odd state is still data
                events.append(Record(label, record, False))
                return
            error = ProtocolError(f"{sub_input} for subscription {label!r} in state {track.state}")
            events.append(ProtocolViolation(error, b""))
            return
        track.state, action = row
        if action is SubAction.ACKED:
            events.append(SubscriptionAcked(label, ack.msg_name if ack else ""))
        elif action is SubAction.FAILED:
            detail = (ack.detail or ack.result) if ack else ""
            events.append(SubscriptionFailed(label, detail))
        elif action in (SubAction.BEGIN, SubAction.BEGIN_AND_RECORD, SubAction.BEGIN_AND_COMPLETE):
            track.snapshot_records = 0
            if action is not SubAction.BEGIN_AND_RECORD:
                track.snapshot_stamp = ""
            events.append(SnapshotBegin(label, track.sub.resumes))
            if action is SubAction.BEGIN_AND_RECORD and record is not None:
                track.snapshot_records += 1
                events.append(Record(label, record, True))
            elif action is SubAction.BEGIN_AND_COMPLETE:
                self._complete(track, checkpoint, events)
        elif action is SubAction.SNAPSHOT_RECORD and record is not None:
            track.snapshot_records += 1
            events.append(Record(label, record, True))
        elif action is SubAction.LIVE_RECORD and record is not None:
            events.append(Record(label, record, False))
        elif action is SubAction.COMPLETE:
            self._complete(track, checkpoint, events)
        elif action is SubAction.ENDED:
            state = checkpoint.state if checkpoint else ""
            detail = checkpoint.detail if checkpoint else ""
            events.append(SubscriptionEnded(label, state, detail))

    def _complete(self, track: _SubTrack, cp: CheckPoint | None, events: list[Event]) -> None:
        track.highwater_stamp = max(track.highwater_stamp, track.snapshot_stamp)
        track.snapshot_stamp = ""
        if cp is not None and cp.highwater_ts is not None:
            track.highwater_ts = max(track.highwater_ts or 0, cp.highwater_ts)
        if track.sub.one_shot:
            track.state = SubState.DONE
        events.append(
            SnapshotComplete(
                track.sub.label,
                track.snapshot_records,
                cp.num_messages_sent if cp else None,
                cp.highwater_ts if cp else None,
            )
        )


__all__ = [
    "ADMIN_INPUTS",
    "CHECKPOINT_INPUTS",
    "CONNECTION_TABLE",
    "SUBSCRIPTION_TABLE",
    "AdminInput",
    "AuthFailed",
    "Authenticated",
    "ConnAction",
    "ConnState",
    "Event",
    "MLinkSession",
    "Phase",
    "ProtocolViolation",
    "Record",
    "ServerClosing",
    "SessionLimits",
    "SnapshotBegin",
    "SnapshotComplete",
    "SubAction",
    "SubInput",
    "SubState",
    "Subscription",
    "SubscriptionAcked",
    "SubscriptionEnded",
    "SubscriptionFailed",
]
