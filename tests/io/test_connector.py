"""The connector against the simulator over real localhost websockets."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from bridge.io.connector import (
    ConnectionDown,
    ConnectionUp,
    Connector,
    ConnectorConfig,
    ConnectorEvent,
    Credentials,
    SubscriptionSpec,
)
from bridge.io.policy import Failure, ReconnectPolicy
from bridge.mlink.messages import MLinkLogon, MLinkQuery, MLinkStream, MsgTypeFilter, QueryType
from bridge.mlink.session import Record, SnapshotBegin, SnapshotComplete
from bridge.simulator.server import Faults, Simulator, SimulatorConfig

pytestmark = pytest.mark.integration

FAST = ReconnectPolicy.from_limits(0.01, 0.05, 0.2, 0.3)


def stream(name: str, stale_after: float = 0.0) -> SubscriptionSpec:
    def request(highwater: int | None) -> MLinkStream:
        return MLinkStream(name, name, active_latency=0, highwater_ts=highwater)

    return SubscriptionSpec(name, request, stale_after)


def token(value: str = "demo-key") -> Callable[[], Credentials]:
    return lambda: Credentials(token=value)


async def collect(
    connector: Connector,
    until: Callable[[list[ConnectorEvent]], bool],
    timeout: float = 15.0,
) -> list[ConnectorEvent]:
    events: list[ConnectorEvent] = []

    async def run() -> None:
        async for event in connector.events():
            events.append(event)
            if until(events):
                connector.stop()

    try:
        async with asyncio.timeout(timeout):
            await run()
    except TimeoutError:
        connector.stop()
        pytest.fail(f"condition not met in {timeout}s; saw {summary(events)[-12:]}")
    return events


def summary(events: list[ConnectorEvent]) -> list[str]:
    out = []
    for e in events:
        if isinstance(e, ConnectionDown):
            out.append(f"Down:{e.failure}")
        elif isinstance(e, Record):
            out.append("Record")
        else:
            out.append(type(e).__name__)
    return out


def downs(events: list[ConnectorEvent]) -> list[ConnectionDown]:
    return [e for e in events if isinstance(e, ConnectionDown)]


def ups(events: list[ConnectorEvent]) -> int:
    return sum(1 for e in events if isinstance(e, ConnectionUp))


@pytest.fixture
async def sim_factory() -> AsyncIterator[Callable[..., Any]]:
    started: list[Simulator] = []

    async def make(**kwargs: Any) -> Simulator:
        sim = Simulator(SimulatorConfig(**kwargs))
        await sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.mark.parametrize(
    ("faults", "failure", "detail"),
    [
        (Faults(drop_after=15), Failure.CLOSED, "without a close frame"),
        (Faults(close_1011_after=15), Failure.CLOSED, "1011"),
        (Faults(goodnight_after=15), Failure.GOODNIGHT, "GoodNight"),
    ],
)
async def test_reconnects_and_resubscribes_after_the_server_goes(
    sim_factory: Callable[..., Any], faults: Faults, failure: Failure, detail: str
) -> None:
    sim = await sim_factory(rate=500, faults=faults)
    connector = Connector(
        ConnectorConfig(sim.url("/mlink/jsonf"), token()), [stream("StockBookQuote")], policy=FAST
    )
    events = await collect(
        connector, lambda ev: sum(isinstance(e, SnapshotComplete) for e in ev) >= 2
    )
    (down,) = downs(events)
    assert down.failure is failure
    assert detail in down.detail
    assert 0 <= down.retry_in <= 0.02
    assert ups(events) == 2
    assert connector.failures[failure] == 1


async def test_dead_peer_is_caught_by_keepalive(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(rate=500, faults=Faults(stall_after=10))
    config = ConnectorConfig(sim.url(), token(), ping_interval=0.2, ping_timeout=0.4)
    connector = Connector(config, [stream("StockBookQuote")], policy=FAST)
    events = await collect(connector, lambda ev: ups(ev) >= 2)
    assert downs(events)[0].failure is Failure.KEEPALIVE
    assert connector.failures[Failure.KEEPALIVE] == 1
    assert connector.failures[Failure.STALE] == 0


async def test_silent_subscription_is_caught_by_the_staleness_limit(
    sim_factory: Callable[..., Any],
) -> None:
    sim = await sim_factory(rate=0)  # pongs keep coming, data does not
    config = ConnectorConfig(sim.url(), token(), ping_interval=0.2, ping_timeout=1.0)
    subs = [stream("StockBookQuote", stale_after=0.6), stream("StockPrint")]
    connector = Connector(config, subs, policy=FAST)
    started = time.monotonic()
    events = await collect(connector, lambda ev: ups(ev) >= 2)
    down = downs(events)[0]
    assert down.failure is Failure.STALE
    assert "StockBookQuote" in down.detail
    assert time.monotonic() - started >= 0.6
    assert connector.failures[Failure.KEEPALIVE] == 0


async def test_a_busy_subscription_is_not_stale(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(rate=400, tickers=3)
    connector = Connector(
        ConnectorConfig(sim.url(), token()),
        [stream("StockBookQuote", stale_after=0.5)],
        policy=FAST,
    )
    events = await collect(connector, lambda ev: sum(isinstance(e, Record) for e in ev) >= 150)
    assert downs(events) == []


async def test_refused_credentials_back_off_long(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(rate=100, faults=Faults(reject_logons=2))
    calls = 0

    def creds() -> Credentials:
        nonlocal calls
        calls += 1
        return Credentials(token="demo-key")

    connector = Connector(ConnectorConfig(sim.url(), creds), [stream("StockPrint")], policy=FAST)
    events = await collect(connector, lambda ev: any(isinstance(e, SnapshotComplete) for e in ev))
    failures = downs(events)
    assert [d.failure for d in failures] == [Failure.AUTH, Failure.AUTH]
    assert all(d.retry_in >= 0.2 for d in failures)  # the auth floor, not the network one
    assert calls == 3  # credentials fetched afresh for every attempt


async def test_logon_auth_with_a_jwt_file_read_on_each_attempt(
    sim_factory: Callable[..., Any], tmp_path: Path
) -> None:
    sim = await sim_factory(rate=200, api_keys=("jwt-2",), faults=Faults(drop_after=5))
    jwt = tmp_path / "token"
    jwt.write_text("jwt-1\n")

    def creds() -> Credentials:
        value = jwt.read_text().strip()
        jwt.write_text("jwt-2\n")  # rotated after the first read
        return Credentials(logon=MLinkLogon(jwt_token=value))

    config = ConnectorConfig(sim.url(), creds, header_auth=False)
    connector = Connector(config, [stream("StockBookQuote")], policy=FAST)
    events = await collect(connector, lambda ev: any(isinstance(e, SnapshotComplete) for e in ev))
    assert downs(events)[0].failure is Failure.AUTH  # jwt-1 was refused
    assert ups(events) == 2


@pytest.mark.parametrize(
    ("header_auth", "bad", "detail"),
    [
        # logon mode while the JWT file is empty (being rewritten): nothing to log on with
        (False, Credentials(), "no API key or JWT to log on with"),
        # a token with a line break cannot be a header; the failure must not quote it
        (True, Credentials(token="demo-key\r\nX: 1"), "a character an HTTP header cannot"),
    ],
    ids=["logon without a JWT", "a token with a line break"],
)
async def test_credentials_that_cannot_be_used_wait_as_refused_ones(
    sim_factory: Callable[..., Any], header_auth: bool, bad: Credentials, detail: str
) -> None:
    sim = await sim_factory(rate=100)
    good = (
        Credentials(token="demo-key")
        if header_auth
        else Credentials(logon=MLinkLogon(api_key="demo-key"))
    )
    answers = iter([bad, good])
    config = ConnectorConfig(sim.url(), lambda: next(answers), header_auth=header_auth)
    connector = Connector(config, [stream("StockPrint")], policy=FAST)
    events = await collect(connector, lambda ev: any(isinstance(e, SnapshotComplete) for e in ev))
    (down,) = downs(events)
    assert down.failure is Failure.AUTH
    assert detail in down.detail
    assert "demo-key" not in down.detail
    assert ups(events) == 1


async def test_connect_refused_then_server_appears(sim_factory: Callable[..., Any]) -> None:
    probe = await sim_factory(rate=0)
    port = probe.port
    await probe.stop()
    config = ConnectorConfig(f"ws://127.0.0.1:{port}/mlink/json", token(), open_timeout=1)
    connector = Connector(config, [stream("StockPrint")], policy=FAST)

    async def late_server() -> None:
        await asyncio.sleep(0.5)
        await sim_factory(port=port, rate=50)

    task = asyncio.create_task(late_server())
    events = await collect(connector, lambda ev: any(isinstance(e, SnapshotComplete) for e in ev))
    await task
    failures = downs(events)
    assert failures
    assert {d.failure for d in failures} == {Failure.CONNECT}
    assert [d.attempt for d in failures] == list(range(1, len(failures) + 1))


async def test_resume_from_highwater_asks_for_newer_records_only(
    sim_factory: Callable[..., Any],
) -> None:
    sim = await sim_factory(rate=300, tickers=12, faults=Faults(drop_after=40))
    config = ConnectorConfig(sim.url(), token(), resume_highwater=True)
    requests: list[int | None] = []

    def request(highwater: int | None) -> MLinkQuery:
        requests.append(highwater)
        kind = QueryType.INCR_SUBSCRIPTION if highwater else QueryType.FULL_SUBSCRIPTION
        return MLinkQuery(
            "books",
            kind,
            [MsgTypeFilter(msg_name="StockBookQuote")],
            active_latency=0,
            highwater_ts=highwater,
        )

    connector = Connector(config, [SubscriptionSpec("books", request)], policy=FAST)
    events = await collect(
        connector, lambda ev: sum(isinstance(e, SnapshotComplete) for e in ev) >= 2
    )
    assert requests[0] is None
    assert requests[1] is not None
    assert requests[1] > 0
    snapshots = [e for e in events if isinstance(e, SnapshotComplete)]
    assert snapshots[0].records == 12
    assert snapshots[1].records < 12  # only what changed since the newest record seen


async def test_stop_ends_the_event_stream(sim_factory: Callable[..., Any]) -> None:
    sim = await sim_factory(rate=200)
    connector = Connector(ConnectorConfig(sim.url(), token()), [stream("StockPrint")], policy=FAST)
    events = await collect(connector, lambda ev: any(isinstance(e, SnapshotBegin) for e in ev))
    assert ups(events) == 1
    assert downs(events) == []
    assert connector.stopping


# A server that answers the way the simulator never does: each scenario below is what a real
# server might do that the simulator's faults do not cover.
Handler = Callable[[Any], Awaitable[None]]


@contextlib.asynccontextmanager
async def odd_server(handler: Handler) -> AsyncIterator[str]:
    from websockets.asyncio.server import serve  # noqa: PLC0415 - only these tests serve

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/mlink/json"


def admin(state: str) -> bytes:
    return orjson.dumps({"header": {"mTyp": "MLinkAdmin"}, "message": {"state": state}})


async def goodnight_then_stay(ws: Any) -> None:
    await ws.recv()  # the subscription
    await ws.send(admin("LoggedOn"))
    await ws.send(admin("GoodNight"))
    await ws.wait_closed()  # keeps the socket open, answering pings, until the client goes


async def never_answer(ws: Any) -> None:
    await ws.recv()
    await ws.send(admin("LoggedOn"))
    await ws.wait_closed()  # no ack, no snapshot, but pongs


async def close_1008(ws: Any) -> None:
    await ws.close(1008, "")  # a policy violation with no AuthError message first


@pytest.mark.parametrize(
    ("handler", "failure", "detail"),
    [
        (goodnight_then_stay, Failure.GOODNIGHT, "GoodNight"),
        (never_answer, Failure.STALE, "made no progress towards going live"),
        (close_1008, Failure.AUTH, "refused the credentials"),
    ],
    ids=["GoodNight, socket left open", "a subscription never answered", "close 1008"],
)
async def test_a_server_that_leaves_the_bridge_waiting_is_left(
    handler: Handler, failure: Failure, detail: str
) -> None:
    async with odd_server(handler) as url:
        config = ConnectorConfig(url, token(), ping_interval=0.2, ping_timeout=1.0)
        connector = Connector(config, [stream("StockPrint", stale_after=0.5)], policy=FAST)
        started = time.monotonic()
        events = await collect(connector, lambda ev: len(downs(ev)) >= 1, timeout=10.0)
    (down,) = downs(events)
    assert down.failure is failure
    assert detail in down.detail
    assert connector.failures[failure] == 1
    if failure is Failure.GOODNIGHT:
        assert time.monotonic() - started < 0.5  # at once, not after a staleness limit
