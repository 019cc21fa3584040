"""Latency predictor fitted on a device profile.

A network's frame latency is predicted from the in-context layer costs measured on
the target device (see ``nas.profile``): ``first[w0] + sum(step[w_i-1, w_i])``,
scaled as ``a + b * that``, with ``a`` and ``b`` fitted by least squares on the
deeper whole networks the profile timed end to end (what stacking more layers
saves or costs beyond the sum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyModel:
    table: dict[tuple[str, int, int], float]
    scale: int
    a: float = 0.0
    b: float = 1.0

    @classmethod
    def from_profile(cls, profile: dict[str, Any], networks: list[dict] | None = None) -> "LatencyModel":
        table = {(row["kind"], int(row["cin"]), int(row["cout"])): float(row["ms"]) for row in profile["layers"]}
        base = cls(table, int(profile["target"]["scale"]))
        # the table's own networks ([c] and [a, b], timed whole) count as measurements too
        nets = table_networks(profile) + list(profile["networks"] if networks is None else networks)
        if len(nets) < 2:
            return base
        sums = np.array([base.layer_sum(n["widths"]) for n in nets])
        measured = np.array([n["ms"] for n in nets])
        design = np.stack([np.ones_like(sums), sums], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, measured, rcond=None)
        return cls(table, base.scale, float(a), float(b))

    def layer_sum(self, widths: list[int]) -> float:
        """``first[w0] + sum(step[w_i-1, w_i])``: the additive estimate from the table."""
        try:
            total = self.table[("first", 3, widths[0])]
            return total + sum(self.table[("step", a, b)] for a, b in zip(widths[:-1], widths[1:]))
        except KeyError as exc:
            raise ValueError(f"the profile has no measurement for layer {exc.args[0]}") from None

    def predict(self, widths: list[int]) -> float:
        """Milliseconds for one frame's patches through the network ``widths``."""
        return self.a + self.b * self.layer_sum(widths)


def table_networks(profile: dict[str, Any]) -> list[dict[str, Any]]:
    """The whole networks behind the layer table: ``[c]`` and ``[a, b]`` with their measured times."""
    first = {int(r["cout"]): float(r["ms"]) for r in profile["layers"] if r["kind"] == "first"}
    nets = [{"widths": [c], "ms": ms} for c, ms in first.items()]
    nets += [{"widths": [int(r["cin"]), int(r["cout"])], "ms": first[int(r["cin"])] + float(r["ms"])}
             for r in profile["layers"] if r["kind"] == "step"]
    return nets


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
