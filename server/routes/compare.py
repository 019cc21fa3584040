"""``/v1/assets/{id}/compare``: one frame of a ready asset upscaled by lanczos or by fitcast, as PNG.

The web page's comparison viewer shows both side by side.  Frames are rendered
here with the player's own code (decode the LR segment, route each patch to its
model, paste the residuals), so the page shows exactly what `fitcast play` shows.

What one request may cost is bounded: a frame is rendered once per (published manifest,
segment, frame, mode) and kept as a file (``compare/<key>.png`` in the asset folder, the
newest 256 of them), decoding
stops at the frame asked for, renders run one at a time on their own thread (never on the
threads that serve files), and when ``compare_queue`` renders are already waiting the next
request gets a 429 instead of a place in line.  Each client (its API key, or the asset a
playback token opens) may use ``compare_render_seconds`` of rendering a minute: a render is
charged the time it took, and a client that spent its minute's worth gets a 429 with the wait
(cached frames are free), so no one client keeps the renderer, a CPU core, busy.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Query, Request, Response

from fitcast.errors import ForbiddenError, NotFoundError, RateLimitedError
from fitcast.storage import atomic_write_bytes, sha256_file
from server import problems
from server.deps import AssetDirDep, KeysDep, SettingsDep, StoreDep, principal
from server.security import TokenBuckets, check_playback_token

router = APIRouter(prefix="/v1/assets", tags=["compare"])
# An upscaler reuses its buffers frame after frame: one render at a time per process, on its own thread.
_RENDER = threading.Lock()
_RENDERER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fitcast-compare")
_WAITING = {"n": 0}
MAX_CACHED = 256  # frames kept per asset (the oldest go first)


@lru_cache(maxsize=4)
def _budget(per_minute: float) -> TokenBuckets:
    """Seconds of rendering per client: a bucket holding one minute's allowance, refilled at
    ``per_minute / 60`` a second; a render is charged after it ran, so the bucket can go below
    zero, and a client waits until it is above zero again."""
    return TokenBuckets(per_minute, per_minute / 60.0, max_clients=10_000)


@lru_cache(maxsize=8)
def _upscaler(asset_dir: str, mtime_ns: int):
    """Sessions and the upscaler of an asset, cached per published manifest: its plan's (a planned
    asset) or its groups' routes."""
    from fitcast.asset import open_asset
    from fitcast.manifest import LANCZOS, REUSE
    from fitcast.runtime import open_session
    from fitcast.upscale import PlannedUpscaler, RoutedUpscaler, routes_by_model

    asset = open_asset(asset_dir)
    m = asset.manifest
    if m.plan is not None:
        used = [r for r in m.plan.routes if r not in (LANCZOS, REUSE)]
    else:
        used = sorted({mid for seg in m.segments for mid in routes_by_model(seg.routes)})
    # one thread: a render leaves the other cores to the requests that serve players
    sessions = {mid: open_session(asset.read_model(m.model(mid)), "ort", threads=1) for mid in used}
    if m.plan is not None:
        return asset, PlannedUpscaler(m.grid(), sessions, m.plan.routes)
    return asset, RoutedUpscaler.for_manifest(m, sessions)


def _cache_file(asset_dir: Path, segment: int, frame: int, mode: str) -> Path:
    """Where the frame is kept: named by the published manifest's hash and the frame asked for."""
    manifest = asset_dir / "sr" / "manifest.json"
    if not manifest.is_file():
        raise NotFoundError("the asset is not ready: no manifest yet")
    key = hashlib.sha256(f"{sha256_file(manifest)}/{segment}/{frame}/{mode}".encode()).hexdigest()[:32]
    return asset_dir / "compare" / f"{key}.png"


def cached(asset_dir: Path, segment: int, frame: int, mode: str) -> tuple[Path, bytes | None]:
    """Where one frame's PNG is kept, and the PNG if it was rendered before (for this manifest)."""
    path = _cache_file(asset_dir, segment, frame, mode)
    try:
        return path, path.read_bytes()
    except FileNotFoundError:
        return path, None


def render(asset_dir: Path, path: Path, segment: int, frame: int, mode: str) -> bytes:
    """The PNG of one frame, rendered and kept at ``path`` (its :func:`cached` place)."""
    if path.is_file():  # rendered while this request waited
        return path.read_bytes()
    with _RENDER:
        png = _render_locked(asset_dir, asset_dir / "sr" / "manifest.json", segment, frame, mode)
    atomic_write_bytes(path, png)
    kept = sorted(path.parent.glob("*.png"), key=lambda p: p.stat().st_mtime)
    for old in kept[:-MAX_CACHED]:
        old.unlink(missing_ok=True)
    return png


