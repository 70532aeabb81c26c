"""Data contracts: the shipped ones lint, and every kind of bad contract names file, field and reason."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import yaml

from gbadz.contract import Contract, ContractError, load_contract, parse_contract
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

    def test_folders(self, tmp_path: Path) -> None:
        """A folder lints every *.yaml/*.yml inside it, recursively and sorted; one bad file fails the run."""
        ok = run_cli(tmp_path, "contracts", "lint", str(REPO / "contracts"))
        assert 0 == ok.returncode, ok.stderr
        linted = [line.split()[1].rstrip(":") for line in ok.stdout.splitlines() if line.startswith("ok ")]
        assert [str(p) for p in CONTRACTS] == linted
        assert f"{len(CONTRACTS)} contract(s): {len(CONTRACTS)} valid, 0 with problems" in ok.stdout
        folder = tmp_path / "mine" / "nested"
        folder.mkdir(parents=True)
        (folder / "good.yml").write_text(GOOD)
        (folder / "bad.yaml").write_bytes(_mutated("bad duration"))
        (folder / "notes.txt").write_text("not a contract")
        result = run_cli(tmp_path, "contracts", "lint", str(tmp_path / "mine"))
        assert 1 == result.returncode
        assert f"{folder / 'bad.yaml'}: gbadz.licence.max_grant_duration:" in result.stderr
        assert f"ok {folder / 'good.yml'}:" in result.stdout
        assert "2 contract(s): 1 valid, 1 with problems" in result.stderr
        assert "Is a directory" not in result.stderr + result.stdout
        assert "notes.txt" not in result.stderr + result.stdout

    def test_devices_and_fifos_are_refused_at_once(self, tmp_path: Path) -> None:
        """/dev/zero (endless, no size) and a FIFO (its open would block) are not contracts: each is
        refused in one line naming it, at once, with bounded memory."""
        fifo = tmp_path / "contract.fifo"
        os.mkfifo(fifo)
        for path in ("/dev/zero", str(fifo)):
            result = run_cli(tmp_path, "contracts", "lint", path, timeout=60)
            assert 1 == result.returncode, result.stderr
            assert f"{path}: (file): not a regular file" in result.stderr
            assert "Traceback" not in result.stderr
        with pytest.raises(ContractError, match="not a regular file"):
            load_contract(Path("/dev/zero"))


MO = (REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text()
FIRST = "      - {name: arrival_date, logicalType: date, required: true}\n"
BILLION_LAUGHS = (
    "["
    + ", ".join(
        ['&a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
        + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 9)]
    )
    + "]"
)


def with_examples(flow: str) -> bytes:
    """The Macao contract with ``flow`` (raw YAML) as its first column's examples."""
    block = "      - name: arrival_date\n        logicalType: date\n        required: true\n"
    return MO.replace(FIRST, block + f"        examples: {flow}\n").encode()


EXAMPLES = "schema[0].properties[0].examples"


class TestCraftedYaml:
    @pytest.mark.parametrize(
        ("raw", "field", "reason"),
        [
            (with_examples(BILLION_LAUGHS), f"{EXAMPLES}[5]", "size budget for a contract"),
            (
                with_examples('[&s "' + "x" * 100_000 + '", ' + ", ".join(["*s"] * 60) + "]"),
                EXAMPLES,
                "size budget for a contract",
            ),
            (with_examples("&x [1, *x]"), f"{EXAMPLES}[1]", "refers to a collection that contains it"),
            (with_examples("[" * 40 + "]" * 40), f"{EXAMPLES}" + "[0]" * 27, "nested deeper than 32"),
            (with_examples("[" * 100_000 + "]" * 100_000), f"{EXAMPLES}" + "[0]" * 27, "nested deeper"),
            (
                with_examples("[" + ", ".join(["1"] * 60_000) + "]"),
                f"{EXAMPLES}[49960]",
                "more than 50,000 values",
            ),
            (with_examples("[!!binary aGVsbG8=]"), f"{EXAMPLES}[0]", "2002:binary is not allowed"),
            (with_examples("[!!python/object/apply:os.system [id]]"), f"{EXAMPLES}[0]", "is not allowed"),
            (
                MO.replace("maximum: 500000}", "maximum: " + "9" * 5000 + "}").encode(),
                "schema[0].properties[4].logicalTypeOptions.maximum",
                "an integer longer than 20 characters",
            ),
            (with_examples("[" + ", ".join(["1"] * 21) + "]"), EXAMPLES, "at most 20 examples"),
            (with_examples("[{a: 1}]"), EXAMPLES, "example [0] must be one value"),
            (with_examples('["' + "y" * 201 + '"]'), EXAMPLES, "at most 200 characters"),
            (with_examples("[2024-02-30]"), "line 17", "not a valid date or time"),
            (with_examples("[2024-01-01 25:00:00]"), "line 17", "not a valid date or time"),
        ],
        ids=[
            "billion-laughs",
            "aliased-long-string",
            "self-reference",
            "deep",
            "very-deep",
            "many-values",
            "binary",
            "python-tag",
            "5000-digit-integer",
            "too-many-examples",
            "nested-example",
            "long-example",
            "no-such-day",
            "no-such-hour",
        ],
    )
    def test_refused_naming_the_field_quickly(self, raw: bytes, field: str, reason: str) -> None:
        """A crafted contract is a lint error naming the field and the reason, within a bounded time."""
        started = time.monotonic()
        with pytest.raises(ContractError) as info:
            parse_contract(raw, "c.yaml")
        assert time.monotonic() - started < 2
        assert [field] == [loc for loc, _ in info.value.problems], info.value.problems
        assert reason in info.value.problems[0][1]

    def test_plain_examples_and_small_aliases_still_load(self) -> None:
        """Dates, numbers and a small alias are fine."""
        parse_contract(with_examples("[2026-01-01, 2026-02-01]"))
        assert [1, 2, 1, 2] == parse_contract(with_examples("[&p 1, &q 2, *p, *q]")).table.properties[
            0
        ].examples

    def test_stored_contract_examples_are_trimmed(self) -> None:
        """A contract stored before the bound loads with its examples trimmed, so its page stays small."""
        doc = yaml.safe_load(MO)
        doc["schema"][0]["properties"][0]["examples"] = ["z" * 10_000, [1, 2], *range(1000)]
        assert list(range(20)) == Contract.model_validate(doc).table.properties[0].examples
