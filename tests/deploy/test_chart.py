"""The Helm chart, linted and rendered offline (helm-python-sdk: Helm's Go SDK in-process, no
helm binary, no cluster) and every rendered object validated against the Kubernetes schemas of
one fixed version (kubernetes-validate). Each ci/*-values.yaml is a scenario; the assertions read
the rendered objects the way a cluster would."""

from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from bridge.settings import librdkafka, load_settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "mlink-bridge"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
KUBE_VERSION = "1.30.0"
RELEASE, NAMESPACE = "md", "market-data"
FULLNAME = f"{RELEASE}-mlink-bridge"
CRD_GROUPS = ("monitoring.coreos.com/",)  # no schema in kubernetes-validate: checked by hand
SECRET_ENV = {
    "MLINK_API_KEY": ("auth", "apiKey"),
    "MLINK_API_PASSWORD": ("auth", "apiPassword"),
    "MLINK_JWT": ("auth", "jwt"),
    "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": ("schemaRegistry", "basicAuthUserInfo"),
    "KAFKA_SASL_PASSWORD": ("kafka", "sasl", "password"),
}


def ci_values(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / name).read_text())
    return loaded


def render(values: dict[str, Any] | None) -> dict[str, str]:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def objects(manifests: dict[str, str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith("NOTES.txt"):
            out.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return out


@functools.cache
def rendered(name: str) -> tuple[dict[str, str], list[dict[str, Any]]]:
    manifests = render(ci_values(name))
    return manifests, objects(manifests)


def of_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in of_kind(objs, kind)}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env_of(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    entries = container(deployment)["env"]
    names = [e["name"] for e in entries]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return {e["name"]: e for e in entries}


def plain_env(deployment: dict[str, Any]) -> dict[str, str]:
    return {n: e["value"] for n, e in env_of(deployment).items() if "value" in e}


def dig(values: dict[str, Any], path: tuple[str, ...]) -> Any:
    for part in path:
        values = values.get(part) or {}
    return values or None


def merged_values(values: dict[str, Any] | None) -> dict[str, Any]:
    with helm.Chart.load(CHART) as chart:
        return chart.merge_values(values)


ci_names = pytest.mark.parametrize("name", [p.name for p in CI_VALUES])


def test_the_four_ci_scenarios_exist() -> None:
    assert {p.name for p in CI_VALUES} >= {
        "default-values.yaml",
        "multi-connector-values.yaml",
        "existing-secret-values.yaml",
        "monitoring-values.yaml",
    }


def test_app_version_is_the_package_version() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == project["version"]


# -- lint, schema, Kubernetes schemas ----------------------------------------------------------


@pytest.mark.parametrize("name", [None, *(p.name for p in CI_VALUES)])
def test_lint_reports_no_warning_or_error(name: str | None) -> None:
    values = ci_values(name) if name else None
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["total_charts_linted"] == 1
    # Severity 1 is informational (only "icon is recommended"); 2 warning, 3 error.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    assert report["errors"] == []


def test_default_values_render_nothing_but_notes() -> None:
    manifests = render(None)
    assert objects(manifests) == []
    notes = next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))
    assert "No connectors are configured" in notes


@ci_names
def test_values_satisfy_the_schema(name: str) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.Draft7Validator(schema).validate(merged_values(ci_values(name)))
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(ci_values(name))


@ci_names
def test_every_object_is_valid_for_kubernetes(name: str) -> None:
    _, objs = rendered(name)
    assert objs
    for obj in objs:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} {where}: {exc.message}")
        assert obj["metadata"]["namespace"] == NAMESPACE
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE


