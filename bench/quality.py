"""Quality benchmark (not part of `make test`): every method against lanczos, the generic model
and full-resolution x264, per clip and scale, with a BD-rate over CRF ladders.

    python bench/quality.py --clips leaf_720p_pyscenedetect.mp4:3:2 bear_480p_cotracker.mp4:0:2 \\
        --scales 2 4 --methods generic stdo jstdo dydca \\
        --ladder leaf_720p_pyscenedetect.mp4:2:dydca --long leaf_720p_pyscenedetect.mp4 \\
        --out docs/results/quality --readme README.md

A clip spec is NAME[:START[:DURATION]] inside ../shared/media (or a path); the piece is cut
nearly losslessly (x264 CRF 8) and is the reference every number is measured against.
Per (clip, scale, method) at the LR CRF (23): PSNR-Y, SSIM-Y (the encoder's report, the
player's int8 models), VMAF (the player's own output written losslessly, against the
reference), total bits (LR video + models + label maps), encode wall seconds.  "lanczos" is
the same LR rendition upscaled by lanczos (video bits only).  Full-resolution x264 (preset
medium) of the reference: a CRF ladder, and a 2-pass encode at the best method's total
bitrate.  ``--ladder CLIP:SCALE:METHOD`` encodes that method at more LR CRFs, for a
Bjøntegaard delta rate of fitcast (and of LR + lanczos) against full-resolution x264.
``--long CLIP`` encodes a whole clip once (default method, x2): encode seconds per second of
input and the share of model and label bits.

``--hull CLIP ...`` runs the per-title hull benchmark instead (``bench/hull.py``: fitcast's
ladder against x264 at every resolution and against a fixed ladder, BD-rates).

Every finished run is written to ``quality.json`` at once, and a rerun skips the runs the file
already holds: an interrupted benchmark resumes.  Plots: ``rd.png`` (rate-distortion per
clip and scale), ``segments.png`` (PSNR-Y per segment), ``gains.png`` (dB over lanczos).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import MEDIA, bd_rate, bd_text, clip_piece, machine, update_readme  # noqa: E402
from client.player import PlayOptions, play  # noqa: E402
from fitcast.asset import Fetcher  # noqa: E402
from fitcast.media import iter_frames, probe, run_ffmpeg, vmaf  # noqa: E402
from fitcast.metrics import psnr_y  # noqa: E402
from fitcast.storage import atomic_write_text  # noqa: E402
from server.pipeline import EncodeOptions, encode  # noqa: E402

X264_CRFS = (18, 23, 28, 33)


class Bench:
    """The benchmark's state: the JSON it grows run by run, and where it works."""

    def __init__(self, out: Path, *, preset: str, k: int) -> None:
        self.out, self.work = out, out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.path = out / "quality.json"
        self.data = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.data.update({"machine": machine(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "preset": preset, "k": k})
        for key in ("runs", "x264", "long"):
            self.data.setdefault(key, [])
        self.preset, self.k = preset, k

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2))

    def has(self, table: str, **key) -> bool:
        return any(all(r.get(k) == v for k, v in key.items()) for r in self.data[table])

    def add(self, table: str, row: dict, *, quiet: tuple[str, ...] = ()) -> None:
        """Keep ``row`` (saved at once: an interrupted benchmark resumes after it) and print it."""
        self.data[table].append(row)
        self.save()
        print(json.dumps({k: v for k, v in row.items() if k not in quiet}), flush=True)

    @staticmethod
    def encode(source: Path, asset: Path, options: EncodeOptions) -> tuple[Any, dict, float, dict]:
        """Encode into a fresh ``asset``: (manifest, report, wall seconds, the common row fields)."""
        shutil.rmtree(asset, ignore_errors=True)
        t0 = time.perf_counter()
        m = encode(source, asset, options, asset_id="bench")
        wall = time.perf_counter() - t0
        q = json.loads((asset / "report" / "quality.json").read_text())
        row = {"frames": q["frames"], "duration": q["frames"] / m.fps, "hr": m.hr, "bits": q["bits"],
               "model_bits_uncoded": q.get("model_bits_before_entropy_coding"), "encode_seconds": wall,
               "seconds": q["seconds"], "psnr_y_lanczos": q["psnr_y_lanczos"], "psnr_y_sr": q["psnr_y_sr"]}
        return m, q, wall, row

    def encode_run(self, label: str, piece: Path, scale: int, method: str, crf: int, *, measure_vmaf: bool) -> None:
        if self.has("runs", clip=label, scale=scale, method=method, crf=crf):
            return
        asset = self.work / f"{label}_x{scale}_{method}_crf{crf}".replace("@", "_").replace("+", "_")
        m, q, _, common = self.encode(piece, asset, EncodeOptions(scale=scale, method=method, k=self.k, crf=crf,
                                                                   preset=self.preset))
        bits, duration = common["bits"], common["duration"]
        run = {"clip": label, "scale": scale, "method": method, "crf": crf, "fps": m.fps, "crop": list(m.crop),
               **common, "psnr_y_bicubic": q["psnr_y_bicubic"], "psnr_y_sr_fp32": q["psnr_y_sr_fp32"],
               "ssim_y_lanczos": q["ssim_y_lanczos"], "ssim_y_sr": q["ssim_y_sr"],
               "total_kbps": (bits["video"] + bits["models"] + bits["labels"]) / duration / 1000,
               "video_kbps": bits["video"] / duration / 1000,
               "segments": [{k: s[k] for k in ("index", "psnr_y_lanczos", "psnr_y_sr", "routes")}
                            for s in q["segments"]]}
        if measure_vmaf:
            crop = tuple(m.crop)
            for key, sr in (("vmaf_sr", True), ("vmaf_lanczos", False)):
                lossless = self.work / f"{asset.name}_{key}.mp4"
                play(str(asset), PlayOptions(out=lossless, out_crf=0, sr=sr), fetcher=Fetcher(self.work / "cache"))
                run[key] = vmaf(lossless, piece, crop=crop)
                lossless.unlink()
        self.add("runs", run, quiet=("segments", "seconds"))
        shutil.rmtree(asset, ignore_errors=True)

    def x264_run(self, label: str, piece: Path, *, crf: int | None = None, kbps: float | None = None,
                 for_run: dict | None = None) -> None:
        """Full-resolution x264 of the reference: at a CRF, or 2-pass at a bitrate."""
        key = {"clip": label, "crf": crf} if crf is not None else {"clip": label, "kbps_target": round(kbps, 1)}
        if self.has("x264", **key):
            return
        info = probe(piece)
        out = self.work / f"{label}_x264_{crf if crf is not None else f'{kbps:.0f}k'}.mp4".replace("@", "_")
        base = ["-i", str(piece), "-c:v", "libx264", "-preset", "medium", "-pix_fmt", "yuv420p", "-an"]
        if crf is not None:
            run_ffmpeg([*base, "-crf", str(crf), str(out)])
        else:
            passlog = str(self.work / "x264pass")
            run_ffmpeg([*base, "-b:v", f"{kbps:.0f}k", "-pass", "1", "-passlogfile", passlog, "-f", "mp4", os.devnull])
            run_ffmpeg([*base, "-b:v", f"{kbps:.0f}k", "-pass", "2", "-passlogfile", passlog, str(out)])
        psnrs = [psnr_y(a, b) for a, b in zip(iter_frames(out), iter_frames(piece), strict=False)]
        frames = len(psnrs)
        duration = frames / float(info.fps)
        row = {**key, "frames": frames, "kbps": out.stat().st_size * 8 / duration / 1000,
               "psnr_y": float(np.mean(psnrs)), "vmaf": vmaf(out, piece),
               "size": [info.width, info.height]}
        if for_run is not None:
            row["same_bits_as"] = {k: for_run[k] for k in ("scale", "method", "crf")}
        self.add("x264", row)
        out.unlink()

    def long_run(self, spec: str, method: str) -> None:
        src = Path(spec) if Path(spec).is_file() else MEDIA / spec
        if self.has("long", clip=src.name, method=method):
            return
        asset = self.work / "long"
        _, _, wall, common = self.encode(src, asset, EncodeOptions(scale=2, method=method, k=self.k,
                                                                   preset=self.preset))
        bits = common["bits"]
        row = {"clip": src.name, "method": method, "scale": 2, **common,
               "seconds_per_second": wall / common["duration"],
               "model_label_share_of_video": (bits["models"] + bits["labels"]) / bits["video"]}
        self.add("long", row, quiet=("seconds",))
        shutil.rmtree(asset, ignore_errors=True)


