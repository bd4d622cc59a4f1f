"""Coupled channel groups of a model, found with Torch-Pruning's DependencyGraph.

A group is a set of channels that must be cut together: a conv's outputs, its BatchNorm, the
next layers' inputs, and everything tied to them by residual adds, concatenations and
depthwise convs. Channels are numbered in the group's own index space ("root" indices).
Where concatenated branches feed the group, the channels fall into *segments* (one per
branch), so each branch can be cut by its own share. Where a grouped conv (``groups > 1``, not
depthwise) or a GroupNorm touches the group, its channels fall into equal *blocks* as well, and
every block must lose the same positions (:meth:`ChannelGroup.patterned`): a grouped conv keeps
one weight slice per block.

Groups that feed a model output directly (a classifier, an auxiliary head: their channels are
the output's) are not groups to cut, nor are those of the layers a model names as heads
(:func:`prunetune.structure.outputs.select_output`). Groups whose structure no correct cut
fits are left whole with a warning of one line.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterable, Sequence

import torch
import torch_pruning as tp
from torch import nn

from prunetune.structure.outputs import all_outputs, flat_tensors, heads_of

__all__ = ["ChannelGroup", "Member", "find_groups", "output_layers"]

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
        blocks: How many equal blocks of consecutive channels must lose the same positions
            (grouped convs and GroupNorms among the members); 1 where any cut will do.
    """

    name: str
    size: int
    members: list[Member]
    segments: list[list[int]]
    _graph: tp.DependencyGraph = dataclasses.field(repr=False)
    _root: nn.Module = dataclasses.field(repr=False)
    _root_fn: object = dataclasses.field(repr=False)
    blocks: int = 1

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

    def patterned(self, channels: Sequence[int], scores: torch.Tensor | None = None) -> list[int]:
        """``channels`` made a cut this group can take: as many channels (to the nearest
        multiple of :attr:`blocks`), the same positions in every block, at least one position
        kept. The positions are those with the lowest mean ``scores`` over the blocks, or,
        without scores, those ``channels`` hit most. Unchanged where ``blocks`` is 1."""
        if self.blocks == 1 or not channels:
            return sorted(channels)
        block = self.size // self.blocks
        per_block = min(block - 1, round(len(channels) / self.blocks))
        if scores is not None:
            rank = scores.detach().double().cpu().view(self.blocks, block).mean(0)
        else:
            rank = -torch.bincount(torch.as_tensor([c % block for c in channels]), minlength=block).double()
        positions = torch.argsort(rank, stable=True)[:per_block].tolist()
        return sorted(b * block + p for b in range(self.blocks) for p in positions)

    def remove(self, channels: Sequence[int]) -> None:
        """Physically remove ``channels`` (root indices) from every member, made a cut the
        group can take first (:meth:`patterned`)."""
        channels = self.patterned(channels)
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


def _segments(size: int, producers: list[Member]) -> list[list[int]]:
    cover: dict[int, set[int]] = {c: set() for c in range(size)}
    for i, member in enumerate(producers):
        for root in member.root_idxs:
            cover[root].add(i)
    by_signature: dict[frozenset[int], list[int]] = {}
    for channel in range(size):
        by_signature.setdefault(frozenset(cover[channel]), []).append(channel)
    return sorted(by_signature.values(), key=lambda seg: seg[0])


def _blocks(member: Member, size: int) -> int | None:
    """The equal blocks ``member`` splits the group into (1: none); None where they do not
    line up with the group's channels (the member sees only some of them, or in another order)."""
    module = member.module
    if isinstance(module, nn.GroupNorm):
        blocks = module.num_groups
    elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and module.groups > 1:
        if module.groups == module.in_channels and member.role == "out" or module.groups == module.out_channels:
            return 1  # depthwise: each channel its own block, cut one by one
        blocks = module.groups
    else:
        return 1
    if blocks == 1:
        return 1
    if len(member.idxs) != size or member.idxs != member.root_idxs:
        return None
    return blocks


def _train_forward(model: nn.Module, example: torch.Tensor) -> object:
    model.train()
    return model(example)


def _channels(member: Member) -> int | None:
    """How many channels ``member`` has on the group's side (None: not known here)."""
    module = member.module
    if member.role == "out":
        return getattr(module, "out_channels", getattr(module, "out_features", None))
    if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
        return module.num_features
    if isinstance(module, nn.GroupNorm):
        return module.num_channels
    return None


def _partly_covered(traced: Iterable[list[Member]]) -> set[str]:
    """Layers whose input channels the groups cover in part: some come from a group, others
    from none (a slice after a concatenation, which Torch-Pruning does not follow). A layer fed
    by the model's input is covered by no group at all, and is not one of them."""
    covered: dict[str, set[int]] = {}
    width: dict[str, int] = {}
    for members in traced:
        for m in members:
            if m.role == "in":
                covered.setdefault(m.name, set()).update(m.idxs)
                width[m.name] = getattr(m.module, "in_channels", getattr(m.module, "in_features", 0))
    return {name for name, idxs in covered.items() if idxs and len(idxs) < width[name]}


