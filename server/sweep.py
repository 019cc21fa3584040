"""The start-up sweep: what a crash left in the store is removed or marked before jobs run.

- partial uploads (``uploads/*.part``) of requests that never finished;
- trash (``assets/.<id>.deleted``) of a ``DELETE`` interrupted between its steps, and the
  row it was removing;
- asset folders without a row (an upload that crashed between its file and its row), once
  older than ``ORPHAN_AGE`` seconds (so a concurrent upload's folder is never taken);
- rows whose folder is gone (ready or waiting jobs whose files were lost) are marked errored;
- leftovers of interrupted encodes (temporary copies, ``work/``) in the folders of ended jobs.
"""

from __future__ import annotations

import logging
import shutil
import time

from fitcast.config import Settings
from fitcast.errors import problem_body
from fitcast.storage import ASSET_MARKER, clear_leftovers
from server.jobs import JobStore

log = logging.getLogger(__name__)
ORPHAN_AGE = 60.0


def sweep_store(settings: Settings, store: JobStore, *, now: float | None = None) -> dict[str, int]:
    """Sweep the store; returns how many of each kind were handled (also logged)."""
    now = time.time() if now is None else now
    done = {"partial_uploads": 0, "trash": 0, "orphan_folders": 0, "rows_without_files": 0}
    for part in settings.uploads_dir.glob("*.part"):
        part.unlink(missing_ok=True)
        done["partial_uploads"] += 1
    for trash in settings.assets_dir.glob(".*.deleted"):
        asset_id = trash.name[1 : -len(".deleted")]
        store.delete(asset_id)
        shutil.rmtree(trash, ignore_errors=True)
        done["trash"] += 1
    jobs = {job.id: job for job in store.all()}
    for folder in settings.assets_dir.iterdir():
        if folder.name.startswith(".") or not folder.is_dir() or folder.name in jobs:
            continue
        if (folder / ASSET_MARKER).is_file() and now - folder.stat().st_mtime > ORPHAN_AGE:
            shutil.rmtree(folder, ignore_errors=True)
            done["orphan_folders"] += 1
    for job in jobs.values():
        folder = settings.assets_dir / job.id
        if job.status in ("ready", "queued", "processing") and not folder.is_dir():
            store.finish(job.id, error=problem_body(410, "Files lost", "the asset's files are missing from the store"))
            done["rows_without_files"] += 1
        elif job.status in ("ready", "errored", "canceled"):
            clear_leftovers(folder)
    if any(done.values()):
        log.info("start-up sweep: %s", done)
    return done
