"""Training pairs: (decoded LR window, HR residual over lanczos), cut by the encode and by
everything that trains outside one (the generic model, benchmarks, the search).

A samples file (``.npz``) holds ``lr`` uint8[N, W, W, 3] LR windows (patch + halo on
each side), ``res`` int16[N, P*s, P*s, 3], the HR patch minus the lanczos upscale of
the frame over that patch, and ``group`` uint8[N], each patch's label.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np

from fitcast.grid import Grid
from fitcast.media import HlsEncoder, center_crop, downscale, iter_frames, probe, upscale
from fitcast.rendition import paired_frames, segments_of
from fitcast.storage import atomic_write_bytes


def save_samples(path: Path, lr: np.ndarray, res: np.ndarray, group: np.ndarray | None = None) -> None:
    buf = io.BytesIO()
    if group is None:
        group = np.zeros(len(lr), dtype=np.uint8)
    np.savez(buf, lr=lr, res=res, group=group.astype(np.uint8))
    atomic_write_bytes(path, buf.getvalue())


def read_samples(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lr, res, group) arrays of a samples file."""
    with np.load(path, allow_pickle=False) as npz:
        group = npz["group"] if "group" in npz else np.zeros(len(npz["lr"]), np.uint8)
        return npz["lr"], npz["res"], group


def patch_pairs(lr: np.ndarray, hr: np.ndarray, grid: Grid, pick: np.ndarray,
                base_kind: str = "lanczos") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs of the patches where ``pick`` (bool[gh, gw]) is set: their rows, columns,
    LR windows (uint8, patch + halo) and HR residuals over the frame's ``base_kind`` upscale (int16)."""
    rows, cols = np.nonzero(pick)
    base = upscale(lr, grid.scale, base_kind)
    windows = grid.windows(grid.pad(lr))[rows, cols]
    residuals = grid.hr_blocks(hr)[rows, cols].astype(np.int16) - grid.hr_blocks(base)[rows, cols]
    return rows, cols, windows, residuals


def pick_per_group(labels: np.ndarray, k: int, per_group: int, rng: np.random.Generator) -> np.ndarray:
    """A bool mask of ``labels``' shape choosing up to ``per_group`` patches of each group at
    random (most patches are redundant: STDO)."""
    flat = labels.reshape(-1)
    chosen = np.zeros(flat.size, dtype=bool)
    for g in range(k):
        idx = np.flatnonzero(flat == g)
        chosen[rng.choice(idx, size=min(idx.size, per_group), replace=False)] = True
    return chosen.reshape(labels.shape)


def clip_pairs(path: Path, scale: int, *, patch: int, overlap: int, per_clip: int, max_seconds: float | None,
               crf: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_clip`` random (LR window, HR residual) pairs of the first ``max_seconds`` (None:
    all) of a clip, from its LR encoded like an asset's (x264 at ``crf``) and decoded: training data
    outside an encode (the generic model, training benchmarks)."""
    info = probe(path)
    crop = center_crop(info.width, info.height, scale)
    lr_w, lr_h = crop[2] // scale, crop[3] // scale
    grid = Grid(lr_w, lr_h, patch, overlap, scale)
    max_frames = None if max_seconds is None else max(1, int(max_seconds * float(info.fps)))
    seg_frames = max(1, round(2 * float(info.fps)))
    with tempfile.TemporaryDirectory(prefix="fitcast-pairs-") as tmp:
        hls = Path(tmp)
        with HlsEncoder(hls, lr_w, lr_h, info.fps, seg_frames, crf=crf) as enc:
            for hr in iter_frames(path, crop=crop, max_frames=max_frames):
                enc.write(downscale(hr, scale))
        per_frame = max(1, -(-per_clip // enc.frames_written))
        lrs, ress = [], []
        for _, lr_frames, hr_frames in paired_frames(path, crop, hls, segments_of(hls)):
            for lr, hr in zip(lr_frames, hr_frames, strict=False):
                pick = np.zeros(grid.shape, dtype=bool)
                pick.flat[rng.choice(pick.size, size=min(per_frame, pick.size), replace=False)] = True
                _, _, windows, residuals = patch_pairs(lr, hr, grid, pick)
                lrs.append(windows)
                ress.append(residuals)
    lr_all, res_all = np.concatenate(lrs), np.concatenate(ress)
    keep = rng.permutation(len(lr_all))[:per_clip]
    return lr_all[keep], res_all[keep]
