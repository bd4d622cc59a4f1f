"""The ``resnet`` teacher: a CIFAR-style ResNet of BasicBlocks for small images."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.models import ModelFactory
from prunetune.plugins.models._common import ConvBNAct, check_build_args, init_weights

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["BasicBlock", "ResNet", "ResNetFactory", "prunetune_add_components"]

_STAGES = 3
# Two stride-2 stages halve the image twice; at least 2x2 should be left to pool.
_MIN_IMAGE_SIZE = 8


class BasicBlock(nn.Module):
    """conv-bn-relu-conv-bn plus a shortcut (1x1 conv + BN where the shape changes), then relu."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvBNAct(in_channels, out_channels, 1, stride, act=None)
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNet(nn.Module):
    """Stem, three stages of BasicBlocks (the last two downsample), global pool, linear head.

    Layer names: ``stem.conv``, ``layer{1,2,3}.{i}.conv{1,2}``,
    ``layer{2,3}.0.shortcut.conv``, ``classifier``.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int, depth: int) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, width)
        channels = width
        for stage in range(_STAGES):
            out_channels = width * 2**stage
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(channels, out_channels, stride))
                channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class ResNetFactory(ModelFactory):
    """CIFAR-style ResNet: 3 stages of BasicBlocks (width, 2x, 4x channels) for small images."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``resnet`` model.

        Attributes:
            depth: BasicBlocks per stage (1: ResNet-8, 2: ResNet-14, 3: ResNet-20).
            width: Channels of the stem and the first stage; stages 2 and 3 double them.
        """

        depth: int = 1
        width: int = 16

        def __post_init__(self) -> None:
            if self.depth < 1:
                raise ValueError(f"depth must be at least 1 (got {self.depth})")
            if self.width < 1:
                raise ValueError(f"width must be at least 1 (got {self.width})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        check_build_args("resnet", in_channels, num_classes, image_size, _MIN_IMAGE_SIZE)
        model = ResNet(in_channels, num_classes, self.config.width, self.config.depth)
        init_weights(model)
        return model


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_model("resnet", ResNetFactory)
