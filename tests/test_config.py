"""Settings come from GBADZ_* variables, validated with errors that name the variable."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from gbadz.cli import _config_error
from gbadz.config import DatabaseSettings, S3Settings, Settings


class TestSettingsFromEnvironment:
    def test_nested_variables(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """`GBADZ_S3__ENDPOINT_URL` and `GBADZ_DB__URL` land in their groups."""
        monkeypatch.setenv("GBADZ_S3__ENDPOINT_URL", "http://127.0.0.1:9000/")
        monkeypatch.setenv("GBADZ_S3__SECRET_KEY", "s3cr3t-value")
        monkeypatch.setenv("GBADZ_DB__URL", "postgresql://u@db:5432/gbadz")
        settings = Settings()
        assert ("http://127.0.0.1:9000", "s3cr3t-value", "postgresql://u@db:5432/gbadz") == (
            settings.s3.endpoint_url,
            settings.s3.secret_key.get_secret_value() if settings.s3.secret_key else None,
            settings.db.url,
        )

    def test_secret_is_not_in_repr(self) -> None:
        """Secrets never appear when settings are printed or logged."""
        settings = Settings(s3=S3Settings(secret_key=SecretStr("top-secret-value")))
        assert "top-secret-value" not in repr(settings)

    def test_bad_endpoint_names_the_variable(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A malformed endpoint is rejected with the variable name and the reason."""
        monkeypatch.setenv("GBADZ_S3__ENDPOINT_URL", "ftp://files.example")
        with pytest.raises(ValidationError) as info:
            Settings()
        message = _config_error(info.value)
        assert "GBADZ_S3__ENDPOINT_URL" in message
        assert "http:// or https://" in message

    def test_endpoint_with_path_is_rejected(self) -> None:
        """Buckets are configured separately, so an endpoint with a path is a mistake."""
        with pytest.raises(ValidationError, match="must not carry a path"):
            S3Settings(endpoint_url="http://127.0.0.1:9000/bucket")

    def test_unsupported_database_scheme(self) -> None:
        """Only SQLite and PostgreSQL are supported."""
        with pytest.raises(ValidationError, match="unsupported database scheme 'mysql'"):
            DatabaseSettings(url="mysql://root@localhost/db")


class TestPlaceholderSecrets:
    @pytest.mark.parametrize("env", ["test", "prod"])
    def test_refused_outside_dev(self, env: str) -> None:
        """`minioadmin` and friends are refused unless GBADZ_ENV=dev."""
        with pytest.raises(ValidationError, match="well-known placeholder"):
            Settings(env=env, s3=S3Settings(secret_key=SecretStr("minioadmin")))  # type: ignore[arg-type]

    def test_accepted_in_dev(self) -> None:
        """A developer can point at a default local MinIO."""
        settings = Settings(env="dev", s3=S3Settings(secret_key=SecretStr("minioadmin")))
        assert "dev" == settings.env
