"""The pipeline's routing, with a fake sink that records what would go to Kafka."""

from __future__ import annotations

import json
from typing import Any

import orjson

from bridge.app import Pipeline, accepts_for, subscription_specs
from bridge.mlink.catalog import default_catalog
from bridge.mlink.session import MLinkSession, Subscription
from bridge.settings import load_settings
from bridge.sink.kafka import OutRecord
from bridge.sink.serialization import SchemaLookup, SingleObjectSerializer, decode_value


class FakeSink:
    """Stands in for KafkaSink: keeps the records in order."""

    def __init__(self) -> None:
        self.records: list[OutRecord] = []

    def send(self, record: OutRecord) -> None:
        self.records.append(record)


def msg(mtyp: str, message: dict[str, Any], **header: Any) -> bytes:
    return orjson.dumps({"header": {"mTyp": mtyp, **header}, "message": message})


def book(tk: str, bid: float) -> bytes:
    pkey = {"ticker": {"at": "EQT", "ts": "NMS", "tk": tk}}
    return msg(
        "StockBookQuote", {"pkey": pkey, "bidPrice1": bid}, sTim="2024-01-02 15:00:00.000001"
    )


def test_same_type_subscriptions_land_in_their_own_topics() -> None:
    subs = [
        {"msgName": "StockBookQuote", "where": "ticker.tk:eq:AAPL", "topic": "apple", "label": "a"},
        {"msgName": "StockBookQuote", "where": "ticker.tk:eq:MSFT", "topic": "msft", "label": "m"},
    ]
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": json.dumps(subs)})
    catalog = default_catalog()
    configs = settings.subscriptions()
    specs = subscription_specs(settings, configs, catalog)
    session = MLinkSession([Subscription(s.label, s.request(None), s.accepts) for s in specs])
    schemas: dict[str, bytes] = {}
    sink = FakeSink()
    pipeline = Pipeline(
        settings=settings,
        subscriptions=configs,
        serializer=SingleObjectSerializer(schemas.__setitem__),
        sink=sink,  # type: ignore[arg-type]
    )
    session.connected()
    admin = msg("MLinkAdmin", {"state": "LoggedOn"})
    ack = msg("MLinkStreamAck", {"msgName": "StockBookQuote", "result": "OK"})
    begin = msg("MLinkStreamCheckPt", {"state": "Begin"})
    complete = msg("MLinkStreamCheckPt", {"state": "Complete"})
    payloads = [
        admin,
        ack,
        begin,
        book("AAPL", 1.0),
        complete,
        book("AAPL", 1.5),
        ack,
        begin,
        book("AAPL", 2.0),
        book("MSFT", 3.0),
        complete,
        book("MSFT", 3.5),
    ]
    for payload in payloads:
        for event in session.receive(payload):
            pipeline.handle(event)
    data = [r for r in sink.records if r.topic in ("apple", "msft")]
    lookup = SchemaLookup(schemas=schemas)
    routed = [(r.topic, r.key, decode_value(r.value or b"", lookup)["bidPrice1"]) for r in data]
    assert routed == [
        ("apple", b"AAPL-NMS-EQT", 1.0),
        ("apple", b"AAPL-NMS-EQT", 1.5),
        ("apple", b"AAPL-NMS-EQT", 2.0),  # live AAPL during MSFT's snapshot stays AAPL's
        ("msft", b"MSFT-NMS-EQT", 3.0),
        ("msft", b"MSFT-NMS-EQT", 3.5),
    ]
    status = [json.loads(r.value or b"") for r in sink.records if r.topic == "mlink._status"]
    assert [(s["subscription"], s["state"]) for s in status] == [
        ("a", "snapshot"),
        ("a", "live"),
        ("m", "snapshot"),
        ("m", "live"),
    ]
    assert accepts_for(configs[0], catalog.get("StockBookQuote"), catalog) is not None  # type: ignore[arg-type]
