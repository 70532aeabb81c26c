"""Ed25519 signing with offline verification from exported public keys."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gbadz.crypto import signing
from gbadz.crypto.keys import LocalKeyProvider
from tests.crypto.conftest import PASSPHRASE


class TestSigning:
    def test_sign_and_verify(self, provider: LocalKeyProvider) -> None:
        """A signature verifies with the public key; any change to message or signature fails."""
        signer = signing.Signer(provider, "transfer-log")
        sig = signer.sign(b"tree_size=10 root=abc")
        assert signing.verify(signer.public_key, b"tree_size=10 root=abc", sig.signature)
        assert not signing.verify(signer.public_key, b"tree_size=11 root=abc", sig.signature)
        bad = bytearray(sig.signature)
        bad[0] ^= 1
        assert not signing.verify(signer.public_key, b"tree_size=10 root=abc", bytes(bad))
        other = signing.Signer(provider, "other")
        assert not signing.verify(other.public_key, b"tree_size=10 root=abc", sig.signature)

    def test_key_is_stable_across_processes(self, provider: LocalKeyProvider) -> None:
        """The signing key persists in the keyring with a stable key id."""
        first = signing.Signer(provider, "transfer-log")
        again = signing.Signer(LocalKeyProvider(provider.path, PASSPHRASE, scrypt_log2_n=10), "transfer-log")
        assert (first.key_id, first.public_key) == (again.key_id, again.public_key)

    def test_exports_verify_offline(self, provider: LocalKeyProvider) -> None:
        """PEM and JWK exports load in a standard library and verify a signature."""
        signer = signing.Signer(provider, "transfer-log")
        sig = signer.sign(b"checkpoint")
        (info,) = provider.public_keys()
        pem_key = load_pem_public_key(signing.to_pem(info).encode())
        assert isinstance(pem_key, Ed25519PublicKey)
        pem_key.verify(sig.signature, b"checkpoint")
        jwk = signing.to_jwk(info)
        raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
        assert signing.verify(raw, b"checkpoint", sig.signature)
        assert (signer.key_id, "Ed25519") == (jwk["kid"], jwk["crv"])
