"""deploy/gen_env.py: a deploy/.env with fresh secrets, 0600, never overwritten."""

from __future__ import annotations

import base64
import stat
import subprocess
import sys
from pathlib import Path

from cryptography.fernet import Fernet

from tests.deploy.conftest import DEPLOY

SCRIPT = DEPLOY / "gen_env.py"


def generate(target: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(target)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def read(path: Path) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#")
    )


def test_every_placeholder_gets_a_strong_secret(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    result = generate(target)
    assert 0 == result.returncode, result.stderr
    values = read(target)
    assert not [k for k, v in values.items() if v.startswith("<")]
    assert len(values["AIRFLOW_JWT_SECRET"].encode()) >= 64
    assert len(values["GBADZ_CRYPTO_PASSPHRASE"]) >= 16
    Fernet(values["AIRFLOW_FERNET_KEY"].encode())
    assert 32 == len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"]))
    secrets = [v for k, v in values.items() if k != "GBADZ_PUBLIC_URL"]
    assert len(secrets) == len(set(secrets)), "every secret is drawn on its own"
    # Safe inside the URLs compose builds (postgresql://user:PASSWORD@..., redis://:PASSWORD@...).
    for value in secrets:
        assert set(value) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=")


def test_mode_0600_and_secrets_never_printed(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    result = generate(target)
    assert 0o600 == stat.S_IMODE(target.stat().st_mode)
    for value in read(target).values():
        if len(value) > 20:
            assert value not in result.stdout + result.stderr


def test_an_existing_file_is_kept(tmp_path: Path) -> None:
    target = tmp_path / ".env"
    target.write_text("AIRFLOW_JWT_SECRET=in-use\n")
    result = generate(target)
    assert 1 == result.returncode
    assert "AIRFLOW_JWT_SECRET=in-use\n" == target.read_text()


def test_two_runs_differ(tmp_path: Path) -> None:
    generate(tmp_path / "a.env")
    generate(tmp_path / "b.env")
    assert read(tmp_path / "a.env")["AIRFLOW_JWT_SECRET"] != read(tmp_path / "b.env")["AIRFLOW_JWT_SECRET"]
