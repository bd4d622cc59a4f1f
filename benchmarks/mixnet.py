"""A user's own teacher for the quality benchmark, named ``benchmarks.mixnet:mixnet``.

Not a zoo model: it reaches prunetune the way a user's model does, through ``--model
module:factory``. It mixes the block kinds that make channel pruning hard to get right:

- residual blocks (a shared channel group across an addition),
- two-branch blocks whose outputs are concatenated (one group made of two segments),
- depthwise-separable blocks (a depthwise conv ties its input and output channels).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MixNet", "mixnet"]


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    """Two 3x3 convs added to their input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv_bn(channels, channels), _conv_bn(channels, channels, act=False))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class TwoBranch(nn.Module):
    """A 3x3 branch and a 1x1-then-3x3 branch, both strided, concatenated."""

    def __init__(self, cin: int, half: int, stride: int) -> None:
        super().__init__()
        self.left = _conv_bn(cin, half, 3, stride)
        self.right = nn.Sequential(_conv_bn(cin, half, 1), _conv_bn(half, half, 3, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.left(x), self.right(x)], dim=1)


class Separable(nn.Module):
    """1x1 expansion, 3x3 depthwise, 1x1 projection, added to the input."""

    def __init__(self, channels: int, expansion: int = 2) -> None:
        super().__init__()
        hidden = channels * expansion
        self.body = nn.Sequential(
            _conv_bn(channels, hidden, 1), _conv_bn(hidden, hidden, 3, groups=hidden), _conv_bn(hidden, channels, 1, act=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class MixNet(nn.Module):
    """Stem, residual, concat (stride 2), depthwise, concat (stride 2), residual, classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn(in_channels, width),
            Residual(width),
            TwoBranch(width, width, 2),
            Separable(2 * width),
            TwoBranch(2 * width, 2 * width, 2),
            Residual(4 * width),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def mixnet(in_channels: int, num_classes: int, width: int = 16) -> MixNet:
    """The benchmark's own teacher (about 8M MACs on a 28x28 image at width 16)."""
    return MixNet(in_channels, num_classes, width)
