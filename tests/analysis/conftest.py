"""What the analysis tests share: the hospital contract's analysis spec and its table's shape."""

from __future__ import annotations

import pytest

from gbadz.analysis.spec import AnalysisSpec
from gbadz.contract import load_contract
from tests.conftest import REPO

#: The table analysts name in FROM, and the departments the hospital contract declares.
T = "outpatient_visits"
DEPARTMENTS = [
    "general",
    "paediatrics",
    "cardiology",
    "dermatology",
    "orthopaedics",
    "ophthalmology",
    "ent",
    "gynaecology",
]


@pytest.fixture(scope="module")
def spec() -> AnalysisSpec:
    return AnalysisSpec.from_contract(
        load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
    )
