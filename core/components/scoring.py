"""What to cut: the scorer base class and what scorers are given."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence

import torch
from torch import nn

from prunetune.structure.groups import ChannelGroup

__all__ = ["CALIBRATION_BATCH", "ScoreContext", "Scorer", "calibration_batches"]

#: Images per calibration batch.
CALIBRATION_BATCH = 64


def calibration_batches(x: torch.Tensor, y: torch.Tensor, count: int = 4, device: torch.device | None = None,
                        size: int = CALIBRATION_BATCH) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of ``size`` training images and labels (fewer where the data
    is short), on ``device``: what data-driven scorers (``taylor``, ``l0``) see. Every job and
    trial takes the same ones, so a plan prunes the same channels wherever it is built."""
    n = min(len(x), size * count)
    return [(x[i : i + size].to(device), y[i : i + size].to(device)) for i in range(0, n, size)]


@dataclasses.dataclass
class ScoreContext:
    """Everything a scorer may use besides the group itself.

    Attributes:
        model: The model being pruned (in eval mode; scorers must leave its weights unchanged).
        example_input: One input batch of shape ``[1, C, H, W]`` on the model's device.
        calibration: Labelled batches ``(x, y)`` for data-driven scorers, on the model's device.
        seed: Seed for scorers with randomness.
    """

    model: nn.Module
    example_input: torch.Tensor
    calibration: Sequence[tuple[torch.Tensor, torch.Tensor]] = ()
    seed: int = 0


class Scorer(abc.ABC):
    """A scorer plugin: one importance score per channel of a group; higher means keep.

    Subclasses implement :meth:`score`, or override :meth:`score_groups` to share one pass
    over the calibration data between groups. Subclasses declare a frozen dataclass ``Config``.
    """

    #: Whether :attr:`ScoreContext.calibration` must be non-empty.
    needs_data: bool = False

    #: Whether scores of different groups are already on one scale; global ranking then uses
    #: them as they are instead of normalising each group's scores.
    comparable: bool = False

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        """Scores of ``group``'s channels: a float tensor of shape ``[group.size]``."""
        if type(self).score_groups is Scorer.score_groups:
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor score_groups")
        return self.score_groups([group], ctx)[group.name]

    def score_groups(
        self, groups: Sequence[ChannelGroup], ctx: ScoreContext
    ) -> dict[str, torch.Tensor]:
        """Scores for every group, by group name."""
        return {group.name: self.score(group, ctx) for group in groups}
