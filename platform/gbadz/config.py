"""Settings: the only module that reads the environment.

Every variable has the prefix ``GBADZ_`` and nested groups use ``__``, for example
``GBADZ_S3__ENDPOINT_URL=http://127.0.0.1:9000`` or ``GBADZ_DB__URL=postgresql://...``.
Values left unset are filled from the embedded services (``gbadz services up``) by
:func:`gbadz.embedded.resolve_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Secrets that appear in tutorials and default installs. Outside ENV=dev they are refused.
PLACEHOLDER_SECRETS = frozenset(
    {"", "minioadmin", "changeme", "change-me", "secret", "password", "admin", "test"}
)


class DatabaseSettings(BaseModel):
    """Where the catalog database lives. Unset means the embedded SQLite file."""

    url: str | None = Field(
        default=None,
        description="SQLAlchemy URL: sqlite:///path.db or postgresql://user@host:5432/db",
    )
    connect_timeout_s: float = Field(default=3.0, gt=0, le=60)
    pool_size: int = Field(
        default=10, ge=1, le=500, description="connections the API keeps open for requests"
    )
    max_overflow: int = Field(
        default=22,
        ge=0,
        le=500,
        description="extra request connections under load; pool_size + max_overflow must be at "
        "least twice GBADZ_API__WORKER_THREADS (a session per thread, and one more a thread may open)",
    )
    pool_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=120,
        description="longest a request waits for a pooled connection before answering 503 with Retry-After",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme = value.split(":", 1)[0]
        if not (scheme.startswith("sqlite") or scheme.startswith("postgresql")):
            raise ValueError(f"unsupported database scheme {scheme!r}: use sqlite:/// or postgresql://")
        return value


class S3Settings(BaseModel):
    """Any S3-compatible endpoint: the embedded SeaweedFS, MinIO or a cloud S3."""

    endpoint_url: str | None = Field(default=None, description="http(s)://host:port")
    access_key: str | None = None
    secret_key: SecretStr | None = None
    region: str = "us-east-1"
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout_s: float = Field(default=5.0, gt=0, le=120)
    landing_bucket: str = "gbadz-landing"
    curated_bucket: str = "gbadz-curated"
    delivery_bucket: str = "gbadz-delivery"
    landing_retention_days: int = Field(
        default=3650,
        ge=1,
        le=36_500,
        description="default COMPLIANCE retention of every version in the landing bucket (raw "
        "uploads, quality reports, evidence documents): nobody can delete one sooner (ADR 0017)",
    )

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:9000")
        if parts.path not in {"", "/"} or parts.query:
            raise ValueError("must not carry a path or query: buckets are configured separately")
        return value.rstrip("/")

    @property
    def buckets(self) -> tuple[str, str, str]:
        return (self.landing_bucket, self.curated_bucket, self.delivery_bucket)

    @property
    def secure(self) -> bool:
        return self.endpoint_url is not None and self.endpoint_url.startswith("https://")


class CryptoSettings(BaseModel):
    """The local keyring: KEKs, wrapped data keys and signing keys, encrypted at rest."""

    keyring_path: Path | None = Field(default=None, description="default: <home>/keys/keyring.bin")
    passphrase: SecretStr | None = Field(
        default=None,
        description="derives the keyring's at-rest key (scrypt); required outside ENV=dev",
    )
    scrypt_log2_n: int = Field(default=15, ge=10, le=20, description="scrypt cost: N = 2**log2_n")


def _ordinary_roles() -> list[Literal["provider", "consumer", "compliance_officer", "admin"]]:
    return ["provider", "consumer"]


class ExternalIssuer(BaseModel):
    """An identity provider whose access tokens gbadz accepts (e.g. an organisation's Keycloak)."""

    issuer: str
    jwks_uri: str | None = None
    jwks_file: Path | None = None
    audience: str = "gbadz"
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256", "PS256"])
    org_claim: str = "gbadz_org"
    role_claim: str = "gbadz_role"
    scope_claim: str = "scope"
    organizations: list[str] = Field(
        default_factory=list,
        description="the gbadz organisation ids this issuer speaks for; a token claiming any other "
        "organisation is refused (empty: the issuer is trusted for none)",
    )
    roles: list[Literal["provider", "consumer", "compliance_officer", "admin"]] = Field(
        default_factory=_ordinary_roles,
        description="the roles its tokens may claim; compliance_officer and admin only when listed here",
    )

    @model_validator(mode="after")
    def _one_key_source(self) -> ExternalIssuer:
        if (self.jwks_uri is None) == (self.jwks_file is None):
            raise ValueError(f"external issuer {self.issuer}: set exactly one of jwks_uri or jwks_file")
        if "none" in {a.lower() for a in self.algorithms} or any(a.startswith("HS") for a in self.algorithms):
            raise ValueError(f"external issuer {self.issuer}: only asymmetric algorithms are accepted")
        if any(not org.strip() for org in self.organizations):
            raise ValueError(f"external issuer {self.issuer}: organisation ids must not be empty")
        return self


class OAuthSettings(BaseModel):
    """gbadz as an OAuth 2.0 authorization server and resource server."""

    issuer: str = Field(
        default="http://127.0.0.1:8000", description="the iss of our tokens and base of our endpoints"
    )
    audience: str = "gbadz"
    access_token_ttl_s: int = Field(default=900, ge=60, le=86_400)
    leeway_s: int = Field(default=30, ge=0, le=300)
    signing_key_name: str = "oauth-access-token"
    failed_auth_limit: int = Field(default=10, ge=1, description="failed client authentications per window")
    failed_auth_window_s: int = Field(default=60, ge=1, le=86_400)
    external_issuers: list[ExternalIssuer] = Field(default_factory=list)

    @field_validator("issuer")
    @classmethod
    def _issuer_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http(s) URL without query or fragment (RFC 8414)")
        return value.rstrip("/")


class ApiSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of reverse proxies whose X-Forwarded-For is believed; "
        "default none: the socket peer is the client",
    )
    catalog_search: Literal["index", "database"] = Field(
        default="index",
        description="index: in-process snapshot (fast reads, ~1 s cross-replica freshness); database: FTS per request",
    )
    checkpoint_interval_s: float = Field(
        default=60.0, gt=0, description="sign a transfer-log checkpoint this often when the log grew"
    )
    grant_sweep_interval_s: float = Field(
        default=300.0, gt=0, description="delete the delivery copies of ended grants this often"
    )
    delivery_url_ttl_s: int = Field(
        default=900, ge=10, le=7 * 24 * 3600, description="lifetime of presigned delivery URLs (seconds)"
    )
    delivery_limit: int = Field(
        default=20,
        ge=1,
        description="URL issuances (deliveries, Delta Sharing queries, reissues) per grant per window; "
        "a repeat within the URLs' life reuses them and is not counted",
    )
    delivery_limit_window_s: int = Field(default=3600, ge=1, le=7 * 86_400)
    max_upload_bytes: int = Field(
        default=20 * 1024**3, ge=1, description="largest file a provider may upload for ingestion"
    )
    worker_threads: int = Field(
        default=8,
        ge=1,
        le=256,
        description="threads that run blocking route work (database, S3); more only add GIL "
        "contention on a small machine, fewer queue requests sooner",
    )
    max_active_requests: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="requests inside the app at once; more wait, before any work is done on them "
        "(/healthz never waits)",
    )
    queue_timeout_s: float = Field(
        default=30.0, gt=0, le=600, description="a request waiting longer than this for its turn gets 503"
    )
    keep_alive_s: int = Field(
        default=5, ge=1, le=300, description="close a kept-alive connection idle this long"
    )
    request_header_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="close a connection that has not sent a complete request head this long after "
        "connecting or after its last response (idle and slowly-sending connections)",
    )
    request_body_timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="a request body (outside the upload routes) not fully received this long after its "
        "head is answered 408; it is read before the request takes one of the shared slots",
    )
    access_log: bool = Field(default=True, description="log one line per request (uvicorn's access log)")
    max_body_bytes: int = Field(
        default=1024 * 1024,
        ge=1024,
        description="largest request body (JSON, forms) outside the upload routes; refused with 413 "
        "before it is parsed or the caller authenticated",
    )
    max_header_bytes: int = Field(
        default=64 * 1024,
        ge=4096,
        le=1024 * 1024,
        description="largest request line plus header block `gbadz serve` accepts (the server closes the "
        "connection beyond it)",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value


class ConsoleSettings(BaseModel):
    """The web console's browser sessions (cookies are always Secure, HttpOnly, SameSite=Lax)."""

    session_ttl_s: int = Field(default=8 * 3600, ge=60, le=7 * 86_400, description="longest a sign-in lasts")
    idle_ttl_s: int = Field(
        default=30 * 60, ge=60, le=86_400, description="signed out after this long unused"
    )
    failed_signin_limit: int = Field(
        default=5,
        ge=1,
        description="failed sign-ins per username and address (or signed-in browser) per window",
    )
    failed_signin_address_limit: int = Field(
        default=50, ge=1, description="failed sign-ins per address, whatever the username, per window"
    )
    failed_signin_user_limit: int = Field(
        default=20,
        ge=1,
        description="failed sign-ins per username per window from browsers that never signed in as that "
        "person; a browser that did (its device cookie) is not held back by them",
    )
    failed_signin_window_s: int = Field(default=300, ge=1, le=86_400)
    device_ttl_s: int = Field(
        default=90 * 86_400,
        ge=3600,
        le=400 * 86_400,
        description="how long a browser is remembered after a sign-in",
    )


class IngestSettings(BaseModel):
    """Bounds on what one uploaded file may make the ingest worker read (decompression bombs)."""

    max_rows: int = Field(default=100_000_000, ge=1, description="rows a file may declare")
    max_columns: int = Field(default=1024, ge=1, description="columns a file may declare")
    max_table_bytes: int = Field(
        default=1024**3,
        ge=1024,
        description="decoded size a file may reach, counted batch by batch as it streams (and checked "
        "against a Parquet file's metadata, or a CSV file's size, before reading): a bound on the work "
        "one upload may cause (decompression bombs), no longer on memory, since ingest holds one batch "
        "at a time (ADR 0028). 1 GiB is about ten million rows of a typical contract; raising it "
        "costs disk and time, not memory",
    )
    max_line_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="longest CSV line (and so field) accepted"
    )
    batch_rows: int = Field(
        default=262_144,
        ge=1,
        description="rows per record batch: ingest reads, validates (Great Expectations runs once per "
        "batch, about 0.6 s of fixed cost each), pseudonymises and writes one batch at a time, so "
        "this and the widest row bound the ingest worker's memory (ADR 0028)",
    )
    pseudonym_cache: int = Field(
        default=65_536,
        ge=0,
        description="identifiers whose pseudonyms are kept between batches of one upload (a bounded "
        "cache; 0 turns it off)",
    )
    worker: bool = Field(
        default=False,
        description="run the embedded ingest worker in the API process: it claims queued uploads "
        "and runs each through the ingest DAG in a child process. `gbadz serve` turns it on unless "
        "this is set; off for a library caller of create_app. With worker_mode airflow the loop "
        "triggers queued uploads in Airflow and reads their runs back instead (ADR 0026)",
    )
    worker_mode: Literal["dag", "inline", "airflow"] = Field(
        default="dag",
        description="dag: each upload runs through the ingest DAG (Airflow dag.test()) in a child "
        "process, which reports its task states at the end; inline: the DAG's steps run in a "
        "thread of the API process (no Airflow start-up; each step's state is shown as it ends; "
        "the file streams through the API process one batch at a time, but its CPU is the API's, "
        "so only for small uploads); airflow: each upload triggers a run of the ingest DAG "
        "through Airflow's REST API (GBADZ_AIRFLOW__*) and the worker reads its state back (ADR 0026)",
    )
    worker_interval_s: float = Field(
        default=2.0, gt=0, le=3600, description="how often the embedded worker looks for queued uploads"
    )
    worker_timeout_s: float = Field(
        default=3600.0,
        gt=0,
        le=86_400,
        description="wall-clock limit of one upload's DAG run in the worker (the child is killed after "
        "it and the run marked failed); a run left running longer by a lost replica is claimed again",
    )


