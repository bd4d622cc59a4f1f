"""The ``blockwise`` pruner: the design notes' block-wise parameterized pruning (4.1.2).

Every producer layer of a group the plan cuts (a conv or a non-classifier linear layer) has
its kernels split into ``out_blocks x in_blocks`` blocks: contiguous ranges of output channels
by contiguous ranges of input channels, the last range possibly smaller. Depthwise and other
grouped convs are split over output channels only, since each of their kernels reads just its
own few inputs. Per layer, the lowest-scoring block is zeroed and the rest are scored again,
until the zeroed share of the layer's weights reaches the ratio of the layer's group (at most
one block past it; a layer's last non-zero block always stays).

A block's score is its mean ``|w|`` with every output channel's row weighted by the job's
scorer: the channel's score divided by the group's highest (negative scores count as 0). With
a magnitude scorer that is plain block magnitude; with data-driven scorers (``taylor``,
``l0``) a block of channels the data finds unimportant goes first. The scores are taken again
on the model with its blocks zeroed so far after every ``rescore_every`` zeroed blocks of
each layer, since data-driven scores change once weights are zero. A mean rather than a sum,
because the last block of a layer may be smaller and the ratio counts weights.

Output channels of a group that are zero in every producer of the group are then removed
physically (with their bias, normalisation and the next layers' inputs), so MACs really fall;
the other zeroed blocks stay masked and are kept zero through training. ``plan.round_to``
does not apply (block boundaries decide what can go) and ``plan.macs_target`` is refused.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from prunetune import hookimpl
from prunetune.components.pruning import PruneJob, Pruner, PruneRecord, recorded_groups
from prunetune.components.selection import group_ratios
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.structure.groups import ChannelGroup, Member, find_groups
from prunetune.structure.masking import KeepMasked
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan

__all__ = ["Block", "BlockwisePruner", "prunetune_add_components"]


@dataclasses.dataclass(frozen=True, order=True)
class Block:
    """Weights ``[out_start:out_end, in_start:in_end]`` of layer ``layer`` (its own indices)."""

    layer: str
    out_start: int
    out_end: int
    in_start: int
    in_end: int

    @property
    def area(self) -> int:
        """Output channels times input channels covered."""
        return (self.out_end - self.out_start) * (self.in_end - self.in_start)

    def to_list(self) -> list[Any]:
        return [self.layer, self.out_start, self.out_end, self.in_start, self.in_end]


def _ranges(size: int, parts: int) -> list[tuple[int, int]]:
    """``size`` split into contiguous ranges of ``ceil(size / parts)``, the last possibly smaller."""
    step = -(-size // parts)
    return [(start, min(start + step, size)) for start in range(0, size, step)]


def _grouped(module: nn.Module) -> bool:
    return getattr(module, "groups", 1) > 1


@dataclasses.dataclass
class _Layer:
    """One layer being cut: its blocks, the ones zeroed so far, and its target."""

    member: Member
    group: ChannelGroup
    ratio: float
    blocks: list[Block]
    zeroed: list[Block] = dataclasses.field(default_factory=list)

    @property
    def weight(self) -> torch.Tensor:
        return self.member.module.weight

    @property
    def fraction(self) -> float:
        per_entry = self.weight[0, 0].numel()
        return sum(b.area for b in self.zeroed) * per_entry / self.weight.numel()

    @property
    def done(self) -> bool:
        return self.fraction >= self.ratio - 1e-9 or len(self.zeroed) >= len(self.blocks) - 1

    def live(self) -> list[Block]:
        return [b for b in self.blocks if b not in self.zeroed]

    def zero(self, block: Block) -> None:
        with torch.no_grad():
            self.weight[block.out_start : block.out_end, block.in_start : block.in_end] = 0
        self.zeroed.append(block)

    def dead_rows(self) -> set[int]:
        """Output channels whose every block is zeroed."""
        covered = torch.zeros(self.weight.shape[:2], dtype=torch.bool)
        for b in self.zeroed:
            covered[b.out_start : b.out_end, b.in_start : b.in_end] = True
        return set(torch.nonzero(covered.all(dim=1)).flatten().tolist())


def _make_layers(
    groups: Sequence[ChannelGroup], ratios: Mapping[str, float], out_blocks: int, in_blocks: int
) -> list[_Layer]:
    """The producers of every group with a ratio above 0, each split into its blocks."""
    layers: dict[str, _Layer] = {}
    for group in groups:
        if ratios[group.name] <= 0:
            continue
        for member in group.producers:
            if member.name in layers:
                continue
            out_size, in_size = member.module.weight.shape[:2]
            in_ranges = [(0, in_size)] if _grouped(member.module) else _ranges(in_size, in_blocks)
            blocks = [
                Block(member.name, o0, o1, i0, i1)
                for o0, o1 in _ranges(out_size, out_blocks)
                for i0, i1 in in_ranges
            ]
            layers[member.name] = _Layer(member, group, ratios[group.name], blocks)
    return list(layers.values())


def _row_importance(layer: _Layer, scores: torch.Tensor) -> torch.Tensor:
    """The scorer's importance of each output channel of the layer, in [0, 1]."""
    scores = scores.detach().float().cpu().clamp(min=0)
    top = float(scores.max()) if scores.numel() else 0.0
    importance = scores / top if top > 0 else torch.ones_like(scores)
    rows = torch.ones(layer.weight.shape[0])
    rows[torch.as_tensor(layer.member.idxs)] = importance[torch.as_tensor(layer.member.root_idxs)]
    return rows


