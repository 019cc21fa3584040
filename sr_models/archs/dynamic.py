"""Dy-DCA-style dynamic network: one checkpoint, k residual ESPCN branches of
different capacity, a patch's content label picks its branch.

Branch 0 (the hardest patches) is the widest and deepest.  At inference every
branch runs once per frame on the batch of patches routed to it, with fixed
shapes (the static execution plan), so no per-patch control flow is needed;
each branch exports as its own graph (:meth:`DynamicSR.branch`).
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_models.archs.espcn import ResidualESPCN
from sr_models.archs.registry import register_model


class DynamicSR(nn.Module):
    """k :class:`ResidualESPCN` branches; ``forward(x, labels)`` routes each sample by its label.

    Args:
        scale: upscaling factor.
        branches: (channels, body) of each branch, hardest label first.
    """

    def __init__(self, scale: int, branches: list[tuple[int, int]]) -> None:
        super().__init__()
        if not branches:
            raise ValueError("a dynamic model needs at least one branch")
        self.scale = scale
        self.branches = nn.ModuleList(ResidualESPCN(scale, c, b) for c, b in branches)

    @property
    def receptive_radius(self) -> int:
        return max(b.receptive_radius for b in self.branches)

    @property
    def macs_per_lr_px(self) -> int:
        """Of the largest branch (the worst case per pixel)."""
        return max(b.macs_per_lr_px for b in self.branches)

    def branch(self, index: int) -> ResidualESPCN:
        return self.branches[index]

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if labels is None:
            return self.branches[0](x)
        outs: Tensor | None = None
        for i, branch in enumerate(self.branches):
            mask = labels == i
            if not bool(mask.any()):
                continue
            y = branch(x[mask])
            if outs is None:
                outs = y.new_zeros((x.shape[0], *y.shape[1:]))
            outs[mask] = y
        assert outs is not None, "labels route to no branch"
        return outs


def default_branches(k: int, *, widest: int = 40, narrowest: int = 16, deepest: int = 3,
                     shallowest: int = 1) -> list[tuple[int, int]]:
    """Capacity falling linearly from the hardest branch to the easiest (channels rounded to 8)."""
    if k == 1:
        return [(widest, deepest)]
    out = []
    for i in range(k):
        t = i / (k - 1)
        c = int(round((widest + (narrowest - widest) * t) / 8) * 8)
        b = int(round(deepest + (shallowest - deepest) * t))
        out.append((max(8, c), b))
    return out


@register_model("dydca")
def dydca(*, scale: int, branches: list[list[int]] | list[tuple[int, int]] | None = None, k: int = 2) -> DynamicSR:
    """A dynamic model of ``k`` branches (or the explicit ``branches`` [(channels, body), ...])."""
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, not {scale}")
    spec = [tuple(b) for b in branches] if branches else default_branches(k)
    return DynamicSR(scale=scale, branches=spec)  # type: ignore[arg-type]


__all__ = ["DynamicSR", "default_branches", "dydca"]
