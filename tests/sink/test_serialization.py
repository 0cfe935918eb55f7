from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    ServerConfig,
)

# What SchemaRegistryClient.new_client({"url": "mock://..."}) returns; subclassed below.
from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
    MockSchemaRegistryClient,
)

from bridge.errors import BridgeError
from bridge.mlink.catalog import default_catalog
from bridge.sink.avro import SchemaHistory, SchemaMismatch, WriterSchema
from bridge.sink.serialization import (
    ConfluentSerializer,
    DecodeError,
    RegistryError,
    RegistryUnavailable,
    SchemaLookup,
    SchemaRejected,
    SerializationContext,
    SingleObjectSerializer,
    decode_value,
    subject_for,
)
from transforms import RecordPlan, TransformOptions, compile_plan

CAT = default_catalog()
AAPL = {"at": "EQT", "ts": "NMS", "tk": "AAPL"}
Messages = list[tuple[str, dict[str, Any]]]
TINY_BODY = bytes.fromhex("06455154064e4d53084141504c0000000000906c40d0d5b097bdf6fdf32f")
TINY_FINGERPRINT = "ea14db045c70fc11"


def plan(name: str, **options: Any) -> RecordPlan:
    spec = CAT.get(name)
    assert spec is not None
    return compile_plan(spec, TransformOptions(**options), CAT)


def _can_read(reader: dict[str, Any], writer: dict[str, Any]) -> bool:
    """Enough of Avro's resolution rules for these tests: every reader field the writer lacks
    has a default, and shared fields keep their type."""
    written = {f["name"]: f["type"] for f in writer["fields"]}
    for field in reader["fields"]:
        if field["name"] not in written:
            if "default" not in field:
                return False
        elif field["type"] != written[field["name"]]:
            return False
    return True


class FakeRegistry(MockSchemaRegistryClient):
    """confluent-kafka's mock registry plus what it lacks: per-subject compatibility, refusing
    incompatible schemas as a real registry does (HTTP 409), and a log of the calls made."""

    def __init__(self) -> None:
        super().__init__({"url": "mock://test"})
        self.compatibility: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []

    def set_config(
        self, subject_name: str | None = None, config: ServerConfig | None = None
    ) -> ServerConfig:
        assert subject_name is not None
        assert config is not None
        assert config.compatibility is not None
        self.calls.append(("set_config", subject_name))
        self.compatibility[subject_name] = config.compatibility.value
        return config

    def get_versions(self, subject_name: str, *args: Any, **kwargs: Any) -> list[int]:
        self.calls.append(("get_versions", subject_name))
        return super().get_versions(subject_name, *args, **kwargs)

    def register_schema(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> int:
        self.calls.append(("register_schema", subject_name))
        level = self.compatibility.get(subject_name, "NONE")
        versions = sorted(super().get_versions(subject_name))
        if level == "BACKWARD":
            versions = versions[-1:]
        elif level != "BACKWARD_TRANSITIVE":
            versions = []
        new = json.loads(schema.schema_str or "{}")
        for version in versions:
            old = self.get_version(subject_name, version).schema
            assert old is not None
            if not _can_read(new, json.loads(old.schema_str or "{}")):
                raise SchemaRegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema "
                    f'for subject "{subject_name}"',
                )
        return super().register_schema(subject_name, schema, normalize_schemas)


class Contexts:
    """One SchemaHistory and one SerializationContext per type and version, as a sink keeps."""

    def __init__(self) -> None:
        self.histories: dict[str, SchemaHistory] = {}
        self._contexts: dict[WriterSchema, SerializationContext] = {}

    def history(self, name: str) -> SchemaHistory:
        if name not in self.histories:
            self.histories[name] = SchemaHistory(plan(name))
        return self.histories[name]

    def context(self, name: str) -> SerializationContext:
        writer = self.history(name).current
        if writer not in self._contexts:
            self._contexts[writer] = SerializationContext(f"mlink.{name}", writer)
        return self._contexts[writer]


def expected_decoding(history: SchemaHistory, value: dict[str, Any]) -> dict[str, Any]:
    """What a reader gets back: every field, omitted ones at their defaults."""
    out = {"pkey": value["pkey"]}
    for field in history.plan.output_fields:
        got = value.get(field.name, field.default)
        if field.members:
            got = [{m.name: e.get(m.name, m.default) for m in field.members} for e in got]
        out[field.name] = got
    return out


