"""Load benchmark (not part of `make test`; loopback only, bounded in time).

    python bench/load.py --players 20 --uploads 3 --seconds 60 --readme README.md
    python bench/load.py --players 20 --seconds 45 --hostile --readme README.md

Starts `fitcast serve` on a free loopback port over a fresh store, uploads one short
real clip and waits for it to be ready, then for ``--seconds``: ``--players``
concurrent players each fetch the playlists, manifest, models, label maps and
segments in a loop (what `fitcast play` downloads), while ``--uploads`` uploads of
the same clip arrive spread over the window (each starts a real encode in the
worker).  Reports p50/p99 latency per request kind, requests per second and every
error; with ``--readme`` the markdown table replaces the block between
``<!-- load:begin -->`` and ``<!-- load:end -->``.

``--hostile`` runs the players twice, alone and then beside hostile clients that hold a key of
their own (the store requires keys), run in a process of their own as an attacker's client would
be: slowloris connections that never finish their headers, uploads whose bodies stall, a flood of
compare-frame renders and a flood of uploads.  It reports the players' latency in both phases
and what each hostile client got back (the block ``<!-- hostile:begin -->``).
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

UPLOAD = {"preset": "fast", "segment_seconds": 1}  # every upload's options: a short encode


def upload(base: str, clip: Path, headers: dict[str, str] | None = None) -> str:
    r = httpx.post(f"{base}/v1/assets", params=UPLOAD, content=clip.read_bytes(),
                   headers={"Content-Type": "video/mp4", **(headers or {})}, timeout=120)
    r.raise_for_status()
    return r.json()["id"]


def wait_ready(base: str, asset_id: str, timeout: float = 600, headers: dict[str, str] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        a = httpx.get(f"{base}/v1/assets/{asset_id}", headers=headers, timeout=10).json()
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
            r = await client.post(f"{base}/v1/assets", params=UPLOAD,
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


class Outcomes:
    """What the hostile clients got back: counts per (kind, outcome)."""

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.held: dict[str, list[float]] = defaultdict(list)  # "kind/outcome" -> seconds a connection was kept

    def add(self, kind: str, outcome: str, held: float | None = None) -> None:
        self.counts[kind][outcome] += 1
        if held is not None:
            self.held[f"{kind}/{outcome}"].append(held)


async def slowloris(host: str, port: int, deadline: float, out: Outcomes) -> None:
    """Open a connection, send a partial request, then one header byte every 2 s, forever."""
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(b"GET /v1/assets HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
            while time.perf_counter() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(1024), timeout=2.0)
                except TimeoutError:
                    writer.write(b"a")
                    await writer.drain()
                    continue
                out.add("slowloris", "closed by the server" if not data else f"answered {data[9:12].decode()}",
                        time.perf_counter() - t0)
                break
            writer.close()
        except (ConnectionError, OSError) as exc:
            out.add("slowloris", f"refused ({type(exc).__name__})", time.perf_counter() - t0)
            await asyncio.sleep(0.5)


async def slow_body(host: str, port: int, key: str, deadline: float, out: Outcomes) -> None:
    """Start an upload that declares 50 MB, send 64 kB, then stall."""
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(f"POST /v1/assets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                         "Content-Type: video/mp4\r\nContent-Length: 50000000\r\n\r\n".encode() + b"\0" * 65536)
            await writer.drain()
            remaining = max(0.1, deadline - time.perf_counter())
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=remaining)
            except TimeoutError:
                writer.close()
                out.add("stalled upload", "still open at the end")
                return
            out.add("stalled upload", f"HTTP {data[9:12].decode()}" if data else "closed by the server",
                    time.perf_counter() - t0)
            writer.close()
        except (ConnectionError, OSError) as exc:
            out.add("stalled upload", f"refused ({type(exc).__name__})")
            await asyncio.sleep(0.5)


async def compare_flood(base: str, asset_id: str, key: str, deadline: float, out: Outcomes) -> None:
    """Ask for compare frames (each a model run and a PNG encode) as fast as answers come."""
    rng = np.random.default_rng()
    async with httpx.AsyncClient(timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.perf_counter() < deadline:
            url = f"{base}/v1/assets/{asset_id}/compare"
            try:
                where = {"segment": int(rng.integers(0, 2)), "frame": int(rng.integers(0, 30))}
                r = await client.get(url, params=where)
                out.add("compare flood", f"HTTP {r.status_code}")
            except httpx.HTTPError as exc:
                out.add("compare flood", type(exc).__name__)


async def upload_flood(base: str, clip: Path, key: str, deadline: float, out: Outcomes) -> None:
    """Upload the clip again and again (each accepted one is a real encode)."""
    body = await asyncio.to_thread(clip.read_bytes)
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        while time.perf_counter() < deadline:
            try:
                r = await client.post(f"{base}/v1/assets", params=UPLOAD,
                                      content=body, headers={"Content-Type": "video/mp4"})
                out.add("upload flood", f"HTTP {r.status_code}")
                if r.status_code == 429:
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")) / 4)
            except httpx.HTTPError as exc:
                out.add("upload flood", type(exc).__name__)


async def attack(base: str, own_id: str, clip: Path, key: str, *, seconds: float,
                 counts: dict[str, int]) -> Outcomes:
    """The hostile clients, all holding ``key`` (whose own asset is ``own_id``), for ``seconds``."""
    out = Outcomes()
    host, port = base.removeprefix("http://").rsplit(":", 1)
    deadline = time.perf_counter() + seconds
    tasks = [slowloris(host, int(port), deadline, out) for _ in range(counts["slowloris"])]
    tasks += [slow_body(host, int(port), key, deadline, out) for _ in range(counts["stalled"])]
    tasks += [compare_flood(base, own_id, key, deadline, out) for _ in range(counts["compare"])]
    tasks += [upload_flood(base, clip, key, deadline, out) for _ in range(counts["uploads"])]
    await asyncio.gather(*tasks)
    return out


def _attack_process(start_at: float, base: str, own_id: str, clip: Path, key: str, seconds: float,
                    counts: dict[str, int]) -> tuple[dict, dict]:
    """:func:`attack` in its own process (an attacker's client is not the players' client), from
    wall-clock ``start_at``; plain dicts back."""
    time.sleep(max(0.0, start_at - time.time()))
    out = asyncio.run(attack(base, own_id, clip, key, seconds=seconds, counts=counts))
    return {k: dict(v) for k, v in out.counts.items()}, dict(out.held)


def run_hostile(base: str, asset_id: str, own_id: str, clip: Path, key: str, *, players: int,
                seconds: float, counts: dict[str, int]) -> tuple[Recorder, Outcomes]:
    """Players of ``asset_id`` in this process, the hostile clients in another, over the same window."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    start_at = time.time() + 5.0  # time for the other process to start
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(_attack_process, start_at, base, own_id, clip, key, seconds, counts)
        time.sleep(max(0.0, start_at - time.time()))
        rec = asyncio.run(run_load(base, asset_id, clip, players=players, uploads=0, seconds=seconds))
        counted, held = future.result()
    out = Outcomes()
    for kind, outcomes in counted.items():
        for outcome, n in outcomes.items():
            out.counts[kind][outcome] = n
    out.held.update(held)
    return rec, out


