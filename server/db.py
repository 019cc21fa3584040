"""SQLite connections for the service's tables: one per thread, kept open.

Opening a connection (file, WAL index, schema) costs more than the query a file request makes
to find its asset, and every segment a player fetches makes one: each thread keeps its own
connection instead (SQLite connections must not be shared between threads).  Statements run in
autocommit mode; a block that fails inside an explicit ``BEGIN`` is rolled back before the
connection is used again.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Connections:
    """``with connections.connect() as con:`` gives this thread's connection to ``path``."""

    def __init__(self, path: Path, *, busy_timeout_ms: int = 30_000) -> None:
        self.path, self.busy_timeout_ms = Path(path), busy_timeout_ms
        self._local = threading.local()

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                                  check_same_thread=True)
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_ms)}")
            self._local.con = con
        try:
            yield con
        finally:
            if con.in_transaction:  # an exception left a BEGIN open: nothing of it stays
                con.rollback()
