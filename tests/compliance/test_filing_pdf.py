"""The filing annex PDF: bilingual, readable by poppler, wraps and paginates, embeds its CJK font.

The PDF is checked with Debian's poppler-utils (installed by `make setup`): `pdftotext` for the
words, `pdfinfo` for the page count, `pdffonts` for the embedded font and `pdftoppm` for a
picture of the first page, saved in test-artifacts/ for a human to look at.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gbadz.compliance import filing_pdf
from tests.conftest import REPO

REFERENCE = "GD-GBA-SC-HK-2026-00417"


def _package() -> dict[str, Any]:
    """A Shenzhen hospital group's outpatient records to a Hong Kong health-tech startup."""
    return {
        "format": "gbadz-filing-package/1",
        "generated_at": "2026-12-02T10:00:00+08:00",
        "mechanism": {
            "kind": "GBA_SC",
            "variant": "GBA_SC_HK",
            "reference": REFERENCE,
            "authority": "GD_CAC 广东省互联网信息办公室",
            "effective_date": "2026-11-20",
            "filing_date": "2026-12-02",
            "filing_due": "2026-12-30",
        },
        "exporter": {
            "name": "深圳市康湾医疗集团有限公司",
            "registration_no": "91440300MA5GBA0417",
            "jurisdiction": "CN-SZ",
            "jurisdiction_name": "Shenzhen",
            "contact": "李敏 (数据合规官) dpo@kangwan-health.cn",
        },
        "recipient": {
            "name": "Harbour Health Analytics Limited 港湾健康分析有限公司",
            "registration_no": "CR 3318842",
            "jurisdiction": "HK",
            "jurisdiction_name": "Hong Kong",
            "contact": "Chan Tai Man, privacy@harbourhealth.hk",
        },
        "transfers": [
            {
                "dataset_id": "ds-sz-outpatient-2026",
                "dataset_title": "门诊就诊记录",
                "purpose_code": "trade_transport_academic_mfg_marketing",
                "purpose_text": "Joint research on chronic-disease triage models for GBA outpatient clinics "
                "用于大湾区门诊慢病分诊模型的联合科研",
                "columns": [
                    "patient_pseudonym",
                    "visit_date",
                    "department",
                    "diagnosis_icd10",
                    "prescription_atc",
                    "age_band",
                    "sex",
                    "district",
                ],
                "pi_categories": ["identifiers", "demographics", "health_records"],
                "spi_categories": ["medical_health"],
                "n_individuals": 31641,
                "n_spi_individuals": 31641,
                "storage_location": "Hong Kong (Tseung Kwan O data centre) 香港将军澳数据中心",
                "retention": "3 years after the end of the research project 科研项目结束后三年",
                "onward_recipients": [],
                "onward_transfer": "Not permitted without the exporter's written consent and a new filing "
                "未经出境方书面同意并重新备案不得再转移",
                "grant_id": "grant-7f3a",
                "granted_at": "2026-11-20T09:00:00+08:00",
                "expires_at": "2027-11-19T23:59:59+08:00",
            }
        ],
        "pipia": {
            "reference": "PIPIA-2026-031",
            "date": "2026-10-28",
            "retain_until": "2029-10-28",
            "summary": "Pseudonymised outpatient records; re-identification risk assessed as low with "
            "k-anonymity ≥ 10 per district and age band. 出境数据已去标识化，重识别风险评估为低。" * 3,
        },
        "determination": {
            "outcome": "GBA_SC",
            "rule_id": "gba.sc.hk.health",
            "legal_basis": "PIPL Art.38(1)(3); GBA Standard Contract implementation guideline (Mainland–HK) Art.2",
            "approvers": [
                {
                    "step": "provider",
                    "by": "王芳 (provider steward)",
                    "at": "2026-11-18T15:02:00+08:00",
                    "note": None,
                },
                {
                    "step": "compliance",
                    "by": "Grace Ho (compliance)",
                    "at": "2026-11-19T10:40:00+08:00",
                    "note": "SPI confirmed; separate consent records sampled 单独同意记录已抽查",
                },
            ],
        },
    }


