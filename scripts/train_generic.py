"""Train the generic (not overfitted) baseline models that ship in ``sr_models/weights/``.

    python scripts/train_generic.py --scales 2 4

Trains on clips of ``../shared/media`` that the quality benchmark does *not* encode
(the benchmark's detailed clips leaf, goldeneye, bear and tos are left out), on the
same kind of data as an overfitted model: the clip's LR made by the encoder's own
downscale, x264 at CRF 23, decoded, with the residual over lanczos as the target.
One clip is held out to report the model's gain over lanczos on unseen content.
Writes ``generic-x{S}.pt`` (fp32 state dict, ~100-150 kB) and ``generic-x{S}.json``
(clips, iterations, seconds, held-out gain) atomically.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fitcast.machine import machine  # noqa: E402
from fitcast.options import EncodeOptions  # noqa: E402
from fitcast.storage import atomic_write_text  # noqa: E402
from sr_models.generic import WEIGHTS  # noqa: E402
from sr_models.recipes import PRESETS, RECIPES, receptive_radius  # noqa: E402
from sr_models.samples import clip_pairs, save_samples  # noqa: E402
from sr_models.train import TrainSpec, held_out_gain, train  # noqa: E402

MEDIA = Path(os.environ.get("FITCAST_MEDIA", ROOT.parent / "shared" / "media"))
# Everything but the benchmark's clips (leaf, goldeneye, bear, tos).
TRAIN_CLIPS = ["chaplin_360p_moviepy.mp4", "paraglide_480p_cotracker.mp4", "apple_1296x720_cotracker.mp4",
               "flower_540p_mdn.mp4", "cars_432p_intel.mp4", "cockatoo_720p_imageio.mp4",
               "anime_1080p_pyscenedetect.mkv"]
HELD_OUT = "dog_720p_moviepy.mp4"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", nargs="+", type=int, default=[2, 4])
    ap.add_argument("--iterations", type=int, default=8000)
    ap.add_argument("--per-clip", type=int, default=2500, help="patches per training clip (x2; x4 uses half)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="read at most this much of each clip")
    ap.add_argument("--crf", type=int, default=23)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    preset = PRESETS["balanced"]
    for scale in args.scales:
        # the network the balanced preset trains for stdo/jstdo (what warm starts begin from)
        arch = RECIPES["jstdo"].arch(EncodeOptions(method="jstdo", scale=scale, warm_start=False), preset)
        overlap = receptive_radius(arch)
        per_clip = args.per_clip if scale == 2 else args.per_clip // 2
        rng = np.random.default_rng(scale)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            t0 = time.perf_counter()
            lrs, ress, counts = [], [], {}
            for name in TRAIN_CLIPS:
                lr, res = clip_pairs(MEDIA / name, scale, patch=preset.patch, overlap=overlap, per_clip=per_clip,
                                     max_seconds=args.max_seconds, crf=args.crf, rng=rng)
                lrs.append(lr)
                ress.append(res)
                counts[name] = len(lr)
                print(f"x{scale} {name}: {len(lr)} patches", flush=True)
            save_samples(tmp / "train.npz", np.concatenate(lrs), np.concatenate(ress))
            del lrs, ress
            lr, res = clip_pairs(MEDIA / HELD_OUT, scale, patch=preset.patch, overlap=overlap, per_clip=per_clip,
                                 max_seconds=args.max_seconds, crf=args.crf, rng=rng)
            save_samples(tmp / "held_out.npz", lr, res)
            prep = time.perf_counter() - t0
            out = args.out / f"generic-x{scale}.pt"
            last = [0.0]

            def show(it: int, total: int, loss: float, last: list[float] = last, scale: int = scale) -> None:
                if it - last[0] >= 500 or it == total:
                    last[0] = it
                    print(f"x{scale} it {it}/{total} loss {loss:.5f}", flush=True)

            result = train(TrainSpec(samples=tmp / "train.npz", out=out, arch=arch, overlap=overlap,
                                     iterations=args.iterations, batch_size=preset.batch_size, lr=preset.lr,
                                     loss=preset.loss, seed=scale), show)
            gain = held_out_gain(out, arch, overlap, tmp / "held_out.npz")
            card = {"arch": arch, "overlap": overlap, "patch": preset.patch, "crf": args.crf,
                    "train_clips": counts, "held_out_clip": HELD_OUT, "held_out_gain_db": round(gain, 3),
                    "iterations": result.iterations, "batch_size": preset.batch_size,
                    "train_seconds": round(result.seconds, 1), "prepare_seconds": round(prep, 1),
                    "machine": machine(), "bytes": out.stat().st_size}
            atomic_write_text(out.with_suffix(".json"), json.dumps(card, indent=2) + "\n")
            print(json.dumps(card), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
