"""The ``ratio_only`` search space: a pruning ratio per group, kernel sizes left as they are."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from prunetune import hookimpl
from prunetune.components.spaces import Candidate, ModelStructure, SearchSpace
from prunetune.search_spaces._common import (
    RatioSpaceConfig,
    baseline_candidate,
    snapped_ratios,
    suggest_choices,
    suggest_group_ratios,
)
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    import optuna

    from prunetune.host.registry import Registry

__all__ = ["RatioOnlySpace", "prunetune_add_components"]


class RatioOnlySpace(SearchSpace):
    """A pruning ratio per channel group; the teacher's kernel sizes are kept.

    Parameters: ``ratio:<group>`` in ``[0, max_ratio]`` for every group, plus the optional
    ``scorer``, ``distiller``, ``T`` and ``alpha``.
    """

    Config = RatioSpaceConfig

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        suggest_group_ratios(trial, structure, self.config.max_ratio, self.config.ratio_step)
        suggest_choices(trial, self.config)

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate:
        return self.with_ratios(structure, dict.fromkeys(structure.groups, ratio))

    def with_ratios(self, structure: ModelStructure, ratios: Mapping[str, float]) -> Candidate:
        cfg = self.config
        plan = StudentPlan(ratios=snapped_ratios(structure, ratios, cfg.max_ratio, cfg.ratio_step))
        return baseline_candidate(plan, cfg)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("ratio_only", RatioOnlySpace)
