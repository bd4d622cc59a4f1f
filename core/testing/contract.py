"""The contract every component keeps, whatever its family; each conformance suite checks it."""

from __future__ import annotations

import dataclasses
import random

import torch
from torch import nn

__all__ = ["check_component_contract", "eval_outputs", "scramble_global_rngs", "state_shapes"]


def check_component_contract(component: object, base: type, kind: str) -> None:
    """Fail unless ``component`` is a ``base``; its class has a ``Config`` that is a frozen
    dataclass itself (not a plain subclass of one) whose defaults make an instance; and its
    class has a docstring (whose first line ``prunetune plugins`` shows)."""
    cls = type(component)
    assert isinstance(component, base), f"the {kind} is not a {base.__name__}"
    config_cls = getattr(cls, "Config", None)
    assert isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls), f"the {kind} needs a Config"
    # Its own: a plain subclass of a dataclass would pass on the parent's flags.
    params = vars(config_cls).get("__dataclass_params__")
    assert params is not None and params.frozen, f"the {kind}'s Config must be a frozen dataclass"
    cls(config_cls())  # every option has a default
    assert (cls.__doc__ or "").strip(), f"the {kind}'s docstring's first line is its description"


def state_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor in ``model``'s state_dict, by key."""
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def eval_outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s outputs for ``x`` in eval mode, without gradients (the model is left in eval mode)."""
    model.eval()
    with torch.no_grad():
        return model(x)


def scramble_global_rngs(seed: int) -> None:
    """Seed Python's, torch's and (where installed) numpy's global generators with ``seed``: a
    component whose results follow them, rather than its own seed, then shows it."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy
    except ImportError:
        return
    numpy.random.seed(seed)