def _poppler(tool: str, *args: str | Path) -> str:
    """Run a poppler-utils tool; its absence fails the test with how to install it."""
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} not found: `make setup` installs poppler-utils (apt-get install poppler-utils)")
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, check=True).stdout


def _write(tmp_path: Path, name: str, package: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_bytes(filing_pdf.render_pdf(package))
    return path


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("filing"), "annex.pdf", _package())


class TestRealisticPackage:
    def test_first_page_renders_to_png(self, realistic: Path, tmp_path: Path) -> None:
        """pdftoppm draws the first page; the picture is kept in test-artifacts/ to be looked at."""
        assert realistic.read_bytes().startswith(b"%PDF")
        _poppler("pdftoppm", "-png", "-r", "60", "-f", "1", "-l", "1", realistic, tmp_path / "page")
        (png,) = tmp_path.glob("page-*.png")
        assert png.stat().st_size > 20_000
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(png, artifacts / "filing-package.png")

    def test_text_is_bilingual_and_complete(self, realistic: Path) -> None:
        text = _poppler("pdftotext", "-layout", realistic, "-")
        for expected in (
            "个人信息出境备案附件",
            "Filing annex for outbound transfer of personal information",
            "个人信息保护影响评估",
            "PIPIA",
            "合同当事方 Parties",
            "接收方 Recipient",
            "深圳市康湾医疗集团有限公司",
            "Harbour Health Analytics Limited",
            REFERENCE,
            "31,641",
            "门诊就诊记录",
            "Joint research on chronic-disease triage models",
            "medical_health",
            "第 1 页 / Page 1",
        ):
            assert expected in text, expected

    def test_font_is_embedded_simplified_chinese_subset(self, realistic: Path) -> None:
        """Only the glyphs used are embedded, from the Simplified Chinese face of the collection."""
        fonts = _poppler("pdffonts", realistic)
        (row,) = [line for line in fonts.splitlines() if "NotoSansCJKSC" in line]
        assert re.match(r"[A-Z]{6}\+NotoSansCJKSC\s.*\byes\s+yes\s+yes\b", row), row
        assert realistic.stat().st_size < 200_000


def test_many_transfers_span_pages_and_all_appear(tmp_path: Path) -> None:
    package = _package()
    template = package["transfers"][0]
    package["transfers"] = [
        {**copy.deepcopy(template), "dataset_id": f"ds-batch-{i:03d}", "n_individuals": 1000 + i}
        for i in range(40)
    ]
    path = _write(tmp_path, "many.pdf", package)
    info = re.search(r"^Pages:\s+(\d+)$", _poppler("pdfinfo", path), re.MULTILINE)
    assert info is not None
    pages = int(info.group(1))
    assert pages > 1
    text = _poppler("pdftotext", path, "-")
    assert [] == [f"ds-batch-{i:03d}" for i in range(40) if f"ds-batch-{i:03d}" not in text]
    assert f"第 {pages} 页 / Page {pages}" in text


def test_missing_optional_values_print_a_dash(tmp_path: Path) -> None:
    package = _package()
    package["mechanism"].update(reference=None, authority=None, effective_date=None, filing_date=None)
    package["exporter"].update(registration_no=None, contact=None)
    del package["recipient"]["contact"]
    package["transfers"][0].update(n_individuals=None, n_spi_individuals=None, spi_categories=[])
    package["pipia"] = {"reference": None, "date": None, "retain_until": None, "summary": None}
    package["determination"]["approvers"] = []
    text = _poppler("pdftotext", "-layout", _write(tmp_path, "sparse.pdf", package), "-")
    assert re.search(r"评估编号 Reference\s+—", text), text
    assert re.search(r"个人信息主体数量 Individuals\s+—", text), text
    assert "无 None" in text


def test_missing_font_names_the_debian_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(filing_pdf, "FONT_FILE", tmp_path / "NotoSansCJK-Regular.ttc")
    with pytest.raises(RuntimeError, match="fonts-noto-cjk"):
        filing_pdf.font_path()
    with pytest.raises(RuntimeError, match="fonts-noto-cjk"):
        filing_pdf.render_pdf(_package())