def hostile_markdown(alone: dict, beside: dict, out: Outcomes, counts: dict[str, int]) -> str:
    lines = [f"{alone['players']} players for {alone['seconds']:.0f} s alone, then for {beside['seconds']:.0f} s "
             f"beside {counts['slowloris']} slowloris connections, {counts['stalled']} stalled uploads, "
             f"{counts['compare']} compare-frame flooders and {counts['uploads']} upload flooders (one key of "
             f"their own), loopback on {alone['machine']}.", "",
             "| players' requests | count | errors | p50 | p99 | segment p50 | segment p99 |",
             "|---|---|---|---|---|---|---|"]
    for label, s in (("alone", alone), ("beside the hostile clients", beside)):
        ms = np.concatenate([np.array(s["_latency"][k]) for k in s["_latency"]]) * 1000
        seg = s["kinds"]["segment"]
        lines.append(f"| {label} | {s['requests']} | {s['errors']} | {np.percentile(ms, 50):.1f} ms | "
                     f"{np.percentile(ms, 99):.1f} ms | {seg['p50_ms']:.1f} ms | {seg['p99_ms']:.1f} ms |")
    ratio = beside["kinds"]["segment"]["p99_ms"] / alone["kinds"]["segment"]["p99_ms"]
    lines.append(f"\nSegment p99 beside the hostile clients: {ratio:.2f}× the run without them.")
    lines += ["", "| hostile client | what it got back | count | held for (median) |", "|---|---|---|---|"]
    for kind, outcomes in out.counts.items():
        for outcome, n in sorted(outcomes.items(), key=lambda kv: -kv[1]):
            held = out.held.get(f"{kind}/{outcome}")
            lines.append(f"| {kind} | {outcome} | {n} | "
                         f"{f'{np.median(held):.1f} s' if held else '-'} |")
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
    ap.add_argument("--hostile", action="store_true", help="players alone, then beside hostile clients")
    ap.add_argument("--slowloris", type=int, default=50, help="--hostile: connections that never finish headers")
    ap.add_argument("--stalled", type=int, default=10, help="--hostile: uploads whose bodies stall")
    ap.add_argument("--compare", type=int, default=8, help="--hostile: compare-frame flooders")
    ap.add_argument("--flood-uploads", type=int, default=2, help="--hostile: upload flooders")
    args = ap.parse_args(argv)
    if args.hostile:
        return main_hostile(args)
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


