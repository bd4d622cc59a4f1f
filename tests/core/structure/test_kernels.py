"""Kernel-size surgery: same outputs when growing, centre taps when shrinking, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.structure.kernels import apply_kernels, change_kernel_size, kernel_layers


def _net(conv: nn.Conv2d) -> nn.Module:
    """``conv`` nested two levels deep, as ``body.0.conv``."""
    torch.manual_seed(0)
    block = nn.Module()
    block.conv = conv
    net = nn.Module()
    net.body = nn.Sequential(block)
    return net


CONVS = {
    "plain": lambda: nn.Conv2d(4, 6, 3, padding=1),
    "depthwise": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=False),
    "grouped_strided": lambda: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
    "dilated": lambda: nn.Conv2d(4, 6, 3, padding=2, dilation=2),
    "unpadded": lambda: nn.Conv2d(4, 6, 3),
    "reflect": lambda: nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"),
    "valid": lambda: nn.Conv2d(4, 6, 3, padding="valid"),
    "same": lambda: nn.Conv2d(4, 6, 3, padding="same", dilation=2),
    "non_square": lambda: nn.Conv2d(4, 6, (1, 3), padding=(0, 1)),
    "pointwise": lambda: nn.Conv2d(4, 6, 1),
}


@pytest.mark.parametrize("kind", CONVS)
@pytest.mark.parametrize("size", [5, 7])
def test_growing_keeps_outputs_and_settings(kind: str, size: int) -> None:
    old = CONVS[kind]()
    net = _net(old)
    x = torch.randn(2, 4, 11, 11)
    expected = old(x)
    change_kernel_size(net, "body.0.conv", size)
    new = net.get_submodule("body.0.conv")
    assert new is not old and new.kernel_size == (size, size)
    for attr in ("in_channels", "out_channels", "stride", "dilation", "groups", "padding_mode"):
        assert getattr(new, attr) == getattr(old, attr), attr
    assert (new.bias is None) == (old.bias is None)
    assert torch.allclose(new(x), expected, atol=1e-6)


def test_shrinking_keeps_the_centre_taps() -> None:
    old = nn.Conv2d(2, 3, 5, padding=2, dilation=1)
    net = _net(old)
    change_kernel_size(net, "body.0.conv", 3)
    new = net.get_submodule("body.0.conv")
    assert new.padding == (1, 1)
    assert torch.equal(new.weight, old.weight[:, :, 1:4, 1:4])
    assert torch.equal(new.bias, old.bias)
    x = torch.randn(1, 2, 9, 9)
    assert new(x).shape == old(x).shape


def test_shrinking_a_dilated_conv_to_one_tap() -> None:
    old = nn.Conv2d(2, 3, 3, padding=2, dilation=2, bias=False)
    net = _net(old)
    change_kernel_size(net, "body.0.conv", 1)
    new = net.get_submodule("body.0.conv")
    assert new.padding == (0, 0)
    assert torch.equal(new.weight, old.weight[:, :, 1:2, 1:2])
    x = torch.randn(1, 2, 9, 9)
    assert new(x).shape == old(x).shape


def test_dtype_device_mode_and_trainability_are_kept() -> None:
    old = nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64).eval()
    old.weight.requires_grad_(False)
    net = _net(old)
    change_kernel_size(net, "body.0.conv", 5)
    new = net.get_submodule("body.0.conv")
    assert new.weight.dtype == torch.float64 and new.weight.device == old.weight.device
    assert not new.training
    assert not new.weight.requires_grad and new.bias.requires_grad


def test_same_size_is_a_no_op() -> None:
    old = nn.Conv2d(2, 3, 3, padding=1)
    net = _net(old)
    change_kernel_size(net, "body.0.conv", 3)
    assert net.get_submodule("body.0.conv") is old


def test_too_little_padding_to_shrink() -> None:
    net = _net(nn.Conv2d(2, 3, 5, padding=1))
    with pytest.raises(UsageError, match=r"padding -1 .*smallest valid size: 3\)$"):
        change_kernel_size(net, "body.0.conv", 1)


@pytest.mark.parametrize("size", [0, -3, 4, 2.0, True])
def test_bad_sizes(size) -> None:
    net = _net(nn.Conv2d(2, 3, 3, padding=1))
    with pytest.raises(UsageError, match="not a positive odd integer"):
        change_kernel_size(net, "body.0.conv", size)


def test_unknown_layer_lists_the_convs() -> None:
    net = nn.Sequential(*[nn.Conv2d(2, 2, 3, padding=1) for _ in range(12)])
    with pytest.raises(UsageError) as info:
        change_kernel_size(net, "13", 5)
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "unknown layer '13' for a kernel size (conv layers: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, ...)"
    )
    with pytest.raises(UsageError, match="unknown layer 'nope.conv'"):
        change_kernel_size(net, "nope.conv", 5)
    with pytest.raises(UsageError, match="needs a layer name"):
        change_kernel_size(net, "", 5)


def test_layers_that_are_not_plain_convs() -> None:
    class MyConv(nn.Conv2d):
        pass

    net = nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), MyConv(2, 2, 3), nn.Conv2d(2, 2, 2))
    with pytest.raises(UsageError, match=r"'1' is a BatchNorm2d, not a Conv2d.*layers: 0, 2, 3\)"):
        change_kernel_size(net, "1", 5)
    with pytest.raises(UsageError, match="'2' is a MyConv, a Conv2d subclass"):
        change_kernel_size(net, "2", 5)
    with pytest.raises(UsageError, match="2x2 kernel; only convs with odd kernel sizes"):
        change_kernel_size(net, "3", 5)


def test_apply_kernels_checks_everything_before_changing_anything() -> None:
    net = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 2, 3, padding=1))
    first = net[0]
    with pytest.raises(UsageError, match="'1' is a ReLU"):
        apply_kernels(net, {"0": 5, "1": 5})
    assert net[0] is first
    apply_kernels(net, {"0": 5, "2": 1})
    assert kernel_layers(net) == {"0": 5}
    assert net[2].kernel_size == (1, 1) and net[2].padding == (0, 0)


def test_kernel_layers() -> None:
    net = nn.Sequential(
        nn.Conv2d(2, 2, 3),
        nn.Conv2d(2, 2, 1),
        nn.Sequential(nn.Conv2d(2, 2, 5, groups=2)),
        nn.Conv2d(2, 2, (1, 3)),
        nn.Linear(2, 2),
    )
    assert kernel_layers(net) == {"0": 3, "2.0": 5}
