"""The simulator answers clients written the way the seed documents' samples are, exactly.

Each client below keeps the sample's own send and parse code (sTim/encT stamping, `json.dumps`,
the `"\\r\\nJ" + "%011d"` framing, `buffer.split(b"\\r\\n")`, `msg[12:]`, "until state ==
Complete"); only the URL and the websockets keyword for headers (`additional_headers`, the name
in websockets >= 14) differ. Every loop is bounded.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import websockets

from bridge.simulator.market import DEFAULT_TYPES
from bridge.simulator.server import Simulator, SimulatorConfig

pytestmark = pytest.mark.integration

KEY = "1234-5678-9012-3141"
PASSWORD = "secret"
TOKEN = f"{KEY}.{PASSWORD}"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    config = SimulatorConfig(
        api_keys=(TOKEN,),
        rate=200,
        msg_names=(*DEFAULT_TYPES, "LiveSurfaceCurve"),
        admin_grace=0.5,
    )
    async with Simulator(config) as simulator:
        yield simulator


def stamp(msg: dict[str, Any]) -> None:
    """The samples' own header stamping."""
    t = time.time_ns()
    tstr = ".".join(
        [
            time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t / 1000000000)),
            "%06d" % ((t / 1000) % 1000000),  # noqa: UP031 (the sample's own code)
        ]
    )
    msg["header"]["sTim"] = tstr
    msg["header"]["encT"] = tstr


def framed(smsg: str) -> str:
    return "".join(["\r\nJ", "%011d" % len(smsg), smsg])  # noqa: UP031 (the sample's header)


async def recv_plain(ws: Any) -> list[dict[str, Any]]:
    """The JSON sample's parser: split the buffer on \\r\\n, json.loads each part."""
    buffer = await asyncio.wait_for(ws.recv(), 5)
    parts = list(filter(None, buffer.split(b"\r\n")))
    return [json.loads(msg) for msg in parts]


async def recv_framed(ws: Any) -> list[dict[str, Any]]:
    """The framed sample's parser: split on \\r\\n, drop the 12-character header."""
    buffer = await asyncio.wait_for(ws.recv(), 5)
    parts = list(filter(None, buffer.split(b"\r\n")))
    return [json.loads(msg[12:]) for msg in parts]


