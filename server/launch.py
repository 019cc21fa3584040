"""Run `fitcast serve` as a child process on a loopback port and wait until it answers.

For the demo, the load benchmark and the tests that need a real server process
(one that can be killed and restarted).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path, *, port: int | None = None, env: Mapping[str, str] | None = None,
                 log: IO | None = None, new_session: bool = False,
                 timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """Start ``fitcast serve --root ROOT`` (``env`` adds ``FITCAST_*`` settings); return the
    process and its base URL once ``/healthz`` answers.  Raises ``RuntimeError`` otherwise."""
    port = port or free_port()
    exe = str(Path(sys.executable).with_name("fitcast"))
    proc = subprocess.Popen([exe, "serve", "--root", str(root), "--port", str(port)],
                            env={**os.environ, **(env or {})}, stdout=log or subprocess.DEVNULL,
                            stderr=subprocess.STDOUT if log else subprocess.DEVNULL, start_new_session=new_session)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with code {proc.returncode} before it answered")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"the server did not answer on {base} within {timeout:.0f} s")
