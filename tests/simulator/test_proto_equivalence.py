"""The same market records received as framed JSON and as protobuf give byte-identical Avro."""

from __future__ import annotations

import asyncio

import pytest
from websockets.asyncio.client import connect

from bridge.mlink.catalog import default_catalog
from bridge.mlink.framing import WireForm
from bridge.mlink.messages import DataRecord, MLinkQuery, MsgTypeFilter, QueryType
from bridge.mlink.session import MLinkSession, Record, SnapshotComplete, Subscription
from bridge.simulator.server import Simulator, SimulatorConfig
from bridge.sink.avro import SchemaHistory
from transforms import TransformOptions, compile_plan

pytestmark = pytest.mark.integration

CAT = default_catalog()
ALL_TYPES = tuple(spec.name for spec in CAT)


async def snapshot(sim: Simulator, path: str, form: WireForm) -> dict[tuple[str, str], DataRecord]:
    query = MLinkQuery(
        "everything", QueryType.FULL_QUERY, [MsgTypeFilter(name) for name in ALL_TYPES]
    )
    session = MLinkSession([Subscription("everything", query)], form=form)
    records: dict[tuple[str, str], DataRecord] = {}
    async with connect(
        sim.url(path), additional_headers={"Authorization": "Bearer demo-key"}, max_size=None
    ) as ws:
        session.connected()
        for out in session.data_to_send():
            await ws.send(out)
        async with asyncio.timeout(20):
            async for payload in ws:
                for event in session.receive(payload):
                    if isinstance(event, Record):
                        spec = CAT.get(event.record.mtyp)
                        assert spec is not None
                        plan = compile_plan(spec, TransformOptions(), CAT)
                        records[(spec.name, plan.key_of(event.record.message))] = event.record
                    elif isinstance(event, SnapshotComplete):
                        return records
                    else:
                        assert not isinstance(event, Exception)
                for out in session.data_to_send():
                    await ws.send(out)
    raise AssertionError("the snapshot never completed")


async def test_jsonf_and_proto_records_encode_to_the_same_avro() -> None:
    config = SimulatorConfig(rate=0, msg_names=ALL_TYPES, tickers=4, expiries=2, strikes=2)
    async with Simulator(config) as sim:
        framed = await snapshot(sim, "/mlink/jsonf", WireForm.FRAMED)
        proto = await snapshot(sim, "/mlink/proto", WireForm.PROTO)
    assert set(framed) == set(proto)
    assert {name for name, _ in framed} == set(ALL_TYPES)  # every catalog type took part
    histories = {}
    for name in ALL_TYPES:
        spec = CAT.get(name)
        assert spec is not None
        histories[name] = SchemaHistory(compile_plan(spec, TransformOptions(), CAT))
    for ident, json_record in framed.items():
        proto_record = proto[ident]
        assert proto_record.raw != json_record.raw  # really two wire forms
        assert proto_record.header["sTim"] == json_record.header["sTim"]
        assert proto_record.deleted == json_record.deleted
        history = histories[ident[0]]
        json_value = history.plan.apply(json_record.message)
        proto_value = history.plan.apply(proto_record.message)
        assert proto_value.key == json_value.key == ident[1]
        assert proto_value.src_ns == json_value.src_ns
        assert proto_value.unknown == json_value.unknown == {}
        writer = history.current
        assert writer.encode(dict(proto_value.value)) == writer.encode(dict(json_value.value)), (
            ident
        )
    assert len(framed) > 300
