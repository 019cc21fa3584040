"""``/v1/assets/{id}/compare``: one frame of a ready asset upscaled by lanczos or by fitcast, as PNG.

The web page's comparison viewer shows both side by side.  Frames are rendered
here with the player's own code (decode the LR segment, route each patch to its
model, paste the residuals), so the page shows exactly what `fitcast play` shows.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

import cv2
import numpy as np
from fastapi import APIRouter, Query, Response
from fastapi.concurrency import run_in_threadpool

from fitcast.errors import NotFoundError
from server import problems
from server.deps import AssetDirDep

router = APIRouter(prefix="/v1/assets", tags=["compare"])
# An upscaler reuses its buffers frame after frame: one render at a time per process.
_RENDER = threading.Lock()


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
    sessions = {mid: open_session(asset.read_model(m.model(mid)), "ort") for mid in used}
    if m.plan is not None:
        return asset, PlannedUpscaler(m.grid(), sessions, m.plan.routes)
    return asset, RoutedUpscaler.for_manifest(m, sessions)


def render(asset_dir: Path, segment: int, frame: int, mode: str) -> bytes:
    manifest = asset_dir / "sr" / "manifest.json"
    if not manifest.is_file():
        raise NotFoundError("the asset is not ready: no manifest yet")
    with _RENDER:
        return _render_locked(asset_dir, manifest, segment, frame, mode)


def _render_locked(asset_dir: Path, manifest: Path, segment: int, frame: int, mode: str) -> bytes:
    from fitcast.grid import load_labels, load_plan
    from fitcast.media import decode_segment, upscale

    asset, upscaler = _upscaler(str(asset_dir), manifest.stat().st_mtime_ns)
    m = asset.manifest
    seg = next((s for s in m.segments if s.index == segment), None)
    if seg is None:
        raise NotFoundError(f"no segment {segment} (the asset has {len(m.segments)})")
    if not 0 <= frame < seg.frames:
        raise NotFoundError(f"segment {segment} has frames 0..{seg.frames - 1}, not {frame}")
    frames = decode_segment(asset.read(m.init_uri), asset.read(seg.uri))
    base = upscale(frames[frame], m.scale, m.base)
    if mode == "lanczos":
        img = upscale(frames[frame], m.scale, "lanczos")
    elif m.plan is not None and seg.plan_uri and seg.plan_sha256:  # a plan carries detail from frame to frame
        codes, motion = load_plan(asset.read(seg.plan_uri, seg.plan_sha256), frames=seg.frames,
                                  shape=m.grid().shape, routes=len(m.plan.routes))
        upscaler.reset()
        for j in range(frame + 1):
            img = upscaler.upscale(frames[j], base if j == frame else upscale(frames[j], m.scale, m.base),
                                   codes[j], motion[j])
    else:
        labels = load_labels(asset.read(seg.labels_uri, seg.labels_sha256))
        img = upscaler.upscale(frames[frame], labels[frame], seg.routes, base)
    ok, png = cv2.imencode(".png", np.ascontiguousarray(img[:, :, ::-1]))
    assert ok
    return png.tobytes()


@router.get("/{asset_id}/compare", response_class=Response,
            responses={200: {"content": {"image/png": {}}, "description": "the upscaled frame"},
                       **problems.responses(404, 422)})
async def compare_frame(
    asset_dir: AssetDirDep,
    segment: Annotated[int, Query(ge=0, le=100_000)] = 0,
    frame: Annotated[int, Query(ge=0, le=100_000)] = 0,
    mode: Literal["lanczos", "fitcast"] = "fitcast",
) -> Response:
    """One frame (of ``segment``, 0-based) upscaled by ``mode``, as PNG."""
    if not asset_dir.is_dir():
        raise NotFoundError(f"no asset {asset_dir.name}")
    png = await run_in_threadpool(render, asset_dir, segment, frame, mode)
    return Response(png, media_type="image/png", headers={"cache-control": "public, max-age=3600"})
