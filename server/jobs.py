"""The job table (SQLite, WAL): one row per asset, with leases.

One row per asset, owned by the API key that uploaded it (``local`` when the service runs
without keys).  A job is ``queued`` until a dispatcher claims it (``processing``, with a
*lease*: a lease owner and an expiry time), then ``ready``, ``errored`` or ``canceled``
(a cancel of a queued job is immediate; of a processing one it is a request the
dispatcher carries out by stopping the worker).  While the worker process lives, its dispatcher renews the lease
(a heartbeat every poll).  A job whose lease ran out — its server was killed,
even with ``kill -9``, or lost its disk — is claimed again by any dispatcher on
the same database, up to ``MAX_ATTEMPTS`` claims; then it fails with a reason.
Every stage of the pipeline publishes by atomic rename and a rerun first clears
what the interrupted run left unpublished, so no half-written file is served.

The dispatcher that claims jobs and the worker processes that run them live in
``server.worker``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fitcast.errors import problem_body
from server.db import Connections

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    status TEXT NOT NULL,
    stage TEXT,
    fraction REAL NOT NULL DEFAULT 0,
    playable INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    options TEXT NOT NULL,
    source_name TEXT,
    source_bytes INTEGER,
    source_sha256 TEXT,
    idempotency_key TEXT UNIQUE,  -- "<owner> <key>": idempotency keys are per owner
    request_sha256 TEXT,  -- what the idempotent request carried (options and body)
    owner TEXT NOT NULL DEFAULT 'local',
    playback TEXT NOT NULL DEFAULT 'public',
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires REAL,
    takeovers INTEGER NOT NULL DEFAULT 0,
    seconds TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
"""
# Columns added after the first release: added to older databases on open.
MIGRATIONS = {"lease_owner": "ALTER TABLE assets ADD COLUMN lease_owner TEXT",
              "lease_expires": "ALTER TABLE assets ADD COLUMN lease_expires REAL",
              "takeovers": "ALTER TABLE assets ADD COLUMN takeovers INTEGER NOT NULL DEFAULT 0",
              "seconds": "ALTER TABLE assets ADD COLUMN seconds TEXT",
              "request_sha256": "ALTER TABLE assets ADD COLUMN request_sha256 TEXT",
              "owner": "ALTER TABLE assets ADD COLUMN owner TEXT NOT NULL DEFAULT 'local'",
              "playback": "ALTER TABLE assets ADD COLUMN playback TEXT NOT NULL DEFAULT 'public'",
              "cancel_requested": "ALTER TABLE assets ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0"}
STATES = ("queued", "processing", "ready", "errored", "canceled")
ACTIVE = ("queued", "processing")

MAX_ATTEMPTS = 3


@dataclass
class Job:
    seq: int
    id: str
    status: str
    stage: str | None
    fraction: float
    playable: bool
    error: dict[str, Any] | None
    options: dict[str, Any]
    source_name: str | None
    source_bytes: int | None
    source_sha256: str | None
    idempotency_key: str | None
    attempts: int
    created: float
    updated: float
    lease_owner: str | None = None
    lease_expires: float | None = None
    takeovers: int = 0  # times another dispatcher took the job over from a lapsed lease
    seconds: dict[str, float] | None = None  # each stage's seconds, once ready
    request_sha256: str | None = None
    owner: str = "local"
    playback: str = "public"  # "public", or "signed": files only with a playback token
    cancel_requested: bool = False

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Job:
        d = dict(row)
        d["playable"] = bool(d["playable"])
        d["cancel_requested"] = bool(d.get("cancel_requested"))
        if d.get("idempotency_key"):
            d["idempotency_key"] = d["idempotency_key"].split(" ", 1)[-1]
        d["error"] = json.loads(d["error"]) if d["error"] else None
        d["options"] = json.loads(d["options"])
        d["seconds"] = json.loads(d["seconds"]) if d.get("seconds") else None
        return cls(**d)


