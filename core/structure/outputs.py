"""Models with more than one output: which output is the logits, and which layers are heads.

A model may return a tuple, a named tuple or a dict (GoogLeNet with ``aux_logits`` in training
mode, a model returning ``(logits, aux)``). Everything prunetune runs (training, distillation,
evaluation, measurement) wants the logits alone, so :func:`select_output` attaches a forward hook
that picks them; the model's own code and layer names stay as they are. The channel groups,
though, are traced on every output (:func:`all_outputs`), so an auxiliary head is cut together
with the layers that feed it, and never left expecting channels that are gone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunetune.errors import UsageError

__all__ = ["SelectOutput", "all_outputs", "flat_tensors", "heads_of", "select_output"]


class SelectOutput:
    """A forward hook returning one output of a model that returns several.

    Attributes:
        key: The output that is the logits: an index into a tuple or a key of a dict. A plain
            tensor output is returned as it is (GoogLeNet returns one in eval mode).
        heads: Layers whose outputs are model outputs (classifiers, auxiliary classifiers): never cut.
    """

    def __init__(self, key: int | str | None, heads: Sequence[str] = ()) -> None:
        self.key = key
        self.heads = tuple(heads)
        self.enabled = True

    def __call__(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self.enabled or self.key is None or isinstance(output, torch.Tensor):
            return output
        return pick(output, self.key)


def pick(output: Any, key: int | str) -> torch.Tensor:
    """``output[key]``, with a one-line error naming what the output holds."""
    if isinstance(output, Mapping):
        if key not in output:
            raise UsageError(f"the model's output has no {key!r} (it has {', '.join(map(str, output))})")
        chosen = output[key]
    elif isinstance(output, (tuple, list)):
        index = int(key) if isinstance(key, int) or str(key).lstrip("-").isdigit() else None
        fields = getattr(output, "_fields", ())
        if index is None and key in fields:
            index = fields.index(key)
        if index is None or not -len(output) <= index < len(output):
            valid = f"0..{len(output) - 1}" + (f" or {', '.join(fields)}" if fields else "")
            raise UsageError(f"the model returns {len(output)} outputs: --logits {key} is not one of them ({valid})")
        chosen = output[index]
    else:
        raise UsageError(f"the model returns a {type(output).__name__}: --logits needs a tuple or dict of outputs")
    if not isinstance(chosen, torch.Tensor):
        raise UsageError(f"output {key!r} of the model is a {type(chosen).__name__}, not a tensor of logits")
    return chosen


def select_output(model: nn.Module, key: int | str | None, heads: Sequence[str] = ()) -> nn.Module:
    """``model``, its forward returning output ``key`` (and ``heads`` never cut); returns it.

    A hook, not a wrapper module, so that layer names (which plans, checkpoints and the
    leaderboard use) stay the model's own.
    """
    known = {name for name, _ in model.named_modules()}
    unknown = [h for h in heads if h not in known]
    if unknown:
        raise UsageError(f"--classifier names no layer of the model: {', '.join(unknown)}")
    for hook in _hooks(model):
        hook.key, hook.heads = key, tuple(heads)
        return model
    model.register_forward_hook(SelectOutput(key, heads))
    return model


def _hooks(model: nn.Module) -> list[SelectOutput]:
    return [h for h in model._forward_hooks.values() if isinstance(h, SelectOutput)]


def heads_of(model: nn.Module) -> tuple[str, ...]:
    """The layers :func:`select_output` named as heads (none when it was not called)."""
    return tuple(name for hook in _hooks(model) for name in hook.heads)


@contextlib.contextmanager
def all_outputs(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` returning every output it has while inside the block (for tracing)."""
    hooks = _hooks(model)
    for hook in hooks:
        hook.enabled = False
    try:
        yield model
    finally:
        for hook in hooks:
            hook.enabled = True


def flat_tensors(output: Any) -> list[torch.Tensor]:
    """The tensors of a nested output (tuples, lists, dicts), ``None`` entries left out."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, Mapping):
        return [t for value in output.values() for t in flat_tensors(value)]
    if isinstance(output, (tuple, list)):
        return [t for value in output for t in flat_tensors(value)]
    return []
