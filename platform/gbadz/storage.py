"""Object storage: the only module that builds an S3 client.

Any S3 API works (the embedded SeaweedFS, MinIO, a cloud S3). The client always uses
path-style addressing against the configured endpoint, so presigned URLs stay valid on
non-AWS servers (the bug behind delta-sharing #753).
"""

from __future__ import annotations

import hashlib
import io
import re
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import certifi
import urllib3
from minio import Minio
from minio.commonconfig import COMPLIANCE
from minio.error import S3Error
from minio.objectlockconfig import DAYS, YEARS, ObjectLockConfig
from urllib3.exceptions import HTTPError as Urllib3Error

from gbadz.config import S3Settings
from gbadz.errors import ConfigurationError, StorageUnavailable
from gbadz.log import get_logger

log = get_logger(__name__)

#: What a call to S3 can raise: an error answer, a transport failure, a local I/O error.
S3_ERRORS: tuple[type[Exception], ...] = (S3Error, Urllib3Error, OSError)

# S3 error codes that mean "your credentials are wrong", with what to do about them.
_CREDENTIAL_ERRORS = {
    "SignatureDoesNotMatch": "the secret key was rejected (SignatureDoesNotMatch): check GBADZ_S3__SECRET_KEY",
    "InvalidAccessKeyId": "the access key is unknown to the server (InvalidAccessKeyId): check GBADZ_S3__ACCESS_KEY",
    "AccessDenied": "the credentials are not allowed to list buckets (AccessDenied): grant them read/write on the gbadz buckets",
}


