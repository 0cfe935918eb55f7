"""`mlink-bridge check`: is this configuration one the bridge can run with? Read-only.

Checks, in order, each printed as one `ok` or `FAIL` line with the reason:
settings (every variable, the subscriptions and their where clauses), the producer
configuration, Kafka (reachable; the topics exist compacted, or will be created), the schema
registry (reachable, credentials accepted) if one is set, and MLink (connect, authenticate,
every subscription answered). Exit code 0 when all pass, 1 when one fails, 2 for settings.
Nothing is created or written anywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaException, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient

from bridge.app import connector_for, registry_client, subscription_specs, topic_specs
from bridge.errors import BridgeError, ConfigError
from bridge.mlink.catalog import default_catalog
from bridge.ops.logs import redactor
from bridge.settings import Settings, load_settings, unknown_variables
from bridge.sink.kafka import producer_config
from bridge.sink.serialization import registry_call
from bridge.sink.topics import TopicError, TopicSpec, admin_client, inspect_topics

__all__ = ["run_check"]

Say = Callable[[bool, str, str], None]


def _print(ok: bool, what: str, detail: str) -> None:
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {redactor().redact(detail)}", flush=True)


async def run_check(environ: dict[str, str] | None = None, say: Say = _print) -> int:
    try:
        settings = load_settings(environ)
        subs = settings.subscriptions()
        specs = subscription_specs(settings, subs, default_catalog())
        settings.require_credentials()
    except ConfigError as exc:
        for line in str(exc).splitlines():
            say(False, "settings", line)
        return 2
    say(True, "settings", f"{len(subs)} subscriptions: {', '.join(s.name for s in subs)}")
    unknown = unknown_variables()
    for name in unknown:
        say(False, "settings", f"{name} is not a variable the bridge reads (misspelt?)")
    results = [
        not unknown,
        _producer(settings, say),
        _kafka(settings, topic_specs(settings, subs, default_catalog()), say),
    ]
    registry = registry_client(settings)
    if registry is not None:
        results.append(_registry(registry, say))
    else:
        say(True, "schema registry", f"none; schemas go to {settings.schemas_topic}")
    problems = await connector_for(settings, specs).check()
    for problem in problems:
        say(False, "MLink", problem)
    if not problems:
        say(True, "MLink", f"{settings.mlink_url}: authenticated, every subscription answered")
    results.append(not problems)
    return 0 if all(results) else 1


def _producer(settings: Settings, say: Say) -> bool:
    config = producer_config(settings.kafka_properties, settings.bridge_queue_max_messages)
    try:
        Producer({**config, "logger": logging.getLogger("librdkafka")})
    except KafkaException as exc:
        say(False, "producer", f"librdkafka refuses the configuration: {exc.args[0]}")
        return False
    say(True, "producer", "configuration accepted (idempotent, acks=all)")
    return True


def _kafka(settings: Settings, specs: list[TopicSpec], say: Say) -> bool:
    try:
        admin = admin_client(settings.kafka_properties)
        missing, problems = inspect_topics(
            admin, specs, allow_non_compacted=settings.bridge_allow_non_compacted
        )
    except (TopicError, KafkaException) as exc:
        say(False, "Kafka", str(exc))
        return False
    for problem in problems:
        say(False, "Kafka", problem)
    if missing and not settings.bridge_create_topics:
        say(False, "Kafka", f"missing and BRIDGE_CREATE_TOPICS is off: {', '.join(missing)}")
        return False
    if not problems:
        todo = f"; to be created: {', '.join(missing)}" if missing else ""
        say(True, "Kafka", f"reachable, {len(specs) - len(missing)} topics verified{todo}")
    return not problems


def _registry(client: SchemaRegistryClient, say: Say) -> bool:
    try:
        subjects = registry_call("listing subjects", client.get_subjects)
    except BridgeError as exc:
        say(False, "schema registry", str(exc))
        return False
    say(True, "schema registry", f"reachable, {len(subjects)} subjects")
    return True
