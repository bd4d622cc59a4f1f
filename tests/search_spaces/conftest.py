"""A small zoo ResNet and its structure, shared by the search-space tests."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.components.spaces import ModelStructure
from prunetune.plugins.models.resnet import ResNetFactory


@pytest.fixture(scope="module")
def example() -> torch.Tensor:
    return torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def teacher(example: torch.Tensor) -> nn.Module:
    return ResNetFactory(ResNetFactory.Config(width=4)).build(1, 10, 28).eval()


@pytest.fixture(scope="module")
def structure(teacher: nn.Module, example: torch.Tensor) -> ModelStructure:
    return ModelStructure.of(teacher, example)
