"""The ``vgg`` teacher: plain conv-BN-ReLU stacks with max-pools and a two-layer classifier."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import TYPE_CHECKING

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.models import ModelFactory
from prunetune.plugins.models._common import check_build_args, init_weights

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["VGG", "VGGFactory", "prunetune_add_components"]

# The features are pooled to a fixed 2x2 map and flattened, so the classifier's input size
# does not depend on the image size and the flatten-to-linear channel mapping gets exercised.
_POOLED = 2


class VGG(nn.Module):
    """Stages of conv-BN-ReLU layers, each ending in a 2x2 max-pool, then fc-ReLU-classifier.

    Layer names: ``stage{s}.conv{i}`` (``s`` and ``i`` from 1), ``fc``, ``classifier``.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int, layers: tuple[int, ...], hidden: int
    ) -> None:
        super().__init__()
        channels = in_channels
        for s, count in enumerate(layers, start=1):
            out_channels = width * 2 ** (s - 1)
            stage: OrderedDict[str, nn.Module] = OrderedDict()
            for i in range(1, count + 1):
                stage[f"conv{i}"] = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
                stage[f"bn{i}"] = nn.BatchNorm2d(out_channels)
                stage[f"relu{i}"] = nn.ReLU()
                channels = out_channels
            stage["pool"] = nn.MaxPool2d(2)
            self.add_module(f"stage{s}", nn.Sequential(stage))
        self.num_stages = len(layers)
        self.pool = nn.AdaptiveAvgPool2d(_POOLED)
        self.fc = nn.Linear(channels * _POOLED * _POOLED, hidden)
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for s in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{s}")(x)
        x = torch.flatten(self.pool(x), 1)
        return self.classifier(self.relu(self.fc(x)))


class VGGFactory(ModelFactory):
    """VGG-style plain CNN: conv-BN-ReLU stages with max-pools, then a two-layer classifier."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``vgg`` model.

        Attributes:
            width: Channels of the first stage; each further stage doubles them.
            layers: Conv layers per stage; each stage halves the image with a max-pool.
            hidden: Units of the hidden linear layer ``fc``.
        """

        width: int = 16
        layers: tuple[int, ...] = (1, 1, 2)
        hidden: int = 128

        def __post_init__(self) -> None:
            if self.width < 1:
                raise ValueError(f"width must be at least 1 (got {self.width})")
            if not self.layers or any(n < 1 for n in self.layers):
                raise ValueError(
                    f"layers must be one or more positive conv counts per stage (got {self.layers})"
                )
            if self.hidden < 1:
                raise ValueError(f"hidden must be at least 1 (got {self.hidden})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def build(self, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
        # Each stage's max-pool halves the image; at least 1x1 must be left after the last.
        min_size = 2 ** len(self.config.layers)
        check_build_args("vgg", in_channels, num_classes, image_size, min_size)
        c = self.config
        model = VGG(in_channels, num_classes, c.width, tuple(c.layers), c.hidden)
        init_weights(model)
        return model


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_model("vgg", VGGFactory)
