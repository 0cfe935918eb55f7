"""Fault injection, conflation, resumption and the truth log, over real localhost websockets."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from bridge.mlink.framing import iter_frames
from bridge.simulator.server import Faults, Simulator, SimulatorConfig
from bridge.simulator.truth import latest_state, read_truth

pytestmark = pytest.mark.integration

AUTH = {"Authorization": "Bearer demo-key"}


def stream(name: str, latency: int = 0, **extra: Any) -> str:
    message = {"queryLabel": name, "activeLatency": latency, "msgName": name, **extra}
    return json.dumps({"header": {"mTyp": "MLinkStream"}, "message": message})


async def recv_all(ws: ClientConnection, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    """Read until `count` data records (not MLink* admin) arrived or the time is up."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while sum(1 for m in out if not m["header"]["mTyp"].startswith("MLink")) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            payload = await asyncio.wait_for(ws.recv(), remaining)
        except TimeoutError:
            break
        assert isinstance(payload, bytes)
        out.append(json.loads(payload))
    return out


def data(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if not m["header"]["mTyp"].startswith("MLink")]


async def test_drop_without_close_frame_hits_only_the_first_connection() -> None:
    config = SimulatorConfig(rate=500, faults=Faults(drop_after=20))
    async with Simulator(config) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote"))
            with pytest.raises(websockets.ConnectionClosedError) as info:
                for _ in range(500):
                    await asyncio.wait_for(ws.recv(), 5)
            assert info.value.rcvd is None  # no close frame: the TCP connection was cut
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote"))
            assert len(data(await recv_all(ws, 40))) >= 40


async def test_close_1011() -> None:
    async with Simulator(SimulatorConfig(rate=500, faults=Faults(close_1011_after=5))) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockPrint"))
            with pytest.raises(websockets.ConnectionClosedError):
                for _ in range(500):
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1011


async def test_goodnight_then_close() -> None:
    async with Simulator(SimulatorConfig(rate=500, faults=Faults(goodnight_after=5))) as sim:
        async with websockets.connect(sim.url("/mlink/jsonf"), additional_headers=AUTH) as ws:
            await ws.send(stream("StockPrint"))
            last: dict[str, Any] = {}
            with pytest.raises(websockets.ConnectionClosedOK):
                for _ in range(500):
                    payload = await asyncio.wait_for(ws.recv(), 5)
                    assert isinstance(payload, bytes)
                    for frame in iter_frames(payload):
                        last = json.loads(frame.body)
            assert last["header"]["mTyp"] == "MLinkAdmin"
            assert last["message"]["state"] == "GoodNight"
            assert ws.close_code == 1001


async def test_stall_sends_nothing_and_answers_no_ping() -> None:
    async with Simulator(SimulatorConfig(rate=500, faults=Faults(stall_after=10))) as sim:
        async with websockets.connect(
            sim.url(), additional_headers=AUTH, ping_interval=None, close_timeout=0.5
        ) as ws:
            await ws.send(stream("StockBookQuote"))
            got = data(await recv_all(ws, 10))
            assert len(got) == 10
            assert data(await recv_all(ws, 1, timeout=1.0)) == []
            pong = await ws.ping()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(pong, 1.0)


async def test_reject_first_logons() -> None:
    async with Simulator(SimulatorConfig(faults=Faults(reject_logons=1), admin_grace=0.2)) as sim:
        states = []
        for _ in range(2):
            async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
                states.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["message"]["state"])
    assert states == ["AuthError", "LoggedOn"]


