"""How to cut: the pruner base class, the job it gets and the record it leaves.

A pruner decides nothing about importance: scores come from the scorer, ratios from the plan,
and the shared selection rule in :mod:`prunetune.components.selection` turns them into channel choices.
The record lets a checkpoint rebuild the same structure on a freshly built model.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.errors import UsageError
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.structure.plan import StudentPlan

__all__ = ["PruneJob", "PruneRecord", "Pruner", "recorded_groups"]


@dataclasses.dataclass
class PruneJob:
    """What a pruner works on.

    Attributes:
        model: The model to prune in place (already kernel-changed by the plan).
        plan: Per-group ratios and ``round_to``.
        scorer: Scores channels.
        ctx: The scorer's context (example input, calibration batches, seed).
        retrain: Brief retraining between pruning steps, ``retrain(model, steps)`` (the
            pipeline's distiller on a few batches); None where the caller offers none.
    """

    model: nn.Module
    plan: StudentPlan
    scorer: Scorer
    ctx: ScoreContext
    retrain: Callable[[nn.Module, int], None] | None = None


@dataclasses.dataclass
class PruneRecord:
    """Which channels went, per group name, and whether they were removed or masked.

    ``extra`` holds what else a pruner needs to replay its result (JSON-able), e.g. block masks.
    """

    removed: dict[str, list[int]]
    physical: bool
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"removed": self.removed, "physical": self.physical, "extra": self.extra}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruneRecord:
        removed = {str(k): [int(i) for i in v] for k, v in dict(data["removed"]).items()}
        return cls(removed=removed, physical=bool(data["physical"]), extra=dict(data.get("extra", {})))


class Pruner(abc.ABC):
    """A pruner plugin. Subclasses declare a frozen dataclass ``Config``."""

    def check(self, plan: StudentPlan) -> None:
        """Refuse a plan this pruner cannot cut, before any work (the default takes any plan).

        Raises:
            UsageError: what the plan asks that this pruner does not do.
        """

    @abc.abstractmethod
    def prune(self, job: PruneJob) -> PruneRecord:
        """Prune ``job.model`` in place by ``job.plan`` and return what was cut."""

    @abc.abstractmethod
    def replay(self, model: nn.Module, record: PruneRecord, example_input: torch.Tensor) -> None:
        """Give a freshly built model the structure ``record`` describes (before loading weights)."""


def recorded_groups(
    model: nn.Module, record: PruneRecord, example_input: torch.Tensor
) -> list[tuple[ChannelGroup, list[int]]]:
    """The groups of a freshly built ``model`` that ``record`` cut, with their channels.

    Raises:
        UsageError: the record names a group the model does not have (a checkpoint that does
            not fit its plan).
    """
    groups = {group.name: group for group in find_groups(model, example_input)}
    found = []
    for name, channels in record.removed.items():
        group = groups.get(name)
        if group is None or max(channels, default=-1) >= group.size:
            raise UsageError(f"the pruning record names group {name!r}, which this model does not have")
        found.append((group, channels))
    return found
