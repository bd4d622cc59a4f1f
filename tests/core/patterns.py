"""Small models of the patterns real architectures bring (defined here: no torchvision needed).

Grouped 3x3 convs (RegNet), GroupNorm, a concat of a conv and a depthwise conv of it
(GhostNet), the same sliced after the concat (timm's GhostModule), a channel split and shuffle
(ShuffleNetV2), an auxiliary head that runs in training mode only (GoogLeNet), and a model that
returns ``(logits, aux)``. Every one takes 1 x 12 x 12 images and has 10 classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)


class Stem(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.stem, self.bn0 = conv_bn(1, c, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn0(self.stem(x)))


class Grouped(Stem):
    """RegNet's bottleneck: 1x1 -> grouped 3x3 (4 groups, not depthwise) -> 1x1, residual."""

    def __init__(self, c: int = 16, w: int = 32, groups: int = 4) -> None:
        super().__init__(c)
        self.a, self.bna = conv_bn(c, w)
        self.b, self.bnb = conv_bn(w, w, 3, groups)
        self.c, self.bnc = conv_bn(w, c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        y = F.relu(self.bnb(self.b(F.relu(self.bna(self.a(x))))))
        x = F.relu(x + self.bnc(self.c(y)))
        return self.fc(x.mean((2, 3)))


class GroupNormNet(nn.Module):
    """A conv normalised by GroupNorm(4 groups)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.gn = nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(4, 16)
        self.conv, self.fc = nn.Conv2d(16, 16, 3, padding=1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.gn(self.stem(x)))
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class Ghost(Stem):
    """GhostNet's module: concat(x1, depthwise(x1)), channel i of both branches tied; ``keep``
    slices the concat as timm's GhostModule does (None: not sliced)."""

    def __init__(self, m: int = 12, keep: int | None = None) -> None:
        super().__init__(8)
        self.primary, self.bnp = conv_bn(8, m)
        self.cheap, self.bnc = conv_bn(m, m, 3, groups=m)
        self.keep = keep
        self.out, self.bno = conv_bn(keep or 2 * m, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.relu(self.bnp(self.primary(self.features(x))))
        y = torch.cat([x1, F.relu(self.bnc(self.cheap(x1)))], 1)
        if self.keep is not None:
            y = y[:, : self.keep]
        return self.fc(F.relu(self.bno(self.out(y))).mean((2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class Shuffle(Stem):
    """ShuffleNetV2's unit: split in two, one half through 1x1 -> depthwise -> 1x1, concat, shuffle."""

    def __init__(self, c: int = 16) -> None:
        super().__init__(c)
        half = c // 2
        self.b1, self.bn1 = conv_bn(half, half)
        self.dw, self.bn2 = conv_bn(half, half, 3, groups=half)
        self.b2, self.bn3 = conv_bn(half, half)
        self.conv, self.bn4 = conv_bn(c, 24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.features(x).chunk(2, dim=1)
        b = F.relu(self.bn3(self.b2(self.bn2(self.dw(F.relu(self.bn1(self.b1(b))))))))
        x = channel_shuffle(torch.cat([a, b], 1))
        return self.fc(F.relu(self.bn4(self.conv(x))).mean((2, 3)))


class Aux(Stem):
    """GoogLeNet's auxiliary head: on an inner feature, run and returned in training mode only."""

    def __init__(self) -> None:
        super().__init__(16)
        self.mid, self.bn1 = conv_bn(16, 24, 3)
        self.aux_conv, self.aux_fc = nn.Conv2d(24, 8, 1), nn.Linear(8, 10)
        self.top, self.bn2 = conv_bn(24, 32, 3)
        self.fc = nn.Linear(32, 10)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.mid(self.features(x))))
        out = self.fc(F.relu(self.bn2(self.top(x))).mean((2, 3)))
        return out, self.aux_fc(F.relu(self.aux_conv(x)).mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        out, aux = self.heads(x)
        return (out, aux) if self.training else out


class TupleOut(Aux):
    """Returns ``(logits, aux)`` in every mode; the aux head's Linear is the last layer to run."""

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.bn1(self.mid(self.features(x))))
        out = self.fc(F.relu(self.bn2(self.top(x))).mean((2, 3)))
        aux = self.aux_fc(F.relu(self.aux_conv(x)).mean((2, 3)))
        return out, aux

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return self.heads(x)


class GhostResidual(Stem):
    """GhostNet's bottleneck: a Ghost module added to its input, so the concat is the residual
    stream: channel i and channel m + i of the stream are tied through the depthwise conv."""

    def __init__(self, m: int = 8) -> None:
        super().__init__(2 * m)
        self.primary, self.bnp = conv_bn(2 * m, m)
        self.cheap, self.bnc = conv_bn(m, m, 3, groups=m)
        self.out, self.bno = conv_bn(2 * m, 16)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.features(x)
        x1 = self.bnp(self.primary(s))
        y = torch.cat([x1, self.bnc(self.cheap(x1))], 1) + s
        return self.fc(F.relu(self.bno(self.out(F.relu(y)))).mean((2, 3)))
