"""Kernel-size surgery: give a conv a new square kernel without changing its output shape.

The new conv keeps its channels, stride, dilation, groups, bias and padding mode; its padding
grows or shrinks with the kernel so the output's spatial size is unchanged. Weights carry over:
a larger kernel is the old one zero-padded (the layer computes exactly what it did), a smaller
one is the old kernel's centre.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from prunetune.errors import UsageError

__all__ = ["apply_kernels", "change_kernel_size", "kernel_layers"]

# How many valid names an "unknown layer" message lists before "...".
_MAX_LISTED = 10


def kernel_layers(model: nn.Module) -> dict[str, int]:
    """The convs whose kernel size a plan may change, by name, with their current size.

    These are the plain ``nn.Conv2d`` layers with a square, odd kernel larger than 1x1, in
    module order. (Any plain ``nn.Conv2d`` with odd kernels can be resized, 1x1 ones too, but
    a 1x1 conv is usually a channel mixer whose size is not worth searching.)
    """
    out: dict[str, int] = {}
    for name, module in model.named_modules():
        if type(module) is not nn.Conv2d:
            continue
        kh, kw = module.kernel_size
        if kh == kw and kh > 1 and kh % 2 == 1:
            out[name] = kh
    return out


def _conv_names(model: nn.Module) -> str:
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        return "the model has no Conv2d layers"
    listed = ", ".join(names[:_MAX_LISTED])
    more = ", ..." if len(names) > _MAX_LISTED else ""
    return f"conv layers: {listed}{more}"


def _new_padding(conv: nn.Conv2d, name: str, size: int) -> tuple[int, int] | str:
    if conv.padding == "same":
        return "same"
    # "valid" is zero padding; torch keeps the string in ``padding`` for such convs.
    padding = (0, 0) if conv.padding == "valid" else conv.padding
    new: list[int] = []
    for k, p, d in zip(conv.kernel_size, padding, conv.dilation):
        # Output size is (n + 2p - d(k-1) - 1) / s + 1: it stays put when 2p - dk does.
        p_new = p + d * (size - k) // 2
        if p_new < 0:
            raise UsageError(
                f"layer {name!r} has a {k}-tap kernel with padding {p}: a {size}x{size} kernel "
                f"would need padding {p_new} to keep the output size (smallest valid size: "
                f"{max(1, k - 2 * (p // d))})"
            )
        new.append(p_new)
    return (new[0], new[1])


def _checked_conv(model: nn.Module, name: str, size: int) -> nn.Conv2d:
    """The conv ``name`` after checking it can take a ``size`` x ``size`` kernel."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise UsageError(
            f"layer {name!r} kernel size {size!r} is not a positive odd integer (1, 3, 5, 7...)"
        )
    if not name:
        raise UsageError(f"a kernel size needs a layer name ({_conv_names(model)})")
    try:
        module = model.get_submodule(name)
    except AttributeError:
        known = _conv_names(model)
        raise UsageError(f"unknown layer {name!r} for a kernel size ({known})") from None
    if type(module) is not nn.Conv2d:
        kind = type(module).__name__
        what = "a Conv2d subclass, which" if isinstance(module, nn.Conv2d) else "not a Conv2d: it"
        raise UsageError(
            f"layer {name!r} is a {kind}, {what} cannot take a kernel size ({_conv_names(model)})"
        )
    even = [k for k in module.kernel_size if k % 2 == 0]
    if even:
        raise UsageError(
            f"layer {name!r} has a {module.kernel_size[0]}x{module.kernel_size[1]} kernel; "
            "only convs with odd kernel sizes can be resized"
        )
    _new_padding(module, name, size)
    return module


def _resized_weight(weight: torch.Tensor, size: int) -> torch.Tensor:
    """``weight`` [out, in/groups, kh, kw] centre-cropped or zero-padded to ``size`` x ``size``."""
    out = weight.new_zeros(*weight.shape[:2], size, size)
    src: list[slice] = []
    dst: list[slice] = []
    for k in weight.shape[2:]:
        if size >= k:
            start = (size - k) // 2
            src.append(slice(0, k))
            dst.append(slice(start, start + k))
        else:
            start = (k - size) // 2
            src.append(slice(start, start + size))
            dst.append(slice(0, size))
    out[:, :, dst[0], dst[1]] = weight[:, :, src[0], src[1]]
    return out


def _replace(model: nn.Module, name: str, conv: nn.Conv2d, size: int) -> None:
    weight = conv.weight
    new = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        size,
        stride=conv.stride,  # type: ignore[arg-type]
        padding=_new_padding(conv, name, size),
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
        device=weight.device,
        dtype=weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_(_resized_weight(weight.detach(), size))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)  # type: ignore[union-attr]
    new.weight.requires_grad_(weight.requires_grad)
    if conv.bias is not None:
        new.bias.requires_grad_(conv.bias.requires_grad)  # type: ignore[union-attr]
    new.train(conv.training)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def change_kernel_size(model: nn.Module, name: str, size: int) -> None:
    """Replace conv ``name`` by one with a ``size`` x ``size`` kernel and the same output shape.

    Hooks registered on the old conv do not carry over; resize before attaching any.

    Args:
        model: The model to change in place.
        name: Qualified name of a plain ``nn.Conv2d`` (depthwise, grouped and dilated convs
            included) with odd kernel sizes; a non-square kernel is resized per dimension.
        size: The new kernel size: positive and odd.

    Raises:
        UsageError: ``name`` is not a conv of ``model``, ``size`` is even or not positive, or
            the conv's padding is too small to keep its output size with the smaller kernel.
    """
    conv = _checked_conv(model, name, size)
    if conv.kernel_size != (size, size):
        _replace(model, name, conv, size)


def apply_kernels(model: nn.Module, kernels: Mapping[str, int]) -> None:
    """Give each conv named in ``kernels`` its kernel size, as :func:`change_kernel_size`.

    Every entry is checked before any conv changes, so a bad plan leaves ``model`` untouched.

    Raises:
        UsageError: as :func:`change_kernel_size`, for the first bad entry.
    """
    convs = {name: _checked_conv(model, name, size) for name, size in kernels.items()}
    for name, size in kernels.items():
        if convs[name].kernel_size != (size, size):
            _replace(model, name, convs[name], size)
