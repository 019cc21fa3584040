"""The encode worker: runs one job in its own process and records progress."""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback

from fitcast.config import Settings
from fitcast.errors import FitcastError
from server.compute import make_executor
from server.jobs import JobStore
from server.pipeline import EncodeOptions, encode

log = logging.getLogger(__name__)


def problem_of(exc: BaseException) -> dict:
    if isinstance(exc, FitcastError):
        return {"type": f"https://fitcast.dev/problems/{exc.slug}", "title": exc.title, "status": exc.status,
                "detail": str(exc)}
    return {"type": "about:blank", "title": "Encode failed", "status": 500, "detail": f"{type(exc).__name__}: {exc}"}


def _exit_with_parent(poll: float = 0.5) -> None:
    """End this worker when the server that spawned it dies (even by SIGKILL).

    The restarted server runs the interrupted job again; an orphan still
    writing into the same asset would race it.
    """
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(75)

    threading.Thread(target=watch, name="fitcast-parent-watch", daemon=True).start()


def run_job(settings_json: str, asset_id: str) -> None:
    _exit_with_parent()
    settings = Settings.model_validate_json(settings_json)
    store = JobStore(settings.db_path)
    job = store.get(asset_id)
    if job is None:
        return
    last = {"t": 0.0, "playable": False}

    def progress(stage: str, fraction: float) -> None:
        now = time.monotonic()
        # hls/ is published when the transcode stage ends: from the next stage on, the LR stream plays
        playable = stage not in ("probe", "transcode")
        if playable and not last["playable"]:
            last["playable"] = True
            store.progress(asset_id, stage, fraction, playable=True)
            last["t"] = now
        elif now - last["t"] >= 0.5:
            store.progress(asset_id, stage, fraction)
            last["t"] = now

    try:
        options = dict(job.options)
        if settings.train_iterations:
            options["iterations"] = settings.train_iterations
        options.setdefault("train_device", settings.train_device)
        asset_dir = settings.assets_dir / asset_id
        encode(
            (asset_dir / job.source_name),
            asset_dir,
            EncodeOptions(**options),
            asset_id=asset_id,
            progress=progress,
            executor=make_executor(settings.executor, settings.executor_workers, address=settings.ray_address),
        )
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded on the job
        log.error("job %s failed: %s", asset_id, traceback.format_exc())
        store.finish(asset_id, error=problem_of(exc))
        return
    store.finish(asset_id)
