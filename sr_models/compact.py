"""Fewer bits per shipped weight: a model's bits are a large part of a low rung's rate.

A shipped int8 model stores each weight as one of 129 levels per output channel (the int8
export maps the channel's largest ``|w|`` to 64; see ``sr_models.export.INT8_WEIGHT_BITS``).
The weights of a small overfitted network need far fewer: :func:`snap_weights` puts every
conv weight on a coarser per-channel grid, ``absmax * k / L`` with ``|k| <= L`` and ``L`` a
power of two up to 64, which the int8 export then carries exactly (``k * 64 / L`` is an
integer).  The graph, the runtime and the player are unchanged; the stored file, entropy-coded,
shrinks by about one bit per weight for each halving of ``L`` (``bits = log2(L) + 1``).

:func:`best_bits` weighs, per model, its gain over lanczos on its own training windows
(:func:`gain_db`), as a gain over the whole frame (:func:`frame_gains`: the error its patches
carry), against its shipped bytes at each grid, at a conservative rate-distortion slope,
so a model that is a large share of a low rung's rate gives up a little gain for many bits and
one beside a large video keeps its weights (the encode then measures every frame with the
models it ships, as always).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from fitcast.metrics import Y_WEIGHTS
from sr_models.recipes import FULL_WEIGHT_BITS

# Bits per weight a shipped model may take, most first; 7 is the int8 export's own grid.
WEIGHT_BITS = (7, 6, 5, 4, 3)

_Y = Y_WEIGHTS.astype(np.float64)  # PSNR-Y's luma weights, as everywhere in fitcast


def snap_weights(net: torch.nn.Module, bits: int) -> torch.nn.Module:
    """A copy of ``net`` whose conv weights lie on a ``bits``-bit symmetric grid per output
    channel (``bits`` 7 returns an unchanged copy: the int8 export's own grid)."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {WEIGHT_BITS}, not {bits}")
    out = copy.deepcopy(net).eval()
    if bits == FULL_WEIGHT_BITS:
        return out
    levels = 2 ** (bits - 1)
    with torch.no_grad():
        for module in out.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
                w = module.weight
                amax = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12)
                step = amax / levels
                w.copy_(torch.round(w / step).clamp(-levels, levels) * step)
    return out


@torch.no_grad()
def int8_weights(net: torch.nn.Module) -> bytes:
    """The conv weights as the int8 export writes them (each output channel's largest ``|w|`` to
    64), concatenated: what changes in a shipped file when its grid does (to size the grids
    without quantising each)."""
    parts = []
    for module in net.modules():
        if isinstance(module, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            w = module.weight
            step = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True).clamp_min(1e-12) / 64
            parts.append(torch.round(w / step).clamp(-64, 64).to(torch.int8).numpy().tobytes())
    return b"".join(parts)


@torch.no_grad()
def gain_db(net: torch.nn.Module, windows: np.ndarray, residuals: np.ndarray, *, overlap: int, scale: int) -> float:
    """PSNR-Y gain (dB) over lanczos of ``net`` on training pairs: LR ``windows`` uint8
    [N, W, W, 3] and the true HR ``residuals`` over lanczos, int16 [N, P, P, 3]."""
    o, ps = overlap * scale, residuals.shape[1]
    err_model = err_base = 0.0
    for i in range(0, len(windows), 256):
        x = torch.from_numpy(np.ascontiguousarray(windows[i : i + 256].transpose(0, 3, 1, 2))).float() / 255.0
        pred = net(x)[:, :, o : o + ps, o : o + ps].numpy().transpose(0, 2, 3, 1) * 255.0
        true = residuals[i : i + 256].astype(np.float64)
        err_model += float(np.sum(((pred - true) @ _Y) ** 2))
        err_base += float(np.sum((true @ _Y) ** 2))
    return 10.0 * float(np.log10(max(err_base, 1e-12) / max(err_model, 1e-12)))


def lanczos_error(residuals: np.ndarray) -> float:
    """The mean squared Y error of lanczos on training pairs (their residuals are what it misses)."""
    return float(np.mean((residuals.astype(np.float64) @ _Y) ** 2))


def frame_gains(gains: dict[int, float], own: float, rest: float) -> dict[int, float]:
    """A model's gain on its windows (dB, by bits) as gain over the whole frame: ``own`` is the
    lanczos error of the patches it serves (their share of the frame times their mean squared
    error), ``rest`` the error the frame keeps elsewhere (the other models' patches after them)."""
    return {bits: 10.0 * float(np.log10((own + rest) / max(own * 10 ** (-g / 10) + rest, 1e-12)))
            for bits, g in gains.items()}


# What a dB of PSNR-Y is worth in rate when the choice weighs quality against bits: 2 dB per
# e-fold of total rate (1.4 dB per doubling), the low end of the slopes of x264's curves on the
# bench's clips (2.1 to 4.5 dB per e-fold at the rates of the SR rungs): a steeper real curve
# makes each bit saved worth more, so the choice errs on the side of keeping quality.
RD_SLOPE_DB = 2.0


def best_bits(gains: dict[int, float], sizes: dict[int, int], *, other_bytes: int,
              slope: float = RD_SLOPE_DB) -> int:
    """The bits whose model gives the best quality at equal total rate: its gain over the frame
    (``gains``, dB, :func:`frame_gains`), less what its bytes (``sizes``, as shipped) cost against
    the full grid at ``slope`` dB per e-fold of the total (``other_bytes``: video, audio, labels and
    the other models).  Ties take fewer bits."""
    full = other_bytes + sizes[FULL_WEIGHT_BITS]

    def worth(bits: int) -> float:
        return gains[bits] - slope * float(np.log((other_bytes + sizes[bits]) / full))

    return max(sorted(gains), key=lambda b: (round(worth(b), 4), -b))
