"""The simulator's REST metadata (getmsgtypes, getschema) over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from bridge.mlink.catalog import default_catalog
from bridge.mlink.framing import split_messages
from bridge.simulator.server import Simulator, SimulatorConfig

pytestmark = pytest.mark.integration
CATALOG = default_catalog()


async def get(sim: Simulator, path: str, query: str) -> tuple[int, str, bytes]:
    def call() -> tuple[int, str, bytes]:
        url = f"http://127.0.0.1:{sim.port}{path}?{query}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.headers["Content-Type"], response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers["Content-Type"], error.read()

    return await asyncio.to_thread(call)


def messages(body: bytes) -> list[tuple[str, dict[str, Any]]]:
    return [(m["header"]["mTyp"], m["message"]) for m in json.loads(body)]


async def test_getmsgtypes_lists_every_message_type_then_a_query_result() -> None:
    async with Simulator(SimulatorConfig(rate=0)) as sim:
        status, content_type, body = await get(sim, "/rest/json", "apikey=demo-key&cmd=getmsgtypes")
    assert (status, content_type) == (200, "application/json")
    *types, (last, result) = messages(body)
    assert {m["name"]: m["mNum"] for _, m in types} == {
        name: CATALOG.get(name).number  # type: ignore[union-attr]
        for name in CATALOG.names()
    }
    quote = next(m for _, m in types if m["name"] == "OptionNbboQuote")
    assert (quote["hasOKey"], quote["hasTKey"]) == ("Yes", "No")
    assert last == "QueryResult"
    assert result["result"] == "Ok"
    assert result["numMessagesSent"] == len(types)


async def test_getschema_describes_each_field_in_number_order() -> None:
    spec = CATALOG.get("OptionNbboQuote")
    assert spec is not None
    async with Simulator(SimulatorConfig(rate=0)) as sim:
        # Parameter names are not case-sensitive and have short forms; the key may be quoted.
        status, _, body = await get(
            sim, "/rest/json", 'APIKEY="demo-key"&c=getschema&mt=optionnbboquote'
        )
    assert status == 200
    *fields, (last, _) = messages(body)
    assert [(m["name"], m["fNum"]) for _, m in fields] == [(f.name, f.number) for f in spec.fields]
    okey, update_type = fields[0][1], fields[1][1]
    assert (okey["isPkey"], okey["fType"]) == ("Yes", "OptionKey")
    assert update_type["fType"] == "Enum"
    assert update_type["tName"] == "UpdateType"
    assert "PrcChange" in update_type["eSet"].split(",")
    assert last == "QueryResult"


async def test_the_framed_form_is_what_the_bridges_splitter_reads() -> None:
    async with Simulator(SimulatorConfig(rate=0)) as sim:
        status, _, body = await get(sim, "/rest/jsonf", "apikey=demo-key&cmd=getmsgtypes")
    frames, error = split_messages(body, framed=True)
    assert status == 200
    assert error is None
    assert frames[0].number == 3330  # MsgDesc
    assert frames[-1].number == 3320  # QueryResult
    assert len(frames) == len(CATALOG.names()) + 1


@pytest.mark.parametrize(
    ("query", "status", "result"),
    [
        ("apikey=nope&cmd=getmsgtypes", 401, "AuthError"),
        ("cmd=getmsgtypes", 401, "AuthError"),
        ("apikey=demo-key&cmd=getschema&msgtype=Nope", 400, "Error"),
        ("apikey=demo-key&cmd=getmsgs&msgtype=StockPrint", 400, "Error"),
    ],
)
async def test_a_bad_request_gets_a_query_result_that_says_why(
    query: str, status: int, result: str
) -> None:
    async with Simulator(SimulatorConfig(rate=0)) as sim:
        got, _, body = await get(sim, "/rest/json", query)
    assert got == status
    ((mtyp, message),) = messages(body)
    assert (mtyp, message["result"]) == ("QueryResult", result)
    assert message["detail"]
