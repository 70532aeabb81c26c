"""yamllint over deploy/ and over what Helm renders from the gbadz chart."""

from __future__ import annotations

from pathlib import Path

from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.conftest import DEPLOY

CONFIG = YamlLintConfig(file=str(DEPLOY / ".yamllint.yaml"))


def problems(text: str, path: Path) -> list[str]:
    return [f"{path}:{p.line}:{p.column} {p.message}" for p in linter.run(text, CONFIG, str(path))]


def test_every_yaml_file_of_deploy_is_clean() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"} or p.name == ".yamllint.yaml"]
    checked = [p for p in files if not CONFIG.is_file_ignored(str(p.relative_to(DEPLOY.parent)))]
    assert {"compose.yaml", "airflow-values.yaml", "values.yaml", "Chart.yaml"} <= {p.name for p in checked}
    found = [msg for p in checked for msg in problems(p.read_text(encoding="utf-8"), p)]
    assert [] == found


def test_templates_are_linted_as_rendered(rendered_text: str) -> None:
    """Go templates are not YAML: the chart's templates are linted through their output."""
    assert [] == problems(rendered_text, Path("rendered.yaml"))


def test_lint_catches_a_duplicate_key() -> None:
    assert problems("a: 1\na: 2\n", Path("dup.yaml"))
