"""The two Dockerfiles, read the way the builder reads them (dockerfile-parse)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import DEPLOY, REPO

IMAGES = DEPLOY / "images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
SECRET_NAME = re.compile(r"PASSWORD|SECRET|PASSPHRASE|TOKEN|FERNET|CREDENTIAL|_KEY$|^AWS_", re.IGNORECASE)


def parse(path: Path) -> list[dict[str, Any]]:
    parser = DockerfileParser(path=str(path))
    return list(parser.structure)


def stages(instructions: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    result: list[list[dict[str, Any]]] = []
    for item in instructions:
        if item["instruction"] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def env_names(value: str) -> list[str]:
    """Names set by one ENV instruction (KEY=VALUE pairs, or the legacy KEY VALUE form)."""
    words = shlex.split(value)
    if words and "=" not in words[0]:
        return [words[0]]
    return [w.split("=", 1)[0] for w in words]


def lock_pin(name: str) -> str:
    match = re.search(
        rf"^{re.escape(name)}==([^ ]+) ", (REPO / "requirements.lock").read_text(), re.MULTILINE
    )
    assert match, name
    return match.group(1)


def test_both_images_are_there() -> None:
    assert ["airflow.Dockerfile", "gbadz.Dockerfile"] == [p.name for p in DOCKERFILES]


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
class TestEveryImage:
    def test_base_images_are_pinned(self, path: Path) -> None:
        for item in parse(path):
            if item["instruction"] == "FROM":
                image = item["value"].split()[0]
                _, _, tag = image.partition(":")
                assert tag, image
                assert "latest" != tag, image
                assert re.match(r"\d+\.\d+\.\d+", tag), f"{image}: pin a full version, not a moving tag"

    def test_the_final_user_is_not_root(self, path: Path) -> None:
        final = stages(parse(path))[-1]
        users = [i["value"].strip() for i in final if i["instruction"] == "USER"]
        assert users, "the final stage runs as root"
        uid = users[-1].split(":")[0]
        assert uid.isdigit(), "a numeric uid, so runAsNonRoot can check it"
        assert 0 != int(uid)

    def test_no_secret_in_env_or_args(self, path: Path) -> None:
        for item in parse(path):
            if item["instruction"] in {"ENV", "ARG"}:
                for name in env_names(item["value"]):
                    assert not SECRET_NAME.search(name), f"{path.name}:{item['startline'] + 1} {name}"

    def test_the_lock_is_copied_before_the_source(self, path: Path) -> None:
        copies = [i for i in parse(path) if i["instruction"] == "COPY"]
        lock = next(n for n, i in enumerate(copies) if "requirements.lock" in i["value"])
        source = next(n for n, i in enumerate(copies) if re.search(r"(^|\s)platform(\s|$)", i["value"]))
        assert lock < source

    def test_dependencies_install_with_hashes_from_the_default_index(self, path: Path) -> None:
        runs = " ".join(i["value"] for i in parse(path) if i["instruction"] == "RUN")
        assert "uv pip sync --require-hashes" in runs
        assert "pip install --require-hashes" in runs
        assert "--no-deps" in runs
        assert not re.search(r"--(extra-)?index-url|--find-links|https?://", runs)

    def test_dags_are_baked_in(self, path: Path) -> None:
        assert any(i["instruction"] == "COPY" and i["value"].split()[-2] == "dags" for i in parse(path))


class TestGbadzImage:
    path = IMAGES / "gbadz.Dockerfile"

    def test_multi_stage_on_python_311_slim(self) -> None:
        froms = [i["value"].split() for i in parse(self.path) if i["instruction"] == "FROM"]
        assert 2 == len(froms)
        python = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
        assert ">=3.11,<3.12" == python
        for words in froms:
            assert words[0].startswith("python:3.11."), words
            assert "-slim" in words[0], words

    def test_the_final_stage_takes_only_the_virtualenv_from_the_build(self) -> None:
        final = stages(parse(self.path))[-1]
        from_build = [i["value"] for i in final if i["instruction"] == "COPY" and "--from=" in i["value"]]
        assert ["--from=build /opt/gbadz /opt/gbadz"] == from_build
        runs = " ".join(i["value"] for i in final if i["instruction"] == "RUN")
        for tool in ("gcc", "build-essential", "pip install", "uv ", "git"):
            assert tool not in runs, tool

    def test_serves_with_a_healthcheck_on_healthz(self) -> None:
        final = stages(parse(self.path))[-1]
        by = {i["instruction"]: i["value"] for i in final}
        assert '["gbadz"]' == by["ENTRYPOINT"]
        assert '["serve"]' == by["CMD"]
        assert "http://127.0.0.1:8000/healthz" in by["HEALTHCHECK"]
        assert "GBADZ_API__HOST=0.0.0.0" in " ".join(i["value"] for i in final if i["instruction"] == "ENV")

    def test_runs_in_production_mode(self) -> None:
        env = " ".join(i["value"] for i in parse(self.path) if i["instruction"] == "ENV")
        assert "GBADZ_ENV=prod" in env


class TestAirflowImage:
    path = IMAGES / "airflow.Dockerfile"

    def test_the_official_image_of_the_locked_airflow(self) -> None:
        (base,) = [i["value"] for i in parse(self.path) if i["instruction"] == "FROM"]
        assert f"apache/airflow:{lock_pin('apache-airflow')}-python3.11" == base

    def test_the_build_fails_without_a_working_celery(self) -> None:
        runs = " ".join(i["value"] for i in parse(self.path) if i["instruction"] == "RUN")
        assert "airflow.providers.celery.executors.celery_executor" in runs
        assert "5.7.0" in runs


def test_dockerignore_lets_in_only_what_the_images_copy() -> None:
    lines = [
        line
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert "*" == lines[0], "deny by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for path in DOCKERFILES:
        for item in parse(path):
            if item["instruction"] == "COPY" and "--from=" not in item["value"]:
                copied.update(w.rstrip("/") for w in item["value"].split()[:-1] if not w.startswith("--"))
    assert copied == allowed
    for secret in (".env", "deploy/.env", ".gbadz", ".venv"):
        assert secret not in allowed
