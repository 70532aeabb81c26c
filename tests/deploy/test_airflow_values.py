"""deploy/helm/airflow-values.yaml: the settings of the official chart that gbadz depends on."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from tests.deploy.conftest import REPO

Values = dict[str, Any]


def env(values: Values) -> dict[str, str]:
    return {e["name"]: e["value"] for e in values["env"]}


def walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [item for key, value in node.items() for item in walk(value, f"{path}.{key}")]
    if isinstance(node, list):
        return [item for n, value in enumerate(node) for item in walk(value, f"{path}[{n}]")]
    return [(path, node)]


def test_celery_executor_on_the_locked_airflow(airflow_values: Values) -> None:
    assert "CeleryExecutor" == airflow_values["executor"]
    lock = (REPO / "requirements.lock").read_text()
    (version,) = re.findall(r"^apache-airflow==(\S+) ", lock, re.MULTILINE)
    assert version == airflow_values["airflowVersion"]
    assert "gbadz-airflow" == airflow_values["images"]["airflow"]["repository"]


def test_fixed_secrets_come_from_existing_secrets(airflow_values: Values) -> None:
    """Set by name, never by value: the chart would otherwise generate them, and a regenerated
    JWT secret or Fernet key at an upgrade breaks running tasks or stored connections."""
    for by_value, by_name in (
        ("jwtSecret", "jwtSecretName"),
        ("fernetKey", "fernetKeySecretName"),
        ("apiSecretKey", "apiSecretKeySecretName"),
    ):
        assert airflow_values.get(by_value) is None, by_value
        assert airflow_values[by_name], by_name
    assert airflow_values["data"]["metadataSecretName"]
    assert airflow_values["data"]["brokerUrlSecretName"]
    assert "metadataConnection" not in airflow_values["data"]


def test_one_execution_api_url_for_every_component(airflow_values: Values) -> None:
    """In `env` (every Airflow container), set once, pointing at the api-server's Service."""
    names = [e["name"] for e in airflow_values["env"]]
    assert 1 == names.count("AIRFLOW__CORE__EXECUTION_API_SERVER_URL")
    url = urlsplit(env(airflow_values)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert ("airflow-api-server", 8080, "/execution/") == (url.hostname, url.port, url.path)
    assert "execution_api_server_url" not in airflow_values["config"].get("core", {})


def test_gbadz_settings_only_for_the_workers(airflow_values: Values, chart_values: Values) -> None:
    """Workers run the DAG's gbadz tasks; no other Airflow component sees gbadz's secrets."""
    assert airflow_values.get("extraEnvFrom") is None
    assert not [name for name in env(airflow_values) if name.startswith("GBADZ_")]
    workers = {e["name"]: e for e in airflow_values["workers"]["env"]}
    for key in ("GBADZ_DB__URL", "GBADZ_S3__ACCESS_KEY", "GBADZ_S3__SECRET_KEY", "GBADZ_CRYPTO__PASSPHRASE"):
        assert {"name": chart_values["existingSecret"], "key": key} == workers[key]["valueFrom"][
            "secretKeyRef"
        ]
        assert "value" not in workers[key]
    assert chart_values["settings"]["GBADZ_S3__ENDPOINT_URL"] == workers["GBADZ_S3__ENDPOINT_URL"]["value"]
    assert "prod" == workers["GBADZ_ENV"]["value"]


def test_workers_open_the_same_keyring_as_the_api(airflow_values: Values, chart_values: Values) -> None:
    assert chart_values["uid"] == airflow_values["uid"]
    # Given `securityContexts.pod`, the chart ignores `uid` (seen rendering chart 1.20.0-dev).
    assert chart_values["uid"] == airflow_values["securityContexts"]["pod"]["runAsUser"]
    workers = airflow_values["workers"]
    (volume,) = workers["extraVolumes"]
    (mount,) = workers["extraVolumeMounts"]
    assert chart_values["keyring"]["existingClaim"] == volume["persistentVolumeClaim"]["claimName"]
    assert chart_values["keyring"]["mountPath"] == mount["mountPath"]
    workers_env = {e["name"]: e.get("value") for e in workers["env"]}
    assert f"{chart_values['keyring']['mountPath']}/keyring.bin" == workers_env["GBADZ_CRYPTO__KEYRING_PATH"]


def test_external_databases_and_baked_dags(airflow_values: Values) -> None:
    assert airflow_values["postgresql"]["enabled"] is False
    assert airflow_values["redis"]["enabled"] is False
    assert airflow_values["dags"]["gitSync"]["enabled"] is False
    assert airflow_values["dags"]["persistence"]["enabled"] is False


# The official chart's slots that take a secret's value (rather than a Secret's name).
VALUE_SLOTS = {
    "password",
    "pass",
    "jwtsecret",
    "fernetkey",
    "apisecretkey",
    "webserversecretkey",
    "brokerurl",
    "postgrespassword",
    "sshkey",
    "keytabbase64content",
    "connection",
}


def test_no_default_user_and_no_literal_secret(airflow_values: Values) -> None:
    assert airflow_values["createUserJob"]["enabled"] is False
    for path, value in walk(airflow_values):
        if path.rsplit(".", 1)[-1].lower() in VALUE_SLOTS:
            assert value is None, path
    # And nothing in `env` carries a secret: those come from Secrets.
    for name in env(airflow_values):
        assert not re.search(r"PASSWORD|SECRET|PASSPHRASE|FERNET|CONN$|BROKER_URL", name), name


def test_the_walk_finds_a_literal_secret() -> None:
    assert ("data.brokerUrl", "redis://:hunter2@redis") in [
        (p.lstrip("."), v) for p, v in walk({"data": {"brokerUrl": "redis://:hunter2@redis"}})
    ]


def test_the_api_server_accepts_gbadz_and_airflow_itself(airflow_values: Values) -> None:
    peers = airflow_values["apiServer"]["networkPolicy"]["ingress"]["from"]
    gbadz = [p for p in peers if p.get("namespaceSelector")]
    own = [p for p in peers if not p.get("namespaceSelector")]
    assert {"kubernetes.io/metadata.name": "gbadz"} == gbadz[0]["namespaceSelector"]["matchLabels"]
    assert "api" == gbadz[0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
    assert [{"podSelector": {"matchLabels": {"tier": "airflow"}}}] == own
    assert airflow_values["networkPolicies"]["enabled"] is True


def test_simple_auth_passwords_are_shared_not_generated(airflow_values: Values) -> None:
    core = airflow_values["config"]["core"]
    assert core["auth_manager"].endswith("SimpleAuthManager")
    assert "gbadz:user" in core["simple_auth_manager_users"].split(",")
    api = airflow_values["apiServer"]
    mount = next(m for m in api["extraVolumeMounts"] if m["mountPath"] == "/opt/airflow/auth")
    volume = next(v for v in api["extraVolumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    assert core["simple_auth_manager_passwords_file"].startswith(mount["mountPath"] + "/")
    (init,) = api["extraInitContainers"]
    assert "cp /secret/passwords.json /opt/airflow/auth/passwords.json" in init["command"][-1]


def test_the_gbadz_chart_reaches_this_api_server_as_its_user(
    airflow_values: Values, chart_values: Values
) -> None:
    settings = chart_values["settings"]
    url = urlsplit(settings["GBADZ_AIRFLOW__URL"])
    execution = urlsplit(env(airflow_values)["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname is not None
    assert (execution.hostname, execution.port) == (url.hostname.split(".")[0], url.port)
    assert url.hostname.split(".")[1] == "airflow"
    users = dict(
        u.split(":")[:2] for u in airflow_values["config"]["core"]["simple_auth_manager_users"].split(",")
    )
    assert settings["GBADZ_AIRFLOW__USERNAME"] in users
    (peer,) = [
        p for p in airflow_values["apiServer"]["networkPolicy"]["ingress"]["from"] if "namespaceSelector" in p
    ]
    egress = chart_values["networkPolicy"]["egress"]["airflow"]
    assert 8080 == egress["ports"][0]["port"]
    assert peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == "gbadz"


def test_the_init_container_uses_the_airflow_image(airflow_values: Values) -> None:
    (init,) = airflow_values["apiServer"]["extraInitContainers"]
    image = airflow_values["images"]["airflow"]
    assert f"{image['repository']}:{image['tag']}" == init["image"]
