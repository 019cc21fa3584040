"""ESPCN-style residual network: plain 3x3 convolutions, ReLU, PixelShuffle.

The network maps an LR RGB patch (values in [0, 1]) to the *residual* over the
lanczos upscale of the same patch, in HR pixels scaled to [-1, 1] of 255.  The
last convolution starts at zero, so an untrained model is exactly lanczos and
training can only start from there.  Every op fuses well in ONNX Runtime and
XNNPACK (Conv+ReLU), and the receptive-field radius is ``body + 2`` LR pixels.
"""

from __future__ import annotations

from torch import Tensor, nn

from sr_models.archs import register_model


class ResidualESPCN(nn.Module):
    """conv3x3(3->C) ReLU, ``body`` x [conv3x3(C->C) ReLU], conv3x3(C->3s^2), PixelShuffle(s).

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: width C of the hidden layers.
        body: number of hidden C->C convolutions.
    """

    def __init__(self, scale: int, channels: int, body: int) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(body):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.tail = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.tail(self.body(x)))


def receptive_radius(body: int) -> int:
    """LR pixels of context a ResidualESPCN output pixel depends on, each side."""
    return body + 2


def macs_per_lr_px(scale: int, channels: int, body: int) -> int:
    return 9 * (3 * channels + body * channels * channels + channels * 3 * scale * scale)


@register_model("espcn_r")
def espcn_r(*, scale: int, channels: int = 32, body: int = 2) -> ResidualESPCN:
    """The default compact model (~23 k MACs per LR pixel at x2, C=32, body=2)."""
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, not {scale}")
    if channels < 4 or body < 0:
        raise ValueError(f"bad espcn_r width/depth: channels={channels}, body={body}")
    return ResidualESPCN(scale=scale, channels=channels, body=body)