def make_client(settings: S3Settings, *, retries: int = 2) -> Minio:
    """A minio client for the configured endpoint with bounded timeouts and retries."""
    if not settings.endpoint_url or not settings.access_key or settings.secret_key is None:
        raise ConfigurationError(
            "no S3 endpoint configured: set GBADZ_S3__ENDPOINT_URL, GBADZ_S3__ACCESS_KEY and "
            "GBADZ_S3__SECRET_KEY, or run `gbadz services up` for the embedded server"
        )
    parts = urlsplit(settings.endpoint_url)
    netloc = parts.netloc
    cert_reqs = ssl.CERT_REQUIRED if settings.verify_tls else ssl.CERT_NONE
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=settings.timeout_s, read=max(settings.timeout_s, 30.0)),
        maxsize=16,
        cert_reqs=cert_reqs,
        ca_certs=str(settings.ca_file) if settings.ca_file else certifi.where(),
        retries=urllib3.Retry(total=retries, backoff_factor=0.1, status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(
        netloc,
        access_key=settings.access_key,
        secret_key=settings.secret_key.get_secret_value(),
        secure=parts.scheme == "https",
        region=settings.region,
        http_client=http,
    )


def explain(settings: S3Settings, exc: Exception) -> str:
    """One line naming what failed at S3 and how to fix it, without the endpoint's address.

    The line reaches API clients (a 503's detail, ``/readyz``), so it names no internal host,
    port or URL; the endpoint and the raw error go to the log instead (no credentials: the
    client signs with a header, and query strings are cut).
    """
    log.info(
        "s3 request failed",
        endpoint=settings.endpoint_url,
        error=type(exc).__name__,
        reason=_QUERY.sub("?...", str(exc).splitlines()[0] if str(exc) else "")[:500],
    )
    if isinstance(exc, S3Error):
        hint = _CREDENTIAL_ERRORS.get(exc.code or "")
        if hint:
            return f"S3: {hint}"
        return f"S3 answered {exc.code}: {exc.message}"
    return f"cannot reach S3: {_transport_reason(exc)}; start it with `gbadz services up` or fix GBADZ_S3__ENDPOINT_URL"


#: A query string in a logged URL (a presigned URL's signature must never reach a log).
_QUERY = re.compile(r"\?[^\s'\")]*")


def _transport_reason(exc: Exception) -> str:
    """What went wrong on the way to S3, in words that carry no address.

    urllib3 puts the host and port in its messages ("HTTPConnectionPool(host=..., port=...)"),
    so only known reasons are told by name and anything else by its exception class.
    """
    text = str(exc)
    if "Connection refused" in text:
        return "connection refused"
    if "timed out" in text.lower():
        return "timed out"
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "TLS certificate not trusted (set GBADZ_S3__CA_FILE)"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name does not resolve"
    cause = getattr(exc, "reason", None)
    if isinstance(cause, Exception):
        return f"{type(exc).__name__} ({type(cause).__name__})"
    if isinstance(exc, OSError) and not isinstance(exc, Urllib3Error) and exc.strerror:
        return exc.strerror
    return type(exc).__name__


def check_storage(client: Minio, settings: S3Settings) -> list[str]:
    """Fail with :class:`StorageUnavailable` unless the endpoint accepts us and every bucket exists."""
    try:
        existing = {b.name for b in client.list_buckets()}
    except (S3Error, Urllib3Error, OSError) as exc:
        raise StorageUnavailable(explain(settings, exc)) from None
    missing = [b for b in settings.buckets if b not in existing]
    if missing:
        log.info("s3 buckets missing", endpoint=settings.endpoint_url, buckets=missing)
        raise StorageUnavailable(
            f"S3: bucket(s) {', '.join(missing)} missing; "
            "run `gbadz storage init` (or `gbadz services up` for the embedded server)"
        )
    return sorted(settings.buckets)


def ensure_buckets(client: Minio, settings: S3Settings) -> list[str]:
    """Create the gbadz buckets that do not exist yet; return the ones created.

    The landing bucket holds raw uploads, which must never be altered or lost, so it is
    created with object lock (which also turns versioning on) and given a default retention
    in COMPLIANCE mode (also when it already existed): no version of anything landed can be
    deleted before ``landing_retention_days``, by anyone, our own credentials included. The
    curated bucket is versioned so a failed publish can never destroy the previous version.
    """
    from minio.versioningconfig import VersioningConfig

    created: list[str] = []
    try:
        for name in settings.buckets:
            if client.bucket_exists(name):
                continue
            client.make_bucket(name, object_lock=name == settings.landing_bucket)
            created.append(name)
            if name == settings.curated_bucket:
                client.set_bucket_versioning(name, VersioningConfig("Enabled"))
        _ensure_landing_retention(client, settings)
    except (S3Error, Urllib3Error, OSError) as exc:
        raise StorageUnavailable(explain(settings, exc)) from None
    return created


def landing_retention(settings: S3Settings) -> ObjectLockConfig:
    """The default retention every new version in the landing bucket gets."""
    return ObjectLockConfig(COMPLIANCE, settings.landing_retention_days, DAYS)


def _ensure_landing_retention(client: Minio, settings: S3Settings) -> None:
    bucket = settings.landing_bucket
    wanted = landing_retention(settings)
    try:
        current = client.get_object_lock_config(bucket)
    except S3Error as exc:
        if exc.code not in ("ObjectLockConfigurationNotFoundError", "NoSuchObjectLockConfiguration"):
            raise
        raise StorageUnavailable(
            f"S3: bucket {bucket} has no object lock, which raw uploads need; create the landing "
            "bucket with object lock (`gbadz storage init` does when it does not exist) or set "
            "GBADZ_S3__LANDING_BUCKET to one that has it"
        ) from None
    if current == wanted:
        return
    held = _retention_days(current) if current.mode == COMPLIANCE else 0
    if held > settings.landing_retention_days:
        # Lowering it would shorten what the law needs kept for every future raw upload: an
        # operator lowers it on the bucket, deliberately, not through a setting (review of #20).
        log.warning(
            "landing retention kept",
            bucket=bucket,
            configured_days=settings.landing_retention_days,
            kept_days=held,
        )
        return
    client.set_object_lock_config(bucket, wanted)


def _retention_days(config: ObjectLockConfig) -> int:
    return int(config.duration or 0) * (365 if config.duration_unit == YEARS else 1)


def delivery_prefix(dataset_id: str) -> str:
    """Where every grant's delivered copy of a dataset lives in the delivery bucket."""
    return f"datasets/{dataset_id}/"


def delete_prefix(client: Minio, settings: S3Settings, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix``; return how many. Raises StorageUnavailable."""
    from minio.deleteobjects import DeleteObject

    try:
        names = [
            o.object_name for o in client.list_objects(bucket, prefix=prefix, recursive=True) if o.object_name
        ]
        errors = list(client.remove_objects(bucket, (DeleteObject(n) for n in names)))
    except (S3Error, Urllib3Error, OSError) as exc:
        raise StorageUnavailable(explain(settings, exc)) from None
    if errors:
        raise StorageUnavailable(f"{len(errors)} object(s) under {prefix} could not be deleted: {errors[0]}")
    return len(names)


def count_prefix(client: Minio, settings: S3Settings, bucket: str, prefix: str) -> int:
    """How many objects are under ``prefix`` (what :func:`delete_prefix` would delete)."""
    try:
        return sum(1 for o in client.list_objects(bucket, prefix=prefix, recursive=True) if o.object_name)
    except (S3Error, Urllib3Error, OSError) as exc:
        raise StorageUnavailable(explain(settings, exc)) from None


@dataclass(frozen=True)
class StoredObject:
    bucket: str
    key: str
    size: int
    sha256: str
    version_id: str | None


class ObjectStore:
    """Small typed wrapper over the client for whole-object reads and writes."""

    def __init__(self, client: Minio, settings: S3Settings) -> None:
        self.client = client
        self.settings = settings

    def put_bytes(
        self, bucket: str, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        digest = hashlib.sha256(data).hexdigest()
        try:
            result = self.client.put_object(
                bucket,
                key,
                io.BytesIO(data),
                len(data),
                content_type=content_type,
                metadata={"x-amz-meta-sha256": digest},
            )
        except (S3Error, Urllib3Error, OSError) as exc:
            raise StorageUnavailable(explain(self.settings, exc)) from None
        return StoredObject(bucket, key, len(data), digest, result.version_id)

    def get_bytes(self, bucket: str, key: str, version_id: str | None = None) -> bytes:
        try:
            response = self.client.get_object(bucket, key, version_id=version_id)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()
        except (S3Error, Urllib3Error, OSError) as exc:
            raise StorageUnavailable(explain(self.settings, exc)) from None
