"""ESPCN-style residual networks: plain 3x3 convolutions, ReLU, PixelShuffle.

A network maps an LR RGB patch (values in [0, 1]) to the *residual* over the
lanczos upscale of the same patch, in HR pixels (1.0 = 255 levels).  The last
convolution starts at zero, so an untrained model is exactly lanczos and
training can only start from there.  Every op fuses well in ONNX Runtime and
XNNPACK (Conv+ReLU).

Each module exposes ``receptive_radius`` (LR pixels of context an output pixel
depends on, each side: the patch halo needed for seamless tiling) and
``macs_per_lr_px``.
"""

from __future__ import annotations

from torch import Tensor, nn

from fitcast.profile import conv_macs_per_lr_px
from sr_models.archs.registry import register_model


class ResidualESPCN(nn.Module):
    """conv3x3(3->C) ReLU, ``body`` x [conv3x3(C->C) ReLU], conv3x3(C->3s^2), PixelShuffle(s).

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: width C of the hidden layers.
        body: number of hidden C->C convolutions.
    """

    def __init__(self, scale: int, channels: int, body: int, widths: list[int] | None = None) -> None:
        super().__init__()
        # widths[i]: output channels of the i-th hidden conv (the first maps 3 -> widths[0]);
        # uniform unless given (the searched networks of nas/ give one width per layer).
        widths = list(widths) if widths is not None else [channels] * (body + 1)
        self.scale, self.channels, self.depth, self.widths = scale, max(widths), len(widths) - 1, widths
        layers: list[nn.Module] = []
        for cin, cout in zip([3] + widths[:-1], widths, strict=False):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(widths[-1], 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    @property
    def receptive_radius(self) -> int:
        return self.depth + 2

    @property
    def macs_per_lr_px(self) -> int:
        return conv_macs_per_lr_px(self.widths, self.scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.tail(self.body(x)))


def _check(scale: int, channels: int, body: int) -> None:
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, not {scale}")
    if channels < 4 or body < 0:
        raise ValueError(f"bad width/depth: channels={channels}, body={body}")


@register_model("espcn_w")
def espcn_w(*, scale: int, widths: list[int]) -> ResidualESPCN:
    """Residual ESPCN with one width per hidden conv (what the compiler-aware search picks)."""
    if not widths or min(widths) < 4:
        raise ValueError(f"widths must be one or more layer widths >= 4, not {widths}")
    _check(scale, max(widths), len(widths) - 1)
    return ResidualESPCN(scale=scale, channels=max(widths), body=len(widths) - 1, widths=widths)


@register_model("espcn_r")
def espcn_r(*, scale: int, channels: int = 32, body: int = 2) -> ResidualESPCN:
    """Full-resolution residual ESPCN (~23 k MACs per LR pixel at x2, C=32, body=2)."""
    _check(scale, channels, body)
    return ResidualESPCN(scale=scale, channels=channels, body=body)
