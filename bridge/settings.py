"""The one configuration tree: everything comes from the environment (and a subscriptions file).

Variables are defined once here and documented in the README's configuration table. Secrets are
SecretStr and never appear in logs, errors or reprs. Every `KAFKA_*` variable becomes a
librdkafka property (`KAFKA_BOOTSTRAP_SERVERS` -> `bootstrap.servers`), so any client setting
can be given without code changes; the bridge's safe producer defaults apply unless overridden.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from bridge.errors import ConfigError

DEFAULT_MLINK_URL = "wss://mlink-live.nms.saturn.spiderrockconnect.com/mlink/json"
# A property whose name holds one of these holds a credential, unless it is an address
# (sasl.oauthbearer.token.endpoint.url names a token but is a URL): see is_secret_property.
SECRET_WORDS = (
    "password",
    "passphrase",
    "secret",
    "user.info",
    "token",
    "jwt",
    "key.pem",
    "oauthbearer.config",
)
# Kubernetes service links put <SERVICE>_PORT, <SERVICE>_SERVICE_HOST, ... into pods: for a
# service called kafka, variables that are not librdkafka properties.
_LINK_TAIL = r"(PORT(_\d+_(TCP|UDP)(_\w+)?)?|SERVICE_(HOST|PORT)(_\w+)?)$"
_SERVICE_LINK = re.compile(r"^KAFKA_" + _LINK_TAIL)
_ANY_SERVICE_LINK = re.compile(r"^\w+?_" + _LINK_TAIL)
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


class AuthMode(StrEnum):
    HEADER = "header"  # Authorization: Bearer apiKey[.password] | jwt in the HTTP handshake
    LOGON = "logon"  # an MLinkLogon message after connecting


class ResumeMode(StrEnum):
    SNAPSHOT = "snapshot"  # after a reconnect, take the whole snapshot again
    HIGHWATER = "highwater"  # ask only for records sent after the last one seen (highwaterTs)


class Mode(StrEnum):
    STREAM = "stream"  # MLinkStream: a message type with where/view
    SUBSCRIBE = "subscribe"  # MLinkSubscribe: individual primary keys
    QUERY = "query"  # MLinkQuery FullSubscription (IncrSubscription when resuming)


class SubscriptionConfig(BaseModel):
    """One entry of BRIDGE_SUBSCRIPTIONS."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    msg_name: str = Field(alias="msgName", min_length=1)
    mode: Mode = Mode.STREAM
    where: str | None = None
    view: str | None = None
    active_latency: int = Field(default=0, alias="activeLatency", ge=-1)
    keys: tuple[str, ...] = ()
    topic: str | None = None
    label: str | None = None
    stale_after: float | None = Field(default=None, alias="staleAfter", ge=0)
    rename: dict[str, str] = Field(default_factory=dict)
    drop: tuple[str, ...] = ()

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str | None) -> str | None:
        if value is not None and not _TOPIC_NAME.match(value):
            raise ValueError("a Kafka topic name allows only letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _keys_match_mode(self) -> SubscriptionConfig:
        if self.mode is Mode.SUBSCRIBE and not self.keys:
            raise ValueError("mode 'subscribe' needs 'keys' (canonical primary keys)")
        if self.mode is not Mode.SUBSCRIBE and self.keys:
            raise ValueError("'keys' is only for mode 'subscribe'")
        return self

    @property
    def name(self) -> str:
        """The subscription label: the queryLabel sent to MLink and the status-topic key."""
        return self.label or f"{self.msg_name}-{self.mode.value}"


class Settings(BaseSettings):
    """Everything the connector process reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    mlink_url: str = DEFAULT_MLINK_URL
    mlink_api_key: SecretStr | None = None
    mlink_api_password: SecretStr | None = None
    mlink_jwt: SecretStr | None = None
    mlink_jwt_file: Path | None = None
    mlink_auth: AuthMode = AuthMode.HEADER
    mlink_rest_url: str | None = None
    mlink_proto_descriptors: Path | None = None
    mlink_max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    mlink_ping_interval: float = Field(default=10.0, gt=0)
    mlink_ping_timeout: float = Field(default=10.0, gt=0)
    mlink_stale_after: float = Field(default=120.0, ge=0)
    mlink_reconnect_min: float = Field(default=0.5, gt=0)
    mlink_reconnect_max: float = Field(default=30.0, gt=0)
    mlink_auth_backoff_min: float = Field(default=30.0, gt=0)
    mlink_auth_backoff_max: float = Field(default=600.0, gt=0)
    mlink_resume: ResumeMode = ResumeMode.SNAPSHOT

    bridge_subscriptions: str | None = None
    bridge_subscriptions_file: Path | None = None
    bridge_topic_prefix: str = "mlink."
    bridge_topic_partitions: int = Field(default=6, ge=1)
    bridge_topic_replication: int = Field(default=-1, ge=-1)
    bridge_create_topics: bool = True
    bridge_allow_non_compacted: bool = False
    bridge_reconcile: bool = False
    bridge_http_port: int = Field(default=8080, ge=0, le=65535)  # 0: no health/metrics server
    bridge_http_host: str = "0.0.0.0"
    bridge_queue_max_messages: int = Field(default=100_000, ge=100)
    bridge_overflow_max_records: int = Field(default=1_000_000, ge=100)
    bridge_held_max_records: int = Field(default=100_000, ge=100)
    bridge_flush_timeout: float = Field(default=30.0, gt=0)

    schema_registry_url: str | None = None
    schema_registry_basic_auth_user_info: SecretStr | None = None
    schema_registry_timeout: float = Field(default=10.0, gt=0)
    # TLS to the registry: a private CA, and a client certificate and key for mutual TLS.
    schema_registry_ssl_ca_location: Path | None = None
    schema_registry_ssl_certificate_location: Path | None = None
    schema_registry_ssl_key_location: Path | None = None

    log_level: str = "INFO"
    log_format: Literal["json", "console"] = "json"

    # Every KAFKA_* variable as a librdkafka property (filled by load_settings).
    kafka_properties: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("mlink_url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not re.match(r"^wss?://[^/\s]+(/\S*)?$", value):
            raise ValueError("must be a ws:// or wss:// URL")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        problems = []
        if self.mlink_jwt is not None and self.mlink_jwt_file is not None:
            problems.append("MLINK_JWT: MLINK_JWT and MLINK_JWT_FILE are exclusive; set one")
        if self.bridge_subscriptions and self.bridge_subscriptions_file:
            problems.append(
                "BRIDGE_SUBSCRIPTIONS: BRIDGE_SUBSCRIPTIONS and BRIDGE_SUBSCRIPTIONS_FILE are "
                "exclusive; set one"
            )
        if self.mlink_reconnect_min > self.mlink_reconnect_max:
            problems.append("MLINK_RECONNECT_MIN: above MLINK_RECONNECT_MAX")
        if self.mlink_auth_backoff_min > self.mlink_auth_backoff_max:
            problems.append("MLINK_AUTH_BACKOFF_MIN: above MLINK_AUTH_BACKOFF_MAX")
        descriptors = self.mlink_proto_descriptors
        if descriptors is not None and not descriptors.is_file():
            # Without it, /mlink/proto uses the descriptor set bundled for the catalog's types.
            problems.append(f"MLINK_PROTO_DESCRIPTORS: {descriptors} is not a readable file")
        if not _TOPIC_NAME.match(self.bridge_topic_prefix + "x"):
            problems.append(
                "BRIDGE_TOPIC_PREFIX: topic names allow only letters, digits, '.', '_' and '-'"
            )
        elif not self.bridge_topic_prefix.strip("_"):
            # The bridge's own topics would be _schemas (Schema Registry's own), _status, _dlq,
            # or start with __ (Kafka's internal topics).
            problems.append(
                "BRIDGE_TOPIC_PREFIX: must hold a letter, digit, '.' or '-' (the bridge's own "
                f"topics would be {self.bridge_topic_prefix}_schemas, Schema Registry's, or "
                "Kafka's internal __ names)"
            )
        for name in ("ca", "certificate", "key"):
            location = getattr(self, f"schema_registry_ssl_{name}_location")
            if location is not None and not location.exists():
                variable = f"SCHEMA_REGISTRY_SSL_{name.upper()}_LOCATION"
                problems.append(f"{variable}: {location} does not exist")
        if (self.schema_registry_ssl_key_location is None) != (
            self.schema_registry_ssl_certificate_location is None
        ):
            problems.append(
                "SCHEMA_REGISTRY_SSL_KEY_LOCATION: mutual TLS needs both the key and "
                "SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION"
            )
        url = self.schema_registry_url
        if url and not re.match(r"^(https?|mock)://[^/\s]", url):
            problems.append(
                "SCHEMA_REGISTRY_URL: must start with http://, https:// (or mock:// in tests) "
                "and name a host"
            )
        if problems:
            raise ValueError("\n".join(problems))  # load_settings reports one line each
        return self

    # -- derived -----------------------------------------------------------------------------

    def subscriptions(self) -> list[SubscriptionConfig]:
        """Parse BRIDGE_SUBSCRIPTIONS (JSON) or BRIDGE_SUBSCRIPTIONS_FILE (YAML or JSON)."""
        if self.bridge_subscriptions_file is not None:
            source = "BRIDGE_SUBSCRIPTIONS_FILE"
            try:
                text = self.bridge_subscriptions_file.read_text()
            except OSError as exc:
                raise ConfigError(f"{source}: cannot read {exc.filename}: {exc.strerror}") from None
            try:
                raw: Any = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{source}: not YAML or JSON: {exc}") from None
        elif self.bridge_subscriptions:
            source = "BRIDGE_SUBSCRIPTIONS"
            try:
                raw = json.loads(self.bridge_subscriptions)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{source}: not valid JSON: {exc}") from None
        else:
            raise ConfigError("set BRIDGE_SUBSCRIPTIONS or BRIDGE_SUBSCRIPTIONS_FILE")
        if isinstance(raw, Mapping) and "subscriptions" in raw:
            raw = raw["subscriptions"]
        if not isinstance(raw, list) or not raw:
            raise ConfigError(f"{source}: must be a non-empty list of subscriptions")
        subs: list[SubscriptionConfig] = []
        problems: list[str] = []
        for index, item in enumerate(raw):
            try:
                subs.append(SubscriptionConfig.model_validate(item))
            except ValidationError as exc:
                for err in exc.errors():
                    where = ".".join(str(p) for p in err["loc"]) or "entry"
                    problems.append(f"{source}[{index}].{where}: {err['msg']}")
        labels = [s.name for s in subs]
        for label in sorted({x for x in labels if labels.count(x) > 1}):
            problems.append(f"{source}: label {label!r} is used twice; give each a 'label'")
        if problems:
            raise ConfigError("\n".join(problems))
        return subs

    def jwt(self) -> str | None:
        """The JWT to authenticate with; the file is read on every call (it may be rotated)."""
        if self.mlink_jwt is not None:
            return self.mlink_jwt.get_secret_value()
        if self.mlink_jwt_file is not None:
            try:
                return self.mlink_jwt_file.read_text().strip() or None
            except OSError as exc:
                raise ConfigError(f"MLINK_JWT_FILE: cannot read: {exc.strerror}") from None
        return None

    def api_token(self) -> str | None:
        """`apiKey` or `apiKey.apiPassword`, as MLink's Bearer header takes it."""
        if self.mlink_api_key is None:
            return None
        key = self.mlink_api_key.get_secret_value()
        if self.mlink_api_password is not None:
            return f"{key}.{self.mlink_api_password.get_secret_value()}"
        return key

    def require_credentials(self) -> None:
        """`run` and `check` need something to authenticate with; `topics`/`schemas` do not."""
        if not (self.mlink_api_key or self.mlink_jwt or self.mlink_jwt_file):
            raise ConfigError(
                "MLINK_API_KEY: no MLink credentials; set MLINK_API_KEY (and MLINK_API_PASSWORD "
                "if the key has one), MLINK_JWT or MLINK_JWT_FILE"
            )

    def secret_values(self) -> list[str]:
        """Every secret this configuration holds, for the log redactor."""
        values = [
            secret.get_secret_value()
            for secret in (
                self.mlink_api_key,
                self.mlink_api_password,
                self.mlink_jwt,
                self.schema_registry_basic_auth_user_info,
            )
            if secret is not None
        ]
        if self.schema_registry_basic_auth_user_info is not None:
            values.append(
                self.schema_registry_basic_auth_user_info.get_secret_value().partition(":")[2]
            )
        if (token := self.api_token()) is not None:
            values.append(token)
        values += [v for k, v in self.kafka_properties.items() if is_secret_property(k)]
        return [v for v in values if v]

    def topic_for(self, sub: SubscriptionConfig, msg_name: str) -> str:
        return sub.topic or f"{self.bridge_topic_prefix}{msg_name}"

    @property
    def status_topic(self) -> str:
        return f"{self.bridge_topic_prefix}_status"

    @property
    def schemas_topic(self) -> str:
        return f"{self.bridge_topic_prefix}_schemas"

    @property
    def dlq_topic(self) -> str:
        return f"{self.bridge_topic_prefix}_dlq"


# The producer settings the bridge relies on; KAFKA_* variables may override any of them.
PRODUCER_DEFAULTS: dict[str, str] = {
    "enable.idempotence": "true",
    "acks": "all",
    "max.in.flight.requests.per.connection": "5",
    "partitioner": "murmur2_random",
    "linger.ms": "5",
    "compression.type": "none",
    "message.timeout.ms": "0",  # never give up on a record: broker outages are waited out
    # Topics are created compacted by the bridge; an auto-created one would not be.
    "allow.auto.create.topics": "false",
}


def librdkafka(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every KAFKA_* variable as a librdkafka property: KAFKA_SASL_MECHANISM -> sasl.mechanism."""
    env = os.environ if environ is None else environ
    out: dict[str, str] = {}
    for name, value in env.items():
        if _SERVICE_LINK.match(name.upper()):
            continue
        if name.upper().startswith("KAFKA_") and len(name) > len("KAFKA_"):
            out[name[len("KAFKA_") :].lower().replace("_", ".")] = value
    return out


def is_secret_property(name: str) -> bool:
    """Whether a client property (librdkafka's, the registry client's) holds a credential."""
    lower = name.lower()
    return not lower.endswith(".url") and any(word in lower for word in SECRET_WORDS)


def redacted(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy fit for logs: values of secret-looking properties are replaced."""
    return {k: "***" if is_secret_property(k) else v for k, v in config.items()}


_OWN_PREFIXES = ("MLINK_", "BRIDGE_", "SCHEMA_REGISTRY_")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """Variables named like the bridge's (MLINK_*, BRIDGE_*, SCHEMA_REGISTRY_*) that it does
    not read: most likely misspelt, and otherwise ignored without a word. Kubernetes service
    links (<SERVICE>_PORT, <SERVICE>_SERVICE_HOST, ...) are not counted."""
    env = os.environ if environ is None else environ
    known = {name.upper() for name in Settings.model_fields}
    return sorted(
        name
        for name in env
        if name.upper().startswith(_OWN_PREFIXES)
        and name.upper() not in known
        and not _ANY_SERVICE_LINK.match(name.upper())
    )


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate; one line per problem, naming the variable, never echoing a secret."""
    env = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {
        k.lower(): v for k, v in env.items() if not k.upper().startswith("KAFKA_")
    }
    values["kafka_properties"] = librdkafka(env)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            if err["loc"]:
                variable = "_".join(str(p) for p in err["loc"]).upper()
                lines.append(f"{variable}: {err['msg']}")
            else:  # the cross-variable checks: each line names its variable already
                lines += err["msg"].removeprefix("Value error, ").splitlines()
        raise ConfigError("\n".join(lines)) from None