class AirflowSettings(BaseModel):
    """The Airflow 3 api-server that runs uploads when ``GBADZ_INGEST__WORKER_MODE=airflow`` (ADR 0026)."""

    url: str | None = Field(
        default=None, description="base URL of Airflow's api-server, e.g. http://airflow-api:8080"
    )
    username: str | None = Field(default=None, description="an Airflow user allowed to trigger the DAG")
    password: SecretStr | None = None
    dag_id: str = Field(default="gbadz_ingest", pattern=r"^[A-Za-z0-9_.-]{1,250}$")
    timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="each call to Airflow from the worker loop (connect and read)"
    )
    trigger_timeout_s: float = Field(
        default=3.0,
        gt=0,
        le=60,
        description="the upload route's own attempt to trigger at once; on failure the loop retries",
    )
    retry_min_s: float = Field(
        default=5.0, gt=0, le=3600, description="first wait before a failed trigger is tried again"
    )
    retry_max_s: float = Field(
        default=300.0, gt=0, le=86_400, description="longest wait between two trigger attempts (backoff cap)"
    )
    verify_tls: bool = True
    ca_file: Path | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8080")
        if parts.username or parts.password:
            raise ValueError("must not carry credentials: set GBADZ_AIRFLOW__USERNAME and __PASSWORD")
        return value.rstrip("/")

    @property
    def configured(self) -> bool:
        return bool(self.url and self.username and self.password)