def tiny() -> tuple[SchemaHistory, dict[str, Any]]:
    history = SchemaHistory(plan("StockOpenMark", view=("closePrc", "timestamp")))
    message = {
        "pkey": {"ticker": AAPL},
        "closePrc": 228.5,
        "timestamp": "2024-09-10 20:26:35.556337",
    }
    return history, history.plan.apply(message).value


# --- Confluent wire format


def test_confluent_round_trip_for_every_type(round_trip_messages: Messages) -> None:
    registry = FakeRegistry()
    serializer = ConfluentSerializer(registry)
    contexts = Contexts()
    lookup = SchemaLookup(registry=registry)
    ids = set()
    for name, message in round_trip_messages:
        history = contexts.history(name)
        value = history.plan.apply(message).value
        data = serializer(value, contexts.context(name))
        assert data[:1] == b"\x00"
        ids.add(int.from_bytes(data[1:5], "big"))
        assert decode_value(data, lookup) == expected_decoding(history, value), name
    assert len(ids) == len(contexts.histories) == 9
    # One registration per schema, never per record; each new subject set up once.
    registrations = [c for c in registry.calls if c[0] == "register_schema"]
    assert len(registrations) == 9
    assert sorted(registry.compatibility.values()) == ["BACKWARD_TRANSITIVE"] * 9
    assert {c[1] for c in registry.calls} == {subject_for(f"mlink.{n}") for n in contexts.histories}


def test_golden_bytes_in_confluent_framing() -> None:
    registry = FakeRegistry()
    history, value = tiny()
    data = ConfluentSerializer(registry)(
        value, SerializationContext("mlink.StockOpenMark", history.current)
    )
    assert data == b"\x00" + (1).to_bytes(4, "big") + TINY_BODY
    registered = registry.get_schema(1)
    assert json.loads(registered.schema_str or "") == history.current.schema
    assert registered.schema_type == "AVRO"


def test_compatibility_is_set_only_on_subjects_the_bridge_creates() -> None:
    registry = FakeRegistry()
    history, value = tiny()
    existing = "mlink.Existing"
    registry.register_schema(subject_for(existing), Schema(history.current.json.decode(), "AVRO"))
    serializer = ConfluentSerializer(registry)
    serializer(value, SerializationContext(existing, history.current))
    serializer(value, SerializationContext("mlink.New", history.current))
    assert registry.compatibility == {"mlink.New-value": "BACKWARD_TRANSITIVE"}
    assert ("set_config", "mlink.Existing-value") not in registry.calls


def test_another_compatibility_level_can_be_asked_for() -> None:
    registry = FakeRegistry()
    history, value = tiny()
    serializer = ConfluentSerializer(
        registry, compatibility=ConfigCompatibilityLevel.FULL_TRANSITIVE
    )
    serializer(value, SerializationContext("mlink.T", history.current))
    assert registry.compatibility == {"mlink.T-value": "FULL_TRANSITIVE"}


def test_registry_is_called_only_when_a_new_version_appears() -> None:
    registry = FakeRegistry()
    serializer = ConfluentSerializer(registry)
    history = SchemaHistory(plan("StockBookQuote"))
    context = SerializationContext("mlink.StockBookQuote", history.current)
    for size in range(500):
        serializer(history.plan.apply({"pkey": {"ticker": AAPL}, "bidSize1": size}).value, context)
    assert len(registry.calls) == 3  # get_versions, set_config, register_schema
    # A second context for the same topic and schema (a restarted pipeline) reuses the id.
    serializer(
        {"pkey": {"ticker": AAPL}}, SerializationContext("mlink.StockBookQuote", history.current)
    )
    assert len(registry.calls) == 3
    evolved = history.evolve({"newField": 1})
    serializer({"pkey": {"ticker": AAPL}}, SerializationContext("mlink.StockBookQuote", evolved))
    assert registry.calls[3:] == [("register_schema", "mlink.StockBookQuote-value")]


