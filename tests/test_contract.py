"""Data contracts: the shipped ones lint, and every kind of bad contract names file, field and reason."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gbadz.contract import ContractError, load_contract, parse_contract
from tests.conftest import REPO, run_cli

CONTRACTS = sorted((REPO / "contracts").rglob("*.yaml"))
GOOD = (REPO / "contracts" / "sz-hospital-outpatient-visits.yaml").read_text()


def _mutated(change: str) -> bytes:
    doc = yaml.safe_load(GOOD)
    if change == "missing id":
        del doc["id"]
    elif change == "unknown type":
        doc["schema"][0]["properties"][0]["logicalType"] = "varchar"
    elif change == "pi without protection":
        del doc["gbadz"]["columns"]["patient_name"]["protection"]
    elif change == "duplicate column":
        doc["schema"][0]["properties"].append(dict(doc["schema"][0]["properties"][1]))
    elif change == "bad duration":
        doc["gbadz"]["licence"]["max_grant_duration"] = "six months"
    elif change == "unknown jurisdiction":
        doc["gbadz"]["origin"] = "SG"
    elif change == "lower-case visible_to":
        doc["gbadz"]["visible_to"] = ["hk"]
    elif change == "spi unprotected":
        doc["gbadz"]["columns"]["diagnosis_icd10"]["protection"] = "none"
    elif change == "unknown column":
        doc["gbadz"]["columns"]["ssn"] = {"pi": True, "protection": "encrypt"}
    elif change == "bad regex":
        doc["schema"][0]["properties"][1]["logicalTypeOptions"]["pattern"] = "^P[0-9"
    elif change == "no subject identifier":
        doc["gbadz"]["columns"]["patient_id"]["subject_identifier"] = False
    return yaml.safe_dump(doc, allow_unicode=True).encode()


class TestShippedContracts:
    @pytest.mark.parametrize("path", CONTRACTS, ids=lambda p: p.name)
    def test_lints(self, path: Path) -> None:
        """Every contract in contracts/ is valid."""
        assert load_contract(path).id == path.stem

    def test_three_realistic_samples(self) -> None:
        """A Shenzhen hospital (sensitive), a Hong Kong logistics firm (PI) and a Macao tourism board (no PI)."""
        facts = {
            p.stem: (load_contract(p).gbadz.origin, load_contract(p).has_pi, load_contract(p).has_spi)
            for p in CONTRACTS
        }
        assert ("CN-SZ", True, True) == facts["sz-hospital-outpatient-visits"]
        assert ("HK", True, False) == facts["hk-logistics-deliveries"]
        assert ("MO", False, False) == facts["mo-tourism-visitor-arrivals"]


class TestBadContracts:
    @pytest.mark.parametrize(
        ("change", "field", "reason"),
        [
            ("missing id", "id", "Field required"),
            ("unknown type", "schema[0].properties[0].logicalType", "Input should be"),
            ("pi without protection", "gbadz.columns.patient_name", "needs a protection"),
            ("duplicate column", "schema[0]", "duplicate column name 'patient_id'"),
            ("bad duration", "gbadz.licence.max_grant_duration", "not an ISO 8601 duration"),
            ("unknown jurisdiction", "gbadz.origin", "CN-GZ CN-SZ"),
            ("lower-case visible_to", "gbadz.visible_to", "unknown jurisdiction 'hk'"),
            ("spi unprotected", "gbadz.columns.diagnosis_icd10", "cannot be unprotected"),
            ("unknown column", "gbadz.columns", "not in the schema: ssn"),
            (
                "bad regex",
                "schema[0].properties[1].logicalTypeOptions.pattern",
                "not a valid regular expression",
            ),
            ("no subject identifier", "(document)", "subject_identifier"),
        ],
    )
    def test_named_problem(self, change: str, field: str, reason: str) -> None:
        """Each problem names the field path and the reason."""
        with pytest.raises(ContractError) as info:
            parse_contract(_mutated(change), "c.yaml")
        matching = [(loc, msg) for loc, msg in info.value.problems if loc == field]
        assert matching, info.value.problems
        assert any(reason in msg for _, msg in matching), matching

    @pytest.mark.parametrize(
        ("raw", "reason"),
        [(b"- a\n- b\n", "not list"), (b"just text", "not str"), (b"a: [", "not valid YAML")],
    )
    def test_not_a_mapping(self, raw: bytes, reason: str) -> None:
        """YAML that is not a mapping, or not YAML, is refused."""
        with pytest.raises(ContractError, match=reason):
            parse_contract(raw, "c.yaml")

    def test_huge_file_refused_before_parsing(self, tmp_path: Path) -> None:
        """A 50 MB 'contract' is refused by size without being parsed."""
        big = tmp_path / "big.yaml"
        with big.open("wb") as fh:
            fh.write(b"# " + b"x" * (50 * 1024 * 1024) + b"\n")
        with pytest.raises(ContractError, match="over the 1,048,576-byte limit"):
            load_contract(big)


@pytest.mark.e2e
class TestLintCommand:
    def test_good_and_bad(self, tmp_path: Path) -> None:
        """`gbadz contracts lint` exits 0 on the shipped contracts, 1 naming file, field and reason otherwise."""
        ok = run_cli(tmp_path, "contracts", "lint", *[str(p) for p in CONTRACTS])
        assert 0 == ok.returncode, ok.stderr
        bad = tmp_path / "bad.yaml"
        bad.write_bytes(_mutated("bad duration"))
        result = run_cli(tmp_path, "contracts", "lint", str(bad), str(CONTRACTS[0]))
        assert 1 == result.returncode
        assert f"{bad}: gbadz.licence.max_grant_duration:" in result.stderr
        assert "Traceback" not in result.stderr
