"""Kafka value serializers for Avro records, and the matching reader.

Both serializers are small callables, `serializer(value, ctx) -> bytes`, where `ctx` is a
`SerializationContext` naming the topic and the writer schema (a `WriterSchema` version). Make
one context per (topic, schema version) and reuse it: the per-record path is then one dict
lookup for the framing prefix plus the compiled Avro encoder, and nothing else.

- `ConfluentSerializer(registry)`: Confluent wire format, magic byte 0 + 4-byte big-endian schema
  id + Avro body. Each writer schema is registered under the subject `<topic>-value` the first
  time it is used (a subject the bridge creates gets compatibility BACKWARD_TRANSITIVE); ids are
  cached, so the registry is called once per new schema version, never per record.
- `SingleObjectSerializer(publish)`: Avro single-object encoding, 0xC3 0x01 + the 8-byte
  CRC-64-AVRO fingerprint + Avro body, for running without a registry. Before the first record
  of a schema it calls `publish(fingerprint_hex, schema_json)` once; the sink writes that to the
  compacted `<prefix>_schemas` topic.

`decode_value(data, lookup)` reads either framing back (for tests and the `tail` command).

Registry failures become BridgeErrors that say whether retrying helps, and their messages never
include credentials: a refused (incompatible) schema is SchemaRejected (dead-letter the record),
an unreachable or failing registry is RegistryUnavailable (retryable), anything else the registry
refuses (credentials, permissions) is RegistryError.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import fastavro
from confluent_kafka.schema_registry import (
    ConfigCompatibilityLevel,
    Schema,
    SchemaRegistryClient,
    SchemaRegistryError,
    ServerConfig,
)
from confluent_kafka.schema_registry.error import OAuthTokenError

from bridge.errors import BridgeError
from bridge.sink.avro import WriterSchema

__all__ = [
    "CONFLUENT_MAGIC",
    "SINGLE_OBJECT_MAGIC",
    "ConfluentSerializer",
    "DecodeError",
    "RegistryError",
    "RegistryUnavailable",
    "SchemaLookup",
    "SchemaRejected",
    "SerializationContext",
    "SingleObjectSerializer",
    "ValueSerializer",
    "decode_value",
    "subject_for",
]

CONFLUENT_MAGIC = b"\x00"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
_MAX_CONTEXTS = 4096  # bounds the prefix caches even if a caller makes a context per record

T = TypeVar("T")


class RegistryError(BridgeError):
    """The schema registry refused a request for a reason retrying will not fix (credentials,
    permissions, a malformed request)."""


class SchemaRejected(RegistryError):
    """The registry refused a writer schema (incompatible with the subject's history, or
    invalid). The record that needed it goes to the dead-letter topic."""


class RegistryUnavailable(BridgeError):
    """The registry could not be reached or failed (timeout, 5xx); retrying later can help."""

    retryable = True


class DecodeError(BridgeError):
    """Bytes that are not a value this bridge writes, or whose schema cannot be found."""


@dataclass(frozen=True, slots=True, eq=False)
class SerializationContext:
    """Where a value goes and which schema version writes it. Compared by identity, so make one
    per (topic, schema version) and reuse it."""

    topic: str
    schema: WriterSchema


class ValueSerializer(Protocol):
    """Frames Avro values for one way of publishing schemas.

    `cached_prefix(ctx)` never blocks: the framing prefix if the schema is already registered
    (or published), else None. `register(ctx)` may block on the network (run it off the event
    loop); it returns the prefix and caches it, or raises. Calling the serializer does both."""

    def __call__(self, value: Mapping[str, Any], ctx: SerializationContext) -> bytes: ...

    def cached_prefix(self, ctx: SerializationContext) -> bytes | None: ...

    def register(self, ctx: SerializationContext) -> bytes: ...


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


def registry_call(action: str, call: Callable[[], T]) -> T:
    """Run one registry request; turn its failures into BridgeErrors without credentials."""
    try:
        return call()
    except SchemaRegistryError as exc:
        status = exc.http_status_code
        where = f"schema registry {action}"
        if status == 409:
            raise SchemaRejected(
                f"{where}: refused as incompatible with an earlier version "
                f"(SR code {exc.error_code}): {exc.error_message}"
            ) from None
        if status == 422:
            raise SchemaRejected(
                f"{where}: refused as invalid (SR code {exc.error_code}): {exc.error_message}"
            ) from None
        if status in (401, 403):
            raise RegistryError(
                f"{where}: HTTP {status}, check SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO and the "
                "principal's permissions"
            ) from None
        if status in (408, 429) or status >= 500 or status < 0:
            raise RegistryUnavailable(
                f"{where}: HTTP {status} (SR code {exc.error_code})"
            ) from None
        raise RegistryError(f"{where}: HTTP {status} (SR code {exc.error_code})") from None
    except OAuthTokenError as exc:
        token_status = exc.status_code
        if token_status is not None and 400 <= token_status < 500:
            raise RegistryError(f"schema registry {action}: OAuth token refused") from None
        raise RegistryUnavailable(f"schema registry {action}: no OAuth token") from None
    except (TypeError, AttributeError, KeyError, NameError, AssertionError):
        raise  # a bug here, not an outage: retrying would loop forever
    except Exception as exc:
        # Transport errors may quote the URL, which may hold user:password: name the kind only.
        raise RegistryUnavailable(
            f"schema registry {action}: unreachable ({type(exc).__name__})"
        ) from None


class ConfluentSerializer:
    """Confluent wire format: 0x00, schema id (4 bytes, big-endian), Avro body."""

    def __init__(
        self,
        registry: SchemaRegistryClient,
        *,
        compatibility: ConfigCompatibilityLevel = ConfigCompatibilityLevel.BACKWARD_TRANSITIVE,
    ) -> None:
        self._registry = registry
        self._compatibility = compatibility
        self._prefixes: dict[SerializationContext, bytes] = {}
        self._ids: dict[tuple[str, str], int] = {}  # (subject, fingerprint) -> schema id
        self._ready: set[str] = set()  # subjects checked (and created) in this process

    def __call__(self, value: Mapping[str, Any], ctx: SerializationContext) -> bytes:
        prefix = self._prefixes.get(ctx)
        if prefix is None:
            prefix = self.register(ctx)
        return ctx.schema.encode(value, prefix)

    def cached_prefix(self, ctx: SerializationContext) -> bytes | None:
        return self._prefixes.get(ctx)

    def register(self, ctx: SerializationContext) -> bytes:
        prefix = CONFLUENT_MAGIC + self.schema_id(ctx.topic, ctx.schema).to_bytes(4, "big")
        if len(self._prefixes) >= _MAX_CONTEXTS:
            self._prefixes.clear()
        self._prefixes[ctx] = prefix
        return prefix

    def schema_id(self, topic: str, schema: WriterSchema) -> int:
        """The registry id of `schema` under the topic's subject, registering it if needed."""
        subject = subject_for(topic)
        key = (subject, schema.fingerprint)
        schema_id = self._ids.get(key)
        if schema_id is not None:
            return schema_id
        if subject not in self._ready:
            self._prepare(subject)
        text = schema.json.decode()
        action = f"registering {schema.name} v{schema.version} under {subject}"
        schema_id = registry_call(
            action, lambda: self._registry.register_schema(subject, Schema(text, "AVRO"))
        )
        self._ids[key] = schema_id
        return schema_id

    def _prepare(self, subject: str) -> None:
        """A subject this bridge is about to create gets the configured compatibility level;
        an existing one keeps what its owners chose."""

        def versions() -> list[int]:
            try:
                return list(self._registry.get_versions(subject))
            except SchemaRegistryError as exc:
                if exc.http_status_code == 404:
                    return []  # no such subject yet
                raise

        if not registry_call(f"listing versions of {subject}", versions):
            config = ServerConfig(compatibility=self._compatibility)
            registry_call(
                f"setting compatibility of {subject}",
                lambda: self._registry.set_config(subject, config),
            )
        self._ready.add(subject)