def test_evolution_through_the_registry() -> None:
    registry = FakeRegistry()
    serializer = ConfluentSerializer(registry)
    history = SchemaHistory(plan("StockBookQuote"))
    v1 = history.current
    old_data = serializer(
        {"pkey": {"ticker": AAPL}, "bidPrice1": 1.5}, SerializationContext("t", v1)
    )
    message = {"pkey": {"ticker": AAPL}, "bidPrice1": 2.5, "auctionFlag": True}
    v2 = history.evolve(history.plan.apply(message).unknown)
    new_data = serializer(history.plan.apply(message).value, SerializationContext("t", v2))
    assert old_data[1:5] != new_data[1:5]
    lookup = SchemaLookup(registry=registry)
    assert decode_value(new_data, lookup)["auctionFlag"] is True
    assert "auctionFlag" not in decode_value(new_data, lookup, v1.parsed)  # an old reader
    assert decode_value(old_data, lookup, v2.parsed)["auctionFlag"] is None  # a new reader


def test_an_incompatible_schema_is_rejected_clearly() -> None:
    registry = FakeRegistry()
    subject = subject_for("mlink.StockBookQuote")
    registry.set_config(
        subject, ServerConfig(compatibility=ConfigCompatibilityLevel.BACKWARD_TRANSITIVE)
    )
    history = SchemaHistory(plan("StockBookQuote"))
    # An earlier writer (another deployment) typed bidPrice1 as a string.
    earlier = json.loads(history.current.json)
    for field in earlier["fields"]:
        if field["name"] == "bidPrice1":
            field["type"], field["default"] = "string", ""
    registry.register_schema(subject, Schema(json.dumps(earlier), "AVRO"))
    serializer = ConfluentSerializer(registry)
    context = SerializationContext("mlink.StockBookQuote", history.current)
    for _ in range(2):  # refused every time: nothing is cached for a refused schema
        with pytest.raises(SchemaRejected) as raised:
            serializer({"pkey": {"ticker": AAPL}}, context)
        message = str(raised.value)
        assert "mlink.StockBookQuote v1" in message
        assert subject in message
        assert "incompatible" in message
        assert not raised.value.retryable
        assert isinstance(raised.value, BridgeError)


class FailingRegistry(FakeRegistry):
    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def register_schema(
        self, subject_name: str, schema: Schema, normalize_schemas: bool = False
    ) -> int:
        raise self.error


@pytest.mark.parametrize(
    ("error", "kind", "retryable"),
    [
        (SchemaRegistryError(503, 50301, "unavailable"), RegistryUnavailable, True),
        (SchemaRegistryError(500, 50001, "store error"), RegistryUnavailable, True),
        (SchemaRegistryError(408, -1, "timeout"), RegistryUnavailable, True),
        (SchemaRegistryError(401, 401, "Unauthorized"), RegistryError, False),
        (SchemaRegistryError(403, 40301, "forbidden"), RegistryError, False),
        (SchemaRegistryError(422, 42201, "Invalid schema"), SchemaRejected, False),
        (
            ConnectionError("connect to http://alice:s3cret-pw@registry:8081 failed"),
            RegistryUnavailable,
            True,
        ),
        (TimeoutError("http://alice:s3cret-pw@registry:8081 timed out"), RegistryUnavailable, True),
    ],
)
def test_registry_failures_say_whether_to_retry(
    error: Exception, kind: type[BridgeError], retryable: bool
) -> None:
    history, value = tiny()
    serializer = ConfluentSerializer(FailingRegistry(error))
    with pytest.raises(kind) as raised:
        serializer(value, SerializationContext("mlink.T", history.current))
    assert type(raised.value) is kind
    assert raised.value.retryable is retryable
    assert "s3cret" not in str(raised.value)
    assert raised.value.__cause__ is None
    assert raised.value.__suppress_context__


def test_a_bug_is_not_mistaken_for_an_outage() -> None:
    history, value = tiny()
    serializer = ConfluentSerializer(FailingRegistry(TypeError("wrong argument")))
    with pytest.raises(TypeError):
        serializer(value, SerializationContext("mlink.T", history.current))


def test_an_unreachable_registry_never_echoes_credentials() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    registry = SchemaRegistryClient(
        {
            "url": f"http://127.0.0.1:{port}",
            "basic.auth.user.info": "alice:s3cret-pw",
            "max.retries": 0,
        }
    )
    history, value = tiny()
    with pytest.raises(RegistryUnavailable) as raised:
        ConfluentSerializer(registry)(value, SerializationContext("mlink.T", history.current))
    assert raised.value.retryable
    assert "unreachable" in str(raised.value)
    assert "s3cret" not in str(raised.value)
    assert "alice" not in str(raised.value)
    registry.close()


