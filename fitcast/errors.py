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


def problem_of(exc: BaseException, *, title: str = "Internal error") -> dict:
    """The problem details of an exception: a fitcast error as itself, anything else as a 500."""
    if isinstance(exc, FitcastError):
        return problem_body(exc.status, exc.title, str(exc), slug=exc.slug)
    return problem_body(500, title, f"{type(exc).__name__}: {exc}")
