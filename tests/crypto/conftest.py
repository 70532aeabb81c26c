from __future__ import annotations

from pathlib import Path

import pytest

from gbadz.crypto.keys import LocalKeyProvider

PASSPHRASE = "correct horse battery staple"


@pytest.fixture
def provider(tmp_path: Path) -> LocalKeyProvider:
    """A real keyring on disk (scrypt cost lowered for speed; the algorithm is the same)."""
    return LocalKeyProvider(tmp_path / "keys" / "keyring.bin", PASSPHRASE, scrypt_log2_n=10)
