"""The ``uniform`` search space: one global pruning ratio, the standard recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunetune import hookimpl
from prunetune.components.spaces import RATIO, Candidate, ModelStructure, SearchSpace
from prunetune.search_spaces._common import (
    RatioSpaceConfig,
    baseline_candidate,
    snap_ratio,
    suggest_choices,
    suggest_ratio,
)
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    import optuna

    from prunetune.host.registry import Registry

__all__ = ["UniformSpace", "prunetune_add_components"]


class UniformSpace(SearchSpace):
    """One pruning ratio for every group (the standard recipe; the baseline of the others).

    Parameters: ``ratio`` in ``[0, max_ratio]``, plus the optional ``scorer``, ``distiller``,
    ``T`` and ``alpha``. Kernel sizes are the teacher's.
    """

    Config = RatioSpaceConfig

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        suggest_ratio(trial, RATIO, self.config.max_ratio, self.config.ratio_step)
        suggest_choices(trial, self.config)

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate:
        cfg = self.config
        return baseline_candidate(StudentPlan(ratio=snap_ratio(ratio, cfg.max_ratio, cfg.ratio_step)), cfg)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("uniform", UniformSpace)