def _block_scores(layer: _Layer, scores: torch.Tensor) -> dict[Block, float]:
    """Mean importance-weighted ``|w|`` of each block not yet zeroed."""
    weight = layer.weight.detach()
    mass = weight.abs().reshape(weight.shape[0], weight.shape[1], -1).sum(2).cpu()
    weighted = mass * _row_importance(layer, scores).unsqueeze(1)
    per_entry = weight[0, 0].numel()
    return {
        b: float(weighted[b.out_start : b.out_end, b.in_start : b.in_end].sum()) / (b.area * per_entry)
        for b in layer.live()
    }


def _zero_blocks(job: PruneJob, layers: Sequence[_Layer], rescore_every: int) -> None:
    """Zero each layer's lowest-scoring blocks, scoring again every ``rescore_every`` blocks."""
    while pending := [layer for layer in layers if not layer.done]:
        groups = list({layer.group.name: layer.group for layer in pending}.values())
        scores = job.scorer.score_groups(groups, job.ctx)
        for layer in pending:
            block_scores = _block_scores(layer, scores[layer.group.name])
            order = sorted(block_scores, key=lambda b: (block_scores[b], layer.blocks.index(b)))
            for block in order[:rescore_every]:
                if layer.done:
                    break
                layer.zero(block)


def _removable(group: ChannelGroup, layers: Mapping[str, _Layer]) -> list[int]:
    """Channels of ``group`` zero in every producer of the group."""
    alive: set[int] = set()
    for member in group.producers:
        layer = layers.get(member.name)
        dead = layer.dead_rows() if layer is not None else set()
        alive.update(root for idx, root in zip(member.idxs, member.root_idxs) if idx not in dead)
    return [channel for channel in range(group.size) if channel not in alive]


def _removed_indices(
    groups: Iterable[ChannelGroup], removals: Mapping[str, list[int]]
) -> tuple[dict[str, list[int]], dict[str, list[int]]]:
    """Per layer name, the output and the input indices that ``removals`` take away (sorted)."""
    outs: dict[str, list[int]] = {}
    ins: dict[str, list[int]] = {}
    for group in groups:
        cut = set(removals.get(group.name, ()))
        for member in group.members:
            side = outs if member.role == "out" else ins if member.role == "in" else None
            if side is None or not cut:
                continue
            picked = (i for i, root in zip(member.idxs, member.root_idxs) if root in cut)
            side.setdefault(member.name, []).extend(picked)
    return {k: sorted(v) for k, v in outs.items()}, {k: sorted(v) for k, v in ins.items()}


def _shift(start: int, end: int, removed: Sequence[int]) -> tuple[int, int]:
    """``[start, end)`` renumbered after ``removed`` (sorted) indices are taken out."""
    return start - bisect.bisect_left(removed, start), end - bisect.bisect_left(removed, end)


def _translate(block: Block, module: nn.Module, outs: Sequence[int], ins: Sequence[int]) -> Block | None:
    """``block`` in the layer's index space after removal; None where nothing of it is left."""
    o0, o1 = _shift(block.out_start, block.out_end, outs)
    i0, i1 = (0, module.weight.shape[1]) if _grouped(module) else _shift(block.in_start, block.in_end, ins)
    if o1 <= o0 or i1 <= i0:
        return None
    return Block(block.layer, o0, o1, i0, i1)


def _install_masks(model: nn.Module, blocks: Sequence[Block]) -> None:
    """Zero ``blocks`` and keep them zero in every forward pass from now on.

    Raises:
        UsageError: a block names a layer the model lacks or lies outside its weight.
    """
    modules = dict(model.named_modules())
    masks: dict[str, torch.Tensor] = {}
    for b in blocks:
        weight = getattr(modules.get(b.layer), "weight", None)
        fits = isinstance(weight, torch.Tensor) and weight.dim() >= 2
        if not fits or b.out_end > weight.shape[0] or b.in_end > weight.shape[1]:
            raise UsageError(f"the pruning record's block {b.to_list()} does not fit this model")
        mask = masks.setdefault(b.layer, torch.ones_like(weight, requires_grad=False))
        mask[b.out_start : b.out_end, b.in_start : b.in_end] = 0
    for name, mask in masks.items():
        KeepMasked({"weight": mask}).attach(modules[name])


