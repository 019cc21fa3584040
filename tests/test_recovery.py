"""A kill -9 of the server in the middle of an encode, then a restart: the job resumes and finishes."""

import signal
import subprocess
import time
from pathlib import Path

import httpx

from helpers import asset_done, asset_progress, wait_while_progressing
from server.launch import free_port, start_server

ENV = {"FITCAST_TRAIN_ITERATIONS": "100", "FITCAST_POLL_SECONDS": "0.2", "FITCAST_JOB_LEASE_SECONDS": "3"}


def _start(root: Path, port: int) -> subprocess.Popen:
    return start_server(root, port=port, env=ENV)[0]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_kill_9_mid_job_then_restart_finishes_it(tmp_path, leaf_piece):
    root, port = tmp_path / "store", free_port()
    server = _start(root, port)
    base = f"http://127.0.0.1:{port}/v1/assets"
    try:
        r = httpx.post(base, params={"preset": "fast", "segment_seconds": 0.5, "target_fps": 0},
                       content=leaf_piece.read_bytes(),
                       headers={"Content-Type": "video/mp4"}, timeout=60)
        assert r.status_code == 202, r.text
        asset_id = r.json()["id"]
        a = wait_while_progressing(lambda: httpx.get(f"{base}/{asset_id}").json(),
                                   done=lambda a: a["progress"]["stage"] == "train" or asset_done(a),
                                   progress=asset_progress, interval=0.1)
        assert a["progress"]["stage"] == "train", f"the job finished before it could be interrupted: {a}"
        workers = _children(server.pid)
        server.send_signal(signal.SIGKILL)
        server.wait()
    finally:
        if server.poll() is None:
            server.kill()
    # the orphaned worker notices and exits instead of racing the restarted server
    time.sleep(1.5)
    assert all(not Path(f"/proc/{w}").exists() or "zombie" in Path(f"/proc/{w}/status").read_text().lower()
               for w in workers)
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
                     if p.name.startswith(".") or p.name == "work"]
        assert leftovers == []
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=20)
