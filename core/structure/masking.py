"""Masks that keep pruned weights zero while a model trains and when it is saved.

Used by pruners that zero weights instead of removing them (mask, blockwise, magnitude).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KeepMasked"]


class KeepMasked:
    """Keeps masked entries of a layer's parameters zero.

    As a forward pre-hook it re-zeroes them before every forward pass, so no optimiser step
    (momentum, weight decay) can revive them; as a ``state_dict`` hook it writes them zero, so a
    checkpoint taken between an optimiser step and the next forward pass still holds the zeros.

    Args:
        masks: Parameter name (``"weight"``, ``"bias"``) -> a 0/1 tensor broadcastable to it.
    """

    def __init__(self, masks: dict[str, torch.Tensor]) -> None:
        self.masks = masks

    def __call__(self, module: nn.Module, args: object) -> None:
        with torch.no_grad():
            for attr, mask in self.masks.items():
                param = getattr(module, attr)
                if mask.device != param.device:
                    mask = self.masks[attr] = mask.to(param.device)
                param.mul_(mask)

    def attach(self, module: nn.Module) -> None:
        """Zero ``module``'s masked entries now and keep them zero from here on."""
        if self.masks:
            self(module, ())
        module.register_forward_pre_hook(self)
        module.register_state_dict_post_hook(_ZerosInStateDict(self))


class _ZerosInStateDict:
    """``state_dict`` post-hook writing the masked entries as zeros."""

    def __init__(self, keeper: KeepMasked) -> None:
        self.keeper = keeper

    def __call__(
        self, module: nn.Module, state_dict: dict[str, torch.Tensor], prefix: str, local_metadata: object
    ) -> None:
        for attr, mask in self.keeper.masks.items():
            value = state_dict.get(prefix + attr)
            if value is not None and not isinstance(value, nn.Parameter):
                state_dict[prefix + attr] = value * mask.to(value.device, value.dtype)
