"""RFC 9457 problem+json for every error, unknown routes included."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from fitcast.errors import FitcastError, RateLimitedError, UnauthorizedError, problem_body
from server.observability import REQUEST_ID

log = logging.getLogger(__name__)
MEDIA_TYPE = "application/problem+json"


def problem(status: int, title: str, detail: str | None = None, *, slug: str | None = None,
            instance: str | None = None, headers: dict[str, str] | None = None, **extra) -> JSONResponse:
    body = problem_body(status, title, detail, slug=slug, instance=instance, **extra)
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error response carries them."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the problem+json errors an operation can answer."""
    return {status: {"model": Problem, "description": _TITLES.get(status, "Error"),
                     "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for status in statuses}


_TITLES = {400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found", 405: "Method not allowed",
           408: "Request timeout", 409: "Conflict", 413: "Payload too large", 415: "Unsupported media type",
           421: "Misdirected request", 422: "Invalid input", 429: "Too many requests", 500: "Internal error"}


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    allowed: set[str] = set()
    for route in request.app.router.routes:
        methods = getattr(route, "methods", None)
        if methods and route.matches(dict(request.scope, method=next(iter(methods))))[0] == Match.FULL:
            allowed |= methods
    return sorted(allowed)


def install(app: FastAPI) -> None:
    @app.exception_handler(FitcastError)
    async def _fitcast(request: Request, exc: FitcastError) -> JSONResponse:
        headers = {}
        if isinstance(exc, RateLimitedError):
            headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        if isinstance(exc, UnauthorizedError):
            headers["WWW-Authenticate"] = 'Bearer realm="fitcast"'
        return problem(exc.status, exc.title, str(exc), slug=exc.slug, instance=request.url.path,
                       headers=headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(exc.status_code, _TITLES.get(exc.status_code, "Error"), detail, instance=request.url.path,
                       headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        return problem(422, "Invalid input", f"{'.'.join(first['loc'])}: {first['msg']}", slug="invalid-input",
                       instance=request.url.path, errors=errors)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)  # the details stay in the server's log
        return problem(500, "Internal error", f"an unexpected error occurred (error id {REQUEST_ID.get()})",
                       instance=request.url.path, error_id=REQUEST_ID.get())
