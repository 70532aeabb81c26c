"""Ed25519 signatures for transfer-log checkpoints and anything else the platform signs.

Private keys live in the keyring; public keys are exported (PEM or JWK, RFC 8037) so a
regulator can verify offline with nothing from gbadz but the public key.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gbadz.crypto.keys import KeyProvider, SigningKeyInfo


@dataclass(frozen=True)
class Signature:
    key_id: str
    signature: bytes


class Signer:
    def __init__(self, provider: KeyProvider, name: str) -> None:
        self.key_id, self._private = provider.signing_key(name)
        self.name = name

    def sign(self, message: bytes) -> Signature:
        return Signature(self.key_id, self._private.sign(message))

    @property
    def public_key(self) -> bytes:
        return self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Offline verification with a raw 32-byte Ed25519 public key."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def to_pem(info: SigningKeyInfo) -> str:
    key = Ed25519PublicKey.from_public_bytes(info.public_key)
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def to_jwk(info: SigningKeyInfo) -> dict[str, str]:
    x = base64.urlsafe_b64encode(info.public_key).decode().rstrip("=")
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": info.key_id, "use": "sig", "alg": "EdDSA"}


def generate_detached() -> Ed25519PrivateKey:
    """A key outside the keyring (tests and one-off tools)."""
    return Ed25519PrivateKey.generate()
