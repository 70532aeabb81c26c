"""What several benchmarks share: the real embedded services on loopback, and settings for them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pydantic import SecretStr

from gbadz import db
from gbadz.config import CryptoSettings, DatabaseSettings, S3Settings, Settings
from gbadz.embedded import EmbeddedServices


@contextlib.contextmanager
def services(work: Path) -> Iterator[Settings]:
    """SeaweedFS under ``work/home`` with bench-* buckets, a migrated SQLite catalog; stopped on exit."""
    embedded = EmbeddedServices(
        work / "home",
        bucket_settings=S3Settings(
            landing_bucket="bench-landing", curated_bucket="bench-curated", delivery_bucket="bench-delivery"
        ),
    )
    state, _ = embedded.up(with_database=False)
    assert state.s3 is not None
    try:
        settings = Settings(
            env="test",
            home=work / "home",
            db=DatabaseSettings(url=f"sqlite:///{work / 'bench.db'}"),
            s3=embedded.s3_settings(state.s3),
            crypto=CryptoSettings(passphrase=SecretStr("benchmark keyring passphrase"), scrypt_log2_n=14),
        )
        db.upgrade(db.create_engine(settings.db))
        yield settings
    finally:
        embedded.down()
