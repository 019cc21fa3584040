"""Load benchmark (not part of `make test`; loopback only, bounded in time).

    python bench/load.py --players 20 --uploads 3 --seconds 60 --readme README.md

Starts `fitcast serve` on a free loopback port over a fresh store, uploads one short
real clip and waits for it to be ready, then for ``--seconds``: ``--players``
concurrent players each fetch the playlists, manifest, models, label maps and
segments in a loop (what `fitcast play` downloads), while ``--uploads`` uploads of
the same clip arrive spread over the window (each starts a real encode in the
worker).  Reports p50/p99 latency per request kind, requests per second and every
error; with ``--readme`` the markdown table replaces the block between
``<!-- load:begin -->`` and ``<!-- load:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from urllib.parse import urljoin

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import MEDIA, machine, publish  # noqa: E402
from fitcast.media import cut  # noqa: E402
from server.launch import start_server  # noqa: E402


def upload(base: str, clip: Path) -> str:
    r = httpx.post(f"{base}/v1/assets", params={"preset": "fast", "segment_seconds": 1}, content=clip.read_bytes(),
                   headers={"Content-Type": "video/mp4"}, timeout=120)
    r.raise_for_status()
    return r.json()["id"]


def wait_ready(base: str, asset_id: str, timeout: float = 600) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        a = httpx.get(f"{base}/v1/assets/{asset_id}", timeout=10).json()
        if a["status"] == "ready":
            return
        if a["status"] == "errored":
            raise SystemExit(f"the warm-up encode failed: {a['error']}")
        time.sleep(0.5)
    raise SystemExit("the warm-up encode did not finish in time")


class Recorder:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.bytes = 0

    async def get(self, client: httpx.AsyncClient, kind: str, url: str) -> bytes | None:
        t0 = time.perf_counter()
        try:
            r = await client.get(url)
        except httpx.HTTPError as exc:
            self.errors.append(f"{kind} {url}: {type(exc).__name__}")
            return None
        self.latency[kind].append(time.perf_counter() - t0)
        if r.status_code != 200:
            self.errors.append(f"{kind} {url}: HTTP {r.status_code}")
            return None
        self.bytes += len(r.content)
        return r.content


async def player(base: str, asset_id: str, deadline: float, rec: Recorder) -> None:
    a = f"{base}/v1/assets/{asset_id}"
    async with httpx.AsyncClient(timeout=30) as client:
        while time.perf_counter() < deadline:
            await rec.get(client, "playlist", f"{a}/hls/master.m3u8")
            await rec.get(client, "playlist", f"{a}/hls/lr.m3u8")
            raw = await rec.get(client, "manifest", f"{a}/sr/manifest.json")
            if raw is None:
                continue
            m = json.loads(raw)
            sr = f"{a}/sr/manifest.json"  # manifest URIs are relative to it
            for model in m["models"]:
                if model["precision"] == "int8" and time.perf_counter() < deadline:
                    await rec.get(client, "model", urljoin(sr, model["uri"]))
            await rec.get(client, "segment", urljoin(sr, m["init_uri"]))
            for seg in m["segments"]:
                if time.perf_counter() >= deadline:
                    break
                await rec.get(client, "labels", urljoin(sr, seg["labels_uri"]))
                await rec.get(client, "segment", urljoin(sr, seg["uri"]))


async def uploader(base: str, clip: Path, delay: float, rec: Recorder) -> None:
    await asyncio.sleep(delay)
    body = await asyncio.to_thread(clip.read_bytes)
    async with httpx.AsyncClient(timeout=120) as client:
        t0 = time.perf_counter()
        try:
            r = await client.post(f"{base}/v1/assets", params={"preset": "fast", "segment_seconds": 1},
                                  content=body, headers={"Content-Type": "video/mp4"})
        except httpx.HTTPError as exc:
            rec.errors.append(f"upload: {type(exc).__name__}")
            return
        rec.latency["upload"].append(time.perf_counter() - t0)
        if r.status_code != 202:
            rec.errors.append(f"upload: HTTP {r.status_code}")


async def run_load(base: str, asset_id: str, clip: Path, *, players: int, uploads: int, seconds: float) -> Recorder:
    rec = Recorder()
    deadline = time.perf_counter() + seconds
    tasks = [player(base, asset_id, deadline, rec) for _ in range(players)]
    tasks += [uploader(base, clip, seconds * (i + 0.5) / max(1, uploads), rec) for i in range(uploads)]
    await asyncio.gather(*tasks)
    return rec


def summarise(rec: Recorder, seconds: float, players: int, uploads: int) -> dict:
    kinds = {}
    for kind, values in sorted(rec.latency.items()):
        ms = np.array(values) * 1000
        kinds[kind] = {"requests": int(ms.size), "p50_ms": float(np.percentile(ms, 50)),
                       "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}
    total = sum(k["requests"] for k in kinds.values())
    return {"machine": machine(), "players": players, "uploads": uploads, "seconds": seconds,
            "requests": total, "requests_per_s": total / seconds, "mbytes_per_s": rec.bytes / seconds / 1e6,
            "errors": len(rec.errors), "error_samples": rec.errors[:20], "kinds": kinds}


def to_markdown(s: dict) -> str:
    lines = [f"{s['players']} players and {s['uploads']} uploads for {s['seconds']:.0f} s over loopback on "
             f"{s['machine']}: {s['requests']} requests ({s['requests_per_s']:.0f}/s, "
             f"{s['mbytes_per_s']:.1f} MB/s), {s['errors']} errors.", "",
             "| request | count | p50 | p99 | max |", "|---|---|---|---|---|"]
    for kind, k in s["kinds"].items():
        lines.append(f"| {kind} | {k['requests']} | {k['p50_ms']:.1f} ms | {k['p99_ms']:.1f} ms | "
                     f"{k['max_ms']:.1f} ms |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--players", type=int, default=20)
    ap.add_argument("--uploads", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clip", default="leaf_720p_pyscenedetect.mp4")
    ap.add_argument("--iterations", type=int, default=100, help="training iterations of every encode (kept small)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "load.json")
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fitcast-load-") as tmp:
        tmp = Path(tmp)
        clip = cut(MEDIA / args.clip, tmp / "clip.mp4", start=3.0, duration=2.0)
        server, base = start_server(tmp / "store", env={"FITCAST_TRAIN_ITERATIONS": str(args.iterations)})
        try:
            asset_id = upload(base, clip)
            wait_ready(base, asset_id)
            rec = asyncio.run(run_load(base, asset_id, clip, players=args.players, uploads=args.uploads,
                                       seconds=args.seconds))
            if server.poll() is not None:
                rec.errors.append(f"the server exited with {server.returncode}")
        finally:
            server.terminate()
            server.wait(30)
    summary = summarise(rec, args.seconds, args.players, args.uploads)
    publish(summary, args.out, to_markdown(summary), readme=args.readme, block="load")
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
