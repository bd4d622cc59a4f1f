"""The ``mobilenet`` teacher: a MobileNetV2-style net of inverted residual blocks."""

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

__all__ = ["InvertedResidual", "MobileNet", "MobileNetFactory", "prunetune_add_components"]

_STAGES = 3
# Two stride-2 stages halve the image twice; at least 2x2 should be left to pool.
_MIN_IMAGE_SIZE = 8


class InvertedResidual(nn.Module):
    """1x1 expand, 3x3 depthwise, 1x1 linear projection; adds the input when shapes match.

    Layer names: ``expand.conv`` (absent when ``expansion`` is 1), ``depthwise.conv``,
    ``project.conv``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        self.expand: nn.Module = nn.Identity()
        if expansion != 1:
            self.expand = ConvBNAct(in_channels, hidden, 1, act=nn.ReLU6)
        self.depthwise = ConvBNAct(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6)
        self.project = ConvBNAct(hidden, out_channels, 1, act=None)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNet(nn.Module):
    """Stem, three stages of inverted residual blocks, 1x1 head conv, pool, linear classifier.

    Stages 2 and 3 downsample with a stride-2 depthwise conv in their first block.

    Layer names: ``stem.conv``, ``layer{1,2,3}.{i}.{expand,depthwise,project}.conv``,
    ``head.conv``, ``classifier``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int, depth: int, expansion: int
    ) -> None:
        super().__init__()
        self.stem = ConvBNAct(in_channels, width, 3, act=nn.ReLU6)
        channels = width
        for stage in range(_STAGES):
            out_channels = width * 2**stage
            blocks = []
            for i in range(depth):
                stride = 2 if stage > 0 and i == 0 else 1
                # As in MobileNetV2, the full-resolution first stage does not expand: it
                # would cost most of the model's MACs.
                t = 1 if stage == 0 else expansion
                blocks.append(InvertedResidual(channels, out_channels, stride, t))
                channels = out_channels
            self.add_module(f"layer{stage + 1}", nn.Sequential(*blocks))
        self.head = ConvBNAct(channels, channels * 2, 1, act=nn.ReLU6)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.head(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


class MobileNetFactory(ModelFactory):
    """MobileNetV2-style: inverted residual blocks with depthwise convs, for small images."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``mobilenet`` model.

        Attributes:
            width: Output channels of the stem and the first stage; stages 2 and 3 double
                them, and the head conv doubles the last stage's.
            depth: Inverted residual blocks per stage.
            expansion: How many times wider a block's depthwise conv is than its input
                (1: no expand conv). The first stage never expands, as in MobileNetV2.
        """

        width: int = 16
        depth: int = 1
        expansion: int = 4

        def __post_init__(self) -> None:
            for field in ("width", "depth", "expansion"):
                value = getattr(self, field)
                if value < 1:
                    raise ValueError(f"{field} must be at least 1 (got {value})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        check_build_args("mobilenet", in_channels, num_classes, image_size, _MIN_IMAGE_SIZE)
        c = self.config
        model = MobileNet(in_channels, num_classes, c.width, c.depth, c.expansion)
        init_weights(model)
        return model


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_model("mobilenet", MobileNetFactory)
