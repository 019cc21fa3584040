"""The service's trust boundary below the routes: Host and Origin checks, signed playback
tokens, and the HTTP protocol's own bounds (header timeout, connection cap).

- **Host** (every request): only the names the service is meant to be reached by
  (``Settings.allowed_hosts``; loopback names by default), so a DNS-rebinding page that
  points its own name at 127.0.0.1 gets a 421, and no other Host value ends up in links.
- **Origin** (state-changing requests): a browser's request from another origin, or one
  marked ``Sec-Fetch-Site: cross-site``, is refused with a 403, so a web page cannot drive a
  loopback service (a CORS "simple" multipart POST included).  Requests without Origin (the
  CLI, curl, servers) pass: they are not a browser acting for a page.
- **Playback tokens**: ``<expires>.<HMAC-SHA256(secret, "<asset>.<expires>")>``, base64url;
  a signed asset's files are served only with a valid, unexpired token for that asset.
- **Protocol bounds** (:class:`BoundedH11Protocol`): a connection must finish its request
  headers within ``header_timeout`` seconds, and connections beyond ``max_connections`` are
  closed as they arrive (slowloris and idle floods cost a socket for seconds, not forever).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from fitcast.errors import problem_body

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def load_secret(root: Path) -> bytes:
    """The store's signing secret (``root/secret.key``, 32 random bytes, created 0600 on first use)."""
    path = root / "secret.key"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(32))
    data = path.read_bytes()
    if len(data) < 32:
        raise RuntimeError(f"{path} is damaged (fewer than 32 bytes): remove it to make a new one")
    return data


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def playback_token(secret: bytes, asset_id: str, expires: int) -> str:
    """A token that opens ``asset_id``'s files until ``expires`` (unix seconds)."""
    mac = hmac.new(secret, f"{asset_id}.{expires}".encode(), hashlib.sha256).digest()
    return f"{expires}.{_b64(mac)}"


