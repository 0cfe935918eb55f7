"""A client written like the seed's protobuf sample talks to the simulator's /mlink/proto.

The sample (mlink-api-readme "Protobuf", MLink-Samples client-python/PROTO) builds message classes
from the compiled SpiderRock .proto files through a descriptor pool and a message factory, maps
message numbers to classes (3315 MLinkResponse, 3000 StockBookQuote), sends an MLinkQuery as
`b"\\r\\nP03310" + b"%06d" % len(body) + body`, and reads until an MLinkResponse says Complete.
Two departures, both bugs of the sample: it splits payloads on \\r\\n (protobuf bodies are binary
and may hold those bytes) and reads the number from msg[2:6]; this client walks the frames by
their length and reads the five-digit number.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import websockets
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from bridge.simulator.server import Simulator, SimulatorConfig

pytestmark = pytest.mark.integration

TOKEN = "1234-5678-9012-3141.secret"
DESCRIPTORS = Path(__file__).resolve().parents[2] / "bridge" / "mlink" / "data" / "mlink.protoset"


def message_mappings() -> dict[int, tuple[str, Any]]:
    """The sample's getMessageMappings, from a compiled descriptor set."""
    pool = descriptor_pool.DescriptorPool()
    for proto in descriptor_pb2.FileDescriptorSet.FromString(DESCRIPTORS.read_bytes()).file:
        pool.Add(proto)

    def cls(name: str) -> Any:
        return message_factory.GetMessageClass(
            pool.FindMessageTypeByName(f"spiderrock.protobuf.{name}")
        )

    return {
        3315: ("MLinkResponse", cls("MLinkResponse")),
        3000: ("StockBookQuote", cls("StockBookQuote")),
        3310: ("MLinkQuery", cls("MLinkQuery")),
    }


def frames(buffer: bytes) -> list[tuple[int, bytes]]:
    out = []
    pos = 0
    while pos < len(buffer):
        assert buffer[pos : pos + 3] == b"\r\nP"
        number, length = int(buffer[pos + 3 : pos + 8]), int(buffer[pos + 8 : pos + 14])
        out.append((number, buffer[pos + 14 : pos + 14 + length]))
        pos += 14 + length
    return out


async def test_the_protobuf_sample_queries_aapl() -> None:
    msgs = message_mappings()
    config = SimulatorConfig(api_keys=(TOKEN,), rate=0, msg_names=("StockBookQuote",))
    async with Simulator(config) as sim:
        async with websockets.connect(
            sim.url("/mlink/proto"), additional_headers={"Authorization": f"Bearer {TOKEN}"}
        ) as websocket:
            mlink_query = msgs[3310][1]()
            mlink_query.query_label = "Example1"
            mlink_query.query_type = 1  # sr_common.MLINKQUERYTYPE_FULL_QUERY
            msg_types = mlink_query.msg_types.add()
            msg_types.msg_type = 3000
            tkey_filter = mlink_query.tkey_filters.add()
            tkey_filter.ticker_key.asset_type = 1  # sr_common.ASSETTYPE_EQT
            tkey_filter.ticker_key.ticker_src = 2  # sr_common.TICKERSRC_NMS
            tkey_filter.ticker_key.ticker = "AAPL"
            serialized_msg = mlink_query.SerializeToString()
            header = b"\r\nP03310" + b"%06d" % len(serialized_msg)
            await websocket.send(header + serialized_msg)

            received: list[tuple[str, Any]] = []
            not_done = True
            async with asyncio.timeout(10):
                while not_done:
                    buffer = await websocket.recv()
                    assert isinstance(buffer, bytes)
                    for number, body in frames(buffer):
                        if number not in msgs:
                            continue  # MLinkAdmin (no published number), as the sample skips
                        name, cls = msgs[number]
                        result = cls()
                        result.ParseFromString(body)
                        received.append((name, result))
                        not_done = name != "MLinkResponse" or result.state != 3  # COMPLETE

    names = [name for name, _ in received]
    assert names == ["MLinkResponse", "StockBookQuote", "MLinkResponse"]
    begin, quote, complete = (result for _, result in received)
    assert begin.state == 1  # MLINKSTATE_BEGIN
    assert begin.query_label == "Example1"
    assert quote.pkey.ticker.ticker == "AAPL"
    assert quote.pkey.ticker.asset_type == 1
    assert quote.bid_price1 > 0
    assert quote.ask_price1 >= quote.bid_price1
    assert quote._meta.message_type == "StockBookQuote"
    assert complete.num_messages_sent == 1