def kinds(messages: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in messages:
        mtyp = m["header"]["mTyp"]
        state = m["message"].get("state")
        out.append(f"{mtyp}:{state}" if state else mtyp)
    return out


async def test_stream_sample_exact_sequence(sim: Simulator) -> None:
    """mlink-websocket-api: MLinkStream AMZN, header auth, plain JSON, documented order."""
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        msg = {
            "header": {"mTyp": "MLinkStream"},
            "message": {
                "queryLabel": "ExampleStockBookQuote",
                "activeLatency": 1,
                "msgName": "stockbookquote",
                "where": "ticker.tk:eq:AMZN",
            },
        }
        stamp(msg)
        await websocket.send(json.dumps(msg))
        got: list[dict[str, Any]] = []
        for _ in range(200):
            got.extend(await recv_plain(websocket))
            if kinds(got).count("StockBookQuote") >= 3:
                break
    assert kinds(got)[:6] == [
        "MLinkAdmin:LoggedOn",
        "MLinkStreamAck",
        "MLinkStreamCheckPt:Begin",
        "StockBookQuote",
        "MLinkStreamCheckPt:Active",
        "MLinkStreamCheckPt:Complete",
    ]
    assert set(kinds(got)[6:]) == {"StockBookQuote"}
    ack, begin, record, active, complete = got[1:6]
    assert ack["message"] == {"msgName": "stockbookquote", "result": "OK"}
    assert set(begin["message"]) == {"state", "timestamp"}
    assert active["message"]["numMessagesSent"] == 1
    assert "timestamp" in complete["message"]
    assert record["message"]["pkey"] == {"ticker": {"at": "EQT", "ts": "NMS", "tk": "AMZN"}}
    header = record["header"]
    for name in ("sEnv0", "sRlm0", "sID", "seqN", "appN", "mn", "sTim", "encT", "git"):
        assert name in header
    assert isinstance(record["message"]["srcTimestamp"], int)
    for live in got[6:]:
        assert live["message"]["pkey"]["ticker"]["tk"] == "AMZN"


async def test_framed_stream_sample_same_url(sim: Simulator) -> None:
    """The framed sample sends to the same /mlink/json URL and parses msg[12:]."""
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        msg = {
            "header": {"mTyp": "MLinkStream"},
            "message": {
                "queryLabel": "ExampleStockNbbo",
                "activeLatency": 1,
                "msgName": "StockBookQuote",
                "where": "ticker.tk:eq:AAPL & ticker.at:eq:EQT & ticker.ts:eq:NMS",
            },
        }
        stamp(msg)
        await websocket.send(framed(json.dumps(msg)))
        got: list[dict[str, Any]] = []
        for _ in range(200):
            got.extend(await recv_framed(websocket))
            if "MLinkStreamCheckPt:Complete" in kinds(got):
                break
    assert kinds(got) == [
        "MLinkAdmin:LoggedOn",
        "MLinkStreamAck",
        "MLinkStreamCheckPt:Begin",
        "StockBookQuote",
        "MLinkStreamCheckPt:Active",
        "MLinkStreamCheckPt:Complete",
    ]


async def test_multiple_requests_sample(sim: Simulator) -> None:
    """ClientMultipleRequests: three MLinkStream sent without delay, json.loads(buffer)."""
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        requests = [
            ("ExampleConcurrent1", "stockprint", "ticker:eq:AMZN-NMS-EQT"),
            ("ExampleConcurrent2", "stockbookquote", "ticker:eq:AAPL-NMS-EQT"),
            ("ExampleConcurrent3", "LiveSurfaceCurve", "ticker:eq:SPY-NMS-EQT"),
        ]
        for label, name, where in requests:
            msg = {
                "header": {"mTyp": "MLinkStream"},
                "message": {
                    "queryLabel": label,
                    "activeLatency": 1,
                    "msgName": name,
                    "where": where,
                },
            }
            stamp(msg)
            await websocket.send(json.dumps(msg))
        got: list[dict[str, Any]] = []
        for _ in range(500):
            buffer = await asyncio.wait_for(websocket.recv(), 5)
            got.append(json.loads(buffer))
            if kinds(got).count("MLinkStreamCheckPt:Complete") == 3:
                break
    control = [k for k in kinds(got) if k.startswith("MLink")]
    per_request = [
        "MLinkStreamAck",
        "MLinkStreamCheckPt:Begin",
        "MLinkStreamCheckPt:Active",
        "MLinkStreamCheckPt:Complete",
    ]
    assert control == ["MLinkAdmin:LoggedOn", *per_request * 3]
    acks = [m["message"]["msgName"] for m in got if m["header"]["mTyp"] == "MLinkStreamAck"]
    assert acks == ["stockprint", "stockbookquote", "LiveSurfaceCurve"]
    # Each snapshot lies between its own Begin and Active, and matches its where clause.
    snapshot_types: list[list[str]] = []
    for m in got:
        state = m["message"].get("state")
        if state == "Begin":
            snapshot_types.append([])
        elif not m["header"]["mTyp"].startswith("MLink") and state is None and snapshot_types:
            snapshot_types[-1].append(m["header"]["mTyp"])
    assert "StockPrint" in snapshot_types[0]
    assert "StockBookQuote" in snapshot_types[1]
    assert "LiveSurfaceCurve" in snapshot_types[2]
    surface = [m for m in got if m["header"]["mTyp"] == "LiveSurfaceCurve"]
    assert surface
    assert all(m["message"]["ticker"]["tk"] == "SPY" for m in surface)


@pytest.mark.parametrize("form", ["plain", "framed"])
async def test_query_sample_until_complete(sim: Simulator, form: str) -> None:
    """mlink-api-readme: MLinkQuery FullQuery AAPL, read until state == Complete."""
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        msg = {
            "header": {"mTyp": "MLinkQuery"},
            "message": {
                "queryLabel": "ExampleStockNbbo",
                "queryType": "FullQuery",
                "MsgTypes": [{"msgType": 3000}, {"msgName": "StockBookQuote"}],
                "TKeyFilters": [{"tickerKey": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}}],
            },
        }
        stamp(msg)
        smsg = json.dumps(msg)
        await websocket.send(smsg if form == "plain" else framed(smsg))
        got: list[dict[str, Any]] = []
        not_done = True
        for _ in range(100):
            if not not_done:
                break
            parts = await (recv_plain(websocket) if form == "plain" else recv_framed(websocket))
            for result in parts:
                got.append(result)
                message = result["message"]
                not_done = message.get("state", None) != "Complete"
        assert not not_done
        # A FullQuery sends nothing more after Complete: nothing is left subscribed.
        assert sim.live_subscriptions() == []
    assert kinds(got) == [
        "MLinkAdmin:LoggedOn",
        "MLinkResponse:Begin",
        "StockBookQuote",
        "MLinkResponse:Complete",
    ]
    assert got[2]["message"]["pkey"]["ticker"]["tk"] == "AAPL"
    complete = got[3]["message"]
    assert complete["queryLabel"] == "ExampleStockNbbo"
    assert complete["numMessagesSent"] == 1
    assert complete["highwaterTs"] > 0


