"""Training-speed benchmark (not part of `make test`): quality against training time.

    python bench/train_curve.py SAMPLES.npz --method dydca --iterations 250 500 1500 \
        --devices cpu cuda --out bench/results/train_curve
    python bench/train_curve.py --clip leaf_720p_pyscenedetect.mp4:3:4 --method jstdo \
        --variants fp32+nchw bf16+nhwc compile warm --iterations 1500

``--variants`` compares ways to train on the CPU (bf16 autocast or fp32, NHWC or NCHW
activations, ``torch.compile``, a warm start from the shipped generic model); each row also
has the CPU seconds the process used, for dB per CPU-minute.

SAMPLES.npz is the training set an encode writes (``work/samples.npz``: LR windows,
HR residuals over lanczos, group labels).  A fixed share of it is held out; every
budget trains from scratch with the product's own :func:`sr_models.train.train`
(same arch, batch, learning-rate schedule as the preset) on each device, then the
held-out patches are upscaled and scored: PSNR-Y of (lanczos + predicted residual)
against (lanczos + true residual), i.e. the gain over lanczos on patches the model
never saw.  Writes ``train_curve.json`` and ``train_curve.png`` (gain against
training seconds, one line per device).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import clip_piece, cpu_name, machine  # noqa: E402
from fitcast.options import METHODS, EncodeOptions  # noqa: E402
from sr_models.recipes import PRESETS, RECIPES, receptive_radius  # noqa: E402
from sr_models.samples import clip_pairs, save_samples  # noqa: E402
from sr_models.train import TrainSpec, held_out_gain, resolve_device, train  # noqa: E402

# Ways to train, as TrainSpec overrides ("machine" is what an encode uses: chosen for this CPU).
VARIANTS = {
    "machine": {},
    "bf16+nhwc": {"bf16": True, "channels_last": True},
    "fp32+nchw": {"bf16": False, "channels_last": False},
    "fp32+nhwc": {"bf16": False},
    "bf16+nchw": {"bf16": True, "channels_last": False},
    "compile": {"compile": True},
    "warm": {"init": "generic"},
}


def _clip_samples(spec: str, scale: int, patch: int, overlap: int, out: Path, n: int) -> None:
    """Training pairs of a piece of a clip (NAME:START:DURATION), as an encode would cut them."""
    _, piece = clip_piece(spec, out.parent, duration=4.0)
    lr, res = clip_pairs(piece, scale, patch=patch, overlap=overlap, per_clip=n, max_seconds=None,
                         crf=23, rng=np.random.default_rng(0))
    save_samples(out, lr, res)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("samples", type=Path, nargs="?", help="an encode's work/samples.npz (or use --clip)")
    ap.add_argument("--clip", default=None, help="NAME:START:DURATION in ../shared/media: sample this piece")
    ap.add_argument("--clip-samples", type=int, default=6000)
    ap.add_argument("--variants", nargs="+", default=["machine"], choices=tuple(VARIANTS))
    ap.add_argument("--method", default="dydca", choices=[m for m in METHODS if m != "generic"])
    ap.add_argument("--preset", default="balanced", choices=tuple(PRESETS))
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--iterations", type=int, nargs="+", default=[250, 500, 1500])
    ap.add_argument("--batch-size", type=int, nargs="+", default=None, help="default: the preset's")
    ap.add_argument("--devices", nargs="+", default=["cpu"])
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--max-samples", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "train_curve")
    args = ap.parse_args(argv)

    options = EncodeOptions.parse(method=args.method, scale=args.scale, k=args.k, preset=args.preset)
    preset, recipe = PRESETS[args.preset], RECIPES[options.method]
    arch = recipe.arch(options, preset)
    overlap = receptive_radius(arch)
    lr_rate = recipe.lr(preset)

    if args.clip:
        args.samples = Path(tempfile.mkdtemp(prefix="fitcast-curve-")) / "clip.npz"
        _clip_samples(args.clip, args.scale, options.patch or preset.patch, overlap, args.samples, args.clip_samples)
    elif args.samples is None:
        raise SystemExit("give SAMPLES.npz or --clip")
    with np.load(args.samples, allow_pickle=False) as npz:
        lr_np, res_np, group_np = npz["lr"], npz["res"], npz["group"]
    rng = np.random.default_rng(0)
    order = rng.permutation(len(lr_np))
    if args.max_samples:
        order = order[: args.max_samples]
    n_hold = max(1, int(len(order) * args.holdout))
    hold, keep = order[:n_hold], order[n_hold:]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_path, hold_path = tmp / "train.npz", tmp / "hold.npz"
        save_samples(train_path, lr_np[keep], res_np[keep], group_np[keep])
        save_samples(hold_path, lr_np[hold], res_np[hold], group_np[hold])
        for device in args.devices:
            dev = resolve_device(device)
            for bs, iters, variant in [(b, i, v) for b in args.batch_size or [preset.batch_size]
                                       for i in args.iterations for v in args.variants]:
                    out = tmp / f"{device}_{bs}_{iters}_{variant}.pt"
                    extra = dict(VARIANTS[variant])
                    if extra.get("init") == "generic":
                        from sr_models.generic import generic_arch, generic_weights

                        if arch != generic_arch(args.scale):
                            raise SystemExit(f"--variants warm needs the generic architecture, not {arch}")
                        extra["init"] = generic_weights(args.scale)
                    spec = TrainSpec(samples=train_path, out=out, arch=arch, overlap=overlap, iterations=iters,
                                     batch_size=bs, lr=lr_rate, loss=preset.loss, device=str(dev),
                                     group_weights=None, **extra)
                    cpu0 = time.process_time()
                    r = train(spec)
                    cpu = time.process_time() - cpu0
                    gain = held_out_gain(out, arch, overlap, hold_path)
                    row = {"device": str(dev), "device_name": _device_name(dev), "batch_size": bs,
                           "variant": variant, "precision": r.precision, "layout": r.layout, "iterations": iters,
                           "seconds": r.seconds, "cpu_seconds": cpu,
                           "it_per_s": r.it_per_s, "patches_per_s": r.it_per_s * bs, "held_out_gain_db": gain,
                           "db_per_cpu_minute": gain / (cpu / 60) if cpu > 0 else None, "loss_last": r.loss_last}
                    print(json.dumps(row), flush=True)
                    results.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine(), "method": args.method,
           "preset": args.preset, "arch": arch, "train_samples": int(len(keep)), "held_out": int(n_hold),
           "torch": torch.__version__, "rows": results}
    (args.out / "train_curve.json").write_text(json.dumps(doc, indent=2))
    _plot(doc, args.out / "train_curve.png")
    return 0


def _device_name(dev: torch.device) -> str:
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return f"{cpu_name()} x{torch.get_num_threads()} threads"


def _plot(doc: dict, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6.4, 4))
    def key(r: dict) -> tuple:
        return r["device_name"], r["batch_size"], r.get("variant", "bf16+nhwc")

    for name, bs, variant in sorted({key(r) for r in doc["rows"]}):
        rows = sorted((r for r in doc["rows"] if key(r) == (name, bs, variant)), key=lambda r: r["seconds"])
        ax.plot([r["seconds"] for r in rows], [r["held_out_gain_db"] for r in rows], marker="o",
                label=f"{name}, batch {bs}, {variant}")
    ax.set_xscale("log")
    ax.set_xlabel("training seconds")
    ax.set_ylabel("held-out PSNR-Y gain over lanczos (dB)")
    ax.set_title(f"{doc['method']} ({doc['preset']}): quality against training time")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