class TransferSettings(BaseModel):
    """The cross-boundary rules the engine, the compliance reports and the console use."""

    rules_file: Path | None = Field(
        default=None,
        description="a reviewed rules file to use instead of the packaged crossborder.yaml; "
        "every decision records its version and SHA-256",
    )


class ComputeSettings(BaseModel):
    """Bounds on one analysis run inside the zone (compute-to-data, issue #18).

    An analysis is answered synchronously by the API replica that receives it, in a child
    process with no network: these bound what one request may cost that replica. Larger
    analyses belong on the Airflow ``zone-compute`` queue (issue #17's cluster work); until
    then they are refused with a message saying so.
    """

    timeout_s: float = Field(
        default=30.0,
        gt=0,
        le=3600,
        description="wall-clock limit of one analysis (the child is killed after it)",
    )
    memory_mb: int = Field(
        default=2048,
        ge=64,
        le=1024 * 1024,
        description="address-space limit of the analysis child process (MiB)",
    )
    rows_sync_max: int = Field(
        default=5_000_000,
        ge=1,
        description="the most rows (of the published version) an analysis reads synchronously; a larger "
        "version is refused as too large for a synchronous analysis",
    )
    default_epsilon: float = Field(
        default=0.5,
        gt=0,
        le=10,
        description="ε a query spends when it names none and the contract sets no max_epsilon_per_query",
    )
    limit: int = Field(
        default=60,
        ge=1,
        description="analyses (releases and failed attempts that were charged) per grant per window; "
        "estimates are free and not counted",
    )
    limit_window_s: int = Field(default=3600, ge=1, le=7 * 86_400)


