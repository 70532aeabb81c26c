"""deploy/compose.yaml: the compose spec's schema, bring-up order, exposure and secrets."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from gbadz.config import Settings
from tests.deploy.conftest import DEPLOY, REPO

CHECK_JSONSCHEMA = str(Path(sys.prefix) / "bin" / "check-jsonschema")
INTERPOLATION = re.compile(r"\$\{([A-Z0-9_]+)(?:(:?[-?])([^}]*))?\}")
SECRET_WORDS = (
    "PASSWORD",
    "SECRET",
    "PASSPHRASE",
    "FERNET",
    "ACCESS_KEY",
    "SQL_ALCHEMY_CONN",
    "BROKER_URL",
    "DB__URL",
)


def check_compose_schema(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the compose spec it vendors: no schema is downloaded."""
    return subprocess.run(
        [CHECK_JSONSCHEMA, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / ".env.example").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def interpolate(value: str, env: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if name in env:
            return env[name]
        if op and op.endswith("-"):
            return arg
        raise KeyError(name)

    return INTERPOLATION.sub(one, value)


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def airflow_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services(compose).items() if s.get("image") == "gbadz-airflow:local"}


def test_valid_against_the_compose_spec() -> None:
    result = check_compose_schema(DEPLOY / "compose.yaml")
    assert 0 == result.returncode, result.stdout + result.stderr


def test_the_schema_check_can_fail(tmp_path: Path) -> None:
    broken = (DEPLOY / "compose.yaml").read_text(encoding="utf-8").replace("healthcheck:", "healthchek:", 1)
    (tmp_path / "compose.yaml").write_text(broken, encoding="utf-8")
    assert 0 != check_compose_schema(tmp_path / "compose.yaml").returncode


class TestExposure:
    def test_ports_are_published_on_loopback_only(self, compose: dict[str, Any]) -> None:
        published = {n: s["ports"] for n, s in services(compose).items() if "ports" in s}
        assert {"gbadz-api-1", "gbadz-api-2", "airflow-api-server"} == set(published)
        for name, ports in published.items():
            for port in ports:
                assert str(port).startswith("127.0.0.1:"), (name, port)

    def test_nothing_privileged_or_on_the_host(self, compose: dict[str, Any]) -> None:
        for name, service in services(compose).items():
            assert not service.get("privileged"), name
            assert service.get("network_mode") is None, name
            assert service.get("pid") is None, name
            assert service.get("ipc") is None, name
            assert not service.get("cap_add"), name
            for volume in service.get("volumes", []):
                source = str(volume).split(":", 1)[0]
                assert "docker.sock" not in str(volume), name
                # Named volumes only, but the read-only init script of PostgreSQL.
                if source.startswith((".", "/")):
                    assert str(volume).endswith(":ro"), (name, volume)
                    assert "./compose/postgres-init.sh" == source, (name, volume)

    def test_api_containers_have_a_read_only_root(self, compose: dict[str, Any]) -> None:
        for name in ("gbadz-init", "gbadz-api-1", "gbadz-api-2"):
            assert services(compose)[name]["read_only"] is True, name


class TestBringUpOrder:
    def test_long_running_services_have_healthchecks(self, compose: dict[str, Any]) -> None:
        for name, service in services(compose).items():
            if service.get("restart") != "no":
                assert service["healthcheck"]["test"], name

    def test_dependencies_wait_for_health_or_completion(self, compose: dict[str, Any]) -> None:
        all_services = services(compose)
        for name, service in all_services.items():
            depends = service.get("depends_on", {})
            assert isinstance(depends, dict), f"{name}: depends_on without conditions starts too early"
            for dependency, rule in depends.items():
                one_shot = all_services[dependency].get("restart") == "no"
                expected = "service_completed_successfully" if one_shot else "service_healthy"
                assert expected == rule["condition"], (name, dependency)

    @pytest.mark.parametrize(
        ("service", "waits_for"),
        [
            ("gbadz-init", {"postgres", "seaweedfs"}),
            ("airflow-init", {"postgres", "redis"}),
            ("airflow-api-server", {"airflow-init"}),
            ("airflow-scheduler", {"airflow-api-server"}),
            ("airflow-dag-processor", {"airflow-api-server"}),
            ("airflow-worker", {"airflow-api-server", "gbadz-init"}),
            ("gbadz-api-1", {"gbadz-init", "airflow-api-server"}),
            ("gbadz-api-2", {"gbadz-init", "airflow-api-server"}),
        ],
    )
    def test_order(self, compose: dict[str, Any], service: str, waits_for: set[str]) -> None:
        """Database and storage, then the migrations, then Airflow's api-server, then the rest."""
        assert waits_for == set(services(compose)[service]["depends_on"])

    def test_the_migration_job_migrates_creates_buckets_and_checks(self, compose: dict[str, Any]) -> None:
        command = " ".join(services(compose)["gbadz-init"]["command"])
        assert "gbadz db upgrade && gbadz storage init && gbadz check" == command


class TestSecrets:
    def test_secret_values_are_interpolated_never_written(self, compose: dict[str, Any]) -> None:
        for name, service in services(compose).items():
            for key, value in (service.get("environment") or {}).items():
                if any(word in key for word in SECRET_WORDS) and not key.endswith(("_PATH", "_FILE")):
                    refs = INTERPOLATION.findall(str(value))
                    assert refs, (name, key)
                    assert all(op == ":?" for _, op, _ in refs), f"{name}.{key}: a secret has no default"

    def test_every_variable_is_in_the_example(self) -> None:
        text = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
        used = {m.group(1) for m in INTERPOLATION.finditer(text)}
        assert used <= set(env_example()), used - set(env_example())

    def test_the_example_holds_only_placeholders(self) -> None:
        for key, value in env_example().items():
            if key != "GBADZ_PUBLIC_URL":
                assert value in {"<generate>", "<generate-fernet>"}, key

    def test_the_real_env_file_is_ignored_by_git(self) -> None:
        result = subprocess.run(
            ["git", "check-ignore", "-q", "deploy/.env"], cwd=REPO, check=False, capture_output=True
        )
        assert 0 == result.returncode
        tracked = subprocess.run(
            ["git", "ls-files", "deploy/.env.example"], cwd=REPO, check=True, capture_output=True, text=True
        )
        assert "deploy/.env.example" == tracked.stdout.strip()


class TestAirflow:
    def test_celery_executor_with_redis(self, compose: dict[str, Any]) -> None:
        for name, service in airflow_services(compose).items():
            env = service["environment"]
            assert "CeleryExecutor" == env["AIRFLOW__CORE__EXECUTOR"], name
            assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://:${REDIS_PASSWORD"), name

    def test_every_component_shares_jwt_secret_and_execution_api(self, compose: dict[str, Any]) -> None:
        components = airflow_services(compose)
        assert {
            "airflow-init",
            "airflow-api-server",
            "airflow-scheduler",
            "airflow-dag-processor",
            "airflow-worker",
        } == set(components)
        for key in (
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            "AIRFLOW__CORE__FERNET_KEY",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        ):
            assert 1 == len({c["environment"][key] for c in components.values()}), key
        url = urlsplit(components["airflow-worker"]["environment"]["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
        assert ("airflow-api-server", 8080, "/execution/") == (url.hostname, url.port, url.path)
        assert "--port 8080" in " ".join(components["airflow-api-server"]["command"])

    def test_no_log_server_listens(self, compose: dict[str, Any]) -> None:
        """Log servers bind every interface: the scheduler and worker serve none (shared volume)."""
        components = airflow_services(compose)
        for name in ("airflow-scheduler", "airflow-worker"):
            assert "--skip-serve-logs" in " ".join(components[name]["command"]), name
        for name, service in components.items():
            assert "airflow-logs:/opt/airflow/logs" in service["volumes"], name

    def test_only_the_worker_gets_gbadz_secrets(self, compose: dict[str, Any]) -> None:
        for name, service in airflow_services(compose).items():
            has = "GBADZ_CRYPTO__PASSPHRASE" in service["environment"]
            assert has == (name == "airflow-worker"), name
        worker = airflow_services(compose)["airflow-worker"]["environment"]
        assert "CeleryExecutor" == worker["AIRFLOW__CORE__EXECUTOR"]

    def test_airflow_runs_as_the_keyring_owner(self, compose: dict[str, Any]) -> None:
        dockerfile = (DEPLOY / "images" / "gbadz.Dockerfile").read_text(encoding="utf-8")
        (uid,) = re.findall(r"^USER (\d+):\d+$", dockerfile, flags=re.MULTILINE)
        for name, service in airflow_services(compose).items():
            assert service["user"].split(":")[0] == uid, name
        holders = {
            n
            for n, s in services(compose).items()
            if "gbadz-keys:/var/lib/gbadz-keys" in s.get("volumes", [])
        }
        assert {"gbadz-init", "gbadz-api-1", "gbadz-api-2", "airflow-worker"} == holders


class TestGbadzApi:
    def test_two_replicas_trigger_airflow(self, compose: dict[str, Any]) -> None:
        api_server = services(compose)["airflow-api-server"]
        users = dict(
            u.split(":")[:2]
            for u in api_server["environment"]["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
        )
        for name in ("gbadz-api-1", "gbadz-api-2"):
            env = services(compose)[name]["environment"]
            assert "airflow" == env["GBADZ_INGEST__WORKER_MODE"]
            assert "true" == env["GBADZ_INGEST__WORKER"]
            assert "http://airflow-api-server:8080" == env["GBADZ_AIRFLOW__URL"]
            assert env["GBADZ_AIRFLOW__USERNAME"] in users
            assert "gbadz_ingest" == env["GBADZ_AIRFLOW__DAG_ID"]

    def test_settings_are_accepted_by_gbadz(
        self, compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The API replicas' environment, with the generated secrets, builds gbadz's Settings."""
        secrets = dict.fromkeys(env_example(), "x" * 86) | {"GBADZ_PUBLIC_URL": "https://gbadz.example.org"}
        for key in list(os.environ):  # noqa: TID251 - a clean GBADZ_* environment for Settings()
            if key.startswith("GBADZ_"):
                monkeypatch.delenv(key)
        for key, value in services(compose)["gbadz-api-1"]["environment"].items():
            monkeypatch.setenv(key, interpolate(str(value), secrets))
        settings = Settings()
        assert "prod" == settings.env
        assert "http://seaweedfs:8333" == settings.s3.endpoint_url
        assert "https://gbadz.example.org" == settings.oauth.issuer
        assert "airflow" == settings.ingest.worker_mode
