"""Wire schemas of the identity API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gbadz.vocabulary import check_jurisdiction


class OrganizationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=300, examples=["Shenzhen Harbour Hospital Group"])
    jurisdiction: str = Field(
        examples=["CN-SZ"], description="CN-GZ … CN-ZQ (GBA cities), CN, HK, MO or OTHER"
    )
    registration_no: str | None = Field(default=None, max_length=100, examples=["91440300MA5XXXXXX"])
    gba_registered: bool = False
    ciio: bool = Field(default=False, description="critical information infrastructure operator")
    operator: bool = Field(default=False, description="the zone's operator: its people may be administrators")

    @field_validator("jurisdiction")
    @classmethod
    def _known(cls, value: str) -> str:
        return check_jurisdiction(value)


class OrganizationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    jurisdiction: str
    registration_no: str | None
    gba_registered: bool
    ciio: bool
    operator: bool
    created_at: datetime
    disabled_at: datetime | None = None


class ClientCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: str = Field(max_length=36)
    role: Literal["provider", "consumer", "compliance_officer", "admin"]
    auth_method: Literal["client_secret", "private_key_jwt"] = "client_secret"
    jwks: dict[str, Any] | None = Field(default=None, description="public keys, for private_key_jwt")
    name: str | None = Field(default=None, max_length=100, description="what the client is for")


class ClientSummary(BaseModel):
    """A client as listed: never its secret (only a hash is kept)."""

    client_id: str
    org_id: str
    role: str
    name: str | None = None
    auth_method: str
    scopes: list[str]
    created_at: datetime
    revoked_at: datetime | None = None


class ClientRead(ClientSummary):
    client_secret: str | None = Field(default=None, description="shown once, at creation")


class PersonCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    org_id: str = Field(max_length=36)
    username: str = Field(max_length=64, examples=["mei.chan"])
    display_name: str = Field(max_length=200, examples=["Mei Chan"])
    role: Literal["provider", "consumer", "compliance_officer", "admin"]
    password: str = Field(
        max_length=256, description="the first password, set once by the administrator (12-256 characters)"
    )


class PersonRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    username: str
    display_name: str
    org_id: str
    role: str
    created_at: datetime
    disabled_at: datetime | None = None


class Me(BaseModel):
    subject: str
    client_id: str
    org_id: str
    role: str
    scopes: list[str]
    issuer: str
    expires_at: str
    external: bool