def test_schema_mismatch_passes_through_the_serializer() -> None:
    history, _ = tiny()
    serializer = ConfluentSerializer(FakeRegistry())
    with pytest.raises(SchemaMismatch, match="closePrc"):
        serializer(
            {"pkey": {"ticker": AAPL}, "closePrc": float("nan")},
            SerializationContext("t", history.current),
        )


# --- single-object encoding


def test_single_object_round_trip_for_every_type(round_trip_messages: Messages) -> None:
    published: list[tuple[str, bytes]] = []
    serializer = SingleObjectSerializer(lambda fp, schema: published.append((fp, schema)))
    contexts = Contexts()
    lookup = SchemaLookup()
    for name, message in round_trip_messages:
        history = contexts.history(name)
        value = history.plan.apply(message).value
        count = len(published)
        data = serializer(value, contexts.context(name))
        for fingerprint_hex, schema_json in published[count:]:  # as a reader of _schemas does
            lookup.add(fingerprint_hex, schema_json)
        assert data[:2] == b"\xc3\x01"
        assert data[2:10] == history.current.fingerprint_bytes
        assert decode_value(data, lookup) == expected_decoding(history, value), name
    assert len(published) == len({fp for fp, _ in published}) == 9
    for fingerprint_hex, schema_json in published:
        writer = next(
            h.current
            for h in contexts.histories.values()
            if h.current.fingerprint == fingerprint_hex
        )
        assert json.loads(schema_json) == writer.schema
        assert len(fingerprint_hex) == 16
        assert fingerprint_hex == fingerprint_hex.lower()


def test_golden_bytes_in_single_object_framing() -> None:
    history, value = tiny()
    data = SingleObjectSerializer(lambda fp, schema: None)(
        value, SerializationContext("t", history.current)
    )
    assert data == b"\xc3\x01" + bytes.fromhex(TINY_FINGERPRINT) + TINY_BODY


def test_a_schema_is_published_once_and_before_its_first_record() -> None:
    events: list[str] = []
    serializer = SingleObjectSerializer(lambda fp, schema: events.append(f"publish {fp}"))
    history, value = tiny()
    writer = history.current
    for topic in ("mlink.A", "mlink.B"):  # the same schema on two topics
        for _ in range(3):
            serializer(value, SerializationContext(topic, writer))
            events.append("record")
    assert events == [f"publish {writer.fingerprint}"] + ["record"] * 6


def test_a_failed_publish_is_retried_with_the_next_record() -> None:
    attempts: list[str] = []

    def publish(fingerprint_hex: str, schema_json: bytes) -> None:
        attempts.append(fingerprint_hex)
        if len(attempts) == 1:
            raise RegistryUnavailable("schemas topic not writable yet")

    serializer = SingleObjectSerializer(publish)
    history, value = tiny()
    context = SerializationContext("t", history.current)
    with pytest.raises(RegistryUnavailable):
        serializer(value, context)
    assert serializer(value, context)[:2] == b"\xc3\x01"
    serializer(value, context)
    assert len(attempts) == 2


# --- reading


def test_decode_errors() -> None:
    history, value = tiny()
    single = SingleObjectSerializer(lambda fp, schema: None)(
        value, SerializationContext("t", history.current)
    )
    known = SchemaLookup(schemas={history.current.fingerprint: history.current.json})
    assert decode_value(single, known)["closePrc"] == 228.5
    with pytest.raises(DecodeError, match="not a Confluent or single-object"):
        decode_value(b'{"json": true}', known)
    with pytest.raises(DecodeError, match="not a Confluent or single-object"):
        decode_value(b"\xc3\x01\x00", known)  # too short for a fingerprint
    with pytest.raises(DecodeError, match=f"no schema known for fingerprint {TINY_FINGERPRINT}"):
        decode_value(single, SchemaLookup())
    with pytest.raises(DecodeError, match="bytes left after the Avro record"):
        decode_value(single + b"\x00", known)
    with pytest.raises(DecodeError, match="does not match its writer schema"):
        decode_value(single[:-3], known)
    with pytest.raises(DecodeError, match="no registry is set"):
        decode_value(b"\x00\x00\x00\x00\x07" + TINY_BODY, known)
    with pytest.raises(RegistryError):
        decode_value(b"\x00\x00\x00\x00\x07" + TINY_BODY, SchemaLookup(registry=FakeRegistry()))
