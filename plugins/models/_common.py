"""Building blocks and checks shared by the zoo models."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from prunetune.errors import UsageError

__all__ = ["ConvBNAct", "check_build_args", "init_weights"]


class ConvBNAct(nn.Sequential):
    """A bias-free conv, its BatchNorm and an optional activation: ``conv``, ``bn``, ``act``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        act: type[nn.Module] | None = nn.ReLU,
    ) -> None:
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            conv=nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            bn=nn.BatchNorm2d(out_channels),
        )
        if act is not None:
            layers["act"] = act()
        super().__init__(layers)


def check_build_args(
    model: str, in_channels: int, num_classes: int, image_size: int, min_size: int
) -> None:
    """Reject input shapes ``model`` cannot take.

    Raises:
        UsageError: a non-positive channel or class count, or an image smaller than
            ``min_size``.
    """
    if in_channels < 1:
        raise UsageError(f"{model} needs at least 1 input channel (got {in_channels})")
    if num_classes < 1:
        raise UsageError(f"{model} needs at least 1 class (got {num_classes})")
    if image_size < min_size:
        raise UsageError(
            f"{model} takes images of {min_size}x{min_size} pixels or larger "
            f"(got {image_size}x{image_size})"
        )


def init_weights(model: nn.Module) -> None:
    """He-normal convs and unit BatchNorms; linear layers keep PyTorch's default init."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