class SingleObjectSerializer:
    """Avro single-object encoding: 0xC3 0x01, CRC-64-AVRO fingerprint (8 bytes), Avro body.

    `publish(fingerprint_hex, schema_json)` is called once per schema, before the first value
    that uses it; if it raises, nothing is cached and the next value tries again."""

    def __init__(self, publish: Callable[[str, bytes], None]) -> None:
        self._publish = publish
        self._prefixes: dict[WriterSchema, bytes] = {}
        self._published: set[str] = set()

    def __call__(self, value: Mapping[str, Any], ctx: SerializationContext) -> bytes:
        prefix = self._prefixes.get(ctx.schema)
        if prefix is None:
            prefix = self.register(ctx)
        return ctx.schema.encode(value, prefix)

    def cached_prefix(self, ctx: SerializationContext) -> bytes | None:
        return self._prefixes.get(ctx.schema)

    def register(self, ctx: SerializationContext) -> bytes:
        schema = ctx.schema
        if schema.fingerprint not in self._published:
            self._publish(schema.fingerprint, schema.json)
            self._published.add(schema.fingerprint)
        prefix = SINGLE_OBJECT_MAGIC + schema.fingerprint_bytes
        if len(self._prefixes) >= _MAX_CONTEXTS:
            self._prefixes.clear()
        self._prefixes[schema] = prefix
        return prefix


