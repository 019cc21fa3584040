"""Generic (not overfitted) models: the baseline that shows what overfitting buys.

A generic model has the architecture the ``balanced`` preset trains for ``stdo``
and ``jstdo`` (``espcn_r``, 32 channels, two body layers), trained once on clips
*other* than those the benchmark encodes (``scripts/train_generic.py``), on
x264-decoded LR like every fitcast model.  The weights ship as package data
(``sr_models/weights/``), each beside its card (``generic-x<s>.json``: architecture,
training clips, iterations, held-out gain): nothing is downloaded at run time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = Path(__file__).resolve().parent / "weights"


def generic_weights(scale: int) -> Path:
    """The state-dict file of the generic model for ``scale``; a clear error when none ships."""
    path = WEIGHTS / f"generic-x{scale}.pt"
    if not path.is_file():
        have = sorted(p.stem.removeprefix("generic-") for p in WEIGHTS.glob("generic-x*.pt"))
        raise FileNotFoundError(f"no generic model for x{scale} ships with fitcast (have: {', '.join(have) or 'none'})")
    return path


def generic_card(scale: int) -> dict[str, Any]:
    """The card of the generic model for ``scale`` (what it is and how it was trained)."""
    return json.loads(generic_weights(scale).with_suffix(".json").read_text())


def generic_arch(scale: int) -> dict[str, Any]:
    """The architecture spec of the generic model for ``scale``, as its card records it."""
    return dict(generic_card(scale)["arch"])


def has_generic(scale: int) -> bool:
    try:
        generic_weights(scale)
    except FileNotFoundError:
        return False
    return True