class Settings(BaseSettings):
    """All of gbadz's configuration. Tests build it directly; nothing else reads os.environ."""

    model_config = SettingsConfigDict(
        env_prefix="GBADZ_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    env: Literal["dev", "test", "prod"] = "dev"
    home: Path = Field(default=Path(".gbadz"), description="state of the embedded services")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False
    db: DatabaseSettings = DatabaseSettings()
    console: ConsoleSettings = ConsoleSettings()
    s3: S3Settings = S3Settings()
    api: ApiSettings = ApiSettings()
    crypto: CryptoSettings = CryptoSettings()
    oauth: OAuthSettings = OAuthSettings()
    ingest: IngestSettings = IngestSettings()
    airflow: AirflowSettings = AirflowSettings()
    transfer: TransferSettings = TransferSettings()
    compute: ComputeSettings = ComputeSettings()

    @model_validator(mode="after")
    def _pool_fits_threads(self) -> Settings:
        # Admitted request sessions (one per worker thread) plus one connection each thread may
        # open on its own (a detached audit record, a read path's session): see gbadz.db.admitted.
        needed = 2 * self.api.worker_threads
        if self.db.pool_size + self.db.max_overflow < needed:
            raise ValueError(
                f"GBADZ_DB__POOL_SIZE + GBADZ_DB__MAX_OVERFLOW must be at least {needed} "
                f"(twice GBADZ_API__WORKER_THREADS={self.api.worker_threads})"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        if self.env == "dev":
            return self
        secret = self.s3.secret_key
        if secret is not None and secret.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "s3.secret_key is a well-known placeholder; set a real GBADZ_S3__SECRET_KEY "
                "(placeholders are accepted only with GBADZ_ENV=dev)"
            )
        airflow_password = self.airflow.password
        if airflow_password is not None and airflow_password.get_secret_value() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "airflow.password is a well-known placeholder; set a real GBADZ_AIRFLOW__PASSWORD "
                "(placeholders are accepted only with GBADZ_ENV=dev)"
            )
        passphrase = self.crypto.passphrase
        if passphrase is not None and (
            passphrase.get_secret_value() in PLACEHOLDER_SECRETS or len(passphrase.get_secret_value()) < 16
        ):
            raise ValueError(
                "crypto.passphrase is a placeholder or shorter than 16 characters; set a strong "
                "GBADZ_CRYPTO__PASSPHRASE (accepted only with GBADZ_ENV=dev)"
            )
        return self

    @property
    def keyring_path(self) -> Path:
        return self.crypto.keyring_path or self.home / "keys" / "keyring.bin"


