"""Generic (not overfitted) models: the baseline that shows what overfitting buys.

A generic model has the architecture the ``balanced`` preset trains for ``stdo``
and ``jstdo`` (``espcn_r``, 32 channels, two body layers), trained once on clips
*other* than those the benchmark encodes (``scripts/train_generic.py``), on
x264-decoded LR like every fitcast model.  The weights ship as package data
(``sr_models/weights/``): nothing is downloaded at run time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

WEIGHTS = Path(__file__).resolve().parent / "weights"


def generic_arch(scale: int) -> dict[str, Any]:
    """The architecture spec of the generic model for ``scale``."""
    return {"name": "espcn_r", "scale": scale, "channels": 32, "body": 2}


def generic_weights(scale: int) -> Path:
    """The state-dict file of the generic model for ``scale``; a clear error when none ships."""
    path = WEIGHTS / f"generic-x{scale}.pt"
    if not path.is_file():
        have = sorted(p.stem.removeprefix("generic-") for p in WEIGHTS.glob("generic-x*.pt"))
        raise FileNotFoundError(f"no generic model for x{scale} ships with fitcast (have: {', '.join(have) or 'none'})")
    return path

