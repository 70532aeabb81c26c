"""Jurisdictions, roles and scopes: the vocabulary every access decision uses."""

from __future__ import annotations

from typing import Literal

GBA9_CITIES = ("CN-GZ", "CN-SZ", "CN-ZH", "CN-FS", "CN-HZ", "CN-DG", "CN-ZS", "CN-JM", "CN-ZQ")
JURISDICTIONS = (*GBA9_CITIES, "CN", "HK", "MO", "OTHER")
JURISDICTION_NAMES = {
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

Role = Literal["provider", "consumer", "compliance_officer", "admin"]
ROLES: tuple[Role, ...] = ("provider", "consumer", "compliance_officer", "admin")

SCOPES = {
    "catalog:read": "search and read the catalog",
    "datasets:publish": "register contracts and publish dataset versions",
    "access:request": "ask for access to datasets and read one's own requests and grants",
    "access:review": "approve or reject access requests",
    "transfers:audit": "read the transfer log and compliance reports",
    "admin": "manage organisations and clients",
}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    "provider": frozenset({"catalog:read", "datasets:publish", "access:review"}),
    "consumer": frozenset({"catalog:read", "access:request"}),
    "compliance_officer": frozenset({"catalog:read", "access:review", "transfers:audit"}),
    "admin": frozenset({"admin", "catalog:read"}),
}


def check_jurisdiction(code: str) -> str:
    if code not in JURISDICTIONS:
        raise ValueError(f"unknown jurisdiction {code!r}: use one of {' '.join(JURISDICTIONS)}")
    return code


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {' '.join(ROLES)}")
    return role