def _whole_reason(members: list[Member], size: int, segments: list[list[int]], blocks: list[int | None],
                  partial: set[str] | frozenset[str] = frozenset()) -> str | None:
    """Why no correct cut fits a group, or None when one does."""
    split = [m.name for m in members if m.role != "in" and _channels(m) not in (None, len(set(m.idxs)))]
    if split:
        # A producer's or norm's channels must all be in its group; Torch-Pruning loses track of
        # them through reshapes such as a channel shuffle's view and transpose.
        return f"its channels pass through a reshape Torch-Pruning cannot follow (at {', '.join(split)})"
    sliced = [m.name for m in members if m.role == "in" and m.name in partial]
    if sliced:
        return f"its channels reach {', '.join(sliced)} through a slice Torch-Pruning cannot follow"
    if None in blocks or (len(segments) > 1 and max(b or 1 for b in blocks) > 1):
        return "a grouped conv or GroupNorm sees its channels in an order no equal cut per group fits"
    return None


def _trace(model: nn.Module, example_input: torch.Tensor) -> tp.DependencyGraph:
    """The model's dependency graph, traced on every output it has in training mode (where
    auxiliary heads run), its BatchNorm statistics and mode left as they were."""
    was_training = model.training
    saved = [(buffer, buffer.detach().clone()) for buffer in model.buffers()]
    # Two samples: a training-mode BatchNorm over a single value per channel raises.
    example = torch.cat([example_input[:1], example_input[:1]])
    try:
        with all_outputs(model), torch.enable_grad():
            # Torch-Pruning traces in eval mode; the forward function it calls sets training mode back.
            return tp.DependencyGraph().build_dependency(model, example_inputs=example, forward_fn=_train_forward,
                                                         output_transform=flat_tensors)
    finally:
        model.train(was_training)
        with torch.no_grad():
            for buffer, value in saved:
                buffer.copy_(value)


def _traced_groups(model: nn.Module, example_input: torch.Tensor
                   ) -> tuple[tp.DependencyGraph, list[tuple[object, list[Member]]]]:
    """The dependency graph and each of its groups with the members prunetune knows."""
    graph = _trace(model, example_input)
    names = {module: name for name, module in model.named_modules()}
    traced: list[tuple[object, list[Member]]] = []
    for tp_group in graph.get_all_groups(root_module_types=_PRODUCER_TYPES):
        members = [
            Member(names[item.dep.target.module], item.dep.target.module, role, list(item.idxs), list(item.root_idxs))
            for item in tp_group
            if (role := _role(graph, item.dep.target.module, item.dep.handler)) is not None
            and item.dep.target.module in names
        ]
        traced.append((tp_group, members))
    return graph, traced


def output_layers(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    """The conv and linear layers whose channels are a model output's (classifiers, auxiliary
    heads: no layer takes them as input), and the heads the model names; in module order."""
    _, traced = _traced_groups(model, example_input)
    found = {m.name for _, members in traced if not any(m.role == "in" for m in members)
             for m in members if m.role == "out"} | set(heads_of(model))
    return [name for name, _ in model.named_modules() if name in found]


def find_groups(
    model: nn.Module,
    example_input: torch.Tensor,
    ignore: Sequence[str] = (),
) -> list[ChannelGroup]:
    """Every prunable channel group of ``model``, in module order.

    Left out: groups that feed a model output directly (no layer takes their channels as
    input: classifiers, auxiliary heads), those of the model's named heads, those touching a
    layer named in ``ignore`` (as a producer), and those no correct cut fits (with a warning).
    Groups hold a live DependencyGraph: call :meth:`ChannelGroup.remove` on groups of one
    :func:`find_groups` call, and call it again after changing the model in any other way.
    """
    graph, traced = _traced_groups(model, example_input)
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    skip = set(ignore) | set(heads_of(model))
    partial = _partly_covered(members for _, members in traced)

    groups: list[ChannelGroup] = []
    for tp_group, members in traced:
        root_dep = tp_group[0].dep  # type: ignore[index]
        root = root_dep.target.module
        producers = [m for m in members if m.role == "out"]
        if not producers or any(m.name in skip for m in producers):
            continue
        if not any(m.role == "in" for m in members):
            continue  # its channels are an output's
        size = len(tp_group[0].idxs)  # type: ignore[index]
        first = min(producers, key=lambda m: order[m.name])
        segments = _segments(size, producers)
        blocks = [_blocks(m, size) for m in members]
        reason = _whole_reason(members, size, segments, blocks, partial)
        if reason is not None:
            warnings.warn(f"group {first.name!r} is left whole: {reason}", RuntimeWarning, stacklevel=2)
            continue
        groups.append(
            ChannelGroup(
                name=first.name,
                size=size,
                members=members,
                segments=segments,
                _graph=graph,
                _root=root,
                _root_fn=root_dep.handler,
                blocks=math.lcm(*(b or 1 for b in blocks)),
            )
        )
    groups.sort(key=lambda g: order[g.name])
    return groups
