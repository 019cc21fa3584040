"""The encode flow (DESIGN §1), as eight named stages.

:func:`encode` reads as the list of its stages; each stage is a function with typed
inputs and a dataclass out, testable alone.  Method behaviour comes from the method's
recipe (``sr_models.recipes``), never from comparing its name.  Each stage publishes
its output by atomic rename, so a crash never leaves a half-written file visible;
scratch files live under ``work/`` and are removed at the end.  Used by ``fitcast
encode`` and by the service's job worker.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from chunking.groups import assign_groups
from chunking.score import lanczos_psnr_y, patch_sse_y
from fitcast.errors import InvalidInputError, MediaError
from fitcast.grid import Grid, save_labels, save_plan
from fitcast.manifest import (
    FORMAT,
    FORMAT_PLANNED,
    LANCZOS,
    Bits,
    Manifest,
    ModelEntry,
    PatchSpec,
    Plan,
    Segment,
    SegmentQuality,
    compress_model,
)
from fitcast.media import (
    HlsEncoder,
    Limits,
    MediaInfo,
    audio_bytes,
    center_crop,
    downscale,
    h264_codec_string,
    iter_frames,
    probe,
    upscale,
)
from fitcast.metrics import psnr_y, ssim_y
from fitcast.options import EncodeOptions
from fitcast.rendition import (
    INIT,
    SESSION_DATA_ID,
    SegmentFile,
    Variant,
    measured_bandwidth,
    paired_frames,
    segments_of,
    write_master,
)
from fitcast.runtime import OrtSession
from fitcast.storage import (
    AssetLayout,
    atomic_dir,
    atomic_write_text,
    claim_asset_dir,
    clear_leftovers,
    put_content,
    sha256_file,
    validate_asset_id,
)
from fitcast.upscale import RoutedUpscaler, select_patches
from server.compute import Executor, InlineExecutor
from server.planning import PlanResult, plan_frames, plan_target
from server.report import write_report
from sr_models.recipes import (
    FULL_WEIGHT_BITS,
    PRESETS,
    Recipe,
    SampleFiles,
    ShippedModel,
    receptive_radius,
    recipe_for,
)

if TYPE_CHECKING:
    from fitcast.asset import Asset

log = logging.getLogger(__name__)

SCORER = "lanczos-psnr-y"
ProgressFn = Callable[[str, float], None]
StageProgress = Callable[[float], None]

# The evaluate stage measures PSNR-Y of lanczos and of what plays on every frame, and its
# diagnostics (bicubic, SSIM, the fp32 models against int8) on every 4th: they took two thirds
# of the stage's time at 720p (fp32 models 150 ms, SSIM 2 x 60 ms, against 140 ms for the int8
# models a frame, AVX2) and are reported as means, not per-frame decisions.
DIAGNOSTIC_STRIDE = 4

# Stage weights for the overall progress fraction.
STAGES: dict[str, float] = {
    "probe": 0.01,
    "transcode": 0.08,
    "analyse": 0.06,
    "sample": 0.03,
    "train": 0.55,
    "export": 0.02,
    "evaluate": 0.12,
    "plan": 0.12,
    "publish": 0.01,
}


def encode(
    source: str | Path,
    out_dir: str | Path,
    options: EncodeOptions | None = None,
    *,
    asset_id: str | None = None,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    limits: Limits | None = None,
    crop: tuple[int, int, int, int] | None = None,
    trained_in: Path | None = None,
) -> Manifest:
    """Encode ``source`` into the asset directory ``out_dir`` (DESIGN §3) and return its manifest
    (``options`` default: ``EncodeOptions()``; ``limits``: ``Limits()``; ``crop``: the centre crop
    whose sides are multiples of 2 * scale, or the one a ladder's rungs share).  ``trained_in``: a
    folder that keeps the trained models: where it holds them already, the encode takes them instead
    of training (a ladder's rung encoded again at another rate)."""
    options, limits = options or EncodeOptions(), limits or Limits()
    layout = AssetLayout(Path(out_dir))
    asset_id = validate_asset_id(asset_id or asset_slug(layout.root.name))
    recipe, preset = recipe_for(options), PRESETS[options.preset]
    arch = recipe.arch(options, preset)
    patch = options.patch or preset.patch
    run = StageRunner(progress)

    # 1. probe: the source against the limits; crop and sizes; what a plan is made for
    src = run("probe", probe_source, Path(source), options, patch=patch, limits=limits, crop=crop)
    train_seconds = None
    if options.iterations is None:  # the training budget grows with the source's length, within its cost
        options = options.model_copy(update={"iterations": preset.iterations_for(src.info.duration)})
        train_seconds = training_seconds(src, options.encode_budget)
    claim_asset_dir(layout.root)  # refuses a folder that is not fitcast's, before anything is written
    clear_leftovers(layout.root)
    grid = Grid(src.lr[0], src.lr[1], patch, receptive_radius(arch), options.scale)
    target = plan_target(options.device_profile, asked_fps=options.target_fps, source_fps=float(src.fps), grid=grid,
                         queue=options.plan_queue, headroom=options.plan_headroom, base=options.base)
    base = target.base if target else ("lanczos" if options.base == "auto" else options.base)
    # 2. transcode: HR crop -> LR -> H.264 HLS, one closed GOP per segment (published: the LR stream plays)
    rendition = run("transcode", transcode, src, layout.hls, options)
    # 3. analyse: the difficulty of every patch of the *decoded* LR, k quantile groups
    analysis = run("analyse", analyse, src, rendition, grid, options.k)
    # 4. sample: (LR window, HR residual over lanczos) training pairs per group
    samples = run("sample", sample, src, rendition, analysis, recipe, per_group=preset.samples_per_group,
                  work=layout.work, seed=options.seed, base=base)
    # 5. train: what the recipe trains, on the executor (inline, process pool or Ray)
    specs = recipe.train_specs(samples, arch, k=analysis.k, options=options, preset=preset, overlap=grid.overlap,
                               work=layout.work)
    if train_seconds:
        from sr_models.train import within_seconds

        specs = within_seconds(specs, train_seconds,
                               floor=options.training_floor * preset.iterations / options.iterations)
    trained = kept_training(trained_in, specs) or run("train", train_models, specs, executor or InlineExecutor())
    if trained_in is not None:
        keep_training(trained_in, trained)
    # 6. export: each model's weights on the bits worth their rate; ONNX fp32, and int8 calibrated
    #    on the asset's own windows
    models = run("export", export_models, recipe.models(arch, trained.states, analysis.k), samples, grid,
                 int8=options.int8, seed=options.seed, weight_bits=recipe.weight_bits(options),
                 shares=group_shares(analysis),
                 rate_bytes=rendition.video_bytes + rendition.audio_bytes + label_bytes(analysis))
    # 7. evaluate: the player's pixels, the per-segment do-no-harm gate, the quality numbers
    evaluation = run("evaluate", evaluate, src, rendition, analysis, models, recipe.group_models(analysis.k),
                     int8=options.int8, base=base)
    # 8. plan: every frame's route per patch for the target device and rate (none with target fps 0)
    plan = run("plan", plan_frames, src, rendition, analysis, models, target, int8=options.int8) if target else None
    # 9. publish: sr/ (models, labels, plans, manifest), then report/
    manifest = run("publish", publish, layout.sr, asset_id, src, rendition, analysis, models, evaluation, plan,
                   method=recipe.name, int8=options.int8, base=base)
    report = quality_report(options, src, rendition, analysis, models, trained, evaluation, plan, manifest,
                            arch=arch, warm_start=recipe.warm_start(options, preset), seconds=run.seconds)
    write_report(layout.report, report)
    shutil.rmtree(layout.work, ignore_errors=True)
    return manifest


TRAIN_SHARE = 0.5  # of the encode budget, for training (the rest: the per-frame stages, plan included)


def encode_seconds(src: Source, encode_budget: float) -> float | None:
    """The wall-clock seconds an encode of ``src`` may take under ``encode_budget`` (seconds of
    encode per second of source, per second of 720p30 above that size); None: no limit."""
    if encode_budget <= 0:
        return None
    pixel_rate = src.hr[0] * src.hr[1] * float(src.fps) / (1280 * 720 * 30)
    return encode_budget * src.info.duration * max(1.0, pixel_rate)


def training_seconds(src: Source, encode_budget: float) -> float | None:
    """The wall-clock seconds an encode's training may take under ``encode_budget``: ``TRAIN_SHARE``
    of :func:`encode_seconds`; None: no limit."""
    total = encode_seconds(src, encode_budget)
    return None if total is None else TRAIN_SHARE * total


def replan(source: str | Path, asset_dir: str | Path, *, target_fps: float | None = None,
           device_profile: Path | None = None, queue: int = 8, headroom: float = 0.15,
           progress: ProgressFn | None = None) -> Manifest:
    """Plan an encoded asset again, for another device or rate, with the models it ships (no
    training): the plan stage on what the asset published, then sr/ and the report again.
    ``source`` is the video the asset was encoded from (the planner measures against it)."""
    layout = AssetLayout(Path(asset_dir))
    # 1. read back what the encode published: the manifest, the rendition, the groups, the models
    old = published(layout, Path(source))
    target = plan_target(device_profile, asked_fps=target_fps, source_fps=float(old.src.fps), grid=old.analysis.grid,
                         queue=queue, headroom=headroom, base=old.manifest.base)  # the models' base is fixed
    if target is None:
        raise InvalidInputError("replan needs a rate to plan for (--target-fps above 0)")
    run = StageRunner(progress)
    # 2. plan every frame for the new target
    plan = run("plan", plan_frames, old.src, old.rendition, old.analysis, old.models, target, int8=old.int8)
    # 3. publish sr/ again and the report's plan
    manifest = run("publish", publish, layout.sr, old.manifest.asset_id, old.src, old.rendition, old.analysis,
                   old.models, old.evaluation, plan, method=old.manifest.method, int8=old.int8, base=old.manifest.base)
    report = json.loads((layout.report / "quality.json").read_text())
    report["plan"] = plan_report(plan, report["psnr_y_sr"] - report["psnr_y_lanczos"], report["psnr_y_lanczos"])
    report["frame_psnr_y"]["planned"] = plan.frame_psnr
    report["seconds"]["replan"] = run.seconds["total"]
    write_report(layout.report, report)
    return manifest


@dataclass
class Published:
    """An encoded asset read back as the stages left it (for :func:`replan`)."""

    manifest: Manifest
    src: Source
    rendition: Rendition
    analysis: Analysis
    models: list[ShippedModel]
    evaluation: Evaluation
    int8: bool


def published(layout: AssetLayout, source: Path) -> Published:
    from fitcast.asset import open_asset

    asset = open_asset(str(layout.root))
    m = asset.manifest
    report = json.loads((layout.report / "quality.json").read_text())
    # the crop the asset was encoded with (a ladder's rung shares its ladder's): it must fit this source
    src = probe_source(source, EncodeOptions(scale=m.scale, segment_seconds=m.segments[0].duration),
                       patch=m.patch.size, limits=Limits(), crop=tuple(m.crop), progress=lambda _: None)
    rendition = Rendition(layout.hls, segments_of(layout.hls), sum(seg.frames for seg in m.segments),
                          m.bits.video // 8, m.bits.audio // 8, "")
    labels = [asset.labels(seg) for seg in m.segments]
    models, int8 = shipped_models(asset)
    evaluation = Evaluation(segments=[SegmentReport(seg.index, seg.frames, seg.quality.psnr_y_lanczos if seg.quality
                                                    else 0.0, seg.quality.psnr_y_sr if seg.quality else 0.0,
                                                    seg.routes) for seg in m.segments])
    return Published(m, src, rendition, Analysis(m.grid(), m.k, labels, report.get("thresholds_db", [])), models,
                     evaluation, int8)


def shipped_models(asset: Asset) -> tuple[list[ShippedModel], bool]:
    """The models an asset ships, read back (fp32, and int8 where shipped; no torch network), and
    whether it ships int8."""
    m = asset.manifest
    int8 = any(e.precision == "int8" for e in m.models)
    models = []
    for mid in dict.fromkeys(e.id for e in m.models):
        fp32 = m.model(mid, "fp32")
        q = m.model(mid, "int8") if int8 else None
        models.append(ShippedModel(mid, fp32.group, fp32.arch, None, fp32.group, fp32=asset.read_model(fp32),
                                   int8=asset.read_model(q) if q else None, params=fp32.params,
                                   macs_per_lr_px=fp32.macs_per_lr_px))
        if q is not None:  # what the int8 file says (8: an asset from before the field)
            models[-1].weight_bits = q.weight_bits or 8
    return models, int8


# --------------------------------------------------------------------------- stage results


@dataclass(frozen=True)
class Source:
    """The probed source and the sizes the encode takes from it."""

    path: Path
    info: MediaInfo
    crop: tuple[int, int, int, int]  # (x, y, w, h) of the HR crop
    scale: int
    segment_frames: int

    @property
    def hr(self) -> tuple[int, int]:
        return self.crop[2], self.crop[3]

    @property
    def lr(self) -> tuple[int, int]:
        return self.crop[2] // self.scale, self.crop[3] // self.scale

    @property
    def fps(self) -> Fraction:
        return self.info.fps


@dataclass(frozen=True)
class Rendition:
    """The published LR rendition: its segments and what it weighs."""

    hls: Path
    segments: list[SegmentFile]
    frames: int
    video_bytes: int
    audio_bytes: int
    codec: str

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


@dataclass
class Analysis:
    """Every patch's group: ``labels[i]`` uint8[frames of segment i, gh, gw] (0 = hardest)."""

    grid: Grid
    k: int
    labels: list[np.ndarray]
    thresholds: list[float]

    @property
    def frames(self) -> list[int]:
        return [len(lab) for lab in self.labels]


@dataclass
class Training:
    states: list[Path]  # one state dict per train spec (none for a recipe that trains nothing)
    results: list[Any]  # sr_models.train.TrainResult, in spec order


@dataclass
class SegmentReport:
    index: int
    frames: int
    psnr_y_lanczos: float
    psnr_y_sr: float
    routes: dict[str, str]


@dataclass
class Evaluation:
    """The gated routes and the measured quality of what the player will show."""

    segments: list[SegmentReport]
    frame_psnr: dict[str, list[float]] = field(default_factory=dict)  # lanczos, sr: every frame; the rest:
    frame_ssim: dict[str, list[float]] = field(default_factory=dict)  # on the diagnostic frames
    diagnostic_frames: list[int] = field(default_factory=list)

    def used_models(self) -> set[str]:
        return {m for s in self.segments for m in s.routes.values() if m != LANCZOS}

    def mean_psnr(self, key: str) -> float:
        """The mean PSNR-Y over every frame; a diagnostic curve's (bicubic, sr_fp32) as its
        reference's (lanczos, sr) plus their mean difference on the diagnostic frames."""
        fp = self.frame_psnr
        if key in ("lanczos", "sr"):
            return float(np.mean(fp[key]))
        ref = "lanczos" if key == "bicubic" else "sr"
        on = [fp[ref][i] for i in self.diagnostic_frames]
        return float(np.mean(fp[ref]) + np.mean(np.subtract(fp[key], on)))


# --------------------------------------------------------------------------- stages


def probe_source(path: Path, options: EncodeOptions, *, patch: int, limits: Limits,
                 crop: tuple[int, int, int, int] | None = None, progress: StageProgress) -> Source:
    info = probe(path, limits)
    if crop is None:
        crop = center_crop(info.width, info.height, options.scale)
    elif crop[2] % (2 * options.scale) or crop[3] % (2 * options.scale) or crop[0] + crop[2] > info.width \
            or crop[1] + crop[3] > info.height:
        raise InvalidInputError(f"crop {list(crop)} does not fit {info.width}x{info.height} at scale {options.scale}")
    src = Source(path, info, crop, options.scale, max(1, round(options.segment_seconds * float(info.fps))))
    if min(src.lr) < patch:
        raise InvalidInputError(f"{info.width}x{info.height} is too small for scale {options.scale} "
                                f"(LR {src.lr[0]}x{src.lr[1]})")
    return src


def transcode(src: Source, hls_dir: Path, options: EncodeOptions, *, manifest: bool = True,
              progress: StageProgress) -> Rendition:
    """The LR rendition and its master playlist (whose session data points at ``../sr/manifest.json``
    unless not ``manifest``: a ladder's full-resolution rung has none)."""
    expected = max(1, src.info.frames)
    with atomic_dir(hls_dir) as tmp:
        with HlsEncoder(tmp, src.lr[0], src.lr[1], src.fps, src.segment_frames, crf=options.crf,
                        x264_preset=options.x264_preset, audio_from=src.path if src.info.has_audio else None) as enc:
            for i, hr in enumerate(iter_frames(src.path, crop=src.crop)):
                enc.write(downscale(hr, src.scale))
                if i % 10 == 0:
                    progress(i / expected)
        if enc.frames_written == 0:
            raise MediaError(f"{src.path.name}: no frames decoded")
        init = (tmp / INIT).read_bytes()
        seg_paths = sorted(tmp.glob("*.m4s"))
        total = sum(p.stat().st_size for p in seg_paths) + len(init)
        sound = audio_bytes(init, (p.read_bytes() for p in seg_paths)) if src.info.has_audio else 0
        codec = h264_codec_string(init) + (",mp4a.40.2" if sound else "")
        peak, average = measured_bandwidth(tmp)
        write_master(tmp / "master.m3u8", [Variant("lr.m3u8", peak, average, src.lr[0], src.lr[1], float(src.fps),
                                                   codec)],
                     session_data={SESSION_DATA_ID: "../sr/manifest.json"} if manifest else None)
    return Rendition(hls_dir, segments_of(hls_dir), enc.frames_written, total - sound, sound, codec)


def analyse(src: Source, rendition: Rendition, grid: Grid, k: int, *, progress: StageProgress) -> Analysis:
    scores: list[np.ndarray] = []
    done = 0
    for _, lr_frames, hr_frames in paired_frames(src.path, src.crop, rendition.hls, rendition.segments):
        scores.append(np.stack([lanczos_psnr_y(lr, hr, grid) for lr, hr in zip(lr_frames, hr_frames, strict=False)]))
        done += len(lr_frames)
        progress(done / rendition.frames)
    if done != rendition.frames:
        raise MediaError(f"decoded {done} LR frames, encoded {rendition.frames}")
    k = min(k, sum(s.size for s in scores))
    labels_all, thresholds = assign_groups(np.concatenate(scores), k)
    bounds = np.cumsum([0] + [len(s) for s in scores])
    return Analysis(grid, k, [labels_all[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=False)], thresholds)


def sample(src: Source, rendition: Rendition, analysis: Analysis, recipe: Recipe, *, per_group: int, work: Path,
           seed: int, base: str = "lanczos", progress: StageProgress) -> SampleFiles:
    from sr_models.samples import patch_pairs, pick_per_group, save_samples

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    k = analysis.k
    chosen = pick_per_group(np.concatenate(analysis.labels), k, per_group, np.random.default_rng(seed))
    lrs: list[list[np.ndarray]] = [[] for _ in range(k)]
    ress: list[list[np.ndarray]] = [[] for _ in range(k)]
    frame0 = 0
    for (_, lr_frames, hr_frames), labels in zip(paired_frames(src.path, src.crop, rendition.hls,
                                                                rendition.segments), analysis.labels, strict=True):
        for j, (lr, hr) in enumerate(zip(lr_frames, hr_frames, strict=True)):
            if chosen[frame0 + j].any():
                rows, cols, windows, residuals = patch_pairs(lr, hr, analysis.grid, chosen[frame0 + j], base)
                of_group = labels[j][rows, cols]
                for g in np.unique(of_group):
                    lrs[g].append(windows[of_group == g])
                    ress[g].append(residuals[of_group == g])
        frame0 += len(lr_frames)
        progress(frame0 / rendition.frames)
    if recipe.per_group_samples:
        files = [work / f"samples_g{g}.npz" for g in range(k)]
        for g, path in enumerate(files):
            save_samples(path, np.concatenate(lrs[g]), np.concatenate(ress[g]))
        return SampleFiles(per_group=files)
    joint = work / "samples.npz"
    save_samples(joint, np.concatenate([x for g in range(k) for x in lrs[g]]),
                 np.concatenate([x for g in range(k) for x in ress[g]]),
                 np.concatenate([np.full(sum(len(x) for x in lrs[g]), g, np.uint8) for g in range(k)]))
    return SampleFiles(joint=joint)


def keep_training(folder: Path, trained: Training) -> None:
    """Copy the trained states and their training records into ``folder`` (see :func:`kept_training`)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, state in enumerate(trained.states):
        if state.parent != folder:
            shutil.copyfile(state, folder / f"state{i}.pt")
    atomic_write_text(folder / "training.json", json.dumps([r.to_dict() for r in trained.results]))


def kept_training(folder: Path | None, specs: list) -> Training | None:
    """The training :func:`keep_training` kept in ``folder``, if it is there for as many models."""
    if folder is None or not (folder / "training.json").is_file():
        return None
    records = json.loads((folder / "training.json").read_text())
    states = [folder / f"state{i}.pt" for i in range(len(specs))]
    if len(records) != len(specs) or not all(p.is_file() for p in states):
        return None
    return Training(states=states, results=[KeptResult(r) for r in records])


@dataclass(frozen=True)
class KeptResult:
    """A training record read back (the report marks it reused)."""

    record: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.record | {"reused": True}


def train_models(specs: list, executor: Executor, *, progress: StageProgress) -> Training:
    """Train every spec; in this process (inline) progress moves within each model too."""
    from sr_models.train import train

    results: dict[int, Any] = {}
    progress(0.0)
    if isinstance(executor, InlineExecutor):
        for i, spec in enumerate(specs):
            results[i] = train(spec, lambda it, total, loss, i=i: progress((i + it / total) / len(specs)))
    else:
        for i, result in executor.map_unordered(train, specs):
            results[i] = result
            progress(len(results) / len(specs))
    return Training(states=[s.out for s in specs], results=[results[i] for i in range(len(specs))])


def export_models(models: list[ShippedModel], samples: SampleFiles, grid: Grid, *, int8: bool, seed: int,
                  weight_bits: int | None = FULL_WEIGHT_BITS, rate_bytes: int = 0, shares: Sequence[float] = (),
                  progress: StageProgress) -> list[ShippedModel]:
    """Each model as ONNX fp32 (dynamic batch and size) and, with ``int8``, quantised on up to 384
    of the asset's own training windows of the group it serves; its weights on ``weight_bits`` bits
    (None: per int8 model, the bits that give the best quality at equal total rate, weighing its
    gain on its training windows, as a gain over the frame (its group's ``shares`` of patches and
    their lanczos error), against its shipped bytes beside ``rate_bytes`` of video, audio and
    labels: ``sr_models.compact``)."""
    from sr_models.compact import (
        WEIGHT_BITS,
        best_bits,
        frame_gains,
        gain_db,
        int8_weights,
        lanczos_error,
        snap_weights,
    )
    from sr_models.export import count_params, quantize_int8, to_onnx_bytes

    def export(model: ShippedModel, bits: int) -> None:
        path, group = samples.for_group(model.calibration_group)
        model.net, model.weight_bits = snap_weights(model.net, bits), bits
        model.fp32 = to_onnx_bytes(model.net, sample_hw=(grid.window, grid.window))
        model.int8 = quantize_int8(model.fp32, calibration_windows(path, group, seed=seed)) if int8 else None
        model.params, model.macs_per_lr_px = count_params(model.net), int(model.net.macs_per_lr_px)

    # every model on the full grid first: its shipped bytes there are what the others are weighed beside
    for model in models:
        export(model, FULL_WEIGHT_BITS if weight_bits is None else weight_bits)
    if weight_bits is None and int8:  # (fp32 files hardly shrink on a coarser grid: they keep it)
        full = [len(compress_model(m.shipped_bytes(int8))) for m in models]
        measured = []
        for model in models:  # each model's gain by bits on its own windows, and the error they carry
            path, group = samples.for_group(model.calibration_group)
            windows, residuals = training_pairs(path, group, seed=seed, n=128)
            nets = {bits: snap_weights(model.net, bits) for bits in WEIGHT_BITS}
            gains = {bits: gain_db(net, windows, residuals, overlap=grid.overlap, scale=grid.scale)
                     for bits, net in nets.items()}
            share = shares[model.group] if model.group is not None and len(shares) > model.group else 1.0
            measured.append((nets, gains, share * lanczos_error(residuals)))
        after = [own * 10 ** (-gains[FULL_WEIGHT_BITS] / 10) for _, gains, own in measured]
        for n, (model, (nets, gains, own)) in enumerate(zip(models, measured, strict=True)):
            # a grid's shipped bytes: the full grid's file with its weights coded again on that grid
            fixed = full[n] - len(compress_model(int8_weights(model.net)))
            sizes = {bits: fixed + len(compress_model(int8_weights(net))) for bits, net in nets.items()}
            frame = frame_gains(gains, own, sum(after) - after[n])
            bits = best_bits(frame, sizes, other_bytes=rate_bytes + sum(full) - full[n])
            log.info("model %s: %d-bit weights (by bits, gain over the frame and shipped bytes: %s)", model.id, bits,
                     ", ".join(f"{b}: {frame[b]:.3f} dB {sizes[b]} B" for b in WEIGHT_BITS))
            if bits != FULL_WEIGHT_BITS:
                export(model, bits)
            progress((n + 1) / len(models))
    return models


def label_bytes(analysis: Analysis) -> int:
    """The bytes of the asset's label maps as published (one file per segment)."""
    return sum(len(save_labels(labels)) for labels in analysis.labels)


def group_shares(analysis: Analysis) -> list[float]:
    """The share of all patches in each group (what a group's model can change of a frame)."""
    counts = np.bincount(np.concatenate([lab.ravel() for lab in analysis.labels]), minlength=analysis.k)
    return [float(c) / max(1, int(counts.sum())) for c in counts[: analysis.k]]


def evaluate(src: Source, rendition: Rendition, analysis: Analysis, models: list[ShippedModel],
             group_models: list[str], *, int8: bool, base: str = "lanczos",
             sink: Callable[[np.ndarray], None] | None = None, measure_fp32: bool = True,
             diagnostic_stride: int = DIAGNOSTIC_STRIDE, progress: StageProgress) -> Evaluation:
    """Upscale every frame as the player will (its own functions), gate each group per segment
    (a group goes to lanczos where its model does not beat it) and measure the result; the
    same routes through the fp32 models give what int8 costs (unless not ``measure_fp32``).
    PSNR-Y of lanczos and of what plays is measured on every frame (the gate, the manifest's
    per-segment quality); the diagnostics beside them (bicubic, SSIM, the fp32 models) on every
    ``diagnostic_stride``-th frame.  ``sink`` gets every final frame (the benchmarks' VMAF)."""
    grid, k = analysis.grid, analysis.k
    upscaler = RoutedUpscaler(grid, {m.id: OrtSession(m.shipped_bytes(int8)) for m in models}, base,
                              keep_unchanged=True)
    fp32 = (RoutedUpscaler(grid, {m.id: OrtSession(m.fp32) for m in models}, base, keep_unchanged=True)
            if int8 and measure_fp32 else None)
    all_sr = {str(g): group_models[g] for g in range(k)}
    result = Evaluation(segments=[], frame_psnr={"lanczos": [], "bicubic": [], "sr": [], "sr_fp32": []},
                        frame_ssim={"lanczos": [], "sr": []})
    done = 0
    for (seg, lr_frames, hr_frames), labels in zip(paired_frames(src.path, src.crop, rendition.hls,
                                                                  rendition.segments), analysis.labels, strict=False):
        bases = [upscale(lr, grid.scale, base) for lr in lr_frames]
        lanczos = bases if base == "lanczos" else [upscale(lr, grid.scale, "lanczos") for lr in lr_frames]
        srs = [upscaler.upscale(lr, lab, all_sr, b).copy() for lr, lab, b in zip(lr_frames, labels, bases, strict=True)]
        routes = gate(srs, bases, hr_frames, labels, grid, all_sr)
        psnr_l, psnr_sr = [], []
        for i, (lr, hr, lab, frame_base, lz, sr) in enumerate(zip(lr_frames, hr_frames, labels, bases, lanczos, srs,
                                                                   strict=False)):
            final = select_patches(frame_base, sr, lab, routes, grid)
            if sink is not None:
                sink(final)
            psnr_l.append(psnr_y(lz, hr))
            psnr_sr.append(psnr_y(final, hr))
            if (done + i) % diagnostic_stride == 0:
                result.diagnostic_frames.append(done + i)
                result.frame_psnr["bicubic"].append(psnr_y(upscale(lr, grid.scale, "bicubic"), hr))
                result.frame_ssim["lanczos"].append(ssim_y(lz, hr))
                result.frame_ssim["sr"].append(ssim_y(final, hr))
                result.frame_psnr["sr_fp32"].append(
                    psnr_y(fp32.upscale(lr, lab, routes, frame_base), hr) if fp32 is not None else psnr_sr[-1])
        result.frame_psnr["lanczos"] += psnr_l
        result.frame_psnr["sr"] += psnr_sr
        result.segments.append(SegmentReport(seg.index, len(lr_frames), float(np.mean(psnr_l)),
                                             float(np.mean(psnr_sr)), routes))
        done += len(lr_frames)
        progress(done / rendition.frames)
    return result


def gate(srs: list[np.ndarray], bases: list[np.ndarray], hrs: list[np.ndarray], labels: np.ndarray, grid: Grid,
         all_sr: dict[str, str]) -> dict[str, str]:
    """The do-no-harm gate of one segment: each group keeps its model only where the model's
    summed squared Y error over the segment's patches of that group beats lanczos'."""
    k = len(all_sr)
    sse_model, sse_base = np.zeros(k), np.zeros(k)
    for sr, base, hr, lab in zip(srs, bases, hrs, labels, strict=False):
        p_base, p_sr = patch_sse_y(base, hr, grid), patch_sse_y(sr, hr, grid)
        for g in range(k):
            sse_base[g] += p_base[lab == g].sum()
            sse_model[g] += p_sr[lab == g].sum()
    return {str(g): (all_sr[str(g)] if sse_model[g] < sse_base[g] else LANCZOS) for g in range(k)}


def publish(sr_dir: Path, asset_id: str, src: Source, rendition: Rendition, analysis: Analysis,
            models: list[ShippedModel], evaluation: Evaluation, plan: PlanResult | None, *, method: str, int8: bool,
            base: str = "lanczos", progress: StageProgress) -> Manifest:
    """Write sr/ (content-addressed models, label maps and plan maps, the manifest) as one atomic
    rename; a planned asset is ``fitcast/2`` (readers that cannot follow a plan refuse it)."""
    used = evaluation.used_models() | (set(plan.routes[2:]) if plan else set())
    hls = rendition.hls
    with atomic_dir(sr_dir) as tmp:
        entries = [entry for m in models if m.id in used for entry in _model_entries(tmp, m, int8, base)]
        segments, label_bytes, plan_bytes = [], 0, 0
        for seg, labels, rep in zip(rendition.segments, analysis.labels, evaluation.segments, strict=False):
            data = save_labels(labels)
            path, digest = put_content(tmp / "labels", data, "npz")
            label_bytes += len(data)
            segment = Segment(index=seg.index, uri=f"../hls/{seg.uri}", start=seg.start, duration=seg.duration,
                              frames=len(labels), labels_uri=f"labels/{path.name}", labels_sha256=digest,
                              routes=rep.routes, quality=SegmentQuality(psnr_y_lanczos=rep.psnr_y_lanczos,
                                                                        psnr_y_sr=rep.psnr_y_sr),
                              sha256=sha256_file(hls / seg.uri), bytes=(hls / seg.uri).stat().st_size)
            if plan is not None:
                planned = plan.segments[seg.index]
                data = save_plan(planned.codes, planned.motion, planned.predicted_ms, planned.order)
                path, digest = put_content(tmp / "plans", data, "npz")
                plan_bytes += len(data)
                segment.plan_uri, segment.plan_sha256 = f"plans/{path.name}", digest
                segment.psnr_y_planned = float(np.mean(planned.psnr))
            segments.append(segment)
        shipped = "int8" if int8 else "fp32"  # what a default player downloads
        model_bits = sum(e.bytes for e in entries if e.precision == shipped) * 8
        grid = analysis.grid
        manifest = Manifest(
            format=FORMAT_PLANNED if plan or base != LANCZOS else FORMAT, asset_id=asset_id, base=base,
            scale=src.scale, hr=src.hr, lr=src.lr, fps=float(src.fps),
            crop=src.crop, init_uri=f"../hls/{INIT}", init_sha256=sha256_file(hls / INIT),
            patch=PatchSpec(size=grid.patch, grid=(grid.gw, grid.gh), overlap=grid.overlap),
            method=method, k=analysis.k, scorer=SCORER, models=entries, segments=segments,
            bits=Bits(video=rendition.video_bytes * 8, models=model_bits, labels=label_bytes * 8,
                      audio=rendition.audio_bytes * 8, plans=plan_bytes * 8),
            plan=None if plan is None else Plan(
                target_fps=round(plan.target.fps, 3), queue_frames=plan.target.queue,
                prebuffer_frames=plan.target.prebuffer, headroom=plan.target.headroom,
                device=plan.target.device, profile_sha256=plan.target.profile_sha256, routes=plan.routes,
                predicted_ms=plan.summary()),
        )
        atomic_write_text(tmp / "manifest.json", manifest.to_json())
    return manifest


def quality_report(options: EncodeOptions, src: Source, rendition: Rendition, analysis: Analysis,
                   models: list[ShippedModel], trained: Training, evaluation: Evaluation, plan: PlanResult | None,
                   manifest: Manifest, *, arch: dict[str, Any], warm_start: bool,
                   seconds: dict[str, float]) -> dict[str, Any]:
    """The measured quality, bits and costs of an encode, as one JSON-able dict."""
    used = evaluation.used_models()
    fp, ss = evaluation.frame_psnr, evaluation.frame_ssim
    bits = manifest.bits.model_dump()
    one_model = len(trained.results) == 1
    return {
        "scale": options.scale,
        "method": options.method,
        "k": analysis.k,
        "preset": options.preset,
        "base": manifest.base,
        "frames": rendition.frames,
        "source": {"width": src.info.width, "height": src.info.height, "fps": float(src.fps), "codec": src.info.codec},
        "hr": list(src.hr),
        "lr": list(src.lr),
        "crf": options.crf,
        "psnr_y_lanczos": evaluation.mean_psnr("lanczos"),
        "psnr_y_bicubic": evaluation.mean_psnr("bicubic"),
        "psnr_y_sr": evaluation.mean_psnr("sr"),
        "precision": "int8" if options.int8 else "fp32",
        "psnr_y_sr_fp32": evaluation.mean_psnr("sr_fp32"),
        "ssim_y_lanczos": float(np.mean(ss["lanczos"])),
        "ssim_y_sr": float(np.mean(ss["sr"])),
        "bits": bits,
        "model_bits_before_entropy_coding": sum(len(m.shipped_bytes(options.int8)) for m in models if m.id in used) * 8,
        "weight_bits": {m.id: m.weight_bits for m in models if m.id in used},
        "bitrate_kbps": {key: value / rendition.duration / 1000 for key, value in bits.items()},
        "seconds": dict(seconds),
        "scorer": manifest.scorer,
        "thresholds_db": analysis.thresholds,
        "arch": arch,
        "train": [r.to_dict() | {"model": options.method if one_model else models[i].id}
                  for i, r in enumerate(trained.results)],
        "warm_start": warm_start,
        "segments": [{"index": s.index, "frames": s.frames, "psnr_y_lanczos": s.psnr_y_lanczos,
                      "psnr_y_sr": s.psnr_y_sr, "routes": s.routes} for s in evaluation.segments],
        "frame_psnr_y": fp | ({"planned": plan.frame_psnr} if plan else {}),
        "diagnostic_frames": evaluation.diagnostic_frames,
        **({"plan": plan_report(plan, float(np.mean(fp["sr"])) - float(np.mean(fp["lanczos"])),
                                float(np.mean(fp["lanczos"])))} if plan else {}),
    }


def plan_report(plan: PlanResult, gain_unplanned: float, psnr_lanczos: float) -> dict[str, Any]:
    """What the plan delivers against the same models with no budget, and what it predicted."""
    psnr = float(np.mean(plan.frame_psnr))
    gain = psnr - psnr_lanczos
    return {
        "target_fps": plan.target.fps, "asked_fps": plan.target.asked_fps, "device": plan.target.device,
        "queue_frames": plan.target.queue, "headroom": plan.target.headroom, "routes": plan.routes,
        "psnr_y_planned": psnr, "gain_planned_db": gain, "gain_unplanned_db": gain_unplanned,
        "gain_kept": gain / gain_unplanned if gain_unplanned > 0 else None,
        "route_shares": plan.shares(), "predicted_ms": plan.summary(),
        "predicted_frame_ms": [round(float(v), 3) for v in plan.predicted_ms], "late_frames_predicted": plan.late,
        "costs": {"frame_ms": plan.costs.frame_ms, "feed_ms": plan.costs.feed_ms, "move_ms": plan.costs.move_ms,
                  "zero_ms": plan.costs.zero_ms, "call_ms": list(plan.costs.call_ms),
                  "window_ms": list(plan.costs.window_ms)},
    }


# --------------------------------------------------------------------------- helpers


class StageRunner:
    """Runs the stages: maps each stage's own fraction to the overall progress callback (by the
    stage weights) and records every stage's seconds."""

    def __init__(self, callback: ProgressFn | None, stages: dict[str, float] | None = None) -> None:
        self.callback = callback
        self.stages = stages or STAGES
        self.seconds: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self._offsets: dict[str, float] = {}
        acc = 0.0
        for name, weight in self.stages.items():
            self._offsets[name] = acc
            acc += weight

    def report(self, stage: str, fraction: float) -> None:
        if self.callback is not None:
            overall = self._offsets[stage] + self.stages[stage] * min(max(fraction, 0.0), 1.0)
            self.callback(stage, min(overall, 1.0))

    def __call__(self, stage: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self.report(stage, 0.0)
        t0 = time.perf_counter()
        out = fn(*args, progress=lambda f: self.report(stage, f), **kwargs)
        self.seconds[stage] = time.perf_counter() - t0
        self.seconds["total"] = time.perf_counter() - self._t0
        self.report(stage, 1.0)
        return out


def training_pairs(samples: Path, group: int | None, *, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` training pairs of a samples file (of ``group`` when given): LR windows (uint8
    NHWC) and HR residuals over lanczos (int16 NHWC)."""
    from sr_models.samples import read_samples

    lr, res, groups = read_samples(samples)
    idx = np.flatnonzero(groups == group) if group is not None else np.arange(len(lr))
    idx = np.sort(np.random.default_rng(seed).choice(idx, size=min(n, idx.size), replace=False))
    return lr[idx], res[idx]


def calibration_windows(samples: Path, group: int | None, *, seed: int, n: int = 384) -> np.ndarray:
    """Up to ``n`` LR windows (float32 NCHW in [0, 1]) of a samples file (of ``group`` when given)."""
    lr, _ = training_pairs(samples, group, seed=seed, n=n)
    return np.ascontiguousarray(lr.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def _model_entries(sr_dir: Path, model: ShippedModel, int8: bool, base: str) -> list[ModelEntry]:
    """The manifest entries of one model (fp32, and int8 when shipped), files stored xz-coded."""
    variants = [("fp32", model.fp32)] + ([("int8", model.int8)] if int8 and model.int8 is not None else [])
    entries = []
    for precision, onnx in variants:
        blob = compress_model(onnx)  # entropy-coded: what is stored, sent and counted
        path, digest = put_content(sr_dir / "models", blob, "onnx.xz")
        entries.append(ModelEntry(id=model.id, uri=f"models/{path.name}", sha256=digest, bytes=len(blob), encoding="xz",
                                  arch=model.arch, params=model.params, macs_per_lr_px=model.macs_per_lr_px,
                                  precision=precision, runtime_hint="onnxruntime", group=model.group, residual=base,
                                  weight_bits=model.weight_bits if precision == "int8" else None))
    return entries


def asset_slug(name: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_")[:64]
    return slug if len(slug) >= 3 else f"asset-{slug or 'x'}"
