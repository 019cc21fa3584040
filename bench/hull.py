"""The per-title hull benchmark (not part of `make test`): fitcast's ladder against what x264
alone achieves on the same title.

    python bench/quality.py --hull leaf_720p_pyscenedetect.mp4 tos_800x332_mdn.webm cars_432p_intel.mp4 \\
        leaf_720p_pyscenedetect.mp4:3:4 --out docs/results/hull --readme README.md

A clip is NAME (the whole clip) or NAME:START:DURATION, cut nearly losslessly (x264 CRF 8): the
reference every number is measured against, cropped so that x4 and x2 divide it.  Per clip:

- **per-title hull**: plain x264 (preset medium, the rungs' GOPs) at every resolution of the
  ladder (x4, x2, full) over a CRF range, each upscaled to the display size by lanczos; the upper
  hull of PSNR-Y (and of VMAF) against video kbit/s over all of them;
- **fitcast**: per SR scale, models trained once on the clip (``encode`` at ``--train-crf``, or
  the rung of an existing ladder, ``--ladder CLIP=DIR``), then the same x264 encodes at every
  CRF analysed and upscaled by the player's routed SR with those models (the do-no-harm gate
  per segment), rate = video + models + label maps; fitcast's curve is the upper hull over its
  SR points (``--weight-bits auto``: the models exported again for each point's rate by the
  encode's export stage, on the bits per weight it chooses there), and its *ladder* curve adds
  the full-resolution x264 points a fitcast ladder also sends;
- **fixed ladder**: one resolution per bitrate, the shape of Apple's HLS authoring ladder
  (x4 at 145, x2 at 365/730/1100, full at 2000/3000/4500 kbit/s for 1280x720 at 30 fps, scaled
  by pixel rate), x264 one-pass ABR, lanczos-upscaled;
- **BD-rate** (``bjontegaard``, pchip) of fitcast's SR rungs against the hull and against the
  fixed ladder over the bitrate range of fitcast's SR points, both curves sampled at the same
  rates there, and the mean quality difference at equal rate beside it.

VMAF is measured on every ``--vmaf-stride``-th frame (the same frames for every curve).  Every
finished point is written to ``hull.json`` at once and a rerun resumes.  Plots: ``rd-<clip>.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import bd_rate, clip_piece, machine, update_readme  # noqa: E402
from fitcast.ladder import RatePoint, per_title_hull  # noqa: E402
from fitcast.media import (  # noqa: E402
    HlsEncoder,
    VideoWriter,
    center_crop,
    downscale,
    iter_frames,
    probe,
    upscale,
    vmaf,
)
from fitcast.metrics import psnr_y  # noqa: E402
from fitcast.rendition import measured_bandwidth, paired_frames, segments_of  # noqa: E402
from fitcast.storage import atomic_write_text  # noqa: E402

CRFS = (19, 23, 27, 31, 35, 39)
FIXED_LADDER = {4: (145,), 2: (365, 730, 1100), 1: (2000, 3000, 4500)}  # kbit/s at 1280x720, 30 fps
SEGMENT_SECONDS = 2.0


class HullBench:
    def __init__(self, out: Path, *, preset: str, iterations: int | None, train_crf: int, vmaf_stride: int,
                 use_vmaf: bool, crfs: tuple[int, ...] = CRFS, x264_only: bool = False,
                 sr_scales: tuple[int, ...] = (4, 2), weight_bits: str | None = None) -> None:
        self.crfs, self.x264_only, self.sr_scales = crfs, x264_only, sr_scales
        self.weight_bits, self._samples = weight_bits, {}
        self.out, self.work = out, out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.preset, self.iterations, self.train_crf = preset, iterations, train_crf
        self.vmaf_stride, self.use_vmaf = vmaf_stride, use_vmaf
        path = out / "hull.json"
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"clips": {}}
        self.data["machine"] = machine()

    def save(self) -> None:
        atomic_write_text(self.out / "hull.json", json.dumps(self.data, indent=2))

    # ----------------------------------------------------------------------- a clip

    def clip(self, spec: str, ladder: Path | None) -> None:
        label, ref = clip_piece(spec, self.work, duration=None)
        info = probe(ref)
        crop = center_crop(info.width, info.height, 4)
        entry = self.data["clips"].setdefault(label, {"points": {}})
        entry.update(frames=info.frames, duration=info.duration, display=[crop[2], crop[3]], fps=float(info.fps))
        seg_frames = max(1, round(SEGMENT_SECONDS * float(info.fps)))
        ref_vmaf = self.work / label / "ref-vmaf.mp4"
        ref_vmaf.parent.mkdir(parents=True, exist_ok=True)
        if self.use_vmaf and not ref_vmaf.exists():
            self._write_strided(iter_frames(ref, crop=crop), ref_vmaf, crop, float(info.fps))
        rate = crop[2] * crop[3] * float(info.fps) / (1280 * 720 * 30)
        for scale in (4, 2, 1):
            for crf in self.crfs:
                self.point(entry, label, ref, crop, info, seg_frames, scale, crf=crf)
            for kbps in FIXED_LADDER[scale]:
                self.point(entry, label, ref, crop, info, seg_frames, scale, kbps=max(20, round(kbps * rate)))
        if self.x264_only:
            self.save()
            return
        for scale in self.sr_scales:
            asset = self.models(label, ref, crop, scale, ladder)
            for crf in self.crfs:
                self.fitcast_point(entry, label, ref, crop, info, seg_frames, scale, crf, asset)
        entry["summary"] = summarise(entry)
        self.save()

    def encode(self, label: str, ref: Path, crop, info, seg_frames: int, scale: int, *, crf: int | None = None,
               kbps: int | None = None) -> Path:
        """The x264 rendition at this resolution and CRF (or rate), once."""
        name = f"x{scale}-crf{crf}" if crf is not None else f"x{scale}-{kbps}k"
        hls = self.work / label / name
        if (hls / "lr.m3u8").exists():
            return hls
        tmp = hls.with_name(name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        w, h = crop[2] // scale, crop[3] // scale
        with HlsEncoder(tmp, w, h, info.fps, seg_frames, crf=crf if crf is not None else 23,
                        bitrate_kbps=kbps) as enc:
            for hr in iter_frames(ref, crop=crop):
                enc.write(downscale(hr, scale) if scale > 1 else hr)
        tmp.rename(hls)
        return hls

    def point(self, entry: dict, label: str, ref: Path, crop, info, seg_frames: int, scale: int, *,
              crf: int | None = None, kbps: int | None = None) -> None:
        key = f"x264/x{scale}/" + (f"crf{crf}" if crf is not None else f"{kbps}k")
        if key in entry["points"]:
            return
        t0 = time.perf_counter()
        hls = self.encode(label, ref, crop, info, seg_frames, scale, crf=crf, kbps=kbps)
        _, average = measured_bandwidth(hls)
        scores, vm = [], self._vmaf_writer(label, crop, info)
        for _seg, lr_frames, hr_frames in paired_frames(ref, crop, hls, segments_of(hls)):
            for lr, hr in zip(lr_frames, hr_frames, strict=True):
                up = upscale(lr, scale, "lanczos") if scale > 1 else lr
                scores.append(psnr_y(up, hr))
                vm.write(up)
        entry["points"][key] = {"kind": "fixed" if kbps else "x264", "scale": scale, "crf": crf,
                                "target_kbps": kbps, "kbps": average / 1000, "psnr_y": float(np.mean(scores)),
                                "vmaf": vm.finish(self, label), "seconds": time.perf_counter() - t0}
        print(f"{label} {key}: {average / 1000:.0f} kbit/s, {np.mean(scores):.2f} dB", flush=True)
        self.save()

    def models(self, label: str, ref: Path, crop, scale: int, ladder: Path | None) -> Path:
        """A fitcast asset at this scale: the ladder's rung, or an encode at ``--train-crf``."""
        if ladder is not None and (ladder / "rungs" / f"x{scale}" / "sr" / "manifest.json").exists():
            return ladder / "rungs" / f"x{scale}"
        from fitcast.options import EncodeOptions
        from server.pipeline import encode

        out = self.work / label / f"fitcast-x{scale}"
        if not (out / "sr" / "manifest.json").exists():
            # with --weight-bits the bench exports the models again per rate: from the weights as trained
            encode(ref, out, EncodeOptions(scale=scale, crf=self.train_crf, preset=self.preset,
                                           iterations=self.iterations, target_fps=0,
                                           weight_bits=None if self.weight_bits is None else 7), crop=crop)
        return out

    def fitcast_point(self, entry: dict, label: str, ref: Path, crop, info, seg_frames: int, scale: int, crf: int,
                      asset_dir: Path) -> None:
        key = f"fitcast/x{scale}/crf{crf}"
        if key in entry["points"]:
            return
        from fitcast.asset import open_asset
        from server.pipeline import Rendition, Source, analyse, evaluate, label_bytes
        from sr_models.recipes import recipe_for

        t0 = time.perf_counter()
        hls = self.encode(label, ref, crop, info, seg_frames, scale, crf=crf)
        asset = open_asset(str(asset_dir))
        m = asset.manifest
        if tuple(m.crop) != tuple(crop):
            raise SystemExit(f"{asset_dir}: its crop {list(m.crop)} is not this clip's {list(crop)}")
        segs = segments_of(hls)
        video = sum((hls / s.uri).stat().st_size for s in segs) * 8
        src = Source(ref, info, crop, scale, seg_frames)
        rendition = Rendition(hls, segs, max(1, info.frames), video // 8, 0, "")
        analysis = analyse(src, rendition, m.grid(), m.k, progress=lambda _: None)
        labels = label_bytes(analysis) * 8
        models, int8, model_bits = self.shipped(asset_dir, ref, (video + labels) // 8)
        from fitcast.options import EncodeOptions

        groups = recipe_for(EncodeOptions(method=m.method, k=m.k)).group_models(m.k)
        vm = self._vmaf_writer(label, crop, info)
        result = evaluate(src, rendition, analysis, models, groups, int8=int8, base=m.base, sink=vm.write,
                          measure_fp32=False, progress=lambda _: None)
        seconds = rendition.duration
        kbps = (video + model_bits + labels) / seconds / 1000
        entry["points"][key] = {"kind": "fitcast", "scale": scale, "crf": crf, "kbps": kbps,
                                "kbps_video": video / seconds / 1000, "kbps_models": model_bits / seconds / 1000,
                                "weight_bits": sorted({x.weight_bits for x in models}),
                                "kbps_labels": labels / seconds / 1000,
                                "psnr_y": float(np.mean(result.frame_psnr["sr"])),
                                "psnr_y_lanczos": float(np.mean(result.frame_psnr["lanczos"])),
                                "models_trained_at_crf": _trained_crf(asset_dir), "vmaf": vm.finish(self, label),
                                "seconds": time.perf_counter() - t0}
        print(f"{label} {key}: {kbps:.0f} kbit/s, {entry['points'][key]['psnr_y']:.2f} dB", flush=True)
        self.save()

    def shipped(self, asset_dir: Path, ref: Path, rate_bytes: int) -> tuple[list, bool, int]:
        """The asset's models as measured here, whether int8, and their bits as a default player
        fetches them: as the asset ships them, or (``--weight-bits``) exported again from their fp32
        weights by the encode's export stage, on the bits it chooses for a rung of ``rate_bytes``
        (video and labels) or on the bits given."""
        from fitcast.asset import open_asset
        from fitcast.manifest import compress_model
        from server.pipeline import export_models, group_shares, shipped_models
        from sr_models.export import from_onnx

        if self.weight_bits is None:
            models, int8 = shipped_models(open_asset(str(asset_dir)))
            return models, int8, open_asset(str(asset_dir)).manifest.bits.models
        old, samples = self._trained(asset_dir, ref)
        fresh = [dataclasses.replace(x, net=from_onnx(x.arch, x.fp32)) for x in old.models]  # as shipped: 7 bits
        models = export_models(fresh, samples, old.analysis.grid, int8=old.int8, seed=0,
                               weight_bits=None if self.weight_bits == "auto" else int(self.weight_bits),
                               rate_bytes=rate_bytes, shares=group_shares(old.analysis), progress=lambda _: None)
        return models, old.int8, sum(len(compress_model(x.shipped_bytes(old.int8))) for x in models) * 8

    def _trained(self, asset_dir: Path, ref: Path):
        """An asset read back, and training pairs cut from its rendition as its encode cut them."""
        key = str(asset_dir)
        if key not in self._samples:
            from fitcast.options import EncodeOptions
            from fitcast.storage import AssetLayout
            from server.pipeline import published, sample
            from sr_models.recipes import recipe_for

            old = published(AssetLayout(asset_dir), ref)
            recipe = recipe_for(EncodeOptions(method=old.manifest.method, k=old.manifest.k))
            work = self.work / "samples" / asset_dir.name
            self._samples[key] = old, sample(old.src, old.rendition, old.analysis, recipe, per_group=2000, work=work,
                                             seed=0, base=old.manifest.base, progress=lambda _: None)
        return self._samples[key]

    # ----------------------------------------------------------------------- VMAF on strided frames

    def _vmaf_writer(self, label: str, crop, info) -> _StridedVmaf:
        return _StridedVmaf(self.work / label / "vmaf-dist.mp4", crop, float(info.fps), self.vmaf_stride,
                            self.use_vmaf)

    def _write_strided(self, frames, path: Path, crop, fps: float) -> None:
        writer = _StridedVmaf(path, crop, fps, self.vmaf_stride, True)
        for frame in frames:
            writer.write(frame)
        writer.close()


class _StridedVmaf:
    """Every ``stride``-th frame written losslessly, then VMAF against the reference's same frames."""

    def __init__(self, path: Path, crop, fps: float, stride: int, enabled: bool) -> None:
        self.path, self.stride, self.enabled, self.n = path, stride, enabled, 0
        self.writer = VideoWriter(path, crop[2], crop[3], fps, crf=0) if enabled else None

    def write(self, frame: np.ndarray) -> None:
        if self.writer is not None and self.n % self.stride == 0:
            self.writer.write(frame)
        self.n += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self, bench: HullBench, label: str) -> float | None:
        if self.writer is None:
            return None
        self.close()
        score = vmaf(self.path, bench.work / label / "ref-vmaf.mp4")
        self.path.unlink(missing_ok=True)
        return score


def _trained_crf(asset_dir: Path) -> int | None:
    try:
        return int(json.loads((asset_dir / "report" / "quality.json").read_text())["crf"])
    except (OSError, ValueError, KeyError):
        return None


# --------------------------------------------------------------------------- curves


def _points(entry: dict, kinds: tuple[str, ...], metric: str, scales: tuple[int, ...] = (1, 2, 4)) -> list[RatePoint]:
    return [RatePoint(p["scale"], p["crf"] or 0, p["kbps"], p[metric]) for p in entry["points"].values()
            if p["kind"] in kinds and p["scale"] in scales and p.get(metric) is not None]


def _sample(curve: list[RatePoint], rates: np.ndarray) -> np.ndarray:
    """A curve (its upper hull) at ``rates``, linear in log rate between its points."""
    hull = per_title_hull(curve)
    return np.interp(np.log(rates), np.log([p.kbps for p in hull]), [p.psnr_y for p in hull])


def summarise(entry: dict) -> dict:
    """fitcast against the per-title hull and the fixed ladder, over the bitrate range of its SR
    points (where the other curve has points too), both curves sampled at the same 8 log-spaced
    rates there: the BD-rate (``bd_rate``:
    published only where the curves overlap enough in quality) and the mean quality difference at
    equal rate (always defined).  Two fitcast curves: its SR rungs alone (the upper hull over its x4
    and x2 points), and its ladder (those and the full-resolution rung it also sends, x264 alone:
    at each rate the best of what a fitcast ladder can offer)."""
    out: dict[str, Any] = {}
    sr = _points(entry, ("fitcast",), "psnr_y")
    if len(sr) < 2:
        return out
    lo, hi = min(p.kbps for p in sr), max(p.kbps for p in sr)
    out["range_kbps"] = [round(lo, 1), round(hi, 1)]
    for metric in ("psnr_y", "vmaf"):
        for mine_name, mine in (("", _points(entry, ("fitcast",), metric)),
                                ("ladder_", _points(entry, ("fitcast",), metric)
                                 + _points(entry, ("x264",), metric, scales=(1,)))):
            if len(mine) < 2:
                continue
            for name, kinds in (("hull", ("x264",)), ("fixed", ("fixed",))):
                ref = _points(entry, kinds, metric)
                # where both curves have points (a curve is not extrapolated past its ends)
                a, b = max(lo, min(p.kbps for p in ref or sr)), min(hi, max(p.kbps for p in ref or sr))
                if len(ref) < 2 or b <= a * 1.05:
                    continue
                rates = np.exp(np.linspace(math.log(a), math.log(b), 8))
                q_mine, q_ref = _sample(mine, rates), _sample(ref, rates)
                out[f"{mine_name}bd_rate_vs_{name}_{metric}"] = bd_rate(rates, q_ref, rates, q_mine)
                out[f"{mine_name}delta_vs_{name}_{metric}"] = float(np.mean(q_mine - q_ref))
                out[f"{name}_range_kbps"] = [round(a, 1), round(b, 1)]
    return out


def _bd(value: dict | None) -> str:
    """A BD-rate with the share of the quality range the two curves share (the curves here are
    often far apart, so the overlap is small: read the number with it)."""
    if value is None:
        return "n/a (no overlap)"
    return f"{value['pchip']:+.0f} % (overlap {100 * value['overlap']:.0f} %)"


def to_markdown(data: dict) -> str:
    lines = [f"Per-title hull benchmark (`bench/quality.py --hull`), {data['machine']}.",
             "Over the bitrate range of fitcast's SR rungs (x4 and x2, models and labels counted): BD-rate "
             "(negative: fitcast needs fewer bits for the same quality) and, after it, the mean difference at "
             "equal rate (PSNR-Y dB, VMAF points). *SR rungs*: fitcast's SR points alone; *ladder*: those and "
             "the full-resolution rung a fitcast ladder also sends (at each rate the better of the two).", "",
             "| clip | display | frames | SR range (kbit/s) | SR rungs vs per-title hull, PSNR-Y | VMAF | "
             "ladder vs per-title hull, PSNR-Y | VMAF | SR rungs vs fixed ladder, PSNR-Y | VMAF |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for label, entry in data["clips"].items():
        s = entry.get("summary") or {}
        rng = s.get("range_kbps")
        cells = [f"{_bd(s.get(f'{mine}bd_rate_vs_{ref}_{m}'))}; {s[f'{mine}delta_vs_{ref}_{m}']:+.2f}"
                 if f"{mine}delta_vs_{ref}_{m}" in s else "n/a"
                 for mine, ref in (("", "hull"), ("ladder_", "hull"), ("", "fixed")) for m in ("psnr_y", "vmaf")]
        lines.append(f"| {label} | {entry['display'][0]}x{entry['display'][1]} | {entry['frames']} | "
                     f"{f'{rng[0]:.0f}–{rng[1]:.0f}' if rng else 'n/a'} | {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"


def plot(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for label, entry in data["clips"].items():
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
        for ax, metric in zip(axes, ("psnr_y", "vmaf"), strict=True):
            for kind, scale, style in [("x264", 4, "o:"), ("x264", 2, "o:"), ("x264", 1, "o-"),
                                       ("fitcast", 4, "s-"), ("fitcast", 2, "s-"), ("fitcast7bit", 4, "s:"),
                                       ("fitcast7bit", 2, "s:"), ("fitcast800it", 2, "s--"), ("fixed", 0, "^--")]:
                pts = sorted((p for p in entry["points"].values() if p["kind"] == kind and
                              (scale == 0 or p["scale"] == scale) and p.get(metric) is not None),
                             key=lambda p: p["kbps"])
                if pts:
                    name = {"x264": f"x264 x{scale} + lanczos" if scale > 1 else "x264 full resolution",
                            "fitcast": f"fitcast x{scale}", "fixed": "fixed ladder",
                            "fitcast7bit": f"fitcast x{scale}, 7-bit weights (before)",
                            "fitcast800it": f"fitcast x{scale}, 800 iterations per group (before)"}[kind]
                    ax.plot([p["kbps"] for p in pts], [p[metric] for p in pts], style, ms=3, lw=1, label=name)
            hull = per_title_hull(_points(entry, ("x264",), metric))
            if hull:
                ax.plot([p.kbps for p in hull], [p.psnr_y for p in hull], "k-", lw=2, alpha=0.3,
                        label="per-title hull")
            ax.set_xscale("log")
            ax.set_xlabel("kbit/s (video; fitcast: + models + labels)")
            ax.set_ylabel("PSNR-Y (dB)" if metric == "psnr_y" else "VMAF")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{label}: {entry['display'][0]}x{entry['display'][1]}, {entry['frames']} frames")
        fig.tight_layout()
        fig.savefig(out / f"rd-{label}.png", dpi=100)
        plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("clips", nargs="+", help="NAME (whole clip) or NAME:START:DURATION")
    ap.add_argument("--ladder", nargs="*", default=[], metavar="CLIP=DIR",
                    help="take the SR models of this ladder's rungs (same clip, whole) instead of training")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--iterations", type=int, default=None)
    ap.add_argument("--train-crf", type=int, default=27, help="the CRF the SR models are trained at")
    ap.add_argument("--crfs", type=int, nargs="+", default=list(CRFS), help="the CRF range of every curve")
    ap.add_argument("--vmaf-stride", type=int, default=4)
    ap.add_argument("--no-vmaf", dest="vmaf", action="store_false")
    ap.add_argument("--sr-scales", type=int, nargs="+", default=[4, 2], help="the SR rungs measured")
    ap.add_argument("--x264-only", action="store_true", help="only the x264 and fixed-ladder points (a rerun adds "
                                                             "fitcast's: every finished point is kept)")
    ap.add_argument("--weight-bits", choices=["auto", "7", "6", "5", "4", "3"], default=None,
                    help="export the SR rungs' models again from their fp32 weights on these bits per weight "
                         "(auto: the encode's own choice), instead of measuring them as shipped")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "hull")
    ap.add_argument("--readme", type=Path, default=None)
    args = ap.parse_args(argv)
    ladders = dict(spec.split("=", 1) for spec in args.ladder)
    bench = HullBench(args.out, preset=args.preset, iterations=args.iterations, train_crf=args.train_crf,
                      vmaf_stride=args.vmaf_stride, use_vmaf=args.vmaf, crfs=tuple(args.crfs), x264_only=args.x264_only,
                      sr_scales=tuple(args.sr_scales), weight_bits=args.weight_bits)
    for spec in args.clips:
        name = spec.split(":")[0]
        bench.clip(spec, Path(ladders[name]) if name in ladders else None)
    plot(bench.data, args.out)
    table = to_markdown(bench.data)
    print(table)
    if args.readme is not None:
        update_readme(args.readme, table, block="hull")
    return 0


if __name__ == "__main__":
    sys.exit(main())
