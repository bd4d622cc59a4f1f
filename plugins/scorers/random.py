"""The ``random`` scorer: uniform random scores, a baseline for the others."""

from __future__ import annotations

import dataclasses
import zlib

import torch

from prunetune import hookimpl
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.host.registry import Registry
from prunetune.structure.groups import ChannelGroup

__all__ = ["RandomScorer", "prunetune_add_components"]


class RandomScorer(Scorer):
    """Uniform random scores in [0, 1), seeded per group: the baseline every scorer must beat.

    The generator is seeded from the seed (``ctx.seed`` unless the ``seed`` option is set) and
    a CRC32 of the group's name, so groups differ and a run is reproducible across processes.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``random`` scorer.

        Attributes:
            seed: Overrides the run's seed when set.
        """

        seed: int | None = None

    def __init__(self, config: Config) -> None:
        self.config = config

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        seed = ctx.seed if self.config.seed is None else self.config.seed
        mixed = (seed * 1_000_003 + zlib.crc32(group.name.encode())) % 2**63
        generator = torch.Generator().manual_seed(mixed)
        return torch.rand(group.size, generator=generator).to(ctx.example_input.device)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_scorer("random", RandomScorer)
