"""The encode flow (DESIGN §1): probe → LR HLS → analyse → groups → train → export → evaluate → publish.

:func:`encode` is used by ``fitcast encode`` and by the service's job worker.
Each stage publishes its output by atomic rename, so a crash never leaves a
half-written file visible; scratch files live under ``work/`` and are removed
at the end.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import m3u8
import numpy as np

from chunking.grid import Grid, save_labels
from chunking.groups import assign_groups
from chunking.score import lanczos_psnr_y, patch_sse_y
from client.plan import RoutedUpscaler
from client.runtime import OrtSession
from fitcast.errors import InvalidInputError, MediaError
from fitcast.manifest import (
    FORMAT,
    LANCZOS,
    Bits,
    Manifest,
    ModelEntry,
    PatchSpec,
    Segment,
    SegmentQuality,
    compress_model,
)
from fitcast.media import (
    HlsEncoder,
    Limits,
    MediaInfo,
    center_crop,
    decode_segment,
    downscale,
    audio_bytes,
    h264_codec_string,
    iter_frames,
    probe,
    upscale,
)
from fitcast.metrics import psnr_y, ssim_y
from fitcast.storage import AssetLayout, atomic_dir, atomic_write_text, put_content, validate_asset_id
from server.compute import Executor, InlineExecutor

log = logging.getLogger(__name__)

Method = Literal["stdo", "jstdo", "dydca", "generic"]
PresetName = Literal["fast", "realtime", "balanced", "best"]
SCORER = "lanczos-psnr-y"


@dataclass(frozen=True)
class Preset:
    """Model size and training budget of a preset."""

    patch: int
    channels: int
    body: int
    iterations: int
    batch_size: int
    samples_per_group: int
    loss: str = "l1"
    lr: float = 2e-3
    arch: str = "espcn_r"
    # The dynamic model's larger branches diverge at 2e-3 on detailed content (bear: +0.13 dB
    # over lanczos at 2e-3, +0.70 dB at 1e-3), so it trains at a lower rate.
    dydca_lr: float = 1e-3


PRESETS: dict[str, Preset] = {
    "fast": Preset(patch=32, channels=16, body=1, iterations=300, batch_size=32, samples_per_group=2000),
    # For real-time playback on a weak CPU: a 16-channel, one-body-layer net on 64-pixel patches
    # (less halo overhead per patch), trained as long as balanced.
    "realtime": Preset(patch=64, channels=16, body=1, iterations=1500, batch_size=32, samples_per_group=6000),
    "balanced": Preset(patch=32, channels=32, body=2, iterations=1500, batch_size=32, samples_per_group=6000),
    "best": Preset(patch=32, channels=48, body=3, iterations=5000, batch_size=32, samples_per_group=20000),
}


@dataclass(frozen=True)
class EncodeOptions:
    scale: int = 2
    # dydca by default: measured the best of the three on every clip tried (leaf +3.39 dB over
    # lanczos, bear +0.70, bikes +1.10, against jstdo's +2.27 / +0.63 / +0.35; see the README),
    # for about 1.4x the training time and a slower player than jstdo.
    method: Method = "dydca"
    k: int = 2
    crf: int = 23
    segment_seconds: float = 2.0
    preset: PresetName = "balanced"
    x264_preset: str = "medium"
    seed: int = 0
    # Override the preset's training iterations (tests use tiny budgets).
    iterations: int | None = None
    # JSTDO's data-aware sampling: share of each group in a batch, hardest first
    # (default: falling linearly from 2 to 1).
    group_weights: tuple[float, ...] | None = None
    # Ship an int8 variant of every model (static quantisation calibrated on this asset's patches);
    # the quality report and the do-no-harm gate then measure the int8 models the player runs by default.
    int8: bool = True
    # Where training runs: "auto" takes a GPU when torch sees one (the rest of the encode stays on the CPU).
    train_device: str = "auto"
    # An architecture chosen by the compiler-aware search (`fitcast nas`), and its patch size;
    # they replace the preset's (stdo and jstdo: dydca builds its own branches).
    arch: dict[str, Any] | None = None
    patch: int | None = None
    # stdo/jstdo: start training from the shipped generic model (sr_models/weights) instead of
    # from scratch.  None (auto): whenever the preset's network is the generic one (balanced, x2
    # and x4): measured +1.60 dB held out after 300 iterations against +0.51 from scratch, +1.88
    # against +1.24 after 1,500 (bench/train_curve.py, README).  True: also for other presets,
    # whose network then becomes the generic one.
    warm_start: bool | None = None

    def validate(self) -> "EncodeOptions":
        if self.scale not in (2, 3, 4):
            raise InvalidInputError(f"scale must be 2, 3 or 4, not {self.scale}")
        if self.method not in ("stdo", "jstdo", "dydca", "generic"):
            raise InvalidInputError(f"method must be stdo, jstdo, dydca or generic, not {self.method!r}")
        if self.group_weights is not None:
            if len(self.group_weights) != self.k or min(self.group_weights) <= 0:
                raise InvalidInputError(f"group weights must be {self.k} positive numbers, not {self.group_weights}")
        if self.train_device != "auto" and self.train_device != "cpu" and not self.train_device.startswith("cuda"):
            raise InvalidInputError(f"train device must be auto, cpu or cuda[:N], not {self.train_device!r}")
        if self.arch is not None and self.method in ("dydca", "generic"):
            raise InvalidInputError(f"a searched architecture trains with --method stdo or jstdo, not {self.method}")
        if self.warm_start and (self.method not in ("stdo", "jstdo") or self.arch is not None):
            raise InvalidInputError("--warm-start applies to stdo and jstdo (the generic model's architecture)")
        if self.method == "generic" or self.warm_start:
            from sr_models.generic import generic_weights

            try:
                generic_weights(self.scale)
            except FileNotFoundError as exc:
                raise InvalidInputError(str(exc)) from None
        if self.patch is not None and not 8 <= self.patch <= 256:
            raise InvalidInputError(f"patch must be between 8 and 256, not {self.patch}")
        if not 1 <= self.k <= 16:
            raise InvalidInputError(f"k must be between 1 and 16, not {self.k}")
        if not 0 <= self.crf <= 51:
            raise InvalidInputError(f"crf must be between 0 and 51, not {self.crf}")
        if not 0.5 <= self.segment_seconds <= 20:
            raise InvalidInputError(f"segment seconds must be between 0.5 and 20, not {self.segment_seconds}")
        if self.preset not in PRESETS:
            raise InvalidInputError(f"preset must be one of {', '.join(PRESETS)}, not {self.preset!r}")
        if self.iterations is not None and self.iterations < 1:
            raise InvalidInputError("iterations must be positive")
        return self


ProgressFn = Callable[[str, float], None]

# Stage weights for the overall progress fraction.
STAGES: dict[str, float] = {
    "probe": 0.01,
    "transcode": 0.09,
    "analyse": 0.08,
    "sample": 0.04,
    "train": 0.60,
    "export": 0.02,
    "evaluate": 0.15,
    "publish": 0.01,
}


class Progress:
    """Maps (stage, fraction of the stage) to an overall fraction for a callback."""

    def __init__(self, callback: ProgressFn | None) -> None:
        self.callback = callback
        self._offsets: dict[str, float] = {}
        acc = 0.0
        for name, weight in STAGES.items():
            self._offsets[name] = acc
            acc += weight

    def __call__(self, stage: str, fraction: float) -> None:
        if self.callback is None:
            return
        overall = self._offsets[stage] + STAGES[stage] * min(max(fraction, 0.0), 1.0)
        self.callback(stage, min(overall, 1.0))


@dataclass
class _Seg:
    index: int
    uri: str
    start: float
    duration: float
    frames: int = 0
    labels: np.ndarray | None = None


def segments_of(hls_dir: Path) -> list[_Seg]:
    playlist = m3u8.load(str(hls_dir / "lr.m3u8"))
    segs, t = [], 0.0
    for i, seg in enumerate(playlist.segments):
        segs.append(_Seg(index=i, uri=seg.uri, start=t, duration=float(seg.duration)))
        t += float(seg.duration)
    if not segs:
        raise MediaError("the LR encode produced no segments")
    return segs


def _segment_frames(hls_dir: Path, seg: _Seg) -> list[np.ndarray]:
    init = (hls_dir / "init.mp4").read_bytes()
    return decode_segment(init, (hls_dir / seg.uri).read_bytes())


def paired_frames(source: Path, crop, hls_dir: Path, segs: list[_Seg]) -> Iterator[tuple[_Seg, list[np.ndarray], list[np.ndarray]]]:
    """Yield (segment, decoded LR frames, source HR frames) in lockstep."""
    hr_iter = iter_frames(source, crop=crop)
    for seg in segs:
        lr = _segment_frames(hls_dir, seg)
        hr = []
        for _ in lr:
            try:
                hr.append(next(hr_iter))
            except StopIteration:
                raise MediaError("the LR rendition has more frames than the source") from None
        yield seg, lr, hr


def patch_pairs(lr: np.ndarray, hr: np.ndarray, grid: Grid, s: int,
                pick: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training pairs of the patches where ``pick`` (bool[gh, gw]) is set: their rows, columns,
    LR windows (uint8, patch + halo) and HR residuals over the frame's lanczos upscale (int16)."""
    rows, cols = np.nonzero(pick)
    base = upscale(lr, s, "lanczos")
    windows = grid.windows(grid.pad(lr))[rows, cols]
    residuals = grid.hr_blocks(hr, s)[rows, cols].astype(np.int16) - grid.hr_blocks(base, s)[rows, cols]
    return rows, cols, windows, residuals


