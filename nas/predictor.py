"""Latency predictor fitted on a device profile.

Every network the profile timed on the target runtime (the table's shallow ones
and the random deeper ones) is a measurement; the predictor is the least-squares
fit of those times on four features of a network ``widths``:

- 1 (the runtime's per-call cost),
- MACs per LR pixel / 1000 (the compute),
- the number of convolutions (each a kernel launch and a pass over memory),
- the sum of the hidden widths (the activations written and read).

Fitted on measured times, not FLOPs alone: on the int8 CPU kernels measured so
far (README) the per-layer and memory terms matter as much as the compute.  ``holdout_mape``
reports its error on deeper networks the fit did not see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fitcast.profile import network_features as features  # the same terms as the planner's cost model

FEATURES = ("one", "kmacs_per_lr_px", "convs", "sum_widths")


def table_networks(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole networks behind the layer table: ``[c]`` and ``[a, b]`` with their measured times."""
    first = {int(r["cout"]): float(r["ms"]) for r in profile["layers"] if r["kind"] == "first"}
    nets = [{"widths": [c], "ms": ms} for c, ms in first.items()]
    nets += [{"widths": [int(r["cin"]), int(r["cout"])], "ms": first[int(r["cin"])] + float(r["ms"])}
             for r in profile["layers"] if r["kind"] == "step"]
    return nets


@dataclass(frozen=True)
class LatencyModel:
    coef: tuple[float, ...]
    scale: int
    widths: frozenset[int]  # the widths the profile measured: predictions stay inside them

    @classmethod
    def from_profile(cls, profile: dict[str, Any], networks: list[dict] | None = None) -> LatencyModel:
        """Fit on the table's networks plus ``networks`` (default: all the profile's deeper ones)."""
        scale = int(profile["target"]["scale"])
        nets = table_networks(profile) + list(profile["networks"] if networks is None else networks)
        if len(nets) < len(FEATURES):
            raise ValueError(f"{len(nets)} measured networks are too few to fit {len(FEATURES)} terms")
        x = np.stack([features(n["widths"], scale) for n in nets])
        y = np.array([n["ms"] for n in nets])
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        measured = frozenset(int(r["cout"]) for r in profile["layers"] if r["kind"] == "first")
        return cls(tuple(float(c) for c in coef), scale, measured)

    def predict(self, widths: list[int]) -> float:
        """Milliseconds for one frame's patches through the network ``widths``."""
        outside = set(widths) - self.widths
        if outside:
            raise ValueError(f"the profile has no measurement for width {sorted(outside)}")
        return float(features(widths, self.scale) @ np.array(self.coef))


def holdout_mape(profile: dict[str, Any], *, fit_share: float = 0.5, seed: int = 0) -> float:
    """Mean absolute percentage error on the profile's deeper networks that the fit did not see
    (the fit takes the table's networks and ``fit_share`` of the deeper ones)."""
    nets = list(profile["networks"])
    order = np.random.default_rng(seed).permutation(len(nets))
    n_fit = int(len(nets) * fit_share)
    fit, held = [nets[i] for i in order[:n_fit]], [nets[i] for i in order[n_fit:]]
    if not held:
        raise ValueError("the profile has too few whole networks to hold some out")
    model = LatencyModel.from_profile(profile, fit)
    return float(np.mean([abs(model.predict(n["widths"]) - n["ms"]) / n["ms"] for n in held]) * 100)


def mean_holdout_mape(profile: dict[str, Any], splits: int = 6) -> float:
    """``holdout_mape`` averaged over several random splits (one split of a few networks is noisy)."""
    return float(np.mean([holdout_mape(profile, seed=s) for s in range(splits)]))