def _parse_blocks(raw: Iterable[Sequence[Any]]) -> list[Block]:
    try:
        blocks = [Block(str(b[0]), int(b[1]), int(b[2]), int(b[3]), int(b[4])) for b in raw]
    except (IndexError, TypeError, ValueError):
        raise UsageError(
            "the pruning record's blocks are not [layer, out_start, out_end, in_start, in_end]"
        ) from None
    if any(not 0 <= b.out_start < b.out_end or not 0 <= b.in_start < b.in_end for b in blocks):
        raise UsageError("the pruning record holds an empty or negative block")
    return blocks


def _sparsity(layers: Sequence[_Layer]) -> tuple[float, dict[str, float]]:
    total = sum(len(layer.blocks) for layer in layers)
    zeroed = sum(len(layer.zeroed) for layer in layers)
    per_layer = {layer.member.name: len(layer.zeroed) / len(layer.blocks) for layer in layers}
    return (zeroed / total if total else 0.0), per_layer


class BlockwisePruner(Pruner):
    """Zero blocks of kernels, scoring again after each; channels zero in every block are removed."""

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``blockwise`` pruner.

        Attributes:
            out_blocks: Ranges each layer's output channels are split into.
            in_blocks: Ranges each layer's input channels are split into (1 for grouped convs).
            rescore_every: Blocks zeroed per layer between two scorings.
        """

        out_blocks: int = 4
        in_blocks: int = 4
        rescore_every: int = 1

        def __post_init__(self) -> None:
            for name in ("out_blocks", "in_blocks", "rescore_every"):
                value = getattr(self, name)
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError(f"{name} must be a positive integer (got {value!r})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def check(self, plan: StudentPlan) -> None:
        if plan.macs_target is not None:
            raise UsageError("the blockwise pruner cuts each layer by its ratio; it takes no MACs target")

    def prune(self, job: PruneJob) -> PruneRecord:
        """Zero blocks per layer, remove channels zero in every producer, mask the rest.

        ``extra`` holds ``blocks`` (the zeroed blocks still present, in the index space after
        removal), ``block_sparsity`` (share of all blocks zeroed), ``layer_block_sparsity``
        and ``macs`` (of one example input, after removal).

        Raises:
            UsageError: the plan asks for a MACs target, or the scorer needs calibration data
                and none was given.
        """
        self.check(job.plan)
        groups = find_groups(job.model, job.ctx.example_input)
        ratios = group_ratios(groups, job.plan)
        layers = _make_layers(groups, ratios, self.config.out_blocks, self.config.in_blocks)
        if layers and job.scorer.needs_data and not job.ctx.calibration:
            raise UsageError("this scorer needs calibration data, and none was given")
        _zero_blocks(job, layers, self.config.rescore_every)

        by_name = {layer.member.name: layer for layer in layers}
        removals = {group.name: cut for group in groups if (cut := _removable(group, by_name))}
        outs, ins = _removed_indices(groups, removals)
        for group in groups:
            group.remove(removals.get(group.name, []))

        kept = []
        for layer in layers:
            for block in layer.zeroed:
                name = block.layer
                moved = _translate(block, layer.member.module, outs.get(name, []), ins.get(name, []))
                if moved is not None:
                    kept.append(moved)
        kept.sort()
        _install_masks(job.model, kept)
        sparsity, per_layer = _sparsity(layers)
        image_shape = tuple(job.ctx.example_input.shape[1:])
        macs, _ = count_macs_params(job.model, image_shape)  # type: ignore[arg-type]
        extra = {
            "blocks": [b.to_list() for b in kept],
            "block_sparsity": sparsity,
            "layer_block_sparsity": per_layer,
            "macs": macs,
        }
        # Physical only where whole channels went: blocks alone are masks, the shapes unchanged.
        return PruneRecord(removed=removals, physical=bool(removals), extra=extra)

    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        """Remove the recorded channels, then mask the recorded blocks.

        Raises:
            UsageError: the record does not fit ``model``.
        """
        for group, channels in recorded_groups(model, record, example_input):
            group.remove(channels)
        _install_masks(model, _parse_blocks(record.extra.get("blocks", [])))


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_pruner("blockwise", BlockwisePruner)