def main_hostile(args: argparse.Namespace) -> int:
    from server.keys import KeyStore

    counts = {"slowloris": args.slowloris, "stalled": args.stalled, "compare": args.compare,
              "uploads": args.flood_uploads}
    with tempfile.TemporaryDirectory(prefix="fitcast-load-") as tmp:
        tmp = Path(tmp)
        clip = cut(MEDIA / args.clip, tmp / "clip.mp4", start=3.0, duration=2.0)
        keys = KeyStore(tmp / "store" / "jobs.sqlite")
        _, owner = keys.create("publisher", "admin")
        _, attacker = keys.create("attacker", "user")
        server, base = start_server(tmp / "store", env={"FITCAST_TRAIN_ITERATIONS": str(args.iterations)})
        try:
            asset_id = upload(base, clip, {"Authorization": f"Bearer {owner}"})
            wait_ready(base, asset_id, headers={"Authorization": f"Bearer {owner}"})
            rec_alone = asyncio.run(run_load(base, asset_id, clip, players=args.players, uploads=0,
                                             seconds=args.seconds))
            # the attacker compares its own asset (another key's asset is a 404 to it)
            own = upload(base, clip, {"Authorization": f"Bearer {attacker}"})
            wait_ready(base, own, headers={"Authorization": f"Bearer {attacker}"})
            rec_beside, out = run_hostile(base, asset_id, own, clip, attacker, players=args.players,
                                          seconds=args.seconds, counts=counts)
            if server.poll() is not None:
                rec_beside.errors.append(f"the server exited with {server.returncode}")
        finally:
            server.terminate()
            server.wait(30)
    alone = summarise(rec_alone, args.seconds, args.players, 0) | {"_latency": rec_alone.latency}
    beside = summarise(rec_beside, args.seconds, args.players, 0) | {"_latency": rec_beside.latency}
    table = hostile_markdown(alone, beside, out, counts)
    result = {"alone": {k: v for k, v in alone.items() if k != "_latency"},
              "beside": {k: v for k, v in beside.items() if k != "_latency"},
              "hostile": {k: dict(v) for k, v in out.counts.items()}, "counts": counts}
    publish(result, args.out.with_name("load-hostile.json"), table, readme=args.readme, block="hostile")
    return 0 if beside["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
