"""The gbadz chart, rendered by the real Helm and checked against Kubernetes' own schemas."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gbadz.config import Settings
from tests.deploy.conftest import (
    CHART,
    KUBERNETES_VERSIONS,
    SECRET_SETTINGS,
    host_violations,
    pod_specs,
    render_chart,
    run_helm,
)

Docs = list[dict[str, Any]]
ByKind = Callable[[str], Docs]


def test_helm_lint_strict() -> None:
    result = run_helm("lint", "--strict", str(CHART))
    assert 0 == result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_kubernetes(version: str) -> None:
    """Strict: an unknown or misspelt field is an error, not something the API server drops."""
    docs = render_chart(kube_version=version)
    assert {"NetworkPolicy", "PodDisruptionBudget", "ConfigMap", "Service", "Deployment", "Job"} == {
        d["kind"] for d in docs
    }
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_what_a_cluster_would() -> None:
    """The check above can fail: a misspelt probe field is refused under the same schema."""
    docs = render_chart()
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGett"] = container["readinessProbe"].pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[-1], strict=True)


class TestWorkloads:
    def test_two_replicas_with_both_probes(self, by_kind: ByKind) -> None:
        (deployment,) = by_kind("Deployment")
        assert 2 == deployment["spec"]["replicas"]
        for doc in by_kind("Deployment"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                assert "/readyz" == container["readinessProbe"]["httpGet"]["path"], container["name"]
                assert "/healthz" == container["livenessProbe"]["httpGet"]["path"], container["name"]
                assert "/healthz" == container["startupProbe"]["httpGet"]["path"], container["name"]

    def test_rolling_update_keeps_every_replica_serving(self, by_kind: ByKind) -> None:
        (deployment,) = by_kind("Deployment")
        assert {"maxUnavailable": 0, "maxSurge": 1} == deployment["spec"]["strategy"]["rollingUpdate"]

    def test_resources_are_bounded(self, rendered: Docs) -> None:
        for name, spec in pod_specs(rendered):
            for container in spec["containers"]:
                assert container["resources"]["requests"]["memory"], name
                assert container["resources"]["limits"]["memory"], name

    def test_pods_run_unprivileged_with_a_read_only_root(self, rendered: Docs) -> None:
        specs = pod_specs(rendered)
        assert {"gbadz", "gbadz-migrate"} == {name for name, _ in specs}
        for name, spec in specs:
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["runAsUser"] != 0, name
            assert "RuntimeDefault" == spec["securityContext"]["seccompProfile"]["type"], name
            assert spec["automountServiceAccountToken"] is False, name
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["readOnlyRootFilesystem"] is True, name
                assert context["allowPrivilegeEscalation"] is False, name
                assert ["ALL"] == context["capabilities"]["drop"], name

    def test_nothing_reaches_the_host(self, rendered: Docs) -> None:
        """No hostPort, host namespace, hostPath volume or privileged container, anywhere."""
        assert [] == host_violations(rendered)

    def test_the_host_check_sees_each_violation(self, rendered: Docs) -> None:
        bad = copy.deepcopy(next(d for d in rendered if d["kind"] == "Deployment"))
        spec = bad["spec"]["template"]["spec"]
        spec["hostNetwork"] = True
        spec["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
        spec["containers"][0]["securityContext"]["privileged"] = True
        spec["containers"][0]["ports"][0]["hostPort"] = 8000
        assert 4 == len(host_violations([bad]))

    def test_writable_paths_are_volumes(self, by_kind: ByKind) -> None:
        """With a read-only root, /tmp and the home are emptyDirs and the keyring the shared claim."""
        (deployment,) = by_kind("Deployment")
        spec = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert "emptyDir" in volumes[mounts["/var/lib/gbadz"]]
        assert "gbadz-keys" == volumes[mounts["/var/lib/gbadz-keys"]]["persistentVolumeClaim"]["claimName"]
        env = {e["name"]: e for e in spec["containers"][0]["env"]}
        assert "/var/lib/gbadz-keys/keyring.bin" == env["GBADZ_CRYPTO__KEYRING_PATH"]["value"]


class TestSecrets:
    def test_the_chart_renders_no_secret(self, rendered: Docs) -> None:
        assert [] == [d["metadata"]["name"] for d in rendered if d["kind"] == "Secret"]

    def test_secret_settings_come_only_from_the_existing_secret(self, rendered: Docs) -> None:
        for name, spec in pod_specs(rendered):
            env = {e["name"]: e for e in spec["containers"][0]["env"]}
            for key in SECRET_SETTINGS:
                assert "value" not in env[key], (name, key)
                assert {"name": "gbadz-secrets", "key": key} == env[key]["valueFrom"]["secretKeyRef"]

    def test_no_literal_secret_anywhere(self, rendered: Docs, by_kind: ByKind) -> None:
        (config_map,) = by_kind("ConfigMap")
        assert not set(config_map["data"]) & set(SECRET_SETTINGS)
        for name, spec in pod_specs(rendered):
            for item in spec["containers"][0]["env"]:
                if any(word in item["name"] for word in ("PASSWORD", "SECRET", "PASSPHRASE", "TOKEN")):
                    assert "value" not in item, (name, item["name"])

    def test_a_secret_in_values_is_refused(self) -> None:
        result = run_helm("template", "gbadz", str(CHART), "--set", "settings.GBADZ_CRYPTO__PASSPHRASE=x" * 1)
        assert 0 != result.returncode
        assert "is a secret: put it in the Secret gbadz-secrets" in result.stderr

    def test_values_hold_no_secret(self, chart_values: dict[str, Any]) -> None:
        assert not set(chart_values["settings"]) & set(SECRET_SETTINGS)


class TestMigrationHook:
    def test_runs_db_upgrade_before_install_and_upgrade(self, by_kind: ByKind) -> None:
        (job,) = by_kind("Job")
        annotations = job["metadata"]["annotations"]
        assert {"pre-install", "pre-upgrade"} == set(annotations["helm.sh/hook"].split(","))
        assert "before-hook-creation" == annotations["helm.sh/hook-delete-policy"]
        command = " ".join(job["spec"]["template"]["spec"]["containers"][0]["command"])
        assert "gbadz db upgrade" in command
        assert "Never" == job["spec"]["template"]["spec"]["restartPolicy"]

    def test_gets_the_same_settings_as_the_api(self, by_kind: ByKind) -> None:
        """A pre-install hook runs before the ConfigMap exists: the Job carries them inline."""
        (job,) = by_kind("Job")
        (config_map,) = by_kind("ConfigMap")
        env = {e["name"]: e.get("value") for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert config_map["data"] == {k: env[k] for k in config_map["data"]}


class TestSelectors:
    def test_service_and_pdb_select_the_api_pods(self, by_kind: ByKind) -> None:
        (deployment,) = by_kind("Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        (service,) = by_kind("Service")
        (pdb,) = by_kind("PodDisruptionBudget")
        assert service["spec"]["selector"].items() <= labels.items()
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert 1 == pdb["spec"]["minAvailable"]

    def test_a_config_change_rolls_the_pods(self, by_kind: ByKind) -> None:
        (deployment,) = by_kind("Deployment")
        before = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        changed = render_chart("--set", "settings.GBADZ_LOG_LEVEL=DEBUG")
        after = next(d for d in changed if d["kind"] == "Deployment")
        assert before != after["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


class TestNetworkPolicies:
    def policies(self, by_kind: ByKind) -> dict[str, dict[str, Any]]:
        return {p["metadata"]["name"]: p["spec"] for p in by_kind("NetworkPolicy")}

    def test_default_deny_covers_every_pod_both_ways(self, by_kind: ByKind) -> None:
        deny = self.policies(by_kind)["gbadz-default-deny"]
        assert {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]} == deny

    def test_api_ingress_only_from_the_ingress_controller(self, by_kind: ByKind) -> None:
        spec = self.policies(by_kind)["gbadz-api-ingress"]
        (rule,) = spec["ingress"]
        (peer,) = rule["from"]
        assert {"kubernetes.io/metadata.name": "ingress-nginx"} == peer["namespaceSelector"]["matchLabels"]
        assert [{"port": "http", "protocol": "TCP"}] == rule["ports"]
        assert "api" == spec["podSelector"]["matchLabels"]["app.kubernetes.io/component"]

    def test_egress_only_to_postgres_s3_airflow_and_dns(self, by_kind: ByKind) -> None:
        spec = self.policies(by_kind)["gbadz-egress"]
        ports = sorted((p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"])
        assert [(53, "TCP"), (53, "UDP"), (5432, "TCP"), (8080, "TCP"), (8333, "TCP")] == ports
        for rule in spec["egress"]:
            assert rule["to"], "an egress rule without peers allows every destination"
            for peer in rule["to"]:
                assert peer.get("namespaceSelector", {}).get("matchLabels") or "ipBlock" in peer
        # The migration Job is selected too (same name and instance labels, no component).
        assert "app.kubernetes.io/component" not in spec["podSelector"]["matchLabels"]

    def test_an_egress_rule_without_peers_is_refused(self) -> None:
        result = run_helm("template", "gbadz", str(CHART), "--set", "networkPolicy.egress.s3.to=null")
        assert 0 != result.returncode
        assert "networkPolicy.egress.s3.to is empty" in result.stderr


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "ab" * 32
    docs = render_chart("--set", f"image.digest={digest}", "--set", "image.repository=gbadz")
    for _, spec in pod_specs(docs):
        assert f"gbadz@{digest}" == spec["containers"][0]["image"]


def test_rendered_yaml_parses_as_one_stream(rendered_text: str) -> None:
    assert len([d for d in yaml.safe_load_all(rendered_text) if d]) == len(render_chart())


def test_the_settings_are_accepted_by_gbadz(by_kind: ByKind, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap plus the Secret's keys build gbadz's Settings (as the pods will)."""
    (config_map,) = by_kind("ConfigMap")
    for key in list(os.environ):  # noqa: TID251 - a clean GBADZ_* environment for Settings()
        if key.startswith("GBADZ_"):
            monkeypatch.delenv(key)
    secrets = {
        "GBADZ_DB__URL": "postgresql://gbadz@postgres.databases:5432/gbadz",
        "GBADZ_S3__ACCESS_KEY": "gbadz",
        "GBADZ_S3__SECRET_KEY": "x" * 40,
        "GBADZ_CRYPTO__PASSPHRASE": "y" * 40,
        "GBADZ_AIRFLOW__PASSWORD": "z" * 40,
    }
    for key, value in (config_map["data"] | secrets).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert "prod" == settings.env
    assert ["10.0.0.0/8"] == settings.api.trusted_proxies


def test_optional_parts_can_be_turned_off() -> None:
    """Without the policies (a CNI that enforces none) or the hook (migrations run by hand)."""
    docs = render_chart("--set", "networkPolicy.enabled=false", "--set", "migration.enabled=false")
    assert {"PodDisruptionBudget", "ConfigMap", "Service", "Deployment"} == {d["kind"] for d in docs}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[0], strict=True)
