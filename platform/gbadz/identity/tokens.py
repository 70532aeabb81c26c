"""JWT access tokens (RFC 9068): issuing with rotating Ed25519 keys, and validating.

Our own tokens are signed with Ed25519 keys kept in the keyring (JWS alg ``Ed25519``,
RFC 9864's fully specified name for EdDSA over Ed25519). The JWKS
publishes the current key and every retired key whose tokens may still be alive
(retired less than one token lifetime plus leeway ago). Validation accepts only the
algorithms listed for the issuer (Ed25519 for ours; configured asymmetric ones for external
issuers), so ``alg: none`` and HS256-with-a-public-key forgeries cannot pass.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey
from joserfc.jwt import JWTClaimsRegistry

from gbadz.config import OAuthSettings
from gbadz.crypto.keys import KeyProvider

# RFC 9864 names EdDSA over Ed25519 "Ed25519" and deprecates the polymorphic "EdDSA".
OWN_ALGORITHMS = ["Ed25519"]


class TokenRejected(Exception):
    """The token is not acceptable; ``error`` is the RFC 6750 code, ``description`` says why."""

    def __init__(self, description: str, error: str = "invalid_token") -> None:
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass(frozen=True)
class Principal:
    """Who is calling: an organisation acting in a role through a client, with granted scopes."""

    subject: str
    client_id: str
    org_id: str
    role: str
    scopes: frozenset[str]
    jti: str
    issuer: str
    expires_at: datetime
    external: bool = False


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class TokenService:
    def __init__(self, settings: OAuthSettings, provider: KeyProvider) -> None:
        self.settings = settings
        self.provider = provider
        self._keyset_cache: tuple[float, KeySet] | None = None

    # -- keys ------------------------------------------------------------------
    def _signing_key(self) -> OKPKey:
        key_id, private = self.provider.signing_key(self.settings.signing_key_name)
        raw_private = private.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        )
        raw_public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return OKPKey.import_key(
            {
                "kty": "OKP",
                "crv": "Ed25519",
                "d": _b64url(raw_private),
                "x": _b64url(raw_public),
                "kid": key_id,
            }
        )

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """Public keys a verifier needs now: the current key and recently retired ones."""
        current = self._signing_key()
        keys = [{**current.as_dict(private=False), "use": "sig", "alg": "Ed25519"}]
        horizon = datetime.now(UTC) - timedelta(
            seconds=self.settings.access_token_ttl_s + self.settings.leeway_s
        )
        for info, retired_at in self.provider.retired_public_keys(self.settings.signing_key_name):
            if retired_at >= horizon:
                keys.append(
                    {
                        "kty": "OKP",
                        "crv": "Ed25519",
                        "x": _b64url(info.public_key),
                        "kid": info.key_id,
                        "use": "sig",
                        "alg": "Ed25519",
                    }
                )
        return {"keys": keys}

    def key_set(self) -> KeySet:
        # Rebuilt at most once a second: rotation shows up at once, parsing is not per request.
        now = time.monotonic()
        if self._keyset_cache is None or now - self._keyset_cache[0] > 1.0:
            self._keyset_cache = (now, KeySet.import_key_set(self.jwks()))  # type: ignore[arg-type]
        return self._keyset_cache[1]

    def rotate(self) -> str:
        key_id = self.provider.rotate_signing_key(self.settings.signing_key_name)
        self._keyset_cache = None
        return key_id

    # -- issuing -----------------------------------------------------------------
    def issue(
        self, *, client_id: str, org_id: str, role: str, scope: str, subject: str | None = None
    ) -> tuple[str, int]:
        """A signed access token; ``subject`` is the person for user tokens, else the client."""
        now = int(time.time())
        ttl = self.settings.access_token_ttl_s
        claims = {
            "iss": self.settings.issuer,
            "sub": subject or client_id,
            "aud": self.settings.audience,
            "exp": now + ttl,
            "iat": now,
            "nbf": now,
            "jti": secrets.token_urlsafe(16),
            "client_id": client_id,
            "scope": scope,
            "gbadz_org": org_id,
            "gbadz_role": role,
        }
        key = self._signing_key()
        header = {"alg": "Ed25519", "typ": "at+jwt", "kid": key.kid}
        return jwt.encode(header, claims, key, algorithms=OWN_ALGORITHMS), ttl

    # -- validating --------------------------------------------------------------
    def decode(self, token: str) -> dict[str, Any]:
        """Verify signature (allow-listed algorithm, known kid) and every time and identity claim."""
        return decode_and_validate(
            token,
            self.key_set(),
            algorithms=OWN_ALGORITHMS,
            issuer=self.settings.issuer,
            audience=self.settings.audience,
            leeway=self.settings.leeway_s,
            require_typ=True,
        )

    def principal(self, claims: Mapping[str, Any]) -> Principal:
        return Principal(
            subject=str(claims["sub"]),
            client_id=str(claims["client_id"]),
            org_id=str(claims.get("gbadz_org", "")),
            role=str(claims.get("gbadz_role", "")),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            jti=str(claims["jti"]),
            issuer=str(claims["iss"]),
            expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
        )


def unverified_header(token: str) -> dict[str, Any]:
    import json

    try:
        head = token.split(".", 1)[0]
        data = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    except (ValueError, IndexError):
        raise TokenRejected("the token is not a JWT") from None
    if not isinstance(data, dict):
        raise TokenRejected("the token header is not a JSON object")
    return data


def unverified_claims(token: str) -> dict[str, Any]:
    import json

    parts = token.split(".")
    if len(parts) != 3:
        raise TokenRejected("the token is not a signed JWT")
    try:
        data = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        raise TokenRejected("the token payload is not JSON") from None
    if not isinstance(data, dict):
        raise TokenRejected("the token payload is not a JSON object")
    return data


#: The last second of year 9999: any later NumericDate is an attack or a bug, and Python's
#: datetime cannot hold it (``exp=10**20`` answered 500).
MAX_NUMERIC_DATE = 253_402_300_799
TIME_CLAIMS = ("exp", "iat", "nbf")
TEXT_CLAIMS = ("iss", "sub", "jti", "client_id", "azp", "gbadz_org", "gbadz_role")


def check_claim_types(claims: Mapping[str, Any]) -> None:
    """Refuse (401) claims of the wrong type or out of range, before anything converts them:
    times are numbers between 1970 and 9999 (RFC 7519 §2 NumericDate), identities are text,
    ``scope`` is text or a list of text."""
    for name in TIME_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not 0 <= value <= MAX_NUMERIC_DATE
        ):
            raise TokenRejected(f"the {name} claim is not a time between 1970 and 9999")
    for name in TEXT_CLAIMS:
        if name in claims and not isinstance(claims[name], str):
            raise TokenRejected(f"the {name} claim is not a string")
    scope = claims.get("scope", "")
    if not isinstance(scope, str) and not (
        isinstance(scope, list) and all(isinstance(item, str) for item in scope)
    ):
        raise TokenRejected("the scope claim is neither a string nor a list of strings")


def decode_and_validate(
    token: str,
    keys: KeySet,
    *,
    algorithms: list[str],
    issuer: str,
    audience: str,
    leeway: int,
    require_typ: bool,
) -> dict[str, Any]:
    header = unverified_header(token)
    alg = header.get("alg")
    if alg not in algorithms:
        raise TokenRejected(f"algorithm {alg!r} is not accepted")
    kid = header.get("kid")
    if not kid or not any(k.kid == kid for k in keys.keys):
        raise TokenRejected("the token's key id is not in the issuer's JWKS")
    if require_typ and str(header.get("typ", "")).lower() not in {"at+jwt", "application/at+jwt"}:
        raise TokenRejected("the token is not an access token (typ at+jwt)")
    try:
        decoded = jwt.decode(token, keys, algorithms=algorithms)
    except JoseError:
        raise TokenRejected("the token signature does not verify") from None
    claims = dict(decoded.claims)
    check_claim_types(claims)
    registry = JWTClaimsRegistry(
        leeway=leeway,
        iss={"essential": True, "value": issuer},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        sub={"essential": True},
    )
    try:
        registry.validate(claims)
    except JoseError as exc:
        raise TokenRejected(f"token claim check failed: {exc.description or exc.error}") from None
    aud = claims.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    if audience not in audiences:
        raise TokenRejected("the token is for another audience")
    return claims