def bd_rates(data: dict) -> dict[str, dict | None]:
    """Per clip, scale and method with a CRF ladder: BD-rate against full-resolution x264, for
    fitcast (total bits, PSNR-Y of the SR) and for LR + lanczos (video bits)."""
    out: dict[str, dict | None] = {}
    for clip in sorted({r["clip"] for r in data["runs"]}):
        ladder = sorted((x["kbps"], x["psnr_y"]) for x in data["x264"]
                        if x["clip"] == clip and x.get("crf") is not None)
        if len(ladder) < 4:
            continue
        ref_rate, ref_psnr = [r for r, _ in ladder], [p for _, p in ladder]
        for scale, method in sorted({(r["scale"], r["method"]) for r in data["runs"] if r["clip"] == clip}):
            runs = sorted((r for r in data["runs"] if r["clip"] == clip and r["scale"] == scale
                           and r["method"] == method), key=lambda r: r["crf"])
            if len(runs) < 4:
                continue
            out[f"{clip} x{scale} {method}"] = bd_rate(ref_rate, ref_psnr, [r["total_kbps"] for r in runs],
                                                      [r["psnr_y_sr"] for r in runs])
            out[f"{clip} x{scale} lanczos"] = bd_rate(ref_rate, ref_psnr, [r["video_kbps"] for r in runs],
                                                     [r["psnr_y_lanczos"] for r in runs])
    return out