class JobStore:
    """Thread-safe access to the job table; every call is its own short transaction (on its thread's
    connection)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connections = Connections(self.path)
        with self._connect() as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(SCHEMA)
            have = {row["name"] for row in con.execute("PRAGMA table_info(assets)")}
            for column, ddl in MIGRATIONS.items():
                if column not in have:
                    con.execute(ddl)

    def _connect(self) -> AbstractContextManager[sqlite3.Connection]:
        return self._connections.connect()

    def create(self, asset_id: str, options: dict[str, Any], *, source_name: str, source_bytes: int,
               source_sha256: str, idempotency_key: str | None, owner: str = "local", playback: str = "public",
               request_sha256: str | None = None) -> Job:
        now = time.time()
        scoped = f"{owner} {idempotency_key}" if idempotency_key else None
        with self._connect() as con:
            con.execute(
                "INSERT INTO assets (id, status, stage, options, source_name, source_bytes, source_sha256, "
                "idempotency_key, request_sha256, owner, playback, created, updated) "
                "VALUES (?, 'queued', 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (asset_id, json.dumps(options), source_name, source_bytes, source_sha256, scoped, request_sha256,
                 owner, playback, now, now),
            )
        job = self.get(asset_id)
        assert job is not None
        return job

    def get(self, asset_id: str, *, owner: str | None = None) -> Job | None:
        """The job of ``asset_id`` (only if ``owner`` owns it, when given)."""
        with self._connect() as con:
            row = con.execute("SELECT * FROM assets WHERE id = ?", (asset_id,)).fetchone()
        job = Job.from_row(row) if row else None
        return job if job is not None and (owner is None or job.owner == owner) else None

    def by_idempotency_key(self, owner: str, key: str) -> Job | None:
        with self._connect() as con:
            row = con.execute("SELECT * FROM assets WHERE idempotency_key = ?", (f"{owner} {key}",)).fetchone()
        return Job.from_row(row) if row else None

    def list(self, *, after_seq: int = 0, limit: int = 20, owner: str | None = None) -> list[Job]:
        """Jobs in upload order after ``after_seq`` (only ``owner``'s, when given)."""
        where, args = ("AND owner = ?", (owner,)) if owner is not None else ("", ())
        with self._connect() as con:
            rows = con.execute(f"SELECT * FROM assets WHERE seq > ? {where} ORDER BY seq LIMIT ?",
                               (after_seq, *args, limit)).fetchall()
        return [Job.from_row(r) for r in rows]

    def usage(self, owner: str | None = None) -> tuple[int, int]:
        """(jobs queued or processing, source bytes stored) of ``owner`` (everyone's when None)."""
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        with self._connect() as con:
            row = con.execute("SELECT SUM(status IN ('queued', 'processing')), SUM(COALESCE(source_bytes, 0)) "
                              f"FROM assets {where}", args).fetchone()
        return int(row[0] or 0), int(row[1] or 0)

    def cancel(self, asset_id: str) -> str:
        """Cancel a job: a queued one at once, a processing one by asking its dispatcher (which stops
        the worker).  Returns the status after the call; ended jobs are left as they are."""
        now = time.time()
        with self._connect() as con:
            con.execute("BEGIN IMMEDIATE")
            con.execute("UPDATE assets SET status='canceled', stage='canceled', updated=? WHERE id=? AND "
                        "status='queued'", (now, asset_id))
            con.execute("UPDATE assets SET cancel_requested=1, updated=? WHERE id=? AND status='processing'",
                        (now, asset_id))
            row = con.execute("SELECT status FROM assets WHERE id=?", (asset_id,)).fetchone()
            con.execute("COMMIT")
        return row["status"] if row else "deleted"

    def canceled(self, asset_id: str, lease_owner: str) -> bool:
        """End a processing job whose cancel was asked for (fenced by its lease)."""
        with self._connect() as con:
            cur = con.execute("UPDATE assets SET status='canceled', stage='canceled', lease_owner=NULL, "
                              "lease_expires=NULL, updated=? WHERE id=? AND status='processing' AND lease_owner=?",
                              (time.time(), asset_id, lease_owner))
            return cur.rowcount == 1

    def all(self) -> list[Job]:
        """Every job (for the metrics; the table holds one row per asset)."""
        with self._connect() as con:
            return [Job.from_row(r) for r in con.execute("SELECT * FROM assets ORDER BY seq").fetchall()]

    def delete(self, asset_id: str) -> None:
        with self._connect() as con:
            con.execute("DELETE FROM assets WHERE id = ?", (asset_id,))

    def progress(self, asset_id: str, stage: str, fraction: float, *, playable: bool | None = None) -> None:
        with self._connect() as con:
            if playable is None:
                con.execute("UPDATE assets SET stage=?, fraction=?, updated=? WHERE id=?",
                            (stage, fraction, time.time(), asset_id))
            else:
                con.execute("UPDATE assets SET stage=?, fraction=?, playable=?, updated=? WHERE id=?",
                            (stage, fraction, int(playable), time.time(), asset_id))

    def finish(self, asset_id: str, *, lease_owner: str | None = None, error: dict[str, Any] | None = None,
               seconds: dict[str, float] | None = None) -> bool:
        """Mark a job ready (or errored with ``error``); with ``lease_owner`` only while that
        dispatcher holds its lease (a fenced write: a worker whose job was taken over, or was
        canceled, changes nothing).  True when the row changed."""
        fence, args = ("AND status='processing' AND lease_owner=?", (lease_owner,)) if lease_owner else ("", ())
        with self._connect() as con:
            if error:
                cur = con.execute("UPDATE assets SET status='errored', error=?, lease_owner=NULL, lease_expires=NULL, "
                                  f"updated=? WHERE id=? {fence}", (json.dumps(error), time.time(), asset_id, *args))
            else:
                cur = con.execute("UPDATE assets SET status='ready', stage='done', fraction=1.0, playable=1, "
                                  "error=NULL, lease_owner=NULL, lease_expires=NULL, seconds=?, updated=? "
                                  f"WHERE id=? {fence}", (json.dumps(seconds) if seconds else None, time.time(),
                                                          asset_id, *args))
            return cur.rowcount == 1

    def claim_next(self, owner: str, lease_seconds: float) -> Job | None:
        """Atomically take the oldest job that is queued or whose lease ran out.

        A job taken for the ``MAX_ATTEMPTS``-th time after lapsed leases fails
        instead of running again (it keeps killing its workers, or their server).
        """
        while True:
            now = time.time()
            with self._connect() as con:
                con.execute("BEGIN IMMEDIATE")
                row = con.execute(
                    "SELECT * FROM assets WHERE status='queued' OR (status='processing' AND "
                    "(lease_expires IS NULL OR lease_expires < ?)) ORDER BY seq LIMIT 1", (now,)
                ).fetchone()
                if row is None:
                    con.execute("COMMIT")
                    return None
                if row["status"] == "processing" and row["attempts"] >= MAX_ATTEMPTS:
                    err = problem_body(500, "Encode failed",
                                       f"interrupted {row['attempts']} times (its worker or server died each time)")
                    con.execute("UPDATE assets SET status='errored', error=?, lease_owner=NULL, lease_expires=NULL, "
                                "updated=? WHERE id=?", (json.dumps(err), now, row["id"]))
                    con.execute("COMMIT")
                    continue
                if row["status"] == "processing":
                    log.info("job %s: lease of %s ran out, taking it over", row["id"], row["lease_owner"])
                con.execute(
                    "UPDATE assets SET status='processing', stage='queued', attempts=attempts+1, "
                    "takeovers=takeovers+(status='processing'), lease_owner=?, "
                    "lease_expires=?, updated=? WHERE id=?",
                    (owner, now + lease_seconds, now, row["id"]),
                )
                con.execute("COMMIT")
            return self.get(row["id"])

    def heartbeat(self, asset_id: str, owner: str, lease_seconds: float) -> str:
        """Extend ``owner``'s lease on a processing job: ``"held"``, ``"cancel"`` (held, and a cancel
        was asked for) or ``"lost"`` (no longer theirs, or no longer processing)."""
        with self._connect() as con:
            cur = con.execute(
                "UPDATE assets SET lease_expires=? WHERE id=? AND status='processing' AND lease_owner=?",
                (time.time() + lease_seconds, asset_id, owner),
            )
            if cur.rowcount != 1:
                return "lost"
            row = con.execute("SELECT cancel_requested FROM assets WHERE id=?", (asset_id,)).fetchone()
            return "cancel" if row and row[0] else "held"

    def release(self, asset_id: str, owner: str) -> None:
        """Hand a job back to the queue at once (a clean shutdown), keeping its attempt count."""
        with self._connect() as con:
            con.execute("UPDATE assets SET status='queued', stage='queued', lease_owner=NULL, lease_expires=NULL, "
                        "updated=? WHERE id=? AND status='processing' AND lease_owner=?",
                        (time.time(), asset_id, owner))
