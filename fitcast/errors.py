"""Error classes.

Every error fitcast raises on purpose derives from :class:`FitcastError` and also
from the matching built-in (as PyAV does), so ``except ValueError`` keeps working
for callers that do not know fitcast.  ``status`` is the HTTP status the server
maps the error to; ``slug`` names the problem type in problem+json bodies.
"""

from __future__ import annotations


class FitcastError(Exception):
    """Base class of every fitcast error."""

    status: int = 500
    slug: str = "internal-error"
    title: str = "Internal error"


class InvalidInputError(FitcastError, ValueError):
    """A parameter or option is out of range or malformed."""

    status = 422
    slug = "invalid-input"
    title = "Invalid input"


class MediaError(FitcastError, ValueError):
    """The media cannot be read: not a video, empty, truncated or corrupt."""

    status = 422
    slug = "invalid-media"
    title = "Invalid media"


class UnsupportedMediaError(MediaError):
    """The media is readable but uses a container, codec or size fitcast refuses."""

    status = 415
    slug = "unsupported-media"
    title = "Unsupported media"


class ManifestError(FitcastError, ValueError):
    """A manifest is malformed."""

    status = 422
    slug = "invalid-manifest"
    title = "Invalid manifest"


class UnsupportedFormatError(ManifestError):
    """A manifest declares a format major version this reader does not know."""

    slug = "unsupported-manifest-format"
    title = "Unsupported manifest format"


class IntegrityError(FitcastError, ValueError):
    """Downloaded bytes do not match the sha256 the manifest names."""

    status = 502
    slug = "integrity"
    title = "Integrity check failed"


class UnsafeModelError(IntegrityError):
    """A model is not a program the player will hand to a runtime (operators, shapes, external
    data or control flow outside what fitcast's networks use)."""

    slug = "unsafe-model"
    title = "Model refused"


class UnsafeLocationError(FitcastError, PermissionError):
    """A manifest names a file outside its asset (a local path) or off its origin (a URL)."""

    status = 502
    slug = "unsafe-location"
    title = "Location refused"


class NotFoundError(FitcastError, LookupError):
    """A named asset, file or model does not exist."""

    status = 404
    slug = "not-found"
    title = "Not found"


class FetchError(FitcastError, ConnectionError):
    """A remote resource could not be fetched."""

    status = 502
    slug = "fetch-failed"
    title = "Fetch failed"


class ToolError(FitcastError, RuntimeError):
    """An external tool (ffmpeg) failed or timed out."""

    status = 500
    slug = "tool-failed"
    title = "External tool failed"


class TooLargeError(FitcastError, ValueError):
    """An upload or input exceeds a configured limit."""

    status = 413
    slug = "too-large"
    title = "Payload too large"


class UnauthorizedError(FitcastError, PermissionError):
    """A management call without a valid API key."""

    status = 401
    slug = "unauthorized"
    title = "Unauthorized"


class ForbiddenError(FitcastError, PermissionError):
    """A request the caller may not make (a playback token missing or expired, another origin)."""

    status = 403
    slug = "forbidden"
    title = "Forbidden"


class RateLimitedError(FitcastError, RuntimeError):
    """Too many requests or jobs at once; ``retry_after`` seconds until one more fits."""

    status = 429
    slug = "rate-limited"
    title = "Too many requests"

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RequestTimeoutError(FitcastError, TimeoutError):
    """A client stopped sending its request."""

    status = 408
    slug = "request-timeout"
    title = "Request timeout"


class ConflictError(FitcastError, RuntimeError):
    """The request conflicts with the resource's state (e.g. deleting a running job)."""

    status = 409
    slug = "conflict"
    title = "Conflict"


PROBLEM_BASE = "https://fitcast.dev/problems/"


def problem_body(status: int, title: str, detail: str | None = None, *, slug: str | None = None,
                 instance: str | None = None, **extra: object) -> dict:
    """An RFC 9457 problem details object (the body of every HTTP error and of a job's error)."""
    body: dict = {"type": PROBLEM_BASE + slug if slug else "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return body