async def test_samples_jsonf_endpoint_query(sim: Simulator) -> None:
    """MLink-Samples' framed client on /mlink/jsonf: MsgTypes by name, TKeyFilters, no type."""
    async with websockets.connect(
        sim.url("/mlink/jsonf"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        msg = {
            "header": {"mTyp": "MLinkQuery"},
            "message": {
                "queryLabel": "Example1",
                "activeLatency": 1,
                "MsgTypes": [{"msgName": "StockBookQuote"}],
                "TKeyFilters": [{"tickerKey": {"at": "EQT", "ts": "NMS", "tk": "AAPL"}}],
            },
        }
        stamp(msg)
        await websocket.send(framed(json.dumps(msg)))
        got: list[dict[str, Any]] = []
        for _ in range(200):
            got.extend(await recv_framed(websocket))
            if kinds(got).count("StockBookQuote") >= 3:
                break
    # No queryType: a subscription, so live AAPL quotes follow the Complete.
    assert kinds(got)[:4] == [
        "MLinkAdmin:LoggedOn",
        "MLinkResponse:Begin",
        "StockBookQuote",
        "MLinkResponse:Complete",
    ]
    assert kinds(got)[4:]
    assert set(kinds(got)[4:]) == {"StockBookQuote"}


async def test_subscribe_sample(sim: Simulator) -> None:
    """MLink-Samples clientSubscribe: MLinkSubscribe with View and Subscribe lists."""
    okey = sim.market.objects("OptionNbboQuote")[0].key
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        msg = {
            "header": {"mTyp": "MLinkSubscribe"},
            "message": {
                "activeLatency": 1,
                "doReset": "No",
                "View": [
                    {"msgName": "StockBookQuote", "view": "askPrice1|bidPrice1"},
                    {"msgName": "OptionNbboQuote", "view": "askPrice|bidPrice|bidSize|askSize"},
                ],
                "Subscribe": [
                    {"msgName": "StockBookQuote", "msgPKey": "AAPL-NMS-EQT"},
                    {"msgName": "OptionNbboQuote", "msgPKey": okey},
                ],
            },
        }
        stamp(msg)
        await websocket.send(json.dumps(msg))
        got: list[dict[str, Any]] = []
        not_done = True
        for _ in range(100):
            if not not_done:
                break
            result = json.loads(await asyncio.wait_for(websocket.recv(), 5))
            got.append(result)
            not_done = result["message"].get("state", None) != "Complete"
    assert kinds(got)[:3] == [
        "MLinkAdmin:LoggedOn",
        "MLinkSubscribeAck",
        "MLinkStreamCheckPt:Begin",
    ]
    assert kinds(got)[-2:] == ["MLinkStreamCheckPt:Active", "MLinkStreamCheckPt:Complete"]
    records = got[3:-2]
    assert sorted(r["header"]["mTyp"] for r in records) == ["OptionNbboQuote", "StockBookQuote"]
    for r in records:
        assert set(r["message"]) <= {
            "pkey",
            "askPrice1",
            "bidPrice1",
            "askPrice",
            "bidPrice",
            "bidSize",
            "askSize",
        }


async def test_logon_message_auth(sim: Simulator) -> None:
    """No header: the first message is MLinkLogon; MLinkAdmin LoggedOn answers it."""
    async with websockets.connect(sim.url("/mlink/json")) as websocket:
        logon = {
            "header": {"mTyp": "MLinkLogon"},
            "message": {"apiKey": KEY, "apiPassword": PASSWORD},
        }
        await websocket.send(json.dumps(logon))
        (admin,) = await recv_plain(websocket)
    assert admin["message"] == {"state": "LoggedOn"}


@pytest.mark.parametrize("how", ["header", "logon"])
async def test_wrong_key_gets_auth_error_then_close(sim: Simulator, how: str) -> None:
    headers = {"Authorization": "Bearer wrong-key"} if how == "header" else None
    async with websockets.connect(sim.url("/mlink/json"), additional_headers=headers) as ws:
        if how == "logon":
            await ws.send(
                json.dumps({"header": {"mTyp": "MLinkLogon"}, "message": {"apiKey": "x"}})
            )
        (admin,) = await recv_plain(ws)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert admin["message"]["state"] == "AuthError"
    assert ws.close_code == 1008
    assert "wrong-key" not in json.dumps(admin)


async def test_admin_is_sent_after_grace_when_client_is_silent(sim: Simulator) -> None:
    async with websockets.connect(
        sim.url("/mlink/json"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as websocket:
        (admin,) = await recv_plain(websocket)
    assert admin["message"]["state"] == "LoggedOn"


async def test_requests_before_logon_get_waiting_logon(sim: Simulator) -> None:
    async with websockets.connect(sim.url("/mlink/json")) as websocket:
        msg = {"header": {"mTyp": "MLinkStream"}, "message": {"msgName": "StockPrint"}}
        await websocket.send(json.dumps(msg))
        (admin,) = await recv_plain(websocket)
        await websocket.send(json.dumps(msg))  # still not logged on: dropped, not answered again
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(websocket.recv(), 0.5)
    assert admin["message"]["state"] == "WaitingForLogon"  # the seeds' spelling


async def test_unknown_path_is_refused(sim: Simulator) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(sim.url("/mlink/nope")):
            pass
    assert info.value.response.status_code == 404
