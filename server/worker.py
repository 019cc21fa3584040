"""The dispatcher and the encode workers.

The :class:`Dispatcher` (threads in the server) claims jobs from the table and runs
each in a spawned worker process (:func:`run_job`), renewing the job's lease while
the worker lives; a crash in native code or a kill never takes the HTTP server down.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from fitcast.config import Settings
from fitcast.errors import FitcastError, problem_body
from fitcast.options import EncodeOptions
from server.compute import make_executor
from server.jobs import JobStore

log = logging.getLogger(__name__)


def _exit_with_parent(poll: float = 0.2) -> None:
    """End this worker when the server that spawned it dies (even by SIGKILL), however busy it is.

    The restarted server runs the interrupted job again; an orphan still writing into the same
    asset would race it.  On Linux the kernel sends SIGKILL the moment the spawning thread ends
    (``PR_SET_PDEATHSIG``); elsewhere a thread polls the parent's pid.
    """
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # it died before the signal was armed
            os._exit(75)

    def watch() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(75)

    threading.Thread(target=watch, name="fitcast-parent-watch", daemon=True).start()


def run_job(settings_json: str, asset_id: str, owner: str | None = None) -> None:
    """Encode one job in this (spawned) process; its end is written only while ``owner`` (the
    dispatcher that claimed it) still holds the job's lease."""
    _exit_with_parent()
    settings = Settings.model_validate_json(settings_json)
    if settings.worker_nice and hasattr(os, "nice"):
        os.nice(settings.worker_nice)
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
        from server.pipeline import encode
        if job.source_name is None:
            raise RuntimeError("the job has no source file")

        options = EncodeOptions.model_validate({"train_device": settings.train_device,
                                                 "encode_budget": settings.encode_budget} | dict(job.options))
        if settings.train_iterations:
            options = options.model_copy(update={"iterations": settings.train_iterations})
        asset_dir = settings.assets_dir / asset_id
        executor = make_executor(settings.executor, settings.executor_workers, address=settings.ray_address)
        if options.ladder:  # a ladder's master is published at its end, with every rung: no early playback
            from server.ladder import encode_ladder

            last["playable"] = True
            encode_ladder(asset_dir / job.source_name, asset_dir, options, asset_id=asset_id, progress=progress,
                          executor=executor)
        else:
            encode(asset_dir / job.source_name, asset_dir, options, asset_id=asset_id, progress=progress,
                   executor=executor)
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded on the job
        error_id = uuid.uuid4().hex[:12]
        log.error("job %s failed (error id %s): %s", asset_id, error_id, traceback.format_exc())
        store.finish(asset_id, lease_owner=owner, error=public_error(exc, settings, error_id))
        return
    store.finish(asset_id, lease_owner=owner, seconds=_stage_seconds(settings.assets_dir / asset_id))


def public_error(exc: BaseException, settings: Settings, error_id: str) -> dict:
    """What a failed job shows its owner: a fitcast error's own message (the store's paths cut
    out), anything else only as a generic line; the details stay in the server log under the id."""
    if isinstance(exc, FitcastError):
        detail = str(exc)
        for path in {str(settings.root.resolve()), str(settings.root)}:
            detail = detail.replace(path + "/", "").replace(path, "")
        return problem_body(exc.status, "Encode failed", detail, slug=exc.slug, error_id=error_id)
    return problem_body(500, "Encode failed", f"the encode failed unexpectedly (error id {error_id})",
                        error_id=error_id)


def _stage_seconds(asset_dir: Path) -> dict[str, float] | None:
    for name in ("quality.json", "ladder.json"):  # an asset's report, or a ladder's
        try:
            return dict(json.loads((asset_dir / "report" / name).read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            continue
    return None


def _stop_process(proc: multiprocessing.process.BaseProcess) -> None:
    """SIGTERM, and SIGKILL if the process is still there a second later."""
    proc.terminate()
    proc.join(1.0)
    if proc.is_alive():
        proc.kill()
        proc.join(5)


class Dispatcher:
    """Claims queued jobs and runs each in a spawned worker process."""

    def __init__(self, store: JobStore, settings_json: str, workers: int = 1, poll: float = 0.5,
                 lease_seconds: float = 30.0, on_change: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.on_change = on_change or (lambda _asset_id: None)  # a job changed state (the webhooks)
        self.settings_json = settings_json
        self.workers = workers
        self.poll = poll
        self.lease_seconds = lease_seconds
        # Unique per dispatcher: a restarted server is a new owner and waits for the old leases to lapse.
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._procs: set[multiprocessing.process.BaseProcess] = set()
        self._lock = threading.Lock()

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._loop, name=f"fitcast-dispatch-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def halt(self) -> None:
        """Stop claiming and end every worker now (SIGTERM, SIGKILL a second later), without
        waiting: safe to call from a signal handler.  The dispatch threads hand the jobs back."""
        self._stop.set()
        with self._lock:
            procs = list(self._procs)
        for p in procs:
            p.terminate()

        def kill_survivors() -> None:
            deadline = time.monotonic() + 1.0
            for p in procs:
                p.join(max(0.0, deadline - time.monotonic()))
                if p.is_alive():
                    p.kill()

        threading.Thread(target=kill_survivors, name="fitcast-halt", daemon=True).start()

    def stop(self, timeout: float = 5.0) -> None:
        """:meth:`halt`, then wait for the dispatch threads (which requeue their jobs)."""
        self.halt()
        for t in self._threads:
            t.join(timeout)

    def _loop(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        while not self._stop.is_set():
            job = self.store.claim_next(self.owner, self.lease_seconds)
            if job is None:
                self._stop.wait(self.poll)
                continue
            self.on_change(job.id)
            proc = ctx.Process(target=run_job, args=(self.settings_json, job.id, self.owner),
                               name=f"fitcast-job-{job.id}")
            proc.start()
            with self._lock:
                self._procs.add(proc)
            lost = False
            while proc.is_alive() and not self._stop.is_set():
                proc.join(self.poll)
                lease = self.store.heartbeat(job.id, self.owner, self.lease_seconds)
                if lease == "cancel":
                    log.info("job %s: canceled, stopping its worker", job.id)
                    _stop_process(proc)
                    self.store.canceled(job.id, self.owner)
                    lost = True  # ended here: nothing more to record
                    break
                if lease == "lost":
                    now = self.store.get(job.id)
                    if now is not None and now.status in ("ready", "errored", "canceled"):
                        proc.join(30)  # the worker wrote its end (and with it the lease): let it exit
                        break
                    # another dispatcher took the job over (this one stalled past its lease): stop ours
                    log.warning("job %s: lease lost, stopping its worker", job.id)
                    lost = True
                    _stop_process(proc)
            with self._lock:
                self._procs.discard(proc)
            if self._stop.is_set():
                self.store.release(job.id, self.owner)  # resumes at once under the next dispatcher
                return
            if lost:
                self.on_change(job.id)
                continue
            current = self.store.get(job.id)
            if current is not None and current.status == "processing":
                self.store.finish(job.id, lease_owner=self.owner, error=problem_body(
                    500, "Encode failed", f"the encode worker exited with code {proc.exitcode}"))
            self.on_change(job.id)