BAD_VALUES = {
    "connector without a name": lambda v: v["connectors"][0].pop("name"),
    "connector name of the wrong type": lambda v: v["connectors"][0].update(name=7),
    "connector name not a DNS label": lambda v: v["connectors"][0].update(name="Equities_1"),
    "connector without subscriptions": lambda v: v["connectors"][0].update(subscriptions=[]),
    "subscription without msgName": lambda v: v["connectors"][0]["subscriptions"][0].pop("msgName"),
    "unknown subscription field": lambda v: v["connectors"][0]["subscriptions"][0].update(
        msgname="StockPrint"
    ),
    "subscribe without keys": lambda v: v["connectors"][0]["subscriptions"][0].update(
        mode="subscribe"
    ),
    "unknown mode": lambda v: v["connectors"][0]["subscriptions"][0].update(mode="poll"),
    "unknown top-level key": lambda v: v.update(replicaCount=2),
    "flush timeout as a string": lambda v: v.update(bridge={"flushTimeout": "30"}),
    "a password among the kafka properties": lambda v: v["kafka"].update(
        properties={"sasl.password": "hunter2"}
    ),
    "an inline private key among the kafka properties": lambda v: v["kafka"].update(
        properties={"ssl.key.pem": "-----BEGIN PRIVATE KEY-----"}
    ),
    "bootstrap.servers among the kafka properties": lambda v: v["kafka"].update(
        properties={"bootstrap.servers": "x:9092"}
    ),
    "a key passphrase among the kafka properties": lambda v: v["kafka"].update(
        properties={"sasl.oauthbearer.assertion.private.key.passphrase": "pass"}
    ),
    "an inline private key in a connector's env": lambda v: v["connectors"][0].update(
        env={"KAFKA_SSL_KEY_PEM": "-----BEGIN PRIVATE KEY-----"}
    ),
    "a secret in a connector's env": lambda v: v["connectors"][0].update(
        env={"MLINK_API_KEY": "inline"}
    ),
    "a number in a connector's env": lambda v: v["connectors"][0].update(
        env={"BRIDGE_FLUSH_TIMEOUT": 60}
    ),
    "an unknown log format": lambda v: v.update(logging={"format": "text"}),
    "an empty topic prefix": lambda v: v.update(bridge={"topicPrefix": ""}),
    "a non-websocket MLink URL": lambda v: v.update(mlink={"url": "https://mlink"}),
}


