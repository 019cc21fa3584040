"""The server stopped in the middle of an encode: with SIGTERM its worker ends within a second and
the job waits for the next server; with kill -9 the orphaned worker ends itself, the lease lapses
and the restarted server takes the job over and finishes it."""

import signal
import subprocess
import time
from pathlib import Path

import httpx

from fitcast.storage import ASSET_MARKER
from helpers import asset_done, asset_progress, wait_while_progressing
from server.launch import free_port, start_server

ENV = {"FITCAST_TRAIN_ITERATIONS": "50", "FITCAST_POLL_SECONDS": "0.2", "FITCAST_JOB_LEASE_SECONDS": "3"}


def _start(root: Path, port: int) -> subprocess.Popen:
    return start_server(root, port=port, env=ENV)[0]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def _until_stage(base: str, asset_id: str, stages: tuple[str, ...]) -> None:
    a = wait_while_progressing(lambda: httpx.get(f"{base}/{asset_id}").json(),
                               done=lambda a: a["progress"]["stage"] in stages or asset_done(a),
                               progress=asset_progress, interval=0.1)
    assert a["progress"]["stage"] in stages, f"the job finished before it could be interrupted: {a}"


def test_stop_mid_job_then_restart_finishes_it(tmp_path, chaplin_piece):
    root, port = tmp_path / "store", free_port()
    server = _start(root, port)
    base = f"http://127.0.0.1:{port}/v1/assets"
    try:
        r = httpx.post(base, params={"preset": "fast", "segment_seconds": 0.5, "target_fps": 0},
                       content=chaplin_piece.read_bytes(),
                       headers={"Content-Type": "video/mp4"}, timeout=60)
        assert r.status_code == 202, r.text
        asset_id = r.json()["id"]
        # 1. SIGTERM while training: the worker ends within a second, the server soon after
        _until_stage(base, asset_id, ("train",))
        workers = _children(server.pid)
        assert workers, "no worker process to stop"
        stopped = time.monotonic()
        server.send_signal(signal.SIGTERM)
        while not all(_gone(w) for w in workers) and time.monotonic() - stopped < 5:
            time.sleep(0.05)
        assert all(_gone(w) for w in workers) and time.monotonic() - stopped < 1.5, "a worker outlived SIGTERM"
        server.wait(timeout=15)
        # 2. the next server resumes the job at once (it was handed back); kill -9 it once the job has
        #    published its LR stream and written work files (from the analyse stage on)
        server = _start(root, port)
        _until_stage(base, asset_id, ("analyse", "sample", "train", "export"))
        workers = _children(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait()
    finally:
        if server.poll() is None:
            server.kill()
    # the orphaned worker ends at once (the kernel's parent-death signal) instead of racing the restart
    time.sleep(1.0)
    assert all(_gone(w) for w in workers)
    server = _start(root, port)
    try:
        a = wait_while_progressing(lambda: httpx.get(f"{base}/{asset_id}").json(), done=asset_done,
                                   progress=asset_progress)
        assert a["status"] == "ready", a
        m = httpx.get(f"{base}/{asset_id}/sr/manifest.json").json()
        assert m["asset_id"] == asset_id
        for model in m["models"]:
            assert httpx.get(f"{base}/{asset_id}/sr/{model['uri']}").status_code == 200
        leftovers = [p.name for p in (root / "assets" / asset_id).iterdir()
                     if p.name.startswith(".") and p.name != ASSET_MARKER or p.name == "work"]
        assert leftovers == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
