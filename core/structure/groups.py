"""Coupled channel groups of a model, found with Torch-Pruning's DependencyGraph.

A group is a set of channels that must be cut together: a conv's outputs, its BatchNorm, the
next layers' inputs, and everything tied to them by residual adds, concatenations and
depthwise convs. Channels are numbered in the group's own index space ("root" indices).
Where concatenated branches feed the group, the channels fall into *segments* (one per
branch), so each branch can be cut by its own share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["ChannelGroup", "Member", "classifier_name", "find_groups"]

_PRODUCER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.GroupNorm, nn.LayerNorm)


@dataclasses.dataclass
class Member:
    """One layer touched by a group.

    Attributes:
        name: The layer's qualified name in the model.
        module: The layer.
        role: ``"out"`` (a conv or linear whose output channels these are, depthwise convs
            included), ``"norm"`` (a normalisation over them) or ``"in"`` (a layer that takes
            them as input channels).
        idxs: Indices in the layer's own channel dimension.
        root_idxs: The group channel each of ``idxs`` belongs to (a flattened conv output
            feeding a linear layer maps many inputs to one channel).
    """

    name: str
    module: nn.Module
    role: str
    idxs: list[int]
    root_idxs: list[int]

    def per_channel(self, values: torch.Tensor, size: int, reduce: str = "sum") -> torch.Tensor:
        """Fold one value per entry of ``idxs`` onto the group's ``size`` channels."""
        out = torch.zeros(size, dtype=values.dtype, device=values.device)
        index = torch.as_tensor(self.root_idxs, device=values.device)
        out.index_add_(0, index, values)
        if reduce == "mean":
            counts = torch.zeros(size, dtype=values.dtype, device=values.device)
            counts.index_add_(0, index, torch.ones_like(values))
            out = out / counts.clamp(min=1)
        return out


@dataclasses.dataclass
class ChannelGroup:
    """Channels that are cut together.

    Attributes:
        name: Stable name: the qualified name of the group's first producer in module order.
        size: Number of channels.
        members: Every layer the group touches.
        segments: A partition of ``range(size)``: one list per concatenated branch, or a
            single list when no concatenation feeds the group.
    """

    name: str
    size: int
    members: list[Member]
    segments: list[list[int]]
    _graph: tp.DependencyGraph = dataclasses.field(repr=False)
    _root: nn.Module = dataclasses.field(repr=False)
    _root_fn: object = dataclasses.field(repr=False)

    @property
    def producers(self) -> list[Member]:
        return [m for m in self.members if m.role == "out"]

    @property
    def norms(self) -> list[Member]:
        return [m for m in self.members if m.role == "norm"]

    @property
    def consumers(self) -> list[Member]:
        return [m for m in self.members if m.role == "in"]

    @property
    def layer_names(self) -> list[str]:
        """Names a plan may use for this group: every producer's."""
        return [m.name for m in self.producers]

    def remove(self, channels: Sequence[int]) -> None:
        """Physically remove ``channels`` (root indices) from every member."""
        if not channels:
            return
        group = self._graph.get_pruning_group(self._root, self._root_fn, sorted(channels))
        group.prune()


def _role(graph: tp.DependencyGraph, module: object, handler: object) -> str | None:
    if isinstance(module, _NORM_TYPES):
        return "norm"
    if not isinstance(module, _PRODUCER_TYPES):
        return None
    if graph.is_out_channel_pruning_fn(handler):
        return "out"
    if graph.is_in_channel_pruning_fn(handler):
        return "in"
    return None


def classifier_name(model: nn.Module, example_input: torch.Tensor) -> str | None:
    """The name of the last conv or linear layer to run: the classifier, never cut."""
    order: list[str] = []
    hooks = [
        module.register_forward_hook(lambda *_, _name=name: order.append(_name))
        for name, module in model.named_modules()
        if isinstance(module, _PRODUCER_TYPES)
    ]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return order[-1] if order else None


def _segments(size: int, producers: list[Member]) -> list[list[int]]:
    cover: dict[int, set[int]] = {c: set() for c in range(size)}
    for i, member in enumerate(producers):
        for root in member.root_idxs:
            cover[root].add(i)
    by_signature: dict[frozenset[int], list[int]] = {}
    for channel in range(size):
        by_signature.setdefault(frozenset(cover[channel]), []).append(channel)
    return sorted(by_signature.values(), key=lambda seg: seg[0])


def find_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    ignore: Sequence[str] = (),
) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, in module order.

    The classifier's output group and groups touching a layer named in ``ignore`` (as a
    producer) are left out. Groups hold a live DependencyGraph: call :meth:`ChannelGroup.remove`
    on groups of one :func:`find_groups` call, and call it again after changing the model in
    any other way.
    """
    # Traced in eval mode, so BatchNorm running statistics stay as they were.
    was_training = model.training
    model.eval()
    try:
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        head = classifier_name(model, example_input)
    finally:
        model.train(was_training)
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    skip = set(ignore)
    if head is not None:
        skip.add(head)

    groups: list[ChannelGroup] = []
    for tp_group in graph.get_all_groups(root_module_types=_PRODUCER_TYPES):
        root_dep = tp_group[0].dep
        root = root_dep.target.module
        members: list[Member] = []
        for item in tp_group:
            module = item.dep.target.module
            role = _role(graph, module, item.dep.handler)
            if role is None or module not in names:
                continue
            members.append(
                Member(names[module], module, role, list(item.idxs), list(item.root_idxs))
            )
        producers = [m for m in members if m.role == "out"]
        if not producers or any(m.name in skip for m in producers):
            continue
        size = len(tp_group[0].idxs)
        first = min(producers, key=lambda m: order[m.name])
        groups.append(
            ChannelGroup(
                name=first.name,
                size=size,
                members=members,
                segments=_segments(size, producers),
                _graph=graph,
                _root=root,
                _root_fn=root_dep.handler,
            )
        )
    groups.sort(key=lambda g: order[g.name])
    return groups