async def test_bad_messages_at_a_rate_are_extra_and_marked_in_the_truth(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    faults = Faults(
        malformed_rate=1.0,
        nan_rate=1.0,
        unknown_type_rate=1.0,
        oversized_rate=1.0,
        oversize_bytes=2000,
    )
    async with Simulator(SimulatorConfig(rate=0, faults=faults, truth=truth)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", where="ticker.tk:eq:AAPL"))
            raw: list[bytes] = []
            for _ in range(10):
                payload = await asyncio.wait_for(ws.recv(), 5)
                assert isinstance(payload, bytes)
                raw.append(payload)
    # Admin, ack, Begin, then four bad messages before the one good record, Active, Complete.
    bad = raw[3:7]
    with pytest.raises(json.JSONDecodeError):
        json.loads(bad[0])  # malformed: cut in half
    assert b"NaN" in bad[1]
    assert json.loads(bad[2])["header"]["mTyp"] == "SimUnknownType"
    assert len(bad[3]) > 2000
    good = json.loads(raw[7])
    assert good["message"]["pkey"]["ticker"]["tk"] == "AAPL"
    entries = list(read_truth(truth))
    assert [e.fault for e in entries] == ["malformed", "nan", "unknown_type", "oversized", None]
    assert entries[-1].message == good["message"]


async def test_truth_log_matches_what_the_client_received(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    async with Simulator(SimulatorConfig(rate=2000, truth=truth, delete_rate=0.05)) as sim:
        async with websockets.connect(sim.url("/mlink/jsonf"), additional_headers=AUTH) as ws:
            for name in ("StockBookQuote", "OptionNbboQuote"):
                await ws.send(stream(name))
            received: list[dict[str, Any]] = []
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:
                payload = await asyncio.wait_for(ws.recv(), 5)
                assert isinstance(payload, bytes)
                received.extend(json.loads(f.body) for f in iter_frames(payload))
        await asyncio.sleep(0.2)
    records = data(received)
    entries = list(read_truth(truth))
    assert len(entries) >= len(records) > 100
    # Everything received was logged, in order (the log may hold a few sent after we stopped).
    assert [e.message for e in entries[: len(records)]] == [r["message"] for r in records]
    deletes = [r for r in records if r["header"].get("isDel")]
    assert deletes, "a 5% delete rate over >100 records produces deletes"
    assert all(set(r["message"]) == {"pkey"} for r in deletes)
    state = latest_state(truth)
    assert any(v is None for v in state.values())


async def test_active_latency_conflates_per_key() -> None:
    """activeLatency 300 ms: at most one value per key per window, however fast updates come."""
    async with Simulator(SimulatorConfig(rate=3000, tickers=6)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", latency=300))
            snapshot = await recv_all(ws, 6)
            assert len(data(snapshot)) == 6
            before = sim.updates
            started = time.monotonic()
            live = data(await recv_all(ws, 10_000, timeout=1.5))
            elapsed = time.monotonic() - started
            published = sim.updates - before
    windows = elapsed / 0.3 + 2
    assert live, "updates keep coming"
    assert len(live) <= 6 * windows
    assert published > len(live) * 2


async def test_signal_ready_releases_pending_updates() -> None:
    async with Simulator(SimulatorConfig(rate=2000, tickers=4)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", latency=-1))
            assert len(data(await recv_all(ws, 4))) == 4
            assert data(await recv_all(ws, 1, timeout=0.7)) == []  # waits for a signal
            signal = {"header": {"mTyp": "MLinkSignalReady"}, "message": {}}
            await ws.send(json.dumps(signal))
            released = data(await recv_all(ws, 4, timeout=2))
    keys = [json.dumps(m["message"]["pkey"], sort_keys=True) for m in released]
    assert released
    assert len(keys) == len(set(keys))  # one, the newest, per key


async def test_highwater_resumption_sends_only_newer_records() -> None:
    async with Simulator(SimulatorConfig(rate=40, tickers=12)) as sim:
        await asyncio.sleep(0.2)
        mark = time.time_ns()
        await asyncio.sleep(0.6)
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", latency=1000, highwaterTs=mark))
            got: list[dict[str, Any]] = []
            while not any(m["message"].get("state") == "Complete" for m in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
    kinds = [m["message"].get("state", m["header"]["mTyp"]) for m in got]
    assert kinds[:3] == ["LoggedOn", "MLinkStreamAck", "Begin"]
    assert kinds[-2:] == ["Active", "Complete"]
    snapshot = data(got)
    assert 0 < len(snapshot) < 12  # only what changed since the mark, not all 12 tickers
    for record in snapshot:
        if not record["header"].get("isDel"):
            assert record["message"]["srcTimestamp"] > mark


@pytest.mark.parametrize(
    ("message", "detail"),
    [
        ({"msgName": "NoSuchThing"}, "unknown"),
        ({"msgName": "StockBookQuote", "where": "nosuchfield:eq:1"}, "nosuchfield"),
        ({"msgName": "StockBookQuote", "view": "bidPrice1|nope"}, "nope"),
    ],
)
async def test_bad_requests_get_an_error_ack(message: dict[str, Any], detail: str) -> None:
    async with Simulator(SimulatorConfig(rate=0)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"header": {"mTyp": "MLinkStream"}, "message": message}))
            got = await recv_all(ws, 0, timeout=0.5)
            got += [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(2 - len(got))]
    ack = got[1]["message"]
    assert ack["result"] == "Error"
    assert detail in ack["detail"]


async def test_deletes_reach_subscribers_whose_filter_only_the_value_could_pass() -> None:
    """A delete carries only the key; it goes to every client that was sent that key."""
    async with Simulator(SimulatorConfig(rate=3000, tickers=4, delete_rate=0.2)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", where="bidPrice1:gt:1"))
            got = data(await recv_all(ws, 400, timeout=5))
    deletes = [m for m in got if m["header"].get("isDel")]
    assert deletes
    held: set[str] = set()
    for m in got:  # every delete is for a key the client was holding
        key = json.dumps(m["message"]["pkey"], sort_keys=True)
        if m["header"].get("isDel"):
            assert key in held
            held.discard(key)
        else:
            held.add(key)


async def test_truth_log_holds_exactly_what_went_out_when_the_peer_vanishes(
    tmp_path: Path,
) -> None:
    truth = tmp_path / "truth.jsonl"
    config = SimulatorConfig(rate=3000, truth=truth, faults=Faults(drop_after=250))
    async with Simulator(config) as sim:
        async with websockets.connect(sim.url("/mlink/jsonf"), additional_headers=AUTH) as ws:
            await ws.send(stream("OptionNbboQuote"))
            received: list[dict[str, Any]] = []
            with pytest.raises(websockets.ConnectionClosedError):
                for _ in range(10_000):
                    payload = await asyncio.wait_for(ws.recv(), 5)
                    assert isinstance(payload, bytes)
                    received.extend(json.loads(f.body) for f in iter_frames(payload))
    entries = [e for e in read_truth(truth) if e.conn == 1]
    assert [e.message for e in entries] == [r["message"] for r in data(received)]
    assert len(entries) == 250


@pytest.mark.parametrize(
    "message",
    [
        {"msgName": "StockBookQuote", "where": ["not", "text"]},
        {"msgName": "StockBookQuote", "view": {"bidPrice1": 1}},
        {"msgName": 3000},
    ],
)
async def test_requests_of_the_wrong_shape_get_an_error_ack_and_the_connection_lives(
    message: dict[str, Any],
) -> None:
    async with Simulator(SimulatorConfig(rate=0, admin_grace=0.2)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(json.dumps({"header": {"mTyp": "MLinkStream"}, "message": message}))
            admin = json.loads(await asyncio.wait_for(ws.recv(), 5))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
            await ws.send(stream("StockPrint"))
            after = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert admin["message"]["state"] == "LoggedOn"
    assert ack["message"]["result"] == "Error"
    assert after["message"] == {"msgName": "StockPrint", "result": "OK"}


async def test_a_refused_subscribe_changes_nothing() -> None:
    async with Simulator(SimulatorConfig(rate=2000, tickers=4)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            ok = {
                "activeLatency": 0,
                "Subscribe": [{"msgName": "StockBookQuote", "msgPKey": "AAPL-NMS-EQT"}],
            }
            bad = {
                "activeLatency": 0,
                "Subscribe": [
                    {"msgName": "StockBookQuote", "msgPKey": "MSFT-NMS-EQT"},
                    {"msgName": "NoSuchType", "msgPKey": "X-NMS-EQT"},
                ],
            }
            await ws.send(json.dumps({"header": {"mTyp": "MLinkSubscribe"}, "message": ok}))
            await ws.send(json.dumps({"header": {"mTyp": "MLinkSubscribe"}, "message": bad}))
            got = await recv_all(ws, 60, timeout=3)
    acks = [m["message"]["result"] for m in got if m["header"]["mTyp"] == "MLinkSubscribeAck"]
    assert acks == ["OK", "Error"]
    tickers = {m["message"]["pkey"]["ticker"]["tk"] for m in data(got)}
    assert tickers == {"AAPL"}


async def test_control_messages_do_not_release_a_subscription_waiting_for_a_signal() -> None:
    async with Simulator(SimulatorConfig(rate=2000, tickers=4)) as sim:
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("StockBookQuote", latency=-1))
            assert len(data(await recv_all(ws, 4))) == 4
            await asyncio.sleep(0.3)  # updates pile up, waiting for a signal
            await ws.send(stream("TickerDefinition", latency=0))  # control traffic
            got = await recv_all(ws, 10_000, timeout=1.0)
    assert not [m for m in data(got) if m["header"]["mTyp"] == "StockBookQuote"]
    assert [m for m in data(got) if m["header"]["mTyp"] == "TickerDefinition"]


async def test_snapshot_goes_out_oldest_first() -> None:
    async with Simulator(SimulatorConfig(rate=500, tickers=12)) as sim:
        await asyncio.sleep(0.5)
        async with websockets.connect(sim.url(), additional_headers=AUTH) as ws:
            await ws.send(stream("OptionNbboQuote", latency=1000))
            got = data(await recv_all(ws, 192, timeout=5))
    stamps = [m["header"]["sTim"] for m in got]
    assert len(stamps) == 192
    assert stamps == sorted(stamps)
