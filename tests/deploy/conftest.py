"""Fixtures of the deploy/ checks: the repository's files and the gbadz chart rendered by Helm.

Nothing here starts a server or reaches the network: the chart is rendered by the Helm binary
`make setup` installs (ADR 0029), the schemas come from installed packages.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHART = DEPLOY / "helm" / "gbadz"
# The Kubernetes versions the chart is checked against: the oldest its Chart.yaml admits and
# the one the pinned Helm 4.1.4 was built for.
KUBERNETES_VERSIONS = ("1.29.0", "1.35.0")
# The same names as deploy/helm/gbadz/templates/_helpers.tpl's gbadz.secretEnv.
SECRET_SETTINGS = (
    "GBADZ_DB__URL",
    "GBADZ_S3__ACCESS_KEY",
    "GBADZ_S3__SECRET_KEY",
    "GBADZ_CRYPTO__PASSPHRASE",
    "GBADZ_AIRFLOW__PASSWORD",
)


def helm_binary() -> str:
    beside = Path(sys.prefix) / "bin" / "helm"
    found = str(beside) if beside.exists() else shutil.which("helm")
    if found is None:
        pytest.fail("no helm binary: `make helm` installs the pinned Helm into .venv/bin (ADR 0029)")
    return found


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [helm_binary(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        # No repository, cache or plugin of the caller's: an offline, reproducible render.
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "HELM_NO_PLUGINS": "1"},
    )


def render_chart(*extra: str, kube_version: str = KUBERNETES_VERSIONS[-1]) -> list[dict[str, Any]]:
    result = run_helm(
        "template", "gbadz", str(CHART), "--namespace", "gbadz", "--kube-version", kube_version, *extra
    )
    assert 0 == result.returncode, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> list[dict[str, Any]]:
    """The chart with its default values, as `helm install` would apply it."""
    return render_chart()


@pytest.fixture(scope="session")
def rendered_text() -> str:
    result = run_helm("template", "gbadz", str(CHART), "--namespace", "gbadz")
    assert 0 == result.returncode, result.stderr
    return result.stdout


@pytest.fixture(scope="session")
def by_kind(rendered: list[dict[str, Any]]) -> Callable[[str], list[dict[str, Any]]]:
    def pick(kind: str) -> list[dict[str, Any]]:
        return [doc for doc in rendered if doc["kind"] == kind]

    return pick


@pytest.fixture(scope="session")
def chart_values() -> dict[str, Any]:
    return yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """compose.yaml with its anchors and merge keys resolved, as `docker compose` reads it."""
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def airflow_values() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "helm" / "airflow-values.yaml").read_text(encoding="utf-8"))


def pod_specs(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(name, pod spec) of every workload in the documents."""
    specs = []
    for doc in docs:
        spec = doc.get("spec", {})
        if doc["kind"] == "Pod":
            specs.append((doc["metadata"]["name"], spec))
        elif doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"}:
            specs.append((doc["metadata"]["name"], spec["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            specs.append((doc["metadata"]["name"], spec["jobTemplate"]["spec"]["template"]["spec"]))
    return specs


def host_violations(docs: list[dict[str, Any]]) -> list[str]:
    """What in these manifests reaches the host: hostPort, host namespaces, hostPath, privileged."""
    found = []
    for name, spec in pod_specs(docs):
        found += [f"{name}: {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
        found += [f"{name}: hostPath {v['name']}" for v in spec.get("volumes", []) if "hostPath" in v]
        for container in spec["containers"] + spec.get("initContainers", []):
            if container.get("securityContext", {}).get("privileged"):
                found.append(f"{name}/{container['name']}: privileged")
            found += [
                f"{name}/{container['name']}: hostPort" for p in container.get("ports", []) if "hostPort" in p
            ]
    return found