@pytest.mark.parametrize("mutate", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_rejected_by_the_schema(mutate: Any) -> None:
    values = ci_values("default-values.yaml")
    mutate(values)
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert list(jsonschema.Draft7Validator(schema).iter_errors(merged_values(values)))
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    report = helm.lint(CHART, values)
    assert any(m["severity"] == 3 for m in report["messages"])


BAD_COMBINATIONS = {
    "two connectors with one name": (
        lambda v: v["connectors"].append(copy.deepcopy(v["connectors"][0])),
        "is used twice",
    ),
    "no bootstrap servers": (lambda v: v["kafka"].pop("bootstrapServers"), "bootstrapServers"),
    "grace period not above the flush timeout": (
        lambda v: v.update(terminationGracePeriodSeconds=30),
        "terminationGracePeriodSeconds (30) must be at least BRIDGE_FLUSH_TIMEOUT (30) + 5",
    ),
    "a connector's flush timeout above the grace period": (
        lambda v: (
            v.update(terminationGracePeriodSeconds=60),
            v["connectors"][0].update(env={"BRIDGE_FLUSH_TIMEOUT": "90"}),
        ),
        "BRIDGE_FLUSH_TIMEOUT (90)",
    ),
    "inline credentials with an existing secret": (
        lambda v: v.update(existingSecret={"name": "mine"}),
        "existingSecret.name is set",
    ),
    "a JWT file and a JWT": (
        lambda v: v["auth"].update(jwt="x", jwtFile={"secretName": "jwt"}),
        "exclusive",
    ),
    "extraEnv setting what the chart sets": (
        lambda v: v.update(extraEnv=[{"name": "LOG_LEVEL", "value": "DEBUG"}]),
        "extraEnv: LOG_LEVEL is set by the chart already",
    ),
}


@pytest.mark.parametrize(
    ("mutate", "message"), BAD_COMBINATIONS.values(), ids=BAD_COMBINATIONS.keys()
)
def test_inconsistent_values_fail_with_a_message(mutate: Any, message: str) -> None:
    values = ci_values("default-values.yaml")
    mutate(values)
    with pytest.raises(helm.HelmError, match=re.escape(message)):
        render(values)


# -- what the rendered objects promise ---------------------------------------------------------


@ci_names
def test_one_single_writer_deployment_per_connector(name: str) -> None:
    values = ci_values(name)
    _, objs = rendered(name)
    deployments = named(objs, "Deployment")
    assert set(deployments) == {f"{FULLNAME}-{c['name']}" for c in values["connectors"]}
    for connector in values["connectors"]:
        deployment = deployments[f"{FULLNAME}-{connector['name']}"]
        spec = deployment["spec"]
        assert spec["replicas"] == 1
        assert spec["strategy"] == {"type": "Recreate"}
        selector = spec["selector"]["matchLabels"]
        assert selector["mlink-bridge/connector"] == connector["name"]
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
        args = container(deployment)["args"]
        assert args == ["run"]


@ci_names
def test_pods_meet_the_restricted_security_standard(name: str) -> None:
    _, objs = rendered(name)
    for deployment in of_kind(objs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        assert pod["automountServiceAccountToken"] is False
        assert pod["enableServiceLinks"] is False
        c = container(deployment)
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert c["resources"]["limits"]["memory"]


@ci_names
def test_probes_point_at_the_http_port(name: str) -> None:
    _, objs = rendered(name)
    for deployment in of_kind(objs, "Deployment"):
        c = container(deployment)
        (port,) = c["ports"]
        assert port["name"] == "http"
        assert str(port["containerPort"]) == plain_env(deployment)["BRIDGE_HTTP_PORT"]
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
        startup = c["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


@ci_names
def test_grace_period_outlasts_the_flush_timeout(name: str) -> None:
    _, objs = rendered(name)
    for deployment in of_kind(objs, "Deployment"):
        flush = float(plain_env(deployment)["BRIDGE_FLUSH_TIMEOUT"])
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= flush + 5


def test_grace_period_follows_each_connectors_flush_timeout() -> None:
    _, objs = rendered("multi-connector-values.yaml")
    grace = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        for d in of_kind(objs, "Deployment")
    }
    assert grace == {
        f"{FULLNAME}-equities": 45,
        f"{FULLNAME}-options": 75,
        f"{FULLNAME}-surfaces": 45,
    }
    _, objs = rendered("existing-secret-values.yaml")
    (deployment,) = of_kind(objs, "Deployment")
    assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120


@ci_names
def test_secrets_reach_the_pod_only_by_reference(name: str) -> None:
    values = merged_values(ci_values(name))
    manifests, objs = rendered(name)
    secret_values = [v for path in SECRET_ENV.values() if (v := dig(values, path))]
    assert secret_values or values["existingSecret"]["name"]
    for path, text in manifests.items():
        if not path.endswith("/secret.yaml"):
            for value in secret_values:
                assert value not in text, f"a secret value appears in {path}"
    secrets = named(objs, "Secret")
    for deployment in of_kind(objs, "Deployment"):
        env = env_of(deployment)
        for variable in SECRET_ENV:
            if variable in env:
                assert set(env[variable]) == {"name", "valueFrom"}
                ref = env[variable]["valueFrom"]["secretKeyRef"]
                if not values["existingSecret"]["name"]:
                    assert ref["key"] in secrets[ref["name"]]["data"]
    if secret_values:
        (secret,) = secrets.values()
        assert secret["type"] == "Opaque"
        assert len(secret["data"]) == len(secret_values)


def test_existing_secret_is_referenced_and_none_is_created() -> None:
    values = ci_values("existing-secret-values.yaml")
    _, objs = rendered("existing-secret-values.yaml")
    assert of_kind(objs, "Secret") == []
    (deployment,) = of_kind(objs, "Deployment")
    refs = {
        n: e["valueFrom"]["secretKeyRef"]
        for n, e in env_of(deployment).items()
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    # mlinkApiKey is "" in these values: not referenced at all.
    assert refs == {
        "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": {
            "name": "mlink-credentials",
            "key": "registry-user-info",
        },
        "KAFKA_SASL_PASSWORD": {"name": "mlink-credentials", "key": "kafka-password"},
    }
    assert "checksum/secret" not in deployment["spec"]["template"]["metadata"]["annotations"]
    # The JWT as a file: the whole Secret mounted (rotation reaches the pod), its path in env.
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == values["auth"]["jwtFile"]["secretName"]
    assert volume["secret"]["items"] == [{"key": "token", "path": "jwt"}]
    (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
    assert "subPath" not in mount
    assert plain_env(deployment)["MLINK_JWT_FILE"] == f"{mount['mountPath']}/jwt"


@ci_names
def test_subscriptions_configmap_holds_the_connectors_subscriptions(
    name: str, tmp_path: Path
) -> None:
    values = ci_values(name)
    _, objs = rendered(name)
    configmaps = named(objs, "ConfigMap")
    deployments = named(objs, "Deployment")
    for connector in values["connectors"]:
        resource = f"{FULLNAME}-{connector['name']}"
        data = configmaps[resource]["data"]
        (filename,) = data
        assert yaml.safe_load(data[filename]) == connector["subscriptions"]
        deployment = deployments[resource]
        env = plain_env(deployment)
        (volume,) = [
            v for v in deployment["spec"]["template"]["spec"]["volumes"] if "configMap" in v
        ]
        assert volume["configMap"]["name"] == resource
        (mount,) = [m for m in container(deployment)["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True
        assert env["BRIDGE_SUBSCRIPTIONS_FILE"] == f"{mount['mountPath']}/{filename}"
        # The bridge itself accepts the rendered environment and subscriptions file.
        (tmp_path / filename).write_text(data[filename])
        env["BRIDGE_SUBSCRIPTIONS_FILE"] = str(tmp_path / filename)
        settings = load_settings(env)
        assert len(settings.subscriptions()) == len(connector["subscriptions"])
        assert settings.bridge_http_port == 8080
        assert settings.log_format == "json"


def test_an_address_whose_name_mentions_a_token_is_not_taken_for_a_secret() -> None:
    values = ci_values("default-values.yaml")
    url = "https://idp.example/oauth2/token"
    values["kafka"]["properties"] = {"sasl.oauthbearer.token.endpoint.url": url}
    (deployment,) = of_kind(objects(render(values)), "Deployment")
    assert plain_env(deployment)["KAFKA_SASL_OAUTHBEARER_TOKEN_ENDPOINT_URL"] == url


def test_kafka_properties_become_kafka_variables() -> None:
    values = ci_values("multi-connector-values.yaml")
    _, objs = rendered("multi-connector-values.yaml")
    deployment = named(objs, "Deployment")[f"{FULLNAME}-equities"]
    env = plain_env(deployment)
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_QUEUE_BUFFERING_MAX_KBYTES"] == "1048576"  # not 1.048576e+06
    properties = librdkafka(env)
    expected = {k: str(v) for k, v in values["kafka"]["properties"].items()}
    expected["bootstrap.servers"] = values["kafka"]["bootstrapServers"]
    assert properties == expected
    # TLS files come from extraVolumes, mounted where the properties point.
    mounts = {m["name"]: m["mountPath"] for m in container(deployment)["volumeMounts"]}
    assert env["KAFKA_SSL_CA_LOCATION"].startswith(mounts["kafka-tls"] + "/")
    # A connector's env overrides the chart's value, numbers included.
    options = plain_env(named(objs, "Deployment")[f"{FULLNAME}-options"])
    assert options["LOG_LEVEL"] == "DEBUG"
    assert options["BRIDGE_OVERFLOW_MAX_RECORDS"] == "2000000"
    assert env["LOG_LEVEL"] == "INFO"


def test_a_subscription_change_rolls_only_that_connectors_pod() -> None:
    values = ci_values("multi-connector-values.yaml")

    def checksums(vals: dict[str, Any]) -> dict[str, dict[str, str]]:
        return {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["annotations"]
            for d in of_kind(objects(render(vals)), "Deployment")
        }

    before = checksums(values)
    values["connectors"][1]["subscriptions"][0]["where"] = "ticker:eq:QQQ-NMS-EQT"
    after = checksums(values)
    changed = {
        n
        for n in before
        if before[n]["checksum/subscriptions"] != after[n]["checksum/subscriptions"]
    }
    assert changed == {f"{FULLNAME}-options"}
    values["auth"]["apiKey"] = "rotated"
    rotated = checksums(values)
    assert all(rotated[n]["checksum/secret"] != after[n]["checksum/secret"] for n in before)


@ci_names
def test_a_metrics_service_per_connector(name: str) -> None:
    _, objs = rendered(name)
    services = named(objs, "Service")
    for deployment in of_kind(objs, "Deployment"):
        service = services[deployment["metadata"]["name"]]
        assert service["spec"]["type"] == "ClusterIP"
        (port,) = service["spec"]["ports"]
        assert (port["name"], port["targetPort"]) == ("http", "http")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert service["spec"]["selector"].items() <= pod_labels.items()
    assert len(services) == len(of_kind(objs, "Deployment"))


def test_monitoring_objects() -> None:
    values = ci_values("monitoring-values.yaml")
    _, objs = rendered("monitoring-values.yaml")
    services = of_kind(objs, "Service")
    deployments = named(objs, "Deployment")

    (monitor,) = of_kind(objs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    selector = spec["selector"]["matchLabels"]
    assert all(selector.items() <= s["metadata"]["labels"].items() for s in services)
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["path"] == "/metrics"
    assert endpoint["interval"] == "15s"
    assert endpoint["metricRelabelings"] == values["serviceMonitor"]["metricRelabelings"]
    assert spec["targetLabels"] == ["mlink-bridge/connector"]

    budgets = named(objs, "PodDisruptionBudget")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        pod_labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert budget["spec"]["maxUnavailable"] == 1  # drains can still move a single pod

    (policy,) = of_kind(objs, "NetworkPolicy")
    pod_selector = policy["spec"]["podSelector"]["matchLabels"]
    for deployment in deployments.values():
        assert pod_selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"] == values["networkPolicy"]["ingressFrom"]
    egress_ports = {
        (p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]
    }
    assert egress_ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (9092, "TCP"), (8081, "TCP")}


def test_optional_objects_are_off_by_default() -> None:
    _, objs = rendered("default-values.yaml")
    kinds = {o["kind"] for o in objs}
    assert kinds == {"Secret", "ConfigMap", "Deployment", "Service"}
