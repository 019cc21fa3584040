"""``report/quality.json`` and ``report/psnr.png`` of an encode (DESIGN §8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from fitcast.storage import atomic_dir, atomic_write_text


def write_report(report_dir: Path, report: dict[str, Any]) -> None:
    """Publish ``quality.json`` and its plot as one atomic rename."""
    with atomic_dir(report_dir) as tmp:
        atomic_write_text(tmp / "quality.json", json.dumps(report, indent=2))
        plot_quality(report, tmp / "psnr.png")


def plot_quality(report: dict[str, Any], out: Path) -> None:
    """PSNR-Y per frame (lanczos, bicubic, fitcast) and per segment."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the server extra; the report JSON is what matters
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    fp = report["frame_psnr_y"]
    axes[0].plot(fp["lanczos"], label=f"lanczos ({report['psnr_y_lanczos']:.2f} dB)", lw=1)
    measured = report.get("diagnostic_frames") or range(len(fp["bicubic"]))  # bicubic: on those frames
    axes[0].plot(measured, fp["bicubic"], label=f"bicubic ({report['psnr_y_bicubic']:.2f} dB)", lw=1, alpha=0.6)
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
    fig.savefig(out, dpi=110)
    plt.close(fig)
