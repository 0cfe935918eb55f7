from __future__ import annotations

from pathlib import Path

import pytest

from bridge.errors import ConfigError
from bridge.settings import librdkafka, load_settings, redacted, unknown_variables

SUBS = '[{"msgName": "StockPrint"}]'


def test_kafka_variables_become_librdkafka_properties_but_not_service_links() -> None:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": "b:9092",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_PORT": "tcp://10.0.0.1:9092",  # Kubernetes service links
        "KAFKA_PORT_9092_TCP_ADDR": "10.0.0.1",
        "KAFKA_SERVICE_HOST": "10.0.0.1",
    }
    assert librdkafka(env) == {"bootstrap.servers": "b:9092", "sasl.mechanism": "PLAIN"}


def test_secrets_are_redacted_for_logs() -> None:
    config = {
        "sasl.password": "p1",
        "sasl.oauthbearer.config": "clientId=a clientSecret=s3",
        "ssl.key.password": "p2",
        "sasl.oauthbearer.assertion.private.key.passphrase": "p3",
        "ssl.key.pem": "-----BEGIN PRIVATE KEY----- p4",
        "bootstrap.servers": "b:9092",
        "sasl.oauthbearer.token.endpoint.url": "https://idp/oauth2/token",
    }
    shown = str(redacted(config))
    for secret in ("p1", "s3", "p2", "p3", "p4"):
        assert secret not in shown
    assert "b:9092" in shown
    assert "https://idp/oauth2/token" in shown  # an address, not a credential


def test_every_secret_kafka_property_is_given_to_the_log_redactor() -> None:
    settings = load_settings(
        {
            "KAFKA_SASL_OAUTHBEARER_ASSERTION_PRIVATE_KEY_PASSPHRASE": "pass-phrase-1",
            "KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL": "https://idp/oauth2/token",
            "BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]',
        }
    )
    assert "pass-phrase-1" in settings.secret_values()
    assert "https://idp/oauth2/token" not in settings.secret_values()


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"MLINK_URL": "http://x"}, "MLINK_URL"),
        (
            {"MLINK_URL": "wss://h/mlink/proto", "MLINK_PROTO_DESCRIPTORS": "/nonexistent.pb"},
            "MLINK_PROTO_DESCRIPTORS",
        ),
        ({"MLINK_RECONNECT_MIN": "5", "MLINK_RECONNECT_MAX": "1"}, "MLINK_RECONNECT_MIN"),
        (
            {"MLINK_AUTH_BACKOFF_MIN": "50", "MLINK_AUTH_BACKOFF_MAX": "10"},
            "MLINK_AUTH_BACKOFF_MIN",
        ),
        ({"BRIDGE_TOPIC_PREFIX": "bad prefix/"}, "BRIDGE_TOPIC_PREFIX"),
        ({"BRIDGE_TOPIC_PREFIX": ""}, "BRIDGE_TOPIC_PREFIX"),  # _schemas: Schema Registry's
        ({"BRIDGE_TOPIC_PREFIX": "_"}, "BRIDGE_TOPIC_PREFIX"),  # __schemas: Kafka's kind
        ({"SCHEMA_REGISTRY_URL": "schema-registry:8081"}, "SCHEMA_REGISTRY_URL"),
        ({"SCHEMA_REGISTRY_URL": "ftp://sr"}, "SCHEMA_REGISTRY_URL"),
        ({"MLINK_JWT": "a", "MLINK_JWT_FILE": "/tmp/x"}, "MLINK_JWT"),
        ({"BRIDGE_TOPIC_PARTITIONS": "0"}, "BRIDGE_TOPIC_PARTITIONS"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError, match=variable):
        load_settings({"BRIDGE_SUBSCRIPTIONS": SUBS, **env})


def test_the_protobuf_endpoint_is_accepted_with_or_without_a_descriptor_set(
    tmp_path: Path,
) -> None:
    assert load_settings({"MLINK_URL": "wss://h/mlink/proto"}).mlink_proto_descriptors is None
    descriptors = tmp_path / "mlink.protoset"
    descriptors.write_bytes(b"")
    env = {"MLINK_URL": "wss://h/mlink/proto", "MLINK_PROTO_DESCRIPTORS": str(descriptors)}
    assert load_settings(env).mlink_proto_descriptors == descriptors


def test_secrets_never_appear_in_errors_or_repr() -> None:
    settings = load_settings({"MLINK_API_KEY": "k-123", "MLINK_API_PASSWORD": "pw-456"})
    assert "k-123" not in repr(settings)
    assert "pw-456" not in repr(settings)
    assert settings.api_token() == "k-123.pw-456"
    with pytest.raises(ConfigError) as info:
        load_settings({"MLINK_API_KEY": "k-123", "MLINK_URL": "nope"})
    assert "k-123" not in str(info.value)


@pytest.mark.parametrize(
    ("subs", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "non-empty list"),
        ('[{"msgName": "StockPrint", "mode": "subscribe"}]', "needs 'keys'"),
        ('[{"msgName": "StockPrint", "topic": "a topic"}]', "topic"),
        ('[{"msgName": "StockPrint"}, {"msgName": "StockPrint"}]', "used twice"),
        ('[{"msgName": "StockPrint", "colour": "red"}]', "colour"),
    ],
)
def test_bad_subscriptions(subs: str, message: str) -> None:
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": subs})
    with pytest.raises(ConfigError, match=message):
        settings.subscriptions()


def test_run_without_credentials_is_a_configuration_error() -> None:
    settings = load_settings({"BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]'})
    settings.subscriptions()  # enough for `topics` and `schemas`
    with pytest.raises(ConfigError, match="MLINK_API_KEY: no MLink credentials"):
        settings.require_credentials()
    with_jwt_file = load_settings(
        {"BRIDGE_SUBSCRIPTIONS": '[{"msgName": "StockPrint"}]', "MLINK_JWT_FILE": "/run/jwt"}
    )
    with_jwt_file.require_credentials()


def test_every_conflict_is_reported_at_once_one_line_each() -> None:
    env = {
        "BRIDGE_SUBSCRIPTIONS": SUBS,
        "MLINK_JWT": "a.b.c",
        "MLINK_JWT_FILE": "/run/jwt",
        "MLINK_RECONNECT_MIN": "9",
        "MLINK_RECONNECT_MAX": "1",
        "BRIDGE_TOPIC_PREFIX": "bad prefix",
    }
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    lines = str(info.value).splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "MLINK_JWT",
        "MLINK_RECONNECT_MIN",
        "BRIDGE_TOPIC_PREFIX",
    ]
    assert "a.b.c" not in str(info.value)


def test_variables_named_like_the_bridges_but_not_read_are_named() -> None:
    env = {
        "MLINK_RESUME_MODE": "highwater",  # MLINK_RESUME
        "BRIDGE_CREATE_TOPIC": "false",  # BRIDGE_CREATE_TOPICS
        "SCHEMA_REGISTRY_USER_INFO": "u:p",  # SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO
        "MLINK_RESUME": "highwater",
        "mlink_url": "wss://x/mlink/json",  # names are case-insensitive
        "MLINK_BRIDGE_PORT": "tcp://10.0.0.1:8080",  # a Kubernetes service link
        "MLINK_BRIDGE_SERVICE_HOST": "10.0.0.1",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "HOME": "/root",
    }
    assert unknown_variables(env) == [
        "BRIDGE_CREATE_TOPIC",
        "MLINK_RESUME_MODE",
        "SCHEMA_REGISTRY_USER_INFO",
    ]
