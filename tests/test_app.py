"""The pipeline's routing, with a fake sink that records what would go to Kafka."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import certifi
import orjson
import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.app import (
    Pipeline,
    _unless_stopped,
    accepts_for,
    registry_client,
    run_bridge,
    subscription_specs,
)
from bridge.embedded import free_port
from bridge.errors import ConfigError
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


async def test_unless_stopped_gives_the_result_the_error_or_gives_up_at_stop() -> None:
    stop = asyncio.Event()
    assert await _unless_stopped(lambda: 42, stop) == 42
    with pytest.raises(ValueError, match="no"):
        await _unless_stopped(lambda: int("no"), stop)
    release = threading.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    started = time.monotonic()
    assert await _unless_stopped(lambda: release.wait(10), stop) is None
    assert time.monotonic() - started < 2  # not the call's 10 s
    release.set()


async def test_a_stop_while_waiting_for_the_broker_at_start_ends_at_once() -> None:
    """No broker (nothing listens): the topic check would take its 15 s timeout; SIGTERM
    must not wait for it, or a pod's grace period runs out first."""
    settings = load_settings(
        {
            "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]',
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "MLINK_URL": f"ws://127.0.0.1:{free_port()}/mlink/json",
            "MLINK_API_KEY": "k",
            "BRIDGE_HTTP_PORT": "0",
            "BRIDGE_FLUSH_TIMEOUT": "2",
        }
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(1.0, stop.set)
    started = time.monotonic()
    assert await asyncio.wait_for(run_bridge(settings, stop=stop), 10) == 0
    assert time.monotonic() - started < 5


def test_the_registry_client_takes_a_private_ca_and_a_client_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = certifi.where()  # a real bundle: the client loads it
    env = {"SCHEMA_REGISTRY_URL": "https://sr.example:8081", "SCHEMA_REGISTRY_SSL_CA_LOCATION": ca}
    assert registry_client(load_settings(env)) is not None
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    cert.write_text("cert")
    key.write_text("key")
    seen: list[dict[str, Any]] = []
    monkeypatch.setattr(SchemaRegistryClient, "new_client", staticmethod(seen.append))
    mutual = {
        **env,
        "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(cert),
        "SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(key),
    }
    registry_client(load_settings(mutual))
    (conf,) = seen
    assert (conf["ssl.ca.location"], conf["ssl.certificate.location"]) == (ca, str(cert))
    assert conf["ssl.key.location"] == str(key)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SCHEMA_REGISTRY_SSL_CA_LOCATION": "/nonexistent/ca.pem"}, "does not exist"),
        ({"SCHEMA_REGISTRY_SSL_KEY_LOCATION": __file__}, "needs both the key and"),
    ],
)
def test_registry_tls_files_are_checked_at_start(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings({"SCHEMA_REGISTRY_URL": "https://sr.example:8081", **env})
