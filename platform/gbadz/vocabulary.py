"""The words the law and the platform share: jurisdictions, regions, purposes, sectors, outcomes.

A leaf module: every package may import it and it imports nothing of gbadz. Each vocabulary
is a ``Literal`` type (for pydantic bodies, query parameters and mypy) with its tuple of
values derived from it, so the two can never disagree. The geography is here once: the nine
Guangdong cities of the Greater Bay Area, the organisation codes, the engine's regions and
the legal regime each code belongs to.
"""

from __future__ import annotations

from typing import Literal, get_args

GbaCity = Literal["CN-GZ", "CN-SZ", "CN-ZH", "CN-FS", "CN-HZ", "CN-DG", "CN-ZS", "CN-JM", "CN-ZQ"]
Jurisdiction = Literal[GbaCity, "CN", "HK", "MO", "OTHER"]
#: The engine's regions (crossborder-rules.md §7.1): the nine cities are one region.
Region = Literal["CN_GBA9", "CN_OTHER", "HK", "MO", "OTHER"]
#: The legal regime whose restricted-data rules govern who may even see a dataset.
Regime = Literal["mainland", "hong_kong", "macao"]
Category = Literal["core", "important", "general"]
Purpose = Literal[
    "contract_with_individual",
    "cross_border_hr",
    "emergency",
    "statutory_duty",
    "trade_transport_academic_mfg_marketing",
    "foreign_pi_transit",
    "other",
]
Sector = Literal["none", "hgr", "health", "finance", "maps", "auto", "government"]
MacaoGround = Literal["none", "consent", "contract", "vital_interest", "public_interest", "public_register"]
#: What an access request asks for: a copy of the rows, or analyses computed inside the zone.
GrantKind = Literal["copy", "analysis"]
#: What leaves under a transfer (a fact the platform derives from the kind and the contract's
#: compute mode, never a requester's word): the rows, a differentially private aggregate, or
#: an exact aggregate with small groups suppressed.
Release = Literal["copy", "dp_aggregate", "threshold_aggregate"]
#: In order of strictness: a later outcome never lets more through than an earlier one.
Outcome = Literal["NOT_EXPORT", "EXEMPT", "GBA_SC", "SCC_OR_CERT", "ASSESSMENT", "HUMAN_REVIEW", "PROHIBITED"]
#: A mechanism on file: the general regime's (CAC assessment, national standard contract,
#: certification, GBA standard contract), a sector regulator's approval, or a Macao DSPDP
#: authorisation (PDPA Art.20(2)).
EvidenceKind = Literal["ASSESSMENT", "SCC", "CERT", "GBA_SC", "SECTOR", "AUTHORISATION"]
#: The instrument exactly: which GBA contract (Mainland-HK or Mainland-Macao) a GBA_SC is.
EvidenceVariant = Literal[
    "CAC_ASSESSMENT",
    "NATIONAL_SCC",
    "CERTIFICATION",
    "GBA_SC_HK",
    "GBA_SC_MO",
    "SECTOR_APPROVAL",
    "DSPDP_AUTHORISATION",
]
#: Who issued or received the filing (crossborder-rules.md §1-§3).
Authority = Literal["CAC", "GD_CAC", "HK_DPO", "HK_PCPD", "MO_DSPDP", "CERT_BODY", "SECTOR_REGULATOR"]
#: The variants each kind may take, and the authorities each variant may name.
VARIANTS_OF_KIND: dict[str, tuple[str, ...]] = {
    "ASSESSMENT": ("CAC_ASSESSMENT",),
    "SCC": ("NATIONAL_SCC",),
    "CERT": ("CERTIFICATION",),
    "GBA_SC": ("GBA_SC_HK", "GBA_SC_MO"),
    "SECTOR": ("SECTOR_APPROVAL",),
    "AUTHORISATION": ("DSPDP_AUTHORISATION",),
}
AUTHORITIES_OF_VARIANT: dict[str, tuple[str, ...]] = {
    "CAC_ASSESSMENT": ("CAC", "GD_CAC"),
    "NATIONAL_SCC": ("GD_CAC", "CAC"),
    "CERTIFICATION": ("CERT_BODY",),
    "GBA_SC_HK": ("GD_CAC", "HK_DPO"),
    "GBA_SC_MO": ("GD_CAC", "MO_DSPDP"),
    "SECTOR_APPROVAL": ("SECTOR_REGULATOR",),
    "DSPDP_AUTHORISATION": ("MO_DSPDP",),
}
#: Who each party of a GBA standard contract files it with, by the party's region
#: (crossborder-rules.md §2.1-§2.2): Mainland parties with the Guangdong CAC, Hong Kong
#: parties with the Digital Policy Office, Macao parties with the DSPDP. Both parties file.
GBA_SC_FILING_AUTHORITY: dict[str, Authority] = {"HK": "HK_DPO", "MO": "MO_DSPDP"}


