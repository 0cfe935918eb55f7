"""The websocket side: keep an MLink session alive for as long as the process runs.

This is the only module that imports `websockets`. One `Connector` owns one websocket at a time
and drives an `MLinkSession` (bridge/mlink/session.py) with what arrives; its `events()` yields
the session's events plus `ConnectionUp` / `ConnectionDown`, forever:

* connect with compression off and explicit size caps; authenticate by header or MLinkLogon,
  with credentials fetched on every attempt (a JWT file is re-read; a changed file on a live
  session is sent as a new MLinkLogon);
* after any failure, reconnect with exponential backoff and full jitter (policy.py), never
  giving up; refused credentials back off for minutes, never in a hot loop;
* two liveness detectors, counted apart: keepalive pings catch a dead peer, and a
  per-subscription staleness limit catches a connection that answers pings but no longer
  delivers data;
* resubscribe after a reconnect: a fresh snapshot, or (resume="highwater") only what was sent
  after the newest record seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.frames import CloseCode

from bridge.errors import BridgeError
from bridge.io.policy import Failure, ReconnectPolicy
from bridge.mlink.framing import WireForm
from bridge.mlink.messages import MLinkLogon, MLinkQuery, MLinkStream, MLinkSubscribe
from bridge.mlink.proto import ProtoCodec
from bridge.mlink.session import (
    AuthFailed,
    Event,
    MLinkSession,
    Record,
    ServerClosing,
    SessionLimits,
    SnapshotBegin,
    SnapshotComplete,
    Subscription,
    SubscriptionAcked,
    SubscriptionEnded,
    SubscriptionFailed,
)

Sleeper = Callable[[float], Awaitable[None]]
log = logging.getLogger("mlink.connector")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What one connection attempt authenticates with. Secrets never appear in repr()."""

    token: str | None = field(default=None, repr=False)  # Bearer: apiKey[.password] or a JWT
    logon: MLinkLogon | None = None  # sent as MLinkLogon (logon auth, or when MLink asks)


@dataclass(frozen=True, slots=True)
class SubscriptionSpec:
    """A subscription the connector keeps open across connections.

    `request(highwater_ts)` builds the request for a new connection; highwater_ts is None for a
    fresh snapshot. `stale_after` seconds without data on a live subscription reconnect (0: off).
    """

    label: str
    request: Callable[[int | None], MLinkStream | MLinkSubscribe | MLinkQuery]
    stale_after: float = 0.0
    accepts: Callable[[Mapping[str, Any]], bool] | None = None  # see session.Subscription


@dataclass(frozen=True, slots=True)
class ConnectorConfig:
    url: str
    credentials: Callable[[], Credentials]
    header_auth: bool = True
    max_message: int = 16 * 1024 * 1024
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    open_timeout: float = 10.0
    resume_highwater: bool = False
    jwt_file: Path | None = None  # watched while connected: a new token is sent as MLinkLogon
    proto_descriptors: Path | None = None  # /mlink/proto: a descriptor set before the bundled one

    @property
    def form(self) -> WireForm:
        path = self.url.split("?", 1)[0].rstrip("/")
        if path.endswith("/proto"):
            return WireForm.PROTO
        return WireForm.FRAMED if path.endswith("/jsonf") else WireForm.JSON


@dataclass(frozen=True, slots=True)
class ConnectionUp:
    attempt: int  # consecutive failed attempts before this one


@dataclass(frozen=True, slots=True)
class ConnectionDown:
    failure: Failure
    detail: str
    retry_in: float  # seconds until the next attempt
    attempt: int  # consecutive failures, this one included


ConnectorEvent = Event | ConnectionUp | ConnectionDown


class _Failed(BridgeError):
    retryable = True

    def __init__(self, failure: Failure, detail: str) -> None:
        super().__init__(detail)
        self.failure = failure
        self.detail = detail


