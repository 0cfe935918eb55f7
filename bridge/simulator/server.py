"""An MLink-compatible websocket server for the demo, the tests and the benchmarks.

It follows MLink's documented behaviour:

* endpoints `/mlink/json` (one JSON object per websocket message), `/mlink/jsonf` (framed JSON,
  several per websocket message) and `/mlink/proto` (framed protobuf, the bundled descriptor set;
  same messages in the same order, same truth log, which records the JSON equivalent).
  `/mlink/json` answers in the form of the client's first message, so both of the
  documentation's sample clients (plain and framed, same URL) work unchanged; it therefore
  sends the MLinkAdmin of a header-authenticated connection when the first message arrives
  (or after `admin_grace` seconds of silence, as plain JSON).
* authentication by `Authorization: Bearer <apiKey[.password]>` or by MLinkLogon; a wrong key gets
  MLinkAdmin `AuthError`, then the connection is closed.
* MLinkStream / MLinkSubscribe: ack, checkpoint Begin, cached records, Active, Complete, then live
  updates. MLinkQuery: MLinkResponse Begin, cached records, MLinkResponse Complete, then live
  updates for the subscription query types. `where`, `view`, key filters, `highwaterTs`.
* activeLatency: updates are conflated per key (only the newest goes out) and sent every N ms;
  0 sends at once; -1 waits for MLinkSignalReady. A slow client gets conflated data, not a backlog.
* faults, for tests: drop the TCP connection without a close frame, close with 1011, GoodNight,
  reject the first N logons, stall (no data, no pongs), and malformed / NaN / oversized /
  unknown-type messages at a set rate.
* a truth log of every data record and delete sent (see truth.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import socket
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.errors import BridgeError
from bridge.mlink.catalog import Catalog, default_catalog
from bridge.mlink.framing import WireForm, encode_frame, is_framed, iter_messages
from bridge.mlink.messages import DELETE_HEADER, decode_json
from bridge.mlink.proto import ProtoCodec, bundled_codec
from bridge.simulator.market import DEFAULT_TYPES, LiveObject, Market
from bridge.simulator.requests import (
    RequestError,
    SimSubscription,
    query_request,
    stream_request,
    subscribe_request,
)
from bridge.simulator.rest import REST_PATHS, rest_answer
from bridge.simulator.truth import TruthLog, truth_line

log = logging.getLogger("mlink.simulator")

ENDPOINTS: dict[str, WireForm | None] = {
    "/mlink/json": None,
    "/mlink/jsonf": WireForm.FRAMED,
    "/mlink/proto": WireForm.PROTO,
}
_FRAMED_FORMS = (WireForm.FRAMED, WireForm.PROTO)
# A protobuf body cut off inside a length-delimited field: never a valid message.
_GARBLED_TAIL = b"\x0a\xff\xff"
APP_NAME = "MLinkServer.Simulator"
MACHINE = "SIM-" + socket.gethostname()[:12]
GIT = "simulated"
SENDER_ID = 18409
# A late update loop catches up at most this many seconds of updates; older backlog is dropped.
CATCH_UP = 0.25
_MIDDLE = b',"appN":"%s","mn":"%s","sTim":"' % (APP_NAME.encode(), MACHINE.encode())
_ENCODED = b'","encT":"'
_TAIL = b'","git":"%s"},"message":' % GIT.encode()
_DELETED_TAIL = b'","git":"%s","%s":true},"message":' % (GIT.encode(), DELETE_HEADER.encode())


@dataclass(frozen=True, slots=True)
class Faults:
    """Faults to inject. Connection faults (the *_after ones) hit the first `connections`."""

    drop_after: int | None = None  # abort TCP (no close frame) after N data records
    close_1011_after: int | None = None
    goodnight_after: int | None = None
    stall_after: int | None = None  # stop sending and stop answering pings
    connections: int = 1
    reject_logons: int = 0  # the first N authentication attempts fail, whatever the key
    malformed_rate: float = 0.0  # per data record, an extra bad message goes first
    nan_rate: float = 0.0
    oversized_rate: float = 0.0
    unknown_type_rate: float = 0.0
    oversize_bytes: int = 900_000

    @property
    def any_connection_fault(self) -> bool:
        return any(
            v is not None
            for v in (
                self.drop_after,
                self.close_1011_after,
                self.goodnight_after,
                self.stall_after,
            )
        )


@dataclass(frozen=True, slots=True)
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    api_keys: tuple[str, ...] = ("demo-key",)  # accepted tokens: "key" or "key.password"
    rate: float = 200.0  # live updates per second across all types (0 = none)
    seed: int = 7
    msg_names: tuple[str, ...] = DEFAULT_TYPES
    tickers: int = 12
    expiries: int = 2
    strikes: int = 4
    delete_rate: float = 0.002
    truth: Path | None = None
    faults: Faults = field(default_factory=Faults)
    admin_grace: float = 1.0
    max_message: int = 1 << 20  # largest client message accepted
    batch_bytes: int = 64 * 1024  # framed form: how much goes into one websocket message


@dataclass(slots=True)
class Outgoing:
    """One message queued for a connection; `truth` is its truth-log metadata (data only)."""

    body: bytes
    number: int = 0
    truth: dict[str, Any] | None = None
    data: bool = False


# A live update waiting to be sent: serialized only when it goes out, so that a slow reader
# gets the newest state of each key (conflation) and conflated updates cost nothing.
Pending = tuple[SimSubscription, LiveObject]


class _Stamper:
    """MLink header time text, cheap: the seconds part is formatted once per second."""

    def __init__(self) -> None:
        self._second = -1
        self._prefix = b""

    def __call__(self, ns: int) -> bytes:
        second, rest = divmod(ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second)).encode()
        return b"%s.%06d" % (self._prefix, rest // 1000)

    def text(self, ns: int) -> str:
        return self(ns).decode()


class Pacer:
    """How many market updates to make now, for `rate` updates/s since `start`.

    At most `burst` at a time (about `tick` seconds' worth), so the writers run in between.
    A late loop (the process was descheduled, a writer took a while) catches up to `CATCH_UP`
    seconds' worth of backlog; anything older is dropped and counted, as by a process at
    capacity, rather than made in a burst that conflation would mostly discard.
    """

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.start = start
        self.tick = max(0.001, min(0.05, 1.0 / rate))
        self.burst = max(1, int(rate * self.tick))
        self.backlog_limit = max(2 * self.burst, int(rate * CATCH_UP))
        self.made = 0  # made or dropped: the updates the schedule has accounted for
        self.dropped = 0

    def behind(self, now: float) -> bool:
        """Whether updates are due now."""
        return int((now - self.start) * self.rate) > self.made

    def take(self, now: float) -> int:
        """The updates to make now (counted as made)."""
        due = int((now - self.start) * self.rate) - self.made
        if due > self.backlog_limit:  # too far behind: forget the oldest backlog
            self.dropped += due - self.backlog_limit
            self.made += due - self.backlog_limit
            due = self.backlog_limit
        step = min(max(0, due), self.burst)
        self.made += step
        return step


class SimConnection:
    """State of one client connection."""

    def __init__(self, conn_id: int, ws: ServerConnection, form: WireForm | None) -> None:
        self.id = conn_id
        self.ws = ws
        self.form = form
        self.fixed_form = form is not None
        self.authenticated = False
        self.told_waiting = False
        self.closing = False
        self.deferred_admin: tuple[str, str] | None = None
        self.subs: dict[str, SimSubscription] = {}
        self.fifo: deque[Outgoing | Pending] = deque()
        self.live_by_type: dict[str, list[SimSubscription]] = {}
        self.wake = asyncio.Event()
        self.data_sent = 0
        self.sending_since: float | None = None  # set while the writer works on a batch
        self.faulty = False
        self.stalled = False
        self.label_counter = itertools.count(1)

    def enqueue(self, items: list[Outgoing]) -> None:
        """Queue control messages and snapshots, in order, ahead of live updates.

        Live updates may wait (activeLatency windows, SignalReady) without harm: they are
        serialized when they leave, so whatever goes first, each key's newest state goes last.
        """
        self.fifo.extend(items)
        self.wake.set()

    def reindex(self) -> None:
        """Which live subscriptions each message type feeds (the fan-out's lookup)."""
        self.live_by_type = {}
        for sub in self.subs.values():
            if sub.live:
                for name in sub.rules:
                    self.live_by_type.setdefault(name, []).append(sub)


class Simulator:
    """Run with `async with Simulator(config) as sim:`; `sim.url("/mlink/json")` to connect."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        catalog: Catalog | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.config = config or SimulatorConfig()
        self.catalog = catalog or default_catalog()
        self._clock = clock
        self.market = Market(
            self.catalog,
            seed=self.config.seed,
            msg_names=self.config.msg_names,
            tickers=self.config.tickers,
            expiries=self.config.expiries,
            strikes=self.config.strikes,
            delete_rate=self.config.delete_rate,
            clock=clock,
        )
        self._served = set(self.market.names())
        self._rng = random.Random(self.config.seed + 1)
        self._stamp = _Stamper()
        self._seq: dict[str, int] = {}
        self._obj_seq: dict[tuple[str, str], int] = {}
        self._prefixes: dict[str, bytes] = {}
        self._numbers = {name: self.catalog.number_of(name) for name in self._served}
        faults = self.config.faults
        self._injecting = any(
            (
                faults.malformed_rate,
                faults.nan_rate,
                faults.oversized_rate,
                faults.unknown_type_rate,
            )
        )
        self._connections: set[SimConnection] = set()
        self._conn_ids = itertools.count(1)
        self._faulty_connections = 0
        self._auth_attempts = 0
        self._server: Server | None = None
        self._producer: asyncio.Task[None] | None = None
        self._truth = TruthLog(self.config.truth) if self.config.truth else None
        self._codec: ProtoCodec | None = None  # made for the first /mlink/proto connection
        self.updates = 0
        self.dropped_updates = 0  # updates the configured rate asked for but time did not allow

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._truth is not None:
            self._truth.open()
        self._server = await serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_path,
            compression=None,
            max_size=self.config.max_message,
            ping_interval=None,
            close_timeout=1.0,  # a stalled connection never answers the closing handshake
        )
        if self.config.rate > 0:
            self._producer = asyncio.create_task(self._produce(), name="simulator-producer")

    async def stop(self) -> None:
        if self._producer is not None:
            self._producer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._producer
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._truth is not None:
            self._truth.close()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        sockname: tuple[str, int] = next(iter(self._server.sockets)).getsockname()
        return sockname[1]

    def url(self, path: str = "/mlink/json") -> str:
        return f"ws://{self.config.host}:{self.port}{path}"

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def live_subscriptions(self) -> list[str]:
        """Labels of the subscriptions still sending updates, over all connections."""
        return sorted(s.label for c in self._connections for s in c.subs.values() if s.live)

    # -- handshake and connection ---------------------------------------------------------------

    def _check_path(self, ws: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path in REST_PATHS:  # plain HTTP: metadata, not a websocket
            status, content_type, body = rest_answer(
                path, query, self.catalog, self.config.api_keys
            )
            response = ws.respond(HTTPStatus(status), body)
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = content_type
            return response
        if path not in ENDPOINTS:
            known = ", ".join([*ENDPOINTS, *REST_PATHS])
            return ws.respond(HTTPStatus.NOT_FOUND, f"unknown MLink endpoint; use {known}\n")
        return None

    def _header_token(self, headers: Headers) -> str | None:
        value = headers.get("Authorization")
        if value is None:
            return None
        scheme, _, token = value.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _authenticate(self, token: str | None) -> bool:
        self._auth_attempts += 1
        if self._auth_attempts <= self.config.faults.reject_logons:
            return False
        return bool(token) and token in self.config.api_keys

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        form = ENDPOINTS[ws.request.path.split("?", 1)[0]]
        conn = SimConnection(next(self._conn_ids), ws, form)
        faults = self.config.faults
        if faults.any_connection_fault and self._faulty_connections < faults.connections:
            self._faulty_connections += 1
            conn.faulty = True
        token = self._header_token(ws.request.headers)
        if token is not None:
            ok = self._authenticate(token)
            conn.deferred_admin = ("LoggedOn", "") if ok else ("AuthError", "invalid API key")
            conn.authenticated = ok
        else:
            # No credentials in the handshake: MLink's first word is that it waits for a logon,
            # unless the client's first message is that logon.
            conn.deferred_admin = ("WaitingForLogon", "")
        self._connections.add(conn)
        writer = asyncio.create_task(self._writer(conn), name=f"simulator-writer-{conn.id}")
        grace: asyncio.Task[None] | None = None
        if conn.fixed_form:
            self._send_admin(conn, *conn.deferred_admin)
        else:
            grace = asyncio.create_task(self._admin_grace(conn))
        try:
            async for payload in ws:
                if conn.stalled:
                    continue
                self._on_payload(conn, payload)
        except ConnectionClosed:
            pass
        finally:
            self._connections.discard(conn)
            for task in (writer, grace):
                if task is not None:
                    task.cancel()
            await asyncio.gather(writer, *(t for t in [grace] if t), return_exceptions=True)

    async def _admin_grace(self, conn: SimConnection) -> None:
        await asyncio.sleep(self.config.admin_grace)
        if conn.form is None:
            conn.form = WireForm.JSON
            if conn.deferred_admin is not None:
                self._send_admin(conn, *conn.deferred_admin)

    # -- client messages ------------------------------------------------------------------------

    def _on_payload(self, conn: SimConnection, payload: str | bytes) -> None:
        data = payload.encode() if isinstance(payload, str) else payload
        if conn.form is None:
            conn.form = WireForm.FRAMED if is_framed(data) else WireForm.JSON
            admin = conn.deferred_admin
            if admin is not None and not (admin[0] == "WaitingForLogon" and b"MLinkLogon" in data):
                self._send_admin(conn, *admin)
            conn.deferred_admin = None
        if conn.closing:
            return
        try:
            frames = list(iter_messages(data, max_message=self.config.max_message))
        except BridgeError as exc:
            log.warning("connection %d: unreadable client payload: %s", conn.id, exc)
            return
        for frame in frames:
            try:
                if frame.kind == "P":
                    doc = self.proto_codec.to_envelope(frame.number, frame.body)
                else:
                    doc = decode_json(frame.body)
                self._on_request(conn, doc["header"], doc["message"])
            except BridgeError as exc:
                log.warning("connection %d: unreadable client message: %s", conn.id, exc)
            except Exception:  # a simulator bug must not take the connection down
                log.exception("connection %d: failed to handle a client message", conn.id)

    def _on_request(
        self, conn: SimConnection, header: Mapping[str, Any], message: Mapping[str, Any]
    ) -> None:
        mtyp = header["mTyp"]
        if mtyp == "MLinkLogon":
            token = str(message.get("apiKey") or "")
            if token and message.get("apiPassword"):
                token = f"{token}.{message['apiPassword']}"
            ok = self._authenticate(token or str(message.get("jwtToken") or ""))
            conn.authenticated = ok
            self._send_admin(conn, *(("LoggedOn", "") if ok else ("AuthError", "logon refused")))
            return
        if not conn.authenticated:
            self._send_admin(conn, "WaitingForLogon", "send MLinkLogon first")
            return
        if mtyp == "MLinkStream":
            self._on_stream(conn, message)
        elif mtyp == "MLinkSubscribe":
            self._on_subscribe(conn, message)
        elif mtyp == "MLinkQuery":
            self._on_query(conn, message)
        elif mtyp == "MLinkSignalReady":
            self._on_signal(conn, message)
        else:
            log.info("connection %d: ignoring client message %s", conn.id, mtyp)

    def _on_stream(self, conn: SimConnection, message: Mapping[str, Any]) -> None:
        echo = str(message.get("msgName", ""))
        try:
            sub = stream_request(
                self.catalog, self._served, message, f"stream{next(conn.label_counter)}"
            )
        except RequestError as exc:
            ack = {"msgName": echo, "result": "Error", "detail": str(exc)}
            conn.enqueue([self._admin_out("MLinkStreamAck", ack)])
            return
        out = [self._admin_out("MLinkStreamAck", {"msgName": echo, "result": "OK"})]
        self._start(conn, sub, out)

    def _on_subscribe(self, conn: SimConnection, message: Mapping[str, Any]) -> None:
        current = conn.subs.get("MLinkSubscribe")
        try:
            sub, added = subscribe_request(self.catalog, self._served, message, current)
        except RequestError as exc:
            ack = {"result": "Error", "detail": str(exc)}
            conn.enqueue([self._admin_out("MLinkSubscribeAck", ack)])
            return
        ack = {"msgName": sub.msg_name_echo, "result": "OK"}
        out = [self._admin_out("MLinkSubscribeAck", ack)]
        self._start(conn, sub, out, only_keys=added)

    def _on_query(self, conn: SimConnection, message: Mapping[str, Any]) -> None:
        label = str(message.get("queryLabel") or f"query{next(conn.label_counter)}")
        try:
            sub, _ = query_request(self.catalog, self._served, message, label)
        except RequestError as exc:
            body = {"queryLabel": label, "state": "Error", "detail": str(exc)}
            conn.enqueue([self._admin_out("MLinkResponse", body)])
            return
        self._start(conn, sub, [])

    def _on_signal(self, conn: SimConnection, message: Mapping[str, Any]) -> None:
        label = message.get("queryLabel")
        full = str(message.get("readyScan", "")).lower() == "fullscan"
        for sub in conn.subs.values():
            if label and sub.label != label:
                continue
            if full:
                # Everything current again. Pending updates stay: deletes among them must still
                # go out, and the rest re-send the same newest state, which is harmless.
                conn.enqueue(self._snapshot(conn, sub))
            sub.signalled = True
        conn.wake.set()

    # -- snapshot then live ---------------------------------------------------------------------

    def _start(
        self,
        conn: SimConnection,
        sub: SimSubscription,
        out: list[Outgoing],
        only_keys: Mapping[str, set[str]] | None = None,
    ) -> None:
        """Queue the documented sequence and make the subscription live, in one step.

        Nothing awaits between reading the cache and going live, so no update is missed or sent
        twice.
        """
        replaced = conn.subs.get(sub.label)
        if replaced is not None and replaced is not sub:
            body = {"state": "Replaced", "timestamp": self._stamp.text(self._clock())}
            kind = "MLinkStreamCheckPt" if replaced.channel == "stream" else "MLinkResponse"
            if kind == "MLinkResponse":
                body["queryLabel"] = replaced.label
            out.insert(0, self._admin_out(kind, body))
        started = time.perf_counter()
        out.append(self._checkpoint(conn, sub, self._progress(sub, "Begin")))
        records = self._snapshot(conn, sub, only_keys)
        out.extend(records)
        if sub.channel == "stream":
            out.append(self._progress(sub, "Active", numMessagesSent=len(records)))
        elapsed = round(time.perf_counter() - started, 7)
        complete = self._progress(
            sub,
            "Complete",
            waitElapsed=-elapsed,
            queryElapsed=elapsed,
            tryFwdElapsed=0.0,
            flushElapsed=0.0,
        )
        out.append(self._checkpoint(conn, sub, complete))
        sub.live = not sub.one_shot
        sub.last_flush = time.monotonic()
        if sub.live:
            conn.subs[sub.label] = sub
        else:
            conn.subs.pop(sub.label, None)
        conn.reindex()
        conn.enqueue(out)

    def _checkpoint(self, conn: SimConnection, sub: SimSubscription, out: Outgoing) -> Outgoing:
        """Snapshot boundaries go into the truth log too (when they are sent), so that a test
        can tell which records made up a complete snapshot."""
        if self._truth is not None:
            state = "Begin" if b'"Begin"' in out.body else "Complete"
            out.truth = {"conn": conn.id, "label": sub.label, "checkpoint": state}
        return out

    def _progress(self, sub: SimSubscription, state: str, **extra: Any) -> Outgoing:
        stamp = self._stamp.text(self._clock())
        if sub.channel == "stream":
            return self._admin_out(
                "MLinkStreamCheckPt", {"state": state, **extra, "timestamp": stamp}
            )
        body: dict[str, Any] = {"queryLabel": sub.label, "state": state}
        if state == "Begin":
            body["highwaterTs"] = sub.highwater_ts
        else:
            body.update(
                highwaterTs=sub.sent_highwater,
                numMessagesSent=sub.sent_messages,
                numBytesSent=sub.sent_bytes,
            )
        body["timestamp"] = stamp
        return self._admin_out("MLinkResponse", body)

    def _snapshot(
        self,
        conn: SimConnection,
        sub: SimSubscription,
        only_keys: Mapping[str, set[str]] | None = None,
    ) -> list[Outgoing]:
        # Resuming after highwaterTs includes the deletes since then; a full snapshot does not.
        with_deletes = sub.highwater_ts > 0
        sub.resuming = with_deletes
        try:
            return self._snapshot_records(conn, sub, with_deletes, only_keys)
        finally:
            sub.resuming = False

    def _snapshot_records(
        self,
        conn: SimConnection,
        sub: SimSubscription,
        with_deletes: bool,
        only_keys: Mapping[str, set[str]] | None,
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        for name in sub.rules:
            # Oldest first, so that a client resuming from the newest time it saw misses nothing.
            objects = sorted(
                self.market.objects(name, include_deleted=with_deletes), key=lambda o: o.src_ns
            )
            for obj in objects:
                if only_keys is not None and obj.key not in only_keys.get(name, ()):
                    continue
                if obj.src_ns <= sub.highwater_ts:
                    continue
                item = self._data_out(conn, sub, obj)
                if item is not None:
                    out.append(item)
        return out

    # -- building messages ----------------------------------------------------------------------

    def _header(self, mtyp: str, seq: int, sent_ns: int, data: bool = False) -> dict[str, Any]:
        return {
            "mTyp": mtyp,
            "sEnv0": "Saturn",
            "sRlm0": "NMS",
            "sID": SENDER_ID if data else 0,
            "kLen": 0,
            "mLen": 0,
            "seqN": seq,
            "appN": APP_NAME,
            "mn": MACHINE,
            "sTim": self._stamp.text(sent_ns),
            "encT": self._stamp.text(self._clock()),
            "git": GIT,
        }

    def _admin_out(self, mtyp: str, message: Mapping[str, Any]) -> Outgoing:
        doc = {"header": self._header(mtyp, 0, self._clock()), "message": message}
        return Outgoing(orjson.dumps(doc), self.catalog.number_of(mtyp))

    def _send_admin(self, conn: SimConnection, state: str, detail: str) -> None:
        conn.deferred_admin = None
        if state == "WaitingForLogon":
            if conn.told_waiting:
                return  # said once; requests before the logon are dropped quietly after that
            conn.told_waiting = True
        elif state == "LoggedOn":
            conn.told_waiting = False
        body: dict[str, Any] = {"state": state}
        if detail:
            body["detail"] = detail
        conn.enqueue([self._admin_out("MLinkAdmin", body)])
        if state == "AuthError":
            conn.closing = True  # the writer closes after sending it

    def _data_out(
        self,
        conn: SimConnection,
        sub: SimSubscription,
        obj: LiveObject,
        encoded: bytes | None = None,
    ) -> Outgoing | None:
        """Serialize a record as it is now, if the subscription still wants it.

        This runs once per record sent, so it builds the header from per-type templates.
        `encoded` is the encoding-time stamp, shared by a batch.
        """
        name = obj.msg_name
        rule = sub.rules.get(name)
        if rule is None:
            return None
        message = obj.message
        ident = (name, obj.key)
        if obj.deleted:
            # A delete carries only the key, so filters on other fields cannot judge it: it
            # goes to every subscription that was sent the key.
            if ident not in sub.sent_keys and not sub.resuming:
                return None
            sub.sent_keys.discard(ident)
        elif (rule.keys is not None or rule.where is not None or sub.key_filter is not None) and (
            not rule.matches(obj.key, message)
            or (sub.key_filter is not None and not sub.key_filter(message))
        ):
            return None
        else:
            sub.sent_keys.add(ident)
        prefix = self._prefixes.get(name)
        if prefix is None:
            # Everything in the header but the sequence number and times is constant per type.
            fixed = {"mTyp": name, "sEnv0": "Saturn", "sRlm0": "NMS", "sID": SENDER_ID}
            fixed.update(kLen=0, mLen=0)
            prefix = self._prefixes[name] = b'{"header":' + orjson.dumps(fixed)[:-1] + b',"seqN":'
        seq = self._obj_seq.get((name, obj.key), 0)
        deleted = obj.deleted
        if not deleted and rule.view is not None:
            message = rule.view(message)
        body = b"%s%d%s%s%s%s%s%s}" % (
            prefix,
            seq,
            _MIDDLE,
            self._stamp(obj.src_ns),
            _ENCODED,
            encoded or self._stamp(self._clock()),
            _DELETED_TAIL if deleted else _TAIL,
            orjson.dumps(message),
        )
        sub.sent_messages += 1
        sub.sent_bytes += len(body)
        sub.sent_highwater = max(sub.sent_highwater, obj.src_ns)
        meta = None
        if self._truth is not None:
            meta = {
                "conn": conn.id,
                "label": sub.label,
                "msg": name,
                "key": obj.key,
                "version": obj.version,
                "deleted": deleted,
                "seq": seq,
            }
        return Outgoing(body, self._numbers.get(name, 0), meta, data=True)

    # -- live updates ---------------------------------------------------------------------------

    async def _produce(self) -> None:
        """Step the market at `rate` updates/s, as far as this process can.

        The simulator shares one CPU between making updates and sending them: updates are made
        in small steps (see Pacer) so the writers get their turn between them. While a reader
        that keeps up (a small socket buffer) still has immediate updates waiting, making more
        only for conflation to discard them would starve the writers, so it waits. `updates`
        counts what was made. A reader that is slow on the network is not waited for: it gets
        conflated data, as from MLink.
        """
        loop = asyncio.get_running_loop()
        pacer = Pacer(self.config.rate, loop.time())
        report_at, report_updates = pacer.start + 10.0, self.updates
        while True:
            now = loop.time()
            if now >= report_at:
                achieved = (self.updates - report_updates) / (now - report_at + 10.0)
                if achieved < pacer.rate * 0.95 and self._connections:
                    log.warning(
                        "asked for %.0f updates/s, made %.0f/s: this process is at capacity",
                        pacer.rate,
                        achieved,
                    )
                report_at, report_updates = now + 10.0, self.updates
            if pacer.behind(now) and self._writers_busy():
                await asyncio.sleep(0)
                continue
            step = pacer.take(now)
            for _ in range(step):
                self._publish(self.market.step())
            self.dropped_updates = pacer.dropped
            await asyncio.sleep(0 if pacer.behind(now) else pacer.tick)

    def _writers_busy(self) -> bool:
        """Whether a reader that keeps up still has immediate updates waiting or in flight."""
        now = time.monotonic()
        for conn in self._connections:
            if conn.sending_since is not None:
                if now - conn.sending_since < 0.05:
                    return True
                continue  # blocked on a slow reader for 50 ms: do not wait for it
            for sub in conn.subs.values():
                if sub.pending and sub.active_latency == 0:
                    return True
        return False

    def _publish(self, obj: LiveObject) -> None:
        self.updates += 1
        name = obj.msg_name
        seq = self._seq[name] = self._seq.get(name, 0) + 1
        ident = (name, obj.key)
        self._obj_seq[ident] = seq
        for conn in self._connections:
            subs = conn.live_by_type.get(name)
            if not subs:
                continue
            woke = False
            for sub in subs:
                # Conflation: a key waits at most once; it is serialized when it goes out. The
                # writer sleeps while nothing is pending, so the first pending key wakes it.
                # Each key moves to the back when it changes, so updates go out in time order.
                woke = woke or not sub.pending
                sub.pending.pop(ident, None)
                sub.pending[ident] = obj
            if woke:
                conn.wake.set()

    def _due(
        self, conn: SimConnection, now: float
    ) -> tuple[list[Outgoing | Pending], float | None]:
        """Everything ready to send, and how long until the next latency window closes."""
        out = list(conn.fifo)
        conn.fifo.clear()
        wait: float | None = None
        for sub in conn.subs.values():
            latency = sub.active_latency
            if latency < 0:
                ready = sub.signalled
            elif latency == 0:
                ready = True
            else:
                remaining = sub.last_flush + latency / 1000 - now
                ready = remaining <= 0
                if not ready:
                    wait = remaining if wait is None else min(wait, remaining)
                elif sub.pending:
                    wait = latency / 1000 if wait is None else min(wait, latency / 1000)
            if ready and sub.pending:
                out.extend((sub, obj) for obj in sub.pending.values())
                sub.pending.clear()
                sub.last_flush = now
                sub.signalled = False
        return out, wait

    async def _writer(self, conn: SimConnection) -> None:
        try:
            while True:
                batch, wait = self._due(conn, time.monotonic())
                if batch:
                    conn.sending_since = time.monotonic()
                    try:
                        await self._send(conn, batch)
                    finally:
                        conn.sending_since = None
                    if conn.closing:
                        await conn.ws.close(1008, "authentication failed")
                        return
                    continue
                conn.wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the event fires, and the writer would never end.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await conn.wake.wait()
        except ConnectionClosed:
            return
        except Exception:  # a writer that died silently would leave a mute open socket
            log.exception("connection %d: writer failed; closing with 1011", conn.id)
            with contextlib.suppress(Exception):
                await conn.ws.close(1011, "simulator error")

    async def _send(self, conn: SimConnection, batch: list[Outgoing | Pending]) -> None:
        """Send a batch; the truth log gets exactly the records whose send completed."""
        framed = conn.form in _FRAMED_FORMS
        proto = conn.form is WireForm.PROTO
        chunk: list[bytes] = []
        chunk_size = 0
        truth: list[bytes] = []  # sent
        unsent_truth: list[bytes] = []  # in the current framed chunk
        logging_truth = self._truth is not None

        async def flush() -> None:
            nonlocal chunk, chunk_size, unsent_truth
            if chunk:
                await conn.ws.send(b"".join(chunk))
                chunk, chunk_size = [], 0
                truth.extend(unsent_truth)
                unsent_truth = []

        encoded = self._stamp(self._clock())
        injecting = self._injecting
        faulty = conn.faulty
        try:
            for entry in batch:
                if isinstance(entry, Outgoing):
                    item: Outgoing | None = entry
                else:
                    item = self._data_out(conn, entry[0], entry[1], encoded)
                if item is None:
                    continue
                sends = [(item.body, item.number, item.truth)]
                if injecting and item.data:
                    sends[:0] = self._injected(conn, item, framed)
                for body, number, meta in sends:
                    line = None
                    if logging_truth and meta is not None:
                        line = truth_line(
                            meta, None if "fault" in meta or "checkpoint" in meta else body
                        )
                    if framed:
                        if proto:
                            proto_frame = self._proto_frame(body, meta)
                            if proto_frame is None:
                                continue
                            frame = proto_frame
                        else:
                            frame = encode_frame(body, number)
                        chunk.append(frame)
                        chunk_size += len(frame)
                        if line is not None:
                            unsent_truth.append(line)
                        if chunk_size >= self.config.batch_bytes:
                            await flush()
                    else:
                        await conn.ws.send(body)
                        if line is not None:
                            truth.append(line)
                if item.data:
                    conn.data_sent += 1
                    if faulty and await self._connection_fault(conn, flush, truth):
                        return
            await flush()
        finally:
            if self._truth is not None and truth:
                self._truth.write(truth)
                truth.clear()

    @property
    def proto_codec(self) -> ProtoCodec:
        if self._codec is None:
            is_default = self.catalog is default_catalog()
            self._codec = bundled_codec() if is_default else ProtoCodec.load(catalog=self.catalog)
        return self._codec

    def _proto_frame(self, body: bytes, meta: Mapping[str, Any] | None) -> bytes | None:
        """A JSON envelope as a P frame. Faults: malformed becomes a garbled protobuf body,
        unknown_type a type no descriptor set has; NaN and oversized do not apply (None)."""
        fault = meta.get("fault") if meta else None
        if fault in ("nan", "oversized"):
            return None
        if fault == "malformed":
            return encode_frame(b"\x08\x01" + _GARBLED_TAIL, 0, "P")
        if fault == "unknown_type":
            # _meta (field 1) { message_type (field 1): "SimUnknownType" }, under a free number
            return encode_frame(b"\x0a\x10\x0a\x0eSimUnknownType", 99_999, "P")
        return self.proto_codec.encode_frame(orjson.loads(body))

    def _injected(
        self, conn: SimConnection, item: Outgoing, framed: bool
    ) -> list[tuple[bytes, int, dict[str, Any]]]:
        faults = self.config.faults
        out: list[tuple[bytes, int, dict[str, Any]]] = []
        meta = item.truth or {}
        base = {"conn": conn.id, "msg": meta.get("msg"), "key": meta.get("key")}
        # A framed message must still fit the six-digit length of its header.
        room = 999_999 - len(item.body) - 32 if framed else faults.oversize_bytes
        pad = max(0, min(faults.oversize_bytes, room))
        rng = self._rng
        if faults.malformed_rate and rng.random() < faults.malformed_rate:
            out.append(
                (item.body[: len(item.body) // 2], item.number, {**base, "fault": "malformed"})
            )
        if faults.nan_rate and rng.random() < faults.nan_rate:
            doc = orjson.loads(item.body)
            doc["message"]["simNaN"] = "__nan__"
            body = orjson.dumps(doc).replace(b'"__nan__"', b"NaN")
            out.append((body, item.number, {**base, "fault": "nan"}))
        if faults.unknown_type_rate and rng.random() < faults.unknown_type_rate:
            doc = orjson.loads(item.body)
            doc["header"]["mTyp"] = "SimUnknownType"
            out.append((orjson.dumps(doc), 0, {**base, "fault": "unknown_type"}))
        if faults.oversized_rate and rng.random() < faults.oversized_rate:
            doc = orjson.loads(item.body)
            doc["message"]["simPadding"] = "x" * pad
            out.append((orjson.dumps(doc), item.number, {**base, "fault": "oversized"}))
        return out

    async def _connection_fault(
        self, conn: SimConnection, flush: Callable[[], Any], truth: list[bytes]
    ) -> bool:
        faults = self.config.faults
        n = conn.data_sent

        async def settle() -> None:
            await flush()
            if self._truth is not None and truth:
                self._truth.write(truth)
                truth.clear()

        if faults.goodnight_after is not None and n >= faults.goodnight_after:
            await settle()
            conn.form = conn.form or WireForm.JSON
            admin = self._admin_out("MLinkAdmin", {"state": "GoodNight"})
            if conn.form is WireForm.PROTO:
                payload = self.proto_codec.encode_frame(orjson.loads(admin.body))
            else:
                payload = encode_frame(admin.body) if conn.form is WireForm.FRAMED else admin.body
            await conn.ws.send(payload)
            await conn.ws.close(1001, "good night")
            return True
        if faults.close_1011_after is not None and n >= faults.close_1011_after:
            await settle()
            await conn.ws.close(1011, "simulated internal error")
            return True
        if faults.drop_after is not None and n >= faults.drop_after:
            await settle()
            transport = conn.ws.transport
            for _ in range(1000):  # let what was sent leave the process before the cut
                if not transport.get_write_buffer_size():
                    break
                await asyncio.sleep(0.001)
            transport.abort()
            return True
        if faults.stall_after is not None and n >= faults.stall_after:
            await settle()
            conn.stalled = True
            conn.ws.transport.pause_reading()  # no more pings read, so no pongs
            await asyncio.Event().wait()  # sends nothing, ever; cancelled when the server stops
        return False