def check_playback_token(secret: bytes, asset_id: str, token: str | None, *, now: float | None = None) -> str | None:
    """None when ``token`` opens ``asset_id`` now, else why not."""
    if not token:
        return "this asset needs a playback token (?token=…)"
    expires_text, _, _mac = token.partition(".")
    if not expires_text.isdigit() or len(expires_text) > 12:
        return "malformed playback token"
    expires = int(expires_text)
    if not hmac.compare_digest(playback_token(secret, asset_id, expires), token):
        return "invalid playback token"
    if expires < (now if now is not None else time.time()):
        return "the playback token has expired"
    return None


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class HostOriginMiddleware:
    """Refuse requests for other Host names (421) and browsers' cross-origin state changes (403)."""

    def __init__(self, app: ASGIApp, *, allowed_hosts: list[str], allowed_origins: list[str]) -> None:
        self.app = app
        self.any_host = "*" in allowed_hosts
        self.hosts = {h.lower() for h in allowed_hosts}
        self.origins = {o.lower().rstrip("/") for o in allowed_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
        host = headers.get("host", "")
        if not self.any_host and _host_name(host) not in self.hosts:
            await _problem(send, 421, "Misdirected request", f"this service does not answer for host {host!r} "
                           "(FITCAST_ALLOWED_HOSTS)")
            return
        if scope["method"] in UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None:  # "null" (sandboxed frames, file: pages) is no origin of ours either
                allowed = origin.lower().rstrip("/") in self._own_origins(scope, host)
            else:
                allowed = headers.get("sec-fetch-site") != "cross-site"
            if not allowed:
                await _problem(send, 403, "Cross-origin request refused",
                               f"state-changing requests from {origin or 'another site'} are refused "
                               "(FITCAST_ALLOWED_ORIGINS)")
                return
        await self.app(scope, receive, send)

    def _own_origins(self, scope: Scope, host: str) -> set[str]:
        scheme = scope.get("scheme", "http")
        return self.origins | {f"{scheme}://{host.lower()}"}


async def _problem(send: Send, status: int, title: str, detail: str, *, slug: str | None = None,
                   headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(problem_body(status, title, detail, slug=slug)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"), *(headers or []),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """A token bucket per client: up to ``capacity`` tokens, refilled at ``rate`` a second; a
    client never seen holds a full bucket.  A spend may take a bucket below zero (work charged
    after it ran); the client then waits until it is refilled.  Beyond ``max_clients`` the
    clients whose buckets are full again are forgotten (they start full anyway)."""

    def __init__(self, capacity: float, rate: float, *, max_clients: int) -> None:
        self.capacity, self.rate, self.max_clients = float(capacity), float(rate), max_clients
        self.buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def level(self, client: str, now: float) -> float:
        tokens, then = self.buckets.get(client, (self.capacity, now))
        return min(self.capacity, tokens + (now - then) * self.rate)

    def wait(self, client: str, tokens: float) -> float:
        """Seconds until ``client`` holds ``tokens`` (0: it does now)."""
        short = tokens - self.level(client, time.monotonic())
        return max(0.0, short / self.rate)

    def spend(self, client: str, tokens: float) -> None:
        now = time.monotonic()
        self.buckets[client] = (self.level(client, now) - tokens, now)
        if len(self.buckets) > self.max_clients:
            self.buckets = {c: b for c, b in self.buckets.items() if self.level(c, now) < self.capacity}


class RateLimitMiddleware:
    """A token bucket per client on the management API (``/v1/assets`` and below, the asset
    files excepted: players fetch those in bursts and they are plain file reads).  The client is
    its API key's id, else its address; over the limit: 429 with ``Retry-After``, answered after
    ``delay`` seconds (a tarpit: a client that ignores Retry-After and asks again at once gets at
    most one answer per ``delay`` on each connection, instead of costing the server a rejection
    per round trip; waiting costs the server nothing)."""

    FILE_AREAS = ("/hls/", "/sr/", "/report/")

    def __init__(self, app: ASGIApp, *, rate: float, burst: int, delay: float = 0.0) -> None:
        self.app = app
        self.delay = delay
        self.buckets = TokenBuckets(burst, rate, max_clients=100_000)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith("/v1/assets") or any(area in path for area in self.FILE_AREAS):
            await self.app(scope, receive, send)
            return
        wait = self._take(self._client(scope))
        if wait > 0:
            if self.delay:
                await asyncio.sleep(self.delay)
            await _problem(send, 429, "Too many requests", f"slow down: retry in {wait:.1f} s", slug="rate-limited",
                           headers=[(b"retry-after", str(max(1, round(wait))).encode())])
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _client(scope: Scope) -> str:
        for k, v in scope.get("headers") or []:
            if k in (b"authorization", b"x-api-key") and b"fck_" in v:
                return v.split(b"fck_", 1)[1][:12].decode("latin-1")  # the key's id, not its secret
        client = scope.get("client")
        return client[0] if client else "-"

    def _take(self, client: str) -> float:
        """Seconds to wait before ``client`` may call again (0: it may now, and a token is spent)."""
        wait = self.buckets.wait(client, 1.0)
        if wait == 0:
            self.buckets.spend(client, 1.0)
        return wait


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header timeout and a connection cap (class attributes, set
    by :func:`bounded_protocol`)."""

    header_timeout: float = 10.0
    max_connections: int = 512

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            transport.abort()  # over the cap: no response, no log line per connection
            return
        self._arm_header_timer()

    def _arm_header_timer(self) -> None:
        cycle = self.cycle

        def late() -> None:
            if self.cycle is cycle and not self.transport.is_closing():
                self.transport.close()  # no complete request headers in time

        self.loop.call_later(self.header_timeout, late)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_header_timer()


def bounded_protocol(header_timeout: float, max_connections: int) -> type[BoundedH11Protocol]:
    return type("ServeProtocol", (BoundedH11Protocol,), {"header_timeout": header_timeout,
                                                          "max_connections": max_connections})