def clip_pairs(path: Path, scale: int, *, patch: int, overlap: int, per_clip: int, max_seconds: float | None,
               crf: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``per_clip`` random (LR window, HR residual) pairs of the first ``max_seconds`` (None:
    all) of a clip, from its LR encoded like an asset's (x264 at ``crf``) and decoded: training data
    outside an encode (the generic model, training benchmarks)."""
    info = probe(path)
    crop = center_crop(info.width, info.height, scale)
    lr_w, lr_h = crop[2] // scale, crop[3] // scale
    grid = Grid(lr_w, lr_h, patch, overlap)
    max_frames = None if max_seconds is None else max(1, int(max_seconds * float(info.fps)))
    seg_frames = max(1, round(2 * float(info.fps)))
    with tempfile.TemporaryDirectory(prefix="fitcast-pairs-") as tmp:
        hls = Path(tmp)
        with HlsEncoder(hls, lr_w, lr_h, info.fps, seg_frames, crf=crf) as enc:
            for hr in iter_frames(path, crop=crop, max_frames=max_frames):
                enc.write(downscale(hr, scale))
        n = enc.frames_written
        per_frame = max(1, -(-per_clip // n))
        lrs, ress = [], []
        for _, lr_frames, hr_frames in paired_frames(path, crop, hls, segments_of(hls)):
            for lr, hr in zip(lr_frames, hr_frames):
                pick = np.zeros(grid.shape, dtype=bool)
                pick.flat[rng.choice(pick.size, size=min(per_frame, pick.size), replace=False)] = True
                _, _, windows, residuals = patch_pairs(lr, hr, grid, scale, pick)
                lrs.append(windows)
                ress.append(residuals)
    lr_all, res_all = np.concatenate(lrs), np.concatenate(ress)
    keep = rng.permutation(len(lr_all))[:per_clip]
    return lr_all[keep], res_all[keep]


def write_master(hls_dir: Path, *, width: int, height: int, fps: float, bandwidth: int, codec: str) -> None:
    text = "\n".join(
        [
            "#EXTM3U",
            "#EXT-X-VERSION:7",
            "#EXT-X-INDEPENDENT-SEGMENTS",
            '#EXT-X-SESSION-DATA:DATA-ID="com.fitcast.manifest",URI="../sr/manifest.json"',
            f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},AVERAGE-BANDWIDTH={bandwidth},'
            f'RESOLUTION={width}x{height},FRAME-RATE={fps:.3f},CODECS="{codec}"',
            "lr.m3u8",
            "",
        ]
    )
    atomic_write_text(hls_dir / "master.m3u8", text)


def encode(
    source: str | Path,
    out_dir: str | Path,
    options: EncodeOptions = EncodeOptions(),
    *,
    asset_id: str | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    limits: Limits = Limits(),
) -> Manifest:
    """Encode ``source`` into the asset directory ``out_dir`` (DESIGN §3) and return its manifest."""
    # Heavy, server-only imports stay local so that importing this module is cheap.
    from sr_models.archs import build_from_spec
    from sr_models.export import INT8_WEIGHT_BITS, count_params, load_model, quantize_int8, to_onnx_bytes
    from sr_models.train import TrainSpec, save_samples, train
    from sr_models.generic import generic_weights

    options = options.validate()
    preset = PRESETS[options.preset]
    source, out_dir = Path(source), Path(out_dir)
    asset_id = validate_asset_id(asset_id or _slug(out_dir.name))
    layout = AssetLayout(out_dir)
    _clear_leftovers(out_dir)
    prog = Progress(progress)
    executor = executor or InlineExecutor()
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}

    # ---- probe
    prog("probe", 0.0)
    info: MediaInfo = probe(source, limits)
    s = options.scale
    crop = center_crop(info.width, info.height, s)
    hr_w, hr_h = crop[2], crop[3]
    lr_w, lr_h = hr_w // s, hr_h // s
    patch = options.patch or preset.patch
    if min(lr_w, lr_h) < patch:
        raise InvalidInputError(f"{info.width}x{info.height} is too small for scale {s} (LR {lr_w}x{lr_h})")
    fps = info.fps
    seg_frames = max(1, round(options.segment_seconds * float(fps)))
    prog("probe", 1.0)

    # ---- transcode: HR crop -> LR -> H.264 HLS (fMP4, one closed GOP per segment)
    t0 = time.perf_counter()
    expected = max(1, info.frames)
    with atomic_dir(layout.hls) as hls_tmp:
        with HlsEncoder(hls_tmp, lr_w, lr_h, fps, seg_frames, crf=options.crf, x264_preset=options.x264_preset,
                        audio_from=source if info.has_audio else None) as enc:
            for i, hr in enumerate(iter_frames(source, crop=crop)):
                enc.write(downscale(hr, s))
                if i % 10 == 0:
                    prog("transcode", i / expected)
        n_frames = enc.frames_written
        if n_frames == 0:
            raise MediaError(f"{source.name}: no frames decoded")
        init = (hls_tmp / "init.mp4").read_bytes()
        seg_paths = sorted(hls_tmp.glob("*.m4s"))
        rendition_bytes = sum(p.stat().st_size for p in seg_paths) + len(init)
        sound_bytes = audio_bytes(init, (p.read_bytes() for p in seg_paths)) if info.has_audio else 0
        video_bytes = rendition_bytes - sound_bytes
        duration = n_frames / float(fps)
        codec = h264_codec_string(init) + (",mp4a.40.2" if sound_bytes else "")
        write_master(
            hls_tmp,
            width=lr_w,
            height=lr_h,
            fps=float(fps),
            bandwidth=int(rendition_bytes * 8 / duration * 1.2),
            codec=codec,
        )
    seconds["transcode"] = time.perf_counter() - t0
    prog("transcode", 1.0)

    # ---- analyse: difficulty of every patch of the *decoded* LR
    t0 = time.perf_counter()
    arch = _arch_for(options, preset)
    probe_net = build_from_spec(arch)
    radius = probe_net.receptive_radius  # halo = receptive radius: tiles are seamless
    grid = Grid(lr_w, lr_h, patch, radius)
    segs = segments_of(layout.hls)
    seg_scores: list[np.ndarray] = []
    done = 0
    for seg, lr_frames, hr_frames in paired_frames(source, crop, layout.hls, segs):
        seg.frames = len(lr_frames)
        seg_scores.append(np.stack([lanczos_psnr_y(lr, hr, grid, s) for lr, hr in zip(lr_frames, hr_frames)]))
        done += seg.frames
        prog("analyse", done / n_frames)
    if sum(seg.frames for seg in segs) != n_frames:
        raise MediaError(f"decoded {sum(seg.frames for seg in segs)} LR frames, encoded {n_frames}")
    k = min(options.k, sum(sc.size for sc in seg_scores))
    labels_all, thresholds = assign_groups(np.concatenate(seg_scores), k)
    offset = 0
    for seg in segs:
        seg.labels = labels_all[offset : offset + seg.frames]
        offset += seg.frames
    seconds["analyse"] = time.perf_counter() - t0

    # ---- sample: (LR window, HR residual over lanczos) pairs per group
    t0 = time.perf_counter()
    work = layout.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rng = np.random.default_rng(options.seed)
    flat = labels_all.reshape(-1)
    chosen = np.zeros(flat.size, dtype=bool)
    for g in range(k):
        idx = np.flatnonzero(flat == g)
        take = min(idx.size, preset.samples_per_group)
        chosen[rng.choice(idx, size=take, replace=False)] = True
    chosen = chosen.reshape(labels_all.shape)
    per_group_lr: list[list[np.ndarray]] = [[] for _ in range(k)]
    per_group_res: list[list[np.ndarray]] = [[] for _ in range(k)]
    frame0 = 0
    for seg, lr_frames, hr_frames in paired_frames(source, crop, layout.hls, segs):
        for j, (lr, hr) in enumerate(zip(lr_frames, hr_frames)):
            pick = chosen[frame0 + j]
            if not pick.any():
                continue
            rows, cols, windows, residuals = patch_pairs(lr, hr, grid, s, pick)
            of_group = seg.labels[j][rows, cols]
            for g in range(k):
                sel = of_group == g
                if sel.any():
                    per_group_lr[g].append(windows[sel])
                    per_group_res[g].append(residuals[sel])
        frame0 += seg.frames
        prog("sample", frame0 / n_frames)
    iterations = options.iterations or preset.iterations
    lr = preset.dydca_lr if options.method == "dydca" else preset.lr
    common = dict(arch=arch, overlap=radius, batch_size=preset.batch_size, loss=preset.loss, lr=lr,
                  device=options.train_device)
    specs = []
    warm = _warm_start(options, preset)
    if warm:
        common["init"] = generic_weights(s)
    if options.method == "stdo":  # one model per group
        for g in range(k):
            sample_path = work / f"samples_g{g}.npz"
            save_samples(sample_path, np.concatenate(per_group_lr[g]), np.concatenate(per_group_res[g]))
            specs.append(TrainSpec(samples=sample_path, out=work / f"model_g{g}.pt", iterations=iterations,
                                   seed=options.seed + g, **common))
    else:  # one model for all groups, the same total budget
        sample_path = work / "samples.npz"
        save_samples(
            sample_path,
            np.concatenate([x for g in range(k) for x in per_group_lr[g]]),
            np.concatenate([x for g in range(k) for x in per_group_res[g]]),
            np.concatenate([np.full(sum(len(x) for x in per_group_lr[g]), g, np.uint8) for g in range(k)]),
        )
        weights = options.group_weights or default_group_weights(k)
        if options.method == "generic":  # nothing is trained; the samples only calibrate the int8 model
            shutil.copyfile(generic_weights(s), work / "model.pt")
        specs.append(TrainSpec(samples=sample_path, out=work / "model.pt", iterations=iterations * k,
                               seed=options.seed, group_weights=tuple(weights) if options.method == "jstdo" else None,
                               **common))
    del per_group_lr, per_group_res
    seconds["sample"] = time.perf_counter() - t0

    # ---- train: one model per group (stdo), or one joint / dynamic model (jstdo, dydca)
    t0 = time.perf_counter()
    prog("train", 0.0)
    results: dict[int, Any] = {}
    if options.method == "generic":  # the shipped model as it is
        pass
    elif isinstance(executor, InlineExecutor):  # in this process: progress within each model too
        for i, spec in enumerate(specs):
            results[i] = train(spec, lambda it, total, loss, i=i: prog("train", (i + it / total) / len(specs)))
    else:
        for i, result in executor.map_unordered(train, specs):
            results[i] = result
            prog("train", len(results) / len(specs))
    seconds["train"] = time.perf_counter() - t0

    # ---- export ONNX
    t0 = time.perf_counter()
    onnx_bytes: dict[str, bytes] = {}
    model_arch: dict[str, dict[str, Any]] = {}
    model_group: dict[str, int | None] = {}
    model_params: dict[str, int] = {}
    model_macs: dict[str, int] = {}

    int8_bytes: dict[str, bytes] = {}

    def add(mid: str, net, spec: dict[str, Any], group: int | None) -> None:
        onnx_bytes[mid] = to_onnx_bytes(net, sample_hw=(grid.window, grid.window))
        model_arch[mid], model_group[mid] = spec, group
        model_params[mid], model_macs[mid] = count_params(net), net.macs_per_lr_px
        if options.int8:
            calib_file = specs[group].samples if options.method == "stdo" else specs[0].samples
            only = group if options.method == "dydca" else None
            int8_bytes[mid] = quantize_int8(onnx_bytes[mid], _calibration(calib_file, only, seed=options.seed))

    if options.method == "stdo":
        group_model = [f"stdo-g{g}" for g in range(k)]
        for g, mid in enumerate(group_model):
            add(mid, load_model(arch, specs[g].out), arch, g)
    elif options.method in ("jstdo", "generic"):  # one model serves every group
        group_model = [options.method] * k
        add(options.method, load_model(arch, specs[0].out), arch, None)
    else:  # dydca: each branch is its own static graph, batched per branch by the player
        group_model = [f"dydca-b{g}" for g in range(k)]
        dyn = load_model(arch, specs[0].out)
        for g, mid in enumerate(group_model):
            branch = dyn.branch(g)
            spec = {"name": "espcn_r", "scale": s, "channels": branch.channels, "body": branch.depth,
                    "dynamic": {"of": arch["name"], "branch": g, "branches": k}}
            add(mid, branch, spec, g)
    seconds["export"] = time.perf_counter() - t0
    prog("export", 1.0)

    # ---- evaluate: per-segment do-no-harm gate and the quality report
    t0 = time.perf_counter()
    shipped = int8_bytes if options.int8 else onnx_bytes  # what the player runs by default
    # the player's own upscaler, with every group routed to its model: the candidate "all SR" frame
    all_sr = {str(g): mid for g, mid in enumerate(group_model)}
    upscaler = RoutedUpscaler(grid, s, {mid: OrtSession(b) for mid, b in shipped.items()})
    fp32_upscaler = (RoutedUpscaler(grid, s, {mid: OrtSession(b) for mid, b in onnx_bytes.items()})
                     if options.int8 else None)
    seg_reports: list[dict[str, Any]] = []
    frame_psnr = {"lanczos": [], "bicubic": [], "sr": [], "sr_fp32": []}
    frame_ssim = {"lanczos": [], "sr": []}
    routes_per_seg: list[dict[str, str]] = []
    done = 0
    for seg, lr_frames, hr_frames in paired_frames(source, crop, layout.hls, segs):
        sse_model = np.zeros(k)
        sse_base = np.zeros(k)
        sr_frames, base_frames = [], []
        for j, (lr, hr) in enumerate(zip(lr_frames, hr_frames)):
            base = upscale(lr, s, "lanczos")
            upscaler_frame = upscaler.upscale(lr, seg.labels[j], all_sr, base).copy()
            p_base = patch_sse_y(base, hr, grid, s)
            p_sr = patch_sse_y(upscaler_frame, hr, grid, s)
            for g in range(k):
                m = seg.labels[j] == g
                sse_base[g] += p_base[m].sum()
                sse_model[g] += p_sr[m].sum()
            sr_frames.append(upscaler_frame)
            base_frames.append(base)
        routes = {str(g): (group_model[g] if sse_model[g] < sse_base[g] else LANCZOS) for g in range(k)}
        routes_per_seg.append(routes)
        seg_psnr_l, seg_psnr_sr = [], []
        for j, (lr, hr) in enumerate(zip(lr_frames, hr_frames)):
            final = _apply_routes(base_frames[j], sr_frames[j], seg.labels[j], routes, grid, s)
            pl, psr = psnr_y(base_frames[j], hr), psnr_y(final, hr)
            seg_psnr_l.append(pl)
            seg_psnr_sr.append(psr)
            frame_psnr["lanczos"].append(pl)
            frame_psnr["sr"].append(psr)
            frame_psnr["bicubic"].append(psnr_y(upscale(lr, s, "bicubic"), hr))
            frame_ssim["lanczos"].append(ssim_y(base_frames[j], hr))
            frame_ssim["sr"].append(ssim_y(final, hr))
            if fp32_upscaler is not None:  # what int8 costs: the same routes with the fp32 models
                sr32 = fp32_upscaler.upscale(lr, seg.labels[j], routes, base_frames[j])
                frame_psnr["sr_fp32"].append(psnr_y(sr32, hr))
        seg_reports.append(
            {
                "index": seg.index,
                "frames": seg.frames,
                "psnr_y_lanczos": float(np.mean(seg_psnr_l)),
                "psnr_y_sr": float(np.mean(seg_psnr_sr)),
                "routes": routes,
            }
        )
        done += seg.frames
        prog("evaluate", done / n_frames)
    seconds["evaluate"] = time.perf_counter() - t0

    # ---- publish: sr/ (models, labels, manifest) then report/
    t0 = time.perf_counter()
    used_models = sorted({m for r in routes_per_seg for m in r.values() if m != LANCZOS})
    with atomic_dir(layout.sr) as sr_tmp:
        model_entries = []
        model_bytes = uncoded_bytes = 0
        for mid in onnx_bytes:
            if mid not in used_models:
                continue
            variants = [("fp32", onnx_bytes[mid])] + ([("int8", int8_bytes[mid])] if options.int8 else [])
            for precision, onnx in variants:
                blob = compress_model(onnx)  # entropy-coded: what is stored, sent and counted
                path, digest = put_content(sr_tmp / "models", blob, "onnx.xz")
                if precision == ("int8" if options.int8 else "fp32"):
                    model_bytes += len(blob)  # what a default player downloads
                    uncoded_bytes += len(onnx)
                model_entries.append(
                    ModelEntry(
                        id=mid,
                        uri=f"models/{path.name}",
                        sha256=digest,
                        bytes=len(blob),
                        encoding="xz",
                        arch=model_arch[mid],
                        params=model_params[mid],
                        macs_per_lr_px=model_macs[mid],
                        precision=precision,
                        runtime_hint="onnxruntime",
                        group=model_group[mid],
                        weight_bits=INT8_WEIGHT_BITS if precision == "int8" else None,
                    )
                )
        segments, label_bytes = [], 0
        for seg, routes, rep in zip(segs, routes_per_seg, seg_reports):
            data = save_labels(seg.labels)
            path, digest = put_content(sr_tmp / "labels", data, "npz")
            label_bytes += len(data)
            segments.append(
                Segment(
                    index=seg.index,
                    uri=f"../hls/{seg.uri}",
                    start=seg.start,
                    duration=seg.duration,
                    frames=seg.frames,
                    labels_uri=f"labels/{path.name}",
                    labels_sha256=digest,
                    routes=routes,
                    quality=SegmentQuality(psnr_y_lanczos=rep["psnr_y_lanczos"], psnr_y_sr=rep["psnr_y_sr"]),
                )
            )
        bits = Bits(video=video_bytes * 8, models=model_bytes * 8, labels=label_bytes * 8, audio=sound_bytes * 8)
        manifest = Manifest(
            format=FORMAT,
            asset_id=asset_id,
            scale=s,
            hr=(hr_w, hr_h),
            lr=(lr_w, lr_h),
            fps=float(fps),
            crop=crop,
            init_uri="../hls/init.mp4",
            patch=PatchSpec(size=grid.patch, grid=(grid.gw, grid.gh), overlap=grid.overlap),
            method=options.method,
            k=k,
            scorer=SCORER,
            models=model_entries,
            segments=segments,
            bits=bits,
        )
        atomic_write_text(sr_tmp / "manifest.json", manifest.to_json())

    seconds["publish"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - t_start
    report = {
        "scale": s,
        "method": options.method,
        "k": k,
        "preset": options.preset,
        "frames": n_frames,
        "source": {"width": info.width, "height": info.height, "fps": float(fps), "codec": info.codec},
        "hr": [hr_w, hr_h],
        "lr": [lr_w, lr_h],
        "crf": options.crf,
        "psnr_y_lanczos": float(np.mean(frame_psnr["lanczos"])),
        "psnr_y_bicubic": float(np.mean(frame_psnr["bicubic"])),
        "psnr_y_sr": float(np.mean(frame_psnr["sr"])),
        "precision": "int8" if options.int8 else "fp32",
        "psnr_y_sr_fp32": float(np.mean(frame_psnr["sr_fp32"])) if frame_psnr["sr_fp32"] else float(np.mean(frame_psnr["sr"])),
        "ssim_y_lanczos": float(np.mean(frame_ssim["lanczos"])),
        "ssim_y_sr": float(np.mean(frame_ssim["sr"])),
        "bits": bits.model_dump(),
        "model_bits_before_entropy_coding": uncoded_bytes * 8,
        "bitrate_kbps": {kk: v / duration / 1000 for kk, v in bits.model_dump().items()},
        "seconds": seconds,
        "scorer": SCORER,
        "thresholds_db": thresholds,
        "arch": arch,
        "train": [results[i].to_dict() | {"model": group_model[i] if options.method == "stdo" else options.method}
                  for i in sorted(results)],
        "warm_start": warm,
        "segments": seg_reports,
        "frame_psnr_y": frame_psnr,
    }
    with atomic_dir(layout.report) as rep_tmp:
        atomic_write_text(rep_tmp / "quality.json", json.dumps(report, indent=2))
        _plot_report(report, rep_tmp)
    shutil.rmtree(work, ignore_errors=True)
    prog("publish", 1.0)
    return manifest


def _clear_leftovers(out_dir: Path) -> None:
    """Remove what an interrupted earlier run left: unpublished temporary dirs and files, scratch."""
    if not out_dir.is_dir():
        return
    for path in out_dir.glob(".*"):
        if path.name.endswith((".tmp", ".old")):
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    shutil.rmtree(out_dir / "work", ignore_errors=True)


def _calibration(samples: Path, group: int | None, *, seed: int, n: int = 384) -> np.ndarray:
    """Up to ``n`` LR windows (float32 NCHW in [0, 1]) of the training samples, for int8 calibration."""
    with np.load(samples, allow_pickle=False) as npz:
        lr, groups = npz["lr"], npz["group"]
    idx = np.flatnonzero(groups == group) if group is not None else np.arange(len(lr))
    idx = np.random.default_rng(seed).choice(idx, size=min(n, idx.size), replace=False)
    return np.ascontiguousarray(lr[np.sort(idx)].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def default_group_weights(k: int) -> tuple[float, ...]:
    """JSTDO's default data-aware sampling: the hardest group twice as often as the easiest."""
    if k == 1:
        return (1.0,)
    return tuple(2.0 - g / (k - 1) for g in range(k))


def _warm_start(options: EncodeOptions, preset: Preset) -> bool:
    """Whether stdo/jstdo training starts from the shipped generic model (see ``warm_start``)."""
    if options.warm_start is not None:
        return options.warm_start
    if options.method not in ("stdo", "jstdo") or options.arch is not None:
        return False
    from sr_models.generic import generic_arch, generic_weights

    try:
        generic_weights(options.scale)
    except FileNotFoundError:
        return False
    return _arch_for(options, preset) == generic_arch(options.scale)


def _arch_for(options: EncodeOptions, preset: Preset) -> dict[str, Any]:
    """The architecture spec a method trains (dydca: k branches, the hardest the largest)."""
    if options.arch is not None:
        from sr_models.archs import build_from_spec

        try:
            build_from_spec(options.arch)
        except (TypeError, ValueError, KeyError) as exc:
            raise InvalidInputError(f"bad architecture {options.arch}: {exc}") from None
        if int(options.arch.get("scale", 0)) != options.scale:
            raise InvalidInputError(f"the architecture is for x{options.arch.get('scale')}, the encode is x{options.scale}")
        return dict(options.arch)
    if options.method == "generic" or options.warm_start is True:
        from sr_models.generic import generic_arch

        return generic_arch(options.scale)
    if options.method == "dydca":
        from sr_models.archs.dynamic import default_branches

        widest = preset.channels + 8
        branches = default_branches(options.k, widest=widest, narrowest=max(8, preset.channels // 2),
                                    deepest=preset.body + 1, shallowest=max(1, preset.body - 1))
        return {"name": "dydca", "scale": options.scale, "branches": [list(b) for b in branches]}
    return {"name": preset.arch, "scale": options.scale, "channels": preset.channels, "body": preset.body}


def _apply_routes(base, sr, labels, routes: dict[str, str], grid: Grid, s: int) -> np.ndarray:
    """Per patch: the model's output where its group routes to a model, lanczos elsewhere."""
    use_model = np.array([routes[str(g)] != LANCZOS for g in range(len(routes))])[labels]
    ps = grid.patch * s
    mask = np.repeat(np.repeat(use_model, ps, axis=0), ps, axis=1)[: base.shape[0], : base.shape[1]]
    return np.where(mask[..., None], sr, base)


def _plot_report(report: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the server extra; the report JSON is what matters
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    fp = report["frame_psnr_y"]
    axes[0].plot(fp["lanczos"], label=f"lanczos ({report['psnr_y_lanczos']:.2f} dB)", lw=1)
    axes[0].plot(fp["bicubic"], label=f"bicubic ({report['psnr_y_bicubic']:.2f} dB)", lw=1, alpha=0.6)
    axes[0].plot(fp["sr"], label=f"fitcast {report['method']} ({report['psnr_y_sr']:.2f} dB)", lw=1.5)
    axes[0].set_xlabel("frame")
    axes[0].set_ylabel("PSNR-Y (dB)")
    axes[0].set_title(f"x{report['scale']}, per frame")
    axes[0].legend(fontsize=8)
    segs = report["segments"]
    idx = np.arange(len(segs))
    axes[1].bar(idx - 0.2, [sg["psnr_y_lanczos"] for sg in segs], 0.4, label="lanczos")
    axes[1].bar(idx + 0.2, [sg["psnr_y_sr"] for sg in segs], 0.4, label="fitcast")
    lo = min(min(sg["psnr_y_lanczos"] for sg in segs), min(sg["psnr_y_sr"] for sg in segs))
    axes[1].set_ylim(lo - 1, None)
    axes[1].set_xlabel("segment")
    axes[1].set_title("per segment")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "psnr.png", dpi=110)
    plt.close(fig)


def _slug(name: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64]
    return slug if len(slug) >= 3 else f"asset-{slug or 'x'}"
