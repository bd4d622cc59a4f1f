"""Small models whose channel structure the tests know by hand."""

from __future__ import annotations

import torch
from torch import nn


class ConcatDepthwise(nn.Module):
    """conv a 3->16 and conv b 3->32, concatenated into a 48-channel depthwise conv."""

    def __init__(self, depthwise: bool = True) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 16, 3, padding=1)
        self.b = nn.Conv2d(3, 32, 3, padding=1)
        self.dw = nn.Conv2d(48, 48, 3, padding=1, groups=48 if depthwise else 1)
        self.bn = nn.BatchNorm2d(48)
        self.pw = nn.Conv2d(48, 24, 1)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], 1)
        y = torch.relu(self.bn(self.dw(y)))
        y = torch.relu(self.pw(y))
        return self.fc(y.mean((2, 3)))


class Residual(nn.Module):
    """stem -> (conv1 -> conv2) + stem, then a head: stem and conv2 share one group."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(8, 12, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(12)
        self.conv2 = nn.Conv2d(12, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem_bn(self.stem(x)))
        y = torch.relu(self.bn1(self.conv1(s)))
        y = torch.relu(self.bn2(self.conv2(y)) + s)
        return self.fc(y.mean((2, 3)))
