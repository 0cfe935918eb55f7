"""Topic administration: create the compacted topics, or verify the ones that exist.

Every data topic mirrors MLink's live-data objects, so it must be compacted
(`cleanup.policy=compact`): an existing topic that is not is refused unless the operator says
otherwise. The status and schema topics are compacted too; the dead-letter topic keeps
everything (`delete`), since each bad record is its own evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.cimpl import NewTopic

from bridge.errors import BridgeError, ConfigError

log = logging.getLogger("mlink.topics")


class TopicError(BridgeError):
    """A topic could not be created or verified."""

    retryable = True


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int = 6
    replication: int = -1  # the broker's default
    compacted: bool = True
    config: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        config = {"cleanup.policy": "compact" if self.compacted else "delete", **self.config}
        return NewTopic(
            self.name,
            num_partitions=self.partitions,
            replication_factor=self.replication,
            config=dict(config),
        )


@dataclass(frozen=True, slots=True)
class TopicReport:
    created: list[str]
    verified: list[str]


def admin_client(properties: Mapping[str, str]) -> AdminClient:
    """An admin client with the operator's KAFKA_* properties, logging through `logging`."""
    config: dict[str, Any] = {**properties, "logger": logging.getLogger("librdkafka")}
    return AdminClient(config)


def ensure_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    create: bool = True,
    allow_non_compacted: bool = False,
    timeout: float = 15.0,
) -> TopicReport:
    """Create missing topics (when `create`) and check that every data topic is compacted."""
    wanted = {spec.name: spec for spec in specs}
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise TopicError(f"cannot list topics: {_reason(exc)}") from None
    missing = [spec for name, spec in wanted.items() if name not in existing]
    created: list[str] = []
    if missing and not create:
        names = ", ".join(spec.name for spec in missing)
        raise ConfigError(f"topics missing and BRIDGE_CREATE_TOPICS is off: {names}")
    if missing:
        futures = admin.create_topics(
            [spec.new_topic() for spec in missing],
            operation_timeout=timeout,
            request_timeout=timeout,
        )
        for name, future in futures.items():
            try:
                future.result()
                created.append(name)
                log.info("created topic %s", name)
            except KafkaException as exc:
                error = exc.args[0]
                if (
                    isinstance(error, KafkaError)
                    and error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                ):
                    continue  # another bridge made it meanwhile: verify it below
                raise TopicError(f"cannot create topic {name}: {_reason(exc)}") from None
    to_verify = [spec for spec in wanted.values() if spec.name not in created]
    verified = _verify(admin, to_verify, allow_non_compacted, timeout)
    return TopicReport(created, verified)


def _verify(
    admin: AdminClient, specs: list[TopicSpec], allow_non_compacted: bool, timeout: float
) -> list[str]:
    if not specs:
        return []
    resources = [ConfigResource(ConfigResource.Type.TOPIC, spec.name) for spec in specs]
    futures = admin.describe_configs(resources, request_timeout=timeout)
    verified: list[str] = []
    problems: list[str] = []
    for spec, resource in zip(specs, resources, strict=True):
        try:
            configs = futures[resource].result()
        except KafkaException as exc:
            raise TopicError(f"cannot describe topic {spec.name}: {_reason(exc)}") from None
        entry = configs.get("cleanup.policy")
        policy = entry.value if entry is not None else None
        compacted = policy is not None and "compact" in policy
        if spec.compacted and not compacted:
            if allow_non_compacted:
                log.warning(
                    "topic %s has cleanup.policy=%s, not compact (allowed)", spec.name, policy
                )
            else:
                problems.append(
                    f"topic {spec.name} has cleanup.policy={policy}, not compact; "
                    "fix the topic or set BRIDGE_ALLOW_NON_COMPACTED=true"
                )
                continue
        verified.append(spec.name)
    if problems:
        raise ConfigError("\n".join(problems))
    return verified


def _reason(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else exc
    return error.str() if isinstance(error, KafkaError) else str(error)


def inspect_topics(
    admin: AdminClient,
    specs: Iterable[TopicSpec],
    *,
    allow_non_compacted: bool = False,
    timeout: float = 10.0,
) -> tuple[list[str], list[str]]:
    """Read-only: the topics that do not exist yet, and what is wrong with those that do.
    Raises TopicError when the cluster cannot be reached."""
    wanted = list(specs)
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise TopicError(f"cannot list topics: {_reason(exc)}") from None
    missing = [spec.name for spec in wanted if spec.name not in existing]
    present = [spec for spec in wanted if spec.name in existing]
    try:
        _verify(admin, present, allow_non_compacted, timeout)
    except (ConfigError, TopicError) as exc:
        return missing, str(exc).splitlines()
    return missing, []
