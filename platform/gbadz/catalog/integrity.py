"""A published version's stored files are checked before anything reads them (issue #20).

The manifest is checked against the SHA-256 recorded in the database when the version was
registered, and each part against the SHA-256 its manifest lists. A file that no longer matches
is never read, served or measured: whoever can write to the curated bucket (the gateway's
credentials) cannot swap a version's rows under its grants, its log entries or its analyses.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from gbadz.errors import Conflict
from gbadz.log import get_logger

log = get_logger("gbadz.catalog.integrity")


class PublishedVersionAltered(Conflict):
    """A published version's stored file no longer matches its recorded SHA-256: not read."""


def _refuse(dataset_id: str, version: int, key: str) -> PublishedVersionAltered:
    # The key names the dataset, version and part: no value of the data.
    log.error(
        "published file does not match its recorded sha256", dataset=dataset_id, version=version, key=key
    )
    return PublishedVersionAltered(
        f"version: a stored file of version {version} no longer matches its recorded SHA-256; "
        "it was not read and the incident is logged for the operator",
        field="version",
    )


def manifest(data: bytes, *, dataset_id: str, version: int, key: str, expected: str | None) -> dict[str, Any]:
    """Parse a version's manifest after checking it against the hash recorded at publish time.

    ``expected`` is None for versions published before the hash was recorded: their parts are
    still checked against the manifest.
    """
    if expected is not None and not hmac.compare_digest(hashlib.sha256(data).hexdigest(), expected):
        raise _refuse(dataset_id, version, key)
    parsed: dict[str, Any] = json.loads(data)
    return parsed


def check_part(item: dict[str, Any], digest: str, *, dataset_id: str, version: int) -> None:
    """Refuse a part whose bytes hash to ``digest`` when its manifest lists another SHA-256."""
    listed = item.get("sha256")
    if not isinstance(listed, str) or not hmac.compare_digest(digest, listed):
        raise _refuse(dataset_id, version, str(item.get("key", "")))


def file_sha256(path: str) -> str:
    """The SHA-256 of a file, read in blocks."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
