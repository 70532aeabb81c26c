"""One error hierarchy and one wire shape: ``{"error", "detail", "request_id"}`` (+ ``field``).

Every expected failure is a :class:`GbadzError` subclass that names the outcome
(``DatasetNotFound``, ``RequestNotUnderReview``) and inherits its HTTP status from one of
the status classes (``NotFound``, ``Conflict``). When the failure is about one input, the
error names it in ``field`` (``"columns"``, ``"state"``), so a client places the message
next to that input without parsing ``detail``. Routes list their errors in ``responses=``
via :func:`error_responses`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, Field


class Problem(BaseModel):
    """One of several problems with one input (a contract's lint), placed by its field path."""

    field: str = Field(description="the field path, such as schema[0].properties[2].classification")
    message: str


class ErrorBody(BaseModel):
    """The body of every API error."""

    error: str
    detail: Any
    request_id: str | None = None
    field: str | None = Field(default=None, description="the input the error is about, when there is one")
    problems: list[Problem] | None = Field(
        default=None,
        description="every problem found, each with its field path (a contract's lint); ``detail`` "
        "joins them and ``field`` names the field when there is only one",
    )


class GbadzError(Exception):
    """Base class: an expected failure with a message a user can act on."""

    status_code: ClassVar[int] = 400

    def __init__(
        self,
        detail: str,
        headers: dict[str, str] | None = None,
        *,
        field: str | None = None,
        problems: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers
        self.field = field
        self.problems = problems

    @property
    def error(self) -> str:
        return type(self).__name__


class BadRequest(GbadzError):
    status_code = 400


class NotFound(GbadzError):
    """Not found, or not visible to the caller (hidden looks like missing)."""

    status_code = 404


class Forbidden(GbadzError):
    status_code = 403


class Conflict(GbadzError):
    status_code = 409


class Gone(GbadzError):
    status_code = 410


class ServiceUnavailable(GbadzError):
    status_code = 503


class ConfigurationError(GbadzError):
    """The configuration cannot work; the message says which setting to fix."""

    status_code = 500


class StorageUnavailable(ServiceUnavailable):
    """The S3 endpoint cannot be used: unreachable, wrong credentials or missing buckets."""


class DatabaseUnavailable(ServiceUnavailable):
    """The database cannot be used: unreachable, rejected us, or its schema is not current."""


class DatabaseBusy(ServiceUnavailable):
    """Every pooled database connection stayed in use for the pool timeout: retry shortly."""


class ServicesError(GbadzError):
    """The embedded services could not be started, stopped or inspected."""

    status_code = 500


def error_responses(*errors: type[GbadzError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries for the given error classes."""
    responses: dict[int | str, dict[str, Any]] = {}
    for cls in errors:
        entry = responses.setdefault(cls.status_code, {"model": ErrorBody, "description": ""})
        names = [n for n in str(entry["description"]).split(" | ") if n]
        names.append(cls.__name__)
        entry["description"] = " | ".join(names)
    return responses


class KeyringUnavailable(ServiceUnavailable):
    """The keyring cannot be opened: wrong passphrase, altered file, or no passphrase configured."""


class KeyNotFound(NotFound):
    """No key with that id exists in the keyring."""


class KeyDestroyed(Gone):
    """The key was destroyed (crypto-shredding); what it protected can no longer be decrypted."""


class IntegrityCheckFailed(GbadzError):
    """Ciphertext or its context was altered, truncated or reordered; nothing was returned."""

    status_code = 400


class ColumnAccessDenied(Forbidden):
    """The caller's grant does not cover a protected column (or the grant is revoked or expired)."""


class Unauthenticated(GbadzError):
    """No valid bearer token (RFC 6750 §3): 401 with a WWW-Authenticate challenge."""

    status_code = 401


class InsufficientScope(Forbidden):
    """The token is valid but lacks a scope the route needs (RFC 6750 §3.1)."""


class TooManyRequests(GbadzError):
    status_code = 429


class PreconditionFailed(GbadzError):
    """``If-Match`` named a representation that is no longer current (someone changed it first)."""

    status_code = 412


class PayloadTooLarge(GbadzError):
    status_code = 413


class UnsupportedMediaType(GbadzError):
    status_code = 415


# -- outcomes of the catalog ------------------------------------------------------------------
class DatasetNotFound(NotFound):
    """No such dataset, or the caller may not see it (hidden looks like missing)."""


class NotTheProvider(Forbidden):
    """Only the dataset's provider organisation may do this."""


class DatasetRetired(Gone):
    """The dataset was retired and its keys destroyed: nothing more can be delivered or changed."""


class DatasetNotOpen(Conflict):
    """The dataset is not active or deprecated, so it takes no access requests."""


class NoPublishedVersion(Conflict):
    """Nothing has been published for the dataset yet."""


# -- outcomes of access -----------------------------------------------------------------------
class AccessRequestNotFound(NotFound):
    """No such access request, or the caller's organisation is not a party to it."""


class GrantNotFound(NotFound):
    """No such grant, or the caller's organisation is not a party to it."""


class ColumnNotInSchema(BadRequest):
    """A requested column is not in the dataset's schema, or is named twice."""


class RequestNotUnderReview(Conflict):
    """The request is not at a review step (already approved or rejected)."""


class NotYourReviewStep(Forbidden):
    """Someone else reviews the request at its current step (the provider, then a compliance officer)."""


class TransferProhibited(Conflict):
    """The rules prohibit the transfer: no approval can allow it."""


class LicenceProhibits(TransferProhibited):
    """The contract's licence terms do not allow what is asked (purpose, duration, recipient): not
    the law, the provider's terms; the status is the same (409)."""


class MechanismNotOnFile(Conflict):
    """The decision needs a mechanism (GBA SC, SCC, certification, CAC approval) and none valid is on file."""


class GrantAlreadyRevoked(Conflict):
    """The grant was revoked before."""


class GrantInactive(Gone):
    """The grant expired or was revoked: no new deliveries, URLs or shares."""


class DuplicateMechanism(Conflict):
    """A mechanism with this kind and reference is already on file."""


class ExporterNotRegistered(Conflict):
    """The dataset's provider organisation is not registered: its origin and counters are unknown."""


class GrantSuspended(Gone):
    """Re-decided at a transfer, the grant's outcome became stricter: suspended until reviewed."""


class JustificationRequired(BadRequest):
    """An Art.5 exemption purpose needs a written necessity justification."""


class Unprocessable(GbadzError):
    """The body is well-formed but incomplete for what it asks (a field the case needs is missing)."""

    status_code = 422


class DeterminationIncomplete(Unprocessable):
    """A compliance approval lacks a field its determination needs; ``field`` names it."""


class FourEyes(Forbidden):
    """The same person cannot take both review steps, nor approve with evidence they recorded."""


class MechanismNotFound(NotFound):
    """No evidence item with this id is visible to the caller."""


class MechanismWithdrawn(Conflict):
    """The evidence item was withdrawn or amended; it cannot be used or changed again."""


class ObligationsOpen(Conflict):
    """A precondition the law sets (PIPIA, notice and consent) is not met: no data leaves yet."""


class ObligationNotFound(NotFound):
    """No obligation with this id is visible to the caller."""


class GrantStillRunning(Conflict):
    """A grant's end is attested only after it ended (revoked or expired)."""


class ObligationAlreadyMet(Conflict):
    """The obligation was met before; its record stands."""


class MechanismIncomplete(Unprocessable):
    """An evidence item lacks a field its kind needs, or names one that does not fit; ``field`` names it."""


class ColumnsNotNarrower(Unprocessable):
    """A provider's approval named columns that were not all requested: approval can only narrow."""


class ObligationIncomplete(Unprocessable):
    """Meeting an obligation lacks what its kind needs (a PIPIA's date)."""


class DeletionAlreadyAttested(Conflict):
    """The grantee attested the deletion of its copies before."""


# -- compute-to-data (issue #18) -----------------------------------------------------------------
class AnalysisNotOffered(Conflict):
    """An analysis was asked of a dataset whose contract offers none (``gbadz.compute`` mode none)."""


class ColumnNotAnalysable(Unprocessable):
    """An analysis grant names a column that is not a dimension or measure of the compute block
    (the privacy unit never is one)."""


class WrongGrantKind(Conflict):
    """A copy was asked of an analysis grant (it releases aggregates, never rows), or the reverse."""
