"""Roles and OAuth scopes: what each kind of principal may do."""

from __future__ import annotations

from typing import Literal

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


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: use one of {' '.join(ROLES)}")
    return role