# ---------------------------------------------------------------------------------------------
# Reading

ParsedSchema = Any  # what fastavro.parse_schema returns


class SchemaLookup:
    """Where a reader finds writer schemas: a registry (Confluent framing, by id) and a map of
    fingerprint hex -> schema JSON (single-object framing, e.g. read from `<prefix>_schemas`).
    Parsed schemas are cached."""

    def __init__(
        self,
        registry: SchemaRegistryClient | None = None,
        schemas: Mapping[str, str | bytes | Mapping[str, Any]] | None = None,
    ) -> None:
        self._registry = registry
        self._by_fingerprint: dict[str, ParsedSchema] = {}
        self._by_id: dict[int, ParsedSchema] = {}
        for fingerprint_hex, schema in (schemas or {}).items():
            self.add(fingerprint_hex, schema)

    def add(self, fingerprint_hex: str, schema: str | bytes | Mapping[str, Any]) -> None:
        """Remember a schema published under `fingerprint_hex` (a `_schemas` record)."""
        doc = json.loads(schema) if isinstance(schema, str | bytes) else dict(schema)
        self._by_fingerprint[fingerprint_hex.lower()] = fastavro.parse_schema(doc)

    def by_fingerprint(self, fingerprint_hex: str) -> ParsedSchema:
        parsed = self._by_fingerprint.get(fingerprint_hex)
        if parsed is None:
            raise DecodeError(f"no schema known for fingerprint {fingerprint_hex}")
        return parsed

    def by_id(self, schema_id: int) -> ParsedSchema:
        parsed = self._by_id.get(schema_id)
        if parsed is not None:
            return parsed
        registry = self._registry
        if registry is None:
            raise DecodeError(f"value uses registry schema id {schema_id} but no registry is set")
        schema = registry_call(
            f"fetching schema id {schema_id}", lambda: registry.get_schema(schema_id)
        )
        if schema.schema_type not in (None, "AVRO") or schema.schema_str is None:
            raise DecodeError(f"registry schema id {schema_id} is not an Avro schema")
        parsed = fastavro.parse_schema(json.loads(schema.schema_str))
        self._by_id[schema_id] = parsed
        return parsed


def decode_value(
    data: bytes, lookup: SchemaLookup, reader_schema: ParsedSchema | None = None
) -> dict[str, Any]:
    """Decode a value in either framing. With `reader_schema` (parsed), Avro schema resolution
    turns the writer's version into the reader's (added fields take their defaults)."""
    if data[:2] == SINGLE_OBJECT_MAGIC and len(data) >= 10:
        writer = lookup.by_fingerprint(data[2:10].hex())
        body = data[10:]
    elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
        writer = lookup.by_id(int.from_bytes(data[1:5], "big"))
        body = data[5:]
    else:
        raise DecodeError(f"not a Confluent or single-object Avro value: starts {data[:10].hex()}")
    stream = io.BytesIO(body)
    try:
        record = fastavro.schemaless_reader(stream, writer, reader_schema)
    except (EOFError, ValueError, TypeError, IndexError, KeyError) as exc:
        raise DecodeError(f"Avro body does not match its writer schema: {exc}") from None
    if stream.tell() != len(body):
        raise DecodeError(f"{len(body) - stream.tell()} bytes left after the Avro record")
    if not isinstance(record, dict):
        raise DecodeError("value is not an Avro record")
    return record
