"""API keys: who may call the management API, and whose assets are whose.

A key reads ``fck_<id>_<secret>``: the id names it (in logs, in ``fitcast keys list``, as the
owner of the assets it uploads), the secret proves it.  Only the SHA-256 of the secret is
stored (the secret is 32 random bytes, so a fast hash is enough: nothing to brute-force), and
a key is shown once, when ``fitcast keys create`` makes it.  Scopes: ``user`` (its own assets)
and ``admin`` (every asset).  The keys live in the store's SQLite file beside the jobs.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from server.db import Connections

Scope = Literal["user", "admin"]
SCOPES: tuple[str, ...] = ("user", "admin")
LOCAL_OWNER = "local"  # the owner of everything when the service runs without keys
_KEY_RE = re.compile(r"^fck_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
"""


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created: float
    revoked: float | None

    @property
    def admin(self) -> bool:
        return self.scope == "admin"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The ``api_keys`` table."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = Connections(self.path)
        with self._connect() as con:
            con.executescript(SCHEMA)
        self._any: tuple[float, bool] | None = None

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._connections.connect()

    def create(self, name: str, scope: Scope = "user") -> tuple[ApiKey, str]:
        """A new key: its record and the full key text (shown once, never stored)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        now = time.time()
        with self._connect() as con:
            con.execute("INSERT INTO api_keys (id, name, scope, secret_sha256, created) VALUES (?, ?, ?, ?, ?)",
                        (key_id, name, scope, _digest(secret), now))
        self._any = None
        return ApiKey(key_id, name, scope, now, None), f"fck_{key_id}_{secret}"

    def list(self) -> list[ApiKey]:
        with self._connect() as con:
            rows = con.execute("SELECT id, name, scope, created, revoked FROM api_keys ORDER BY created").fetchall()
        return [ApiKey(**dict(r)) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._connect() as con:
            cur = con.execute("UPDATE api_keys SET revoked=? WHERE id=? AND revoked IS NULL", (time.time(), key_id))
        return cur.rowcount == 1

    def any_active(self) -> bool:
        """Whether the service requires keys (some key exists and is not revoked); cached 2 s."""
        now = time.monotonic()
        if self._any is None or now - self._any[0] > 2.0:
            with self._connect() as con:
                row = con.execute("SELECT 1 FROM api_keys WHERE revoked IS NULL LIMIT 1").fetchone()
            self._any = (now, row is not None)
        return self._any[1]

    def verify(self, text: str) -> ApiKey | None:
        """The active key ``text`` is, or None."""
        match = _KEY_RE.match(text.strip())
        if not match:
            return None
        key_id, secret = match.groups()
        with self._connect() as con:
            row = con.execute("SELECT * FROM api_keys WHERE id=?", (key_id,)).fetchone()
        if row is None or row["revoked"] is not None or not hmac.compare_digest(row["secret_sha256"], _digest(secret)):
            return None
        return ApiKey(row["id"], row["name"], row["scope"], row["created"], row["revoked"])
