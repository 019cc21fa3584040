"""Equal-count quantile groups over patch difficulty (STDO's spatial-temporal chunks).

All patches of all frames are ranked together by score (ascending: hardest
first); ties are broken deterministically by (frame, row, column).  Rank r of N
goes to group ``floor(r * k / N)``, so label 0 is the hardest group and every
group holds N/k patches (+-1).
"""

from __future__ import annotations

import numpy as np

from fitcast.errors import InvalidInputError


def assign_groups(scores: np.ndarray, k: int) -> tuple[np.ndarray, list[float]]:
    """Label every patch of ``scores`` (any shape, e.g. [frames, gh, gw]) with its group.

    Returns ``(labels uint8 of the same shape, thresholds)`` where thresholds[i]
    is the highest score in group i (for reports).
    """
    if not 1 <= k <= 255:
        raise InvalidInputError(f"k must be between 1 and 255, not {k}")
    flat = np.asarray(scores, dtype=np.float64).ravel()
    n = flat.size
    if n == 0:
        raise InvalidInputError("no patches to group")
    if k > n:
        raise InvalidInputError(f"k={k} groups but only {n} patches")
    order = np.argsort(flat, kind="stable")  # stable: ties keep (frame, row, col) order
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.arange(n)
    labels = (ranks * k // n).astype(np.uint8)
    thresholds = [float(flat[order[min(n - 1, ((g + 1) * n - 1) // k)]]) for g in range(k)]
    return labels.reshape(np.shape(scores)), thresholds