def airflow_environment(settings: Settings, dags_folder: Path) -> dict[str, str]:
    """The environment an embedded Airflow (``dag.test()``) runs with: its own home and SQLite."""
    home = (settings.home / "airflow").resolve()
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder.resolve()),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
    }


def apply_environment(values: dict[str, str]) -> dict[str, str]:
    """Export variables for in-process libraries that read the environment (Airflow, and the
    gbadz task code Airflow runs); return the whole environment, for subprocesses."""
    import os

    os.environ.update(values)
    get_settings.cache_clear()
    return dict(os.environ)


def settings_environment(settings: Settings) -> dict[str, str]:
    """GBADZ_* variables reproducing ``settings`` (for task code started by Airflow)."""
    env = {
        "GBADZ_ENV": settings.env,
        "GBADZ_HOME": str(settings.home.resolve()),
        "GBADZ_S3__REGION": settings.s3.region,
        "GBADZ_S3__LANDING_BUCKET": settings.s3.landing_bucket,
        "GBADZ_S3__CURATED_BUCKET": settings.s3.curated_bucket,
        "GBADZ_S3__DELIVERY_BUCKET": settings.s3.delivery_bucket,
        "GBADZ_S3__LANDING_RETENTION_DAYS": str(settings.s3.landing_retention_days),
        "GBADZ_CRYPTO__SCRYPT_LOG2_N": str(settings.crypto.scrypt_log2_n),
    }
    env.update({f"GBADZ_INGEST__{k.upper()}": str(v) for k, v in settings.ingest.model_dump().items()})
    optional = {
        "GBADZ_DB__URL": settings.db.url,
        "GBADZ_S3__ENDPOINT_URL": settings.s3.endpoint_url,
        "GBADZ_S3__ACCESS_KEY": settings.s3.access_key,
        "GBADZ_S3__SECRET_KEY": settings.s3.secret_key.get_secret_value() if settings.s3.secret_key else None,
        "GBADZ_CRYPTO__PASSPHRASE": settings.crypto.passphrase.get_secret_value()
        if settings.crypto.passphrase
        else None,
        "GBADZ_CRYPTO__KEYRING_PATH": str(settings.crypto.keyring_path)
        if settings.crypto.keyring_path
        else None,
    }
    env.update({k: v for k, v in optional.items() if v is not None})
    return env


def child_environment(settings: Settings) -> dict[str, str]:
    """The environment of a gbadz child process (the ingest worker's DAG run): this process's
    environment without any GBADZ_* variable, plus the variables reproducing ``settings``."""
    import os

    inherited = {k: v for k, v in os.environ.items() if not k.startswith("GBADZ_")}
    return inherited | settings_environment(settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings read from the environment (cached)."""
    return Settings()


class SuiteSettings(BaseSettings):
    """Knobs of the test suite's lanes (``GBADZ_TEST_*``), read here like every other variable."""

    model_config = SettingsConfigDict(env_prefix="GBADZ_TEST_", extra="ignore")

    postgres_url: str | None = None
    require_postgres: bool = False
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: SecretStr | None = None