class Connector:
    """Keeps `subscriptions` flowing from MLink; see the module docstring."""

    def __init__(
        self,
        config: ConnectorConfig,
        subscriptions: Sequence[SubscriptionSpec],
        *,
        policy: ReconnectPolicy | None = None,
        sleeper: Sleeper = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.subscriptions = list(subscriptions)
        self.policy = policy or ReconnectPolicy()
        self._sleep = sleeper
        self._clock = clock
        self._stopping = asyncio.Event()
        self._ws: ClientConnection | None = None
        self._highwater: dict[str, int] = {}
        self._jwt_mtime: float | None = None  # the JWT file's time when credentials were read
        self._session: MLinkSession | None = None
        self._closing: asyncio.Future[None] | None = None
        self.connections = 0
        self.failures: dict[Failure, int] = dict.fromkeys(Failure, 0)
        # Read once, here: a descriptor set that cannot be used is a configuration error.
        self._codec = (
            ProtoCodec.load(config.proto_descriptors) if config.form is WireForm.PROTO else None
        )

    def stop(self) -> None:
        """Stop reading: the current connection closes and events() ends."""
        self._stopping.set()
        if self._ws is not None:
            self._closing = asyncio.ensure_future(self._ws.close(1000, "bridge stopping"))

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def connected(self) -> bool:
        """A websocket is open (it may still be authenticating or subscribing)."""
        return self._ws is not None

    def highwater_ts(self, label: str) -> int | None:
        """The newest complete position of a subscription (ns), as a resume would use it."""
        marks = [self._highwater.get(label)]
        if self._session is not None:
            marks.append(self._session.highwater_ts(label))
        known = [m for m in marks if m is not None]
        return max(known) if known else None

    async def events(self) -> AsyncIterator[ConnectorEvent]:
        """Every event, one at a time (see `batches` for the fast path)."""
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[Sequence[ConnectorEvent]]:
        """The events, a websocket payload's worth at a time: one await per payload, not one
        per record."""
        attempt = 0
        while not self.stopping:
            up_at: float | None = None
            try:
                async for batch in self._connection(attempt):
                    if up_at is None and isinstance(batch[0], ConnectionUp):
                        up_at = self._clock()
                    yield batch
                raise _Failed(Failure.CLOSED, "connection ended")
            except _Failed as failed:
                if self.stopping:
                    return
                healthy = up_at is not None and self._clock() - up_at >= self.policy.healthy_after
                attempt = 1 if healthy else attempt + 1
                self.failures[failed.failure] += 1
                delay = self.policy.delay(failed.failure, attempt)
                yield [ConnectionDown(failed.failure, failed.detail, delay, attempt)]
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._stopping.wait()

    # -- one connection ---------------------------------------------------------------------

    def _subscriptions(self) -> list[Subscription]:
        out = []
        for spec in self.subscriptions:
            mark = self._highwater.get(spec.label) if self.config.resume_highwater else None
            out.append(Subscription(spec.label, spec.request(mark), spec.accepts))
        return out

    def _credentials(self) -> Credentials:
        """The credentials for a new connection, checked: _Failed(AUTH) when there are none
        to use, or the token cannot travel in an HTTP header (the message never quotes it).
        The JWT file's time is taken first: a rotation during the handshake is then seen."""
        jwt_file = self.config.jwt_file
        self._jwt_mtime = _mtime(jwt_file) if jwt_file else None
        try:
            creds = self.config.credentials()
        except BridgeError as exc:  # an unreadable JWT file, say: wait as for refused auth
            raise _Failed(Failure.AUTH, str(exc)) from None
        if self.config.header_auth:
            if not creds.token:
                raise _Failed(Failure.AUTH, "no API key or JWT to authenticate with")
            if not all(" " < c < "\x7f" for c in creds.token):
                why = "the API key or JWT holds a character an HTTP header cannot carry"
                raise _Failed(Failure.AUTH, f"{why} (a line break or a space?)")
        elif creds.logon is None:  # an empty JWT file while it is rewritten, say
            raise _Failed(Failure.AUTH, "no API key or JWT to log on with")
        return creds

    async def _open(self, creds: Credentials) -> ClientConnection:
        headers = {"Authorization": f"Bearer {creds.token}"} if self.config.header_auth else None
        try:
            return await connect(
                self.config.url,
                additional_headers=headers,
                compression=None,
                max_size=self.config.max_message,
                ping_interval=self.config.ping_interval or None,
                ping_timeout=self.config.ping_timeout or None,
                open_timeout=self.config.open_timeout,
                close_timeout=2.0,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            failure = Failure.AUTH if status in (401, 403) else Failure.CONNECT
            raise _Failed(failure, f"MLink refused the handshake: HTTP {status}") from None
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise _Failed(Failure.CONNECT, f"cannot connect: {type(exc).__name__}: {exc}") from None

    def _new_session(self, creds: Credentials) -> MLinkSession:
        return MLinkSession(
            self._subscriptions(),
            form=self.config.form,
            logon=creds.logon,
            header_auth=self.config.header_auth,
            clock=time.time_ns,
            limits=SessionLimits(
                max_payload=self.config.max_message, max_message=self.config.max_message
            ),
            codec=self._codec,
        )

    async def check(self, timeout: float = 15.0) -> list[str]:
        """One connection: authenticate, subscribe, and wait until MLink has answered every
        subscription. Returns the problems found (empty: MLink takes this configuration)."""
        try:
            creds = self._credentials()
            ws = await self._open(creds)
        except BridgeError as exc:
            return [str(exc)]
        session = self._new_session(creds)
        waiting = {spec.label for spec in self.subscriptions}
        problems: list[str] = []
        try:
            async with asyncio.timeout(timeout):
                session.connected()
                for request in session.data_to_send():
                    await ws.send(request)
                async for payload in ws:
                    for event in session.receive(payload):
                        if isinstance(event, AuthFailed):
                            return [f"MLink refused the credentials: {event.state} {event.detail}"]
                        if isinstance(event, SubscriptionFailed):
                            problems.append(f"subscription {event.label}: {event.detail}")
                            waiting.discard(event.label)
                        elif isinstance(event, SubscriptionAcked | SnapshotBegin | Record):
                            waiting.discard(event.label or "")
                    if not waiting:
                        return problems
                    for out in session.data_to_send():
                        await ws.send(out)
                problems.append(_closed_early(ws))
        except TimeoutError:
            problems.append(f"no answer for {', '.join(sorted(waiting))} within {timeout:.0f}s")
        except ConnectionClosed:
            problems.append(_closed_early(ws))
        finally:
            with contextlib.suppress(Exception):
                await ws.close()
        return problems

    async def _connection(self, attempt: int) -> AsyncIterator[Sequence[ConnectorEvent]]:
        creds = self._credentials()
        session = self._new_session(creds)
        ws = await self._open(creds)
        self._ws = ws
        self._session = session
        self.connections += 1
        watch = _Watch(self, session, ws)
        watchdog = asyncio.create_task(watch.run(), name="mlink-watchdog")
        goodnight = False
        try:
            yield [ConnectionUp(attempt)]
            session.connected()
            for request in session.data_to_send():
                await ws.send(request)
            async for payload in ws:
                events = session.receive(payload)
                batch: Sequence[ConnectorEvent] = events
                failed: _Failed | None = None
                if not watch.saw(events):  # not only records, which pass as they are
                    batch, failed, closing = _up_to_failure(events)
                    goodnight = goodnight or closing
                if batch:
                    yield batch
                if failed is not None:
                    raise failed
                if goodnight:  # the server is going away: reconnect, elsewhere or later
                    raise _Failed(Failure.GOODNIGHT, "MLink said GoodNight")
                for out in session.data_to_send():
                    await ws.send(out)
            raise _Failed(*watch.why_closed(ws, goodnight))
        except ConnectionClosed:
            raise _Failed(*watch.why_closed(ws, goodnight)) from None
        finally:
            watchdog.cancel()
            try:
                await watchdog
            except asyncio.CancelledError:
                pass
            except Exception:  # the connection's own failure is the one to report
                log.warning("the connection's watchdog failed", exc_info=True)
            for spec in self.subscriptions:
                mark = session.highwater_ts(spec.label)
                if mark is not None:
                    self._highwater[spec.label] = max(mark, self._highwater.get(spec.label, 0))
            session.connection_lost()
            self._ws = self._session = None
            if ws.state.name != "CLOSED":
                with contextlib.suppress(Exception):
                    await ws.close()


def _up_to_failure(
    events: Sequence[Event],
) -> tuple[list[ConnectorEvent], _Failed | None, bool]:
    """The events to pass on, the failure that ends the connection, if any, and whether MLink
    said GoodNight among them. Refused credentials are not passed on; an ended subscription
    is, then the connection ends. After the first failure only records pass: they arrived,
    and the resume mark already counts them."""
    batch: list[ConnectorEvent] = []
    goodnight = False
    failed: _Failed | None = None
    for event in events:
        if failed is not None:
            if type(event) is Record:
                batch.append(event)
            continue
        if isinstance(event, AuthFailed):
            failed = _Failed(Failure.AUTH, f"MLink refused the credentials: {event.state}")
            continue
        if isinstance(event, ServerClosing):
            goodnight = True
        batch.append(event)
        if isinstance(event, SubscriptionEnded):
            failed = _Failed(Failure.PROTOCOL, f"subscription {event.label} ended: {event.state}")
    return batch, failed, goodnight


def _closed_early(ws: ClientConnection) -> str:
    code, reason = ws.close_code, ws.close_reason or ""
    if code == CloseCode.POLICY_VIOLATION:
        return _refused(code, reason)
    return f"MLink closed the connection before answering (close {code} {reason})".strip()


def _refused(code: int | None, reason: str) -> str:
    """A close with 1008 (policy violation): how MLink refuses credentials."""
    return f"MLink refused the credentials (close {code}: {reason})".replace(": )", ")")


class _Watch:
    """Per connection: data staleness per live subscription, and JWT file changes."""

    def __init__(self, owner: Connector, session: MLinkSession, ws: ClientConnection) -> None:
        self._owner = owner
        self._session = session
        self._ws = ws
        self._limits = {s.label: s.stale_after for s in owner.subscriptions if s.stale_after > 0}
        self._live_since: dict[str, float] = {}
        self._last_data: dict[str, float] = {}
        # Before going live, every answer for a subscription (ack, checkpoint, record) counts
        # as progress; refused or ended ones wait for nothing.
        self._started = owner._clock()
        self._last_answer: dict[str, float] = {}
        self._gone: set[str] = set()
        self.stale: str | None = None
        self._jwt_mtime = owner._jwt_mtime  # as the connection's credentials were read

    def saw(self, events: Sequence[Event]) -> bool:
        """One payload's events, all received now (one clock read per payload, not per record).
        Returns whether they were all records: then the connector has nothing to decide (one
        pass over a payload's records, not two)."""
        now = self._owner._clock()
        last_data = self._last_data
        only_records = True
        for event in events:
            if type(event) is Record:
                label = event.label
                if label is not None:
                    last_data[label] = now
                continue
            only_records = False
            if isinstance(event, SnapshotComplete):
                self._live_since[event.label] = now
            elif isinstance(event, SnapshotBegin):
                self._live_since.pop(event.label, None)
                self._last_answer[event.label] = now
            elif isinstance(event, SubscriptionAcked):
                self._last_answer[event.label] = now
            elif isinstance(event, SubscriptionFailed | SubscriptionEnded):
                self._gone.add(event.label)
        return only_records

    def why_closed(self, ws: ClientConnection, goodnight: bool) -> tuple[Failure, str]:
        if self.stale is not None:
            return Failure.STALE, self.stale
        if goodnight:
            return Failure.GOODNIGHT, "MLink said GoodNight"
        sent, rcvd = ws.protocol.close_sent, ws.protocol.close_rcvd
        if rcvd is None and sent is not None and "keepalive" in sent.reason:
            return Failure.KEEPALIVE, "no pong within the ping timeout: the peer is gone"
        if rcvd is None:
            return Failure.CLOSED, "connection dropped without a close frame"
        if rcvd.code == CloseCode.POLICY_VIOLATION:  # back off as for refused credentials
            return Failure.AUTH, _refused(rcvd.code, rcvd.reason)
        return Failure.CLOSED, f"closed by MLink: code {rcvd.code} {rcvd.reason}".strip()

    async def run(self) -> None:
        interval = min([*self._limits.values(), 5.0]) / 4
        while True:
            await self._owner._sleep(interval)
            now = self._owner._clock()
            for label, limit in self._limits.items():
                since = self._live_since.get(label)
                if since is not None:
                    last = max(since, self._last_data.get(label, since))
                    what = "delivered nothing"
                elif label not in self._gone:  # not live yet: waiting for its ack or snapshot
                    answers = (self._last_answer.get(label, 0.0), self._last_data.get(label, 0.0))
                    last = max(self._started, *answers)
                    what = "made no progress towards going live"
                else:
                    continue
                if now - last > limit:
                    self.stale = f"subscription {label} {what} for {now - last:.1f}s"
                    await self._ws.close(4000, "stale subscription")
                    return
            await self._check_jwt()

    async def _check_jwt(self) -> None:
        path = self._owner.config.jwt_file
        if path is None:
            return
        mtime = _mtime(path)
        if mtime is None or mtime == self._jwt_mtime:
            return
        try:
            creds = self._owner.config.credentials()
        except BridgeError:
            return  # an unreadable file mid-rotation; the next check tries again
        if creds.logon is not None:  # else empty mid-rotation: the next check reads it again
            self._jwt_mtime = mtime
            self._session.relogon(creds.logon)
            with contextlib.suppress(ConnectionClosed, OSError):  # the reader sees it go
                for payload in self._session.data_to_send():
                    await self._ws.send(payload)


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None