def gba_sc_filing_authority(region: object) -> Authority:
    """Who a party of a GBA standard contract in ``region`` files it with (default: the Guangdong CAC)."""
    return GBA_SC_FILING_AUTHORITY.get(str(region), "GD_CAC")


#: PIPL Art.28 sensitive personal information, and minors under 14.
SpiCategory = Literal[
    "biometric",
    "religious_belief",
    "specific_identity",
    "medical_health",
    "financial_account",
    "whereabouts",
    "minor_under_14",
]

GBA9_CITIES: tuple[GbaCity, ...] = get_args(GbaCity)
JURISDICTIONS: tuple[Jurisdiction, ...] = get_args(Jurisdiction)
REGIONS: tuple[Region, ...] = get_args(Region)
CATEGORIES: tuple[Category, ...] = get_args(Category)
PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
SECTORS: tuple[Sector, ...] = get_args(Sector)
MACAO_GROUNDS: tuple[MacaoGround, ...] = get_args(MacaoGround)
GRANT_KINDS: tuple[GrantKind, ...] = get_args(GrantKind)
RELEASES: tuple[Release, ...] = get_args(Release)
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
EVIDENCE_KINDS: tuple[EvidenceKind, ...] = get_args(EvidenceKind)
EVIDENCE_VARIANTS: tuple[EvidenceVariant, ...] = get_args(EvidenceVariant)
AUTHORITIES: tuple[Authority, ...] = get_args(Authority)
SPI_CATEGORIES: tuple[SpiCategory, ...] = get_args(SpiCategory)
#: A sector overlay makes a dataset's person-linked columns sensitive in this category
#: (crossborder-rules.md §4), unless the contract states why a column is not.
SECTOR_SENSITIVE_CATEGORY: dict[str, SpiCategory] = {
    "health": "medical_health",
    "hgr": "medical_health",
    "finance": "financial_account",
    "auto": "whereabouts",
}
#: Restricted categories: invisible outside the origin's regime unless the contract says otherwise.
RESTRICTED_CATEGORIES: tuple[Category, ...] = ("important", "core")

REGION_OF: dict[str, Region] = {
    **dict.fromkeys(GBA9_CITIES, "CN_GBA9"),
    "CN": "CN_OTHER",
    "HK": "HK",
    "MO": "MO",
    "OTHER": "OTHER",
}
REGIME_OF: dict[str, Regime] = {
    **dict.fromkeys(GBA9_CITIES, "mainland"),
    "CN": "mainland",
    "HK": "hong_kong",
    "MO": "macao",
}
#: Local clocks outside the Mainland; Mainland times use the rules' time zone (law.rules).
LOCAL_TIME_ZONES: dict[str, str] = {"HK": "Asia/Hong_Kong", "MO": "Asia/Macau"}

JURISDICTION_NAMES: dict[Jurisdiction, str] = {
    "CN-GZ": "Guangzhou",
    "CN-SZ": "Shenzhen",
    "CN-ZH": "Zhuhai",
    "CN-FS": "Foshan",
    "CN-HZ": "Huizhou",
    "CN-DG": "Dongguan",
    "CN-ZS": "Zhongshan",
    "CN-JM": "Jiangmen",
    "CN-ZQ": "Zhaoqing",
    "CN": "Mainland China outside the GBA",
    "HK": "Hong Kong SAR",
    "MO": "Macao SAR",
    "OTHER": "outside the Mainland, Hong Kong and Macao",
}


def check_jurisdiction(code: str) -> str:
    if code not in JURISDICTIONS:
        raise ValueError(f"unknown jurisdiction {code!r}: use one of {' '.join(JURISDICTIONS)}")
    return code