def to_markdown(data: dict, methods: list[str], crf: int) -> str:
    runs = [r for r in data["runs"] if r["crf"] == crf]
    keys = sorted({(r["clip"], r["scale"]) for r in runs}, key=lambda c: (c[1], c[0]))
    head = ["clip", "scale", "lanczos PSNR-Y"] + [f"{m} Δ" for m in methods] + \
           ["best SSIM-Y (lanczos)", "best VMAF (lanczos)", "total kbit/s (video)", "x264 full-res same bits"]
    lines = [f"Machine: {data['machine']}, {data['cores']} cores; preset {data['preset']}, k={data['k']}, "
             f"LR CRF {crf}. Δ = PSNR-Y gain over lanczos on the same decoded LR (dB), the player's int8 models.",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    by_scale: dict[int, dict[str, list[float]]] = {}
    for clip, scale in keys:
        mine = {r["method"]: r for r in runs if r["clip"] == clip and r["scale"] == scale}
        if not mine:
            continue
        any_run = next(iter(mine.values()))
        best = max(mine.values(), key=lambda r: r["psnr_y_sr"])
        acc = by_scale.setdefault(scale, {})
        cells = [clip, f"x{scale}", f"{any_run['psnr_y_lanczos']:.2f}"]
        for m in methods:
            if m in mine:
                gain = mine[m]["psnr_y_sr"] - mine[m]["psnr_y_lanczos"]
                acc.setdefault(m, []).append(gain)
                cells.append(f"{gain:+.2f}" + (" **best**" if mine[m] is best and len(mine) > 1 else ""))
            else:
                cells.append("–")
        cells.append(f"{best['ssim_y_sr']:.4f} ({best['ssim_y_lanczos']:.4f})")
        cells.append(f"{best['vmaf_sr']:.1f} ({best['vmaf_lanczos']:.1f})" if "vmaf_sr" in best else "–")
        cells.append(f"{best['total_kbps']:.0f} ({best['video_kbps']:.0f})")
        same = [x for x in data["x264"] if x["clip"] == clip and x.get("same_bits_as", {}).get("scale") == scale
                and x["same_bits_as"].get("crf") == crf]
        cells.append(f"{same[0]['psnr_y']:.2f} dB at {same[0]['kbps']:.0f}" if same else "–")
        lines.append("| " + " | ".join(cells) + " |")
    for scale, acc in sorted(by_scale.items()):
        avg = [f"{np.mean(acc[m]):+.2f}" if m in acc else "–" for m in methods]
        lines.append("| **mean** | " + f"x{scale} | | " + " | ".join(avg) + " | | | | |")
    bd = data.get("bd_rate_vs_full_res_x264") or {}
    if bd:
        lines += ["", "BD-rate against full-resolution x264 (x264 CRF ladder "
                  f"{', '.join(map(str, X264_CRFS))}; fitcast: LR CRF ladder; "
                  "negative = fewer bits at equal PSNR-Y):", ""]
        lines += [f"- {k}: {bd_text(v if isinstance(v, dict) or v is None else None)}" for k, v in bd.items()]
    for row in data["long"]:
        lines += ["", f"Whole clip {row['clip']} ({row['duration']:.1f} s, {row['hr'][0]}x{row['hr'][1]}, x2, "
                  f"{row['method']}): encode {row['encode_seconds']:.0f} s = **{row['seconds_per_second']:.1f} s per "
                  f"second** of input; models + labels = **{100 * row['model_label_share_of_video']:.1f} %** of the "
                  f"LR video bits ({row['bits']['models'] / 8000:.0f} kB models, {row['bits']['labels'] / 8000:.1f} kB "
                  f"labels, {row['bits']['video'] / 8000:.0f} kB video); PSNR-Y {row['psnr_y_sr']:.2f} dB vs lanczos "
                  f"{row['psnr_y_lanczos']:.2f} dB."]
    return "\n".join(lines)


def plots(data: dict, out: Path, crf: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = sorted({(r["clip"], r["scale"]) for r in data["runs"]}, key=lambda c: (c[1], c[0]))
    if not keys:
        return
    def panels(path: Path, height: float, xlabel: str, draw: Callable[[Any, str, int], bool]) -> None:
        """One panel per (clip, scale), four to a row; ``draw`` fills one (False: it had nothing)."""
        cols = min(4, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, height * rows), squeeze=False)
        for ax, (clip, scale) in zip(axes.flat, keys, strict=False):
            if not draw(ax, clip, scale):
                continue
            ax.set_title(f"{clip} x{scale}", fontsize=9)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("PSNR-Y (dB)")
            ax.legend(fontsize=7)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)

    def rate_distortion(ax, clip: str, scale: int) -> bool:
        runs = [r for r in data["runs"] if r["clip"] == clip and r["scale"] == scale]
        for method in sorted({r["method"] for r in runs}):
            pts = sorted((r["total_kbps"], r["psnr_y_sr"]) for r in runs if r["method"] == method)
            ax.plot(*zip(*pts, strict=False), "o-", label=f"fitcast {method}")
        lz = sorted({(r["video_kbps"], r["psnr_y_lanczos"]) for r in runs})
        ax.plot(*zip(*lz, strict=False), "s--", color="gray", label="LR + lanczos")
        ladder = sorted((x["kbps"], x["psnr_y"]) for x in data["x264"]
                        if x["clip"] == clip and x.get("crf") is not None)
        if ladder:
            ax.plot(*zip(*ladder, strict=False), "^:", color="black", label="full-res x264")
        ax.set_xscale("log")
        return True

    def per_segment(ax, clip: str, scale: int) -> bool:
        runs = [r for r in data["runs"] if r["clip"] == clip and r["scale"] == scale and r["crf"] == crf]
        if not runs:
            return False
        ax.plot([s["psnr_y_lanczos"] for s in runs[0]["segments"]], "s--", color="gray", label="lanczos")
        for r in runs:
            ax.plot([s["psnr_y_sr"] for s in r["segments"]], "o-", label=r["method"])
        return True

    panels(out / "rd.png", 3.8, "kbit/s (total)", rate_distortion)
    panels(out / "segments.png", 3.4, "segment", per_segment)

    methods = sorted({r["method"] for r in data["runs"]})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(keys)), 3.6))
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        gains = []
        for clip, scale in keys:
            r = next((r for r in data["runs"] if r["clip"] == clip and r["scale"] == scale and r["method"] == method
                      and r["crf"] == crf), None)
            gains.append(np.nan if r is None else r["psnr_y_sr"] - r["psnr_y_lanczos"])
        ax.bar(np.arange(len(keys)) + (i - (len(methods) - 1) / 2) * width, gains, width, label=method)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(np.arange(len(keys)), [f"{c} x{s}" for c, s in keys], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("PSNR-Y over lanczos (dB)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "gains.png", dpi=100)
    plt.close(fig)


def main() -> int:
    if "--hull" in sys.argv[1:]:  # the per-title hull benchmark (bench/hull.py)
        from bench.hull import main as hull_main

        return hull_main([a for a in sys.argv[1:] if a != "--hull"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", nargs="+", required=True)
    ap.add_argument("--scales", nargs="+", type=int, default=[2])
    ap.add_argument("--methods", nargs="+", default=["generic", "stdo", "jstdo", "dydca"])
    ap.add_argument("--crf", type=int, default=23, help="LR CRF of every method")
    ap.add_argument("--ladder", nargs="*", default=[], metavar="CLIP:SCALE:METHOD",
                    help="encode this method at more LR CRFs (--ladder-crfs) for a BD-rate")
    ap.add_argument("--ladder-crfs", nargs="+", type=int, default=[18, 28, 33])
    ap.add_argument("--long", nargs="*", default=[], help="whole clips to encode once (default method, x2)")
    ap.add_argument("--preset", default="balanced")
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--no-vmaf", dest="vmaf", action="store_false")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "quality")
    ap.add_argument("--readme", type=Path, default=None, help="put the table into this README's quality block")
    args = ap.parse_args()
    bench = Bench(args.out, preset=args.preset, k=args.k)
    pieces = dict(clip_piece(spec, bench.work) for spec in args.clips)
    for label, piece in pieces.items():
        for crf in X264_CRFS:
            bench.x264_run(label, piece, crf=crf)
        for scale in args.scales:
            for method in args.methods:
                bench.encode_run(label, piece, scale, method, args.crf, measure_vmaf=args.vmaf)
            mine = [r for r in bench.data["runs"]
                    if r["clip"] == label and r["scale"] == scale and r["crf"] == args.crf]
            best = max(mine, key=lambda r: r["psnr_y_sr"])
            bench.x264_run(label, piece, kbps=best["total_kbps"], for_run=best)
    for spec in args.ladder:
        name, scale, method = spec.rsplit(":", 2)
        label = next((lb for lb, p in pieces.items() if lb.startswith(Path(name).stem.split("_")[0] + "@")), None)
        if label is None:
            raise SystemExit(f"--ladder {spec}: the clip is not among --clips")
        for crf in args.ladder_crfs:
            bench.encode_run(label, pieces[label], int(scale), method, crf, measure_vmaf=False)
    for spec in args.long:
        bench.long_run(spec, EncodeOptions().method)
    bench.data["bd_rate_vs_full_res_x264"] = bd_rates(bench.data)
    bench.save()
    plots(bench.data, args.out, args.crf)
    table = to_markdown(bench.data, args.methods, args.crf)
    print(table)
    if args.readme is not None:
        update_readme(args.readme, table, block="quality")
    return 0


if __name__ == "__main__":
    sys.exit(main())