def _render_locked(asset_dir: Path, manifest: Path, segment: int, frame: int, mode: str) -> bytes:
    from fitcast.media import iter_frames, upscale

    asset, upscaler = _upscaler(str(asset_dir), manifest.stat().st_mtime_ns)
    m = asset.manifest
    seg = next((s for s in m.segments if s.index == segment), None)
    if seg is None:
        raise NotFoundError(f"no segment {segment} (the asset has {len(m.segments)})")
    if not 0 <= frame < seg.frames:
        raise NotFoundError(f"segment {segment} has frames 0..{seg.frames - 1}, not {frame}")
    frames = list(iter_frames(io.BytesIO(asset.init() + asset.segment(seg)), fmt="mp4", max_frames=frame + 1,
                              max_pixels=m.lr[0] * m.lr[1]))  # decoding stops at the frame asked for
    if len(frames) <= frame:
        raise NotFoundError(f"segment {segment} decodes to {len(frames)} frames, not {frame + 1}")
    base = upscale(frames[frame], m.scale, m.base)
    if mode == "lanczos":
        img = upscale(frames[frame], m.scale, "lanczos")
    elif m.plan is not None and seg.plan_uri and seg.plan_sha256:  # a plan carries detail from frame to frame
        codes, motion, _ = asset.plan(seg)
        upscaler.reset()
        for j in range(frame + 1):
            img = upscaler.upscale(frames[j], base if j == frame else upscale(frames[j], m.scale, m.base),
                                   codes[j], motion[j])
    else:
        labels = asset.labels(seg)
        img = upscaler.upscale(frames[frame], labels[frame], seg.routes, base)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    assert ok
    return png.tobytes()


@router.get("/{asset_id}/compare", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "the upscaled frame"},
                       **problems.responses(401, 403, 404, 422, 429)})
async def compare_frame(
    request: Request,
    asset_dir: AssetDirDep,
    store: StoreDep,
    keys: KeysDep,
    settings: SettingsDep,
    segment: Annotated[int, Query(ge=0, le=100_000)] = 0,
    frame: Annotated[int, Query(ge=0, le=3600)] = 0,
    mode: Literal["lanczos", "fitcast"] = "fitcast",
    token: Annotated[str | None, Query(max_length=200, description="playback token (instead of a key)")] = None,
) -> Response:
    """One frame (of ``segment``, 0-based) upscaled by ``mode``, as PNG: for the asset's owner (its
    API key) or a holder of its playback token."""
    job = store.get(asset_dir.name)
    if job is None or not asset_dir.is_dir():
        raise NotFoundError(f"no asset {asset_dir.name}")
    if token is not None:
        why = check_playback_token(request.app.state.secret, job.id, token)
        if why is not None:
            raise ForbiddenError(why)
        client = f"token {job.id}"
    else:
        caller = principal(request, keys)
        if not caller.may_see(job):
            raise NotFoundError(f"no asset {asset_dir.name}")
        client = f"key {caller.owner}"
    path, png = await asyncio.to_thread(cached, asset_dir, segment, frame, mode)
    if png is not None:  # rendered before: served like any file, free
        return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})
    per_minute = settings.compare_render_seconds
    budget = _budget(per_minute)
    wait = budget.wait(client, 0.0)
    if wait > 0:
        wait += 0.01  # past the moment the bucket is empty: above zero
        raise RateLimitedError(f"this client used its {per_minute:g} s of frame rendering a minute: retry in "
                               f"{math.ceil(wait)} s (frames already rendered are served at once)", retry_after=wait)
    if _WAITING["n"] >= settings.compare_queue:
        raise RateLimitedError(f"{_WAITING['n']} frames are being rendered: try again shortly", retry_after=2)
    spent = {"seconds": 0.0}

    def timed() -> bytes:  # on the renderer's thread: its time is what the client is charged, failed or not
        t0 = time.perf_counter()
        try:
            return render(asset_dir, path, segment, frame, mode)
        finally:
            spent["seconds"] = time.perf_counter() - t0

    _WAITING["n"] += 1
    try:
        png = await asyncio.wrap_future(_RENDERER.submit(timed))
    finally:
        _WAITING["n"] -= 1
        budget.spend(client, spent["seconds"])
    return Response(png, media_type="image/png", headers={"cache-control": "private, max-age=3600"})
