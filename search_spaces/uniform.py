"""The ``uniform`` search space: one global pruning ratio, the standard recipe."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from prunetune import hookimpl
from prunetune.search_spaces._common import (
    baseline_choices,
    check_choices,
    check_ratio_options,
    snap_ratio,
    suggest_choices,
    suggest_ratio,
)
from prunetune.spaces import RATIO, ModelStructure, SearchSpace

if TYPE_CHECKING:
    import optuna

    from prunetune.registry import Registry

__all__ = ["UniformSpace", "prunetune_add_components"]


class UniformSpace(SearchSpace):
    """One pruning ratio for every group (the standard recipe; the baseline of the others).

    Parameters: ``ratio`` in ``[0, max_ratio]``, plus the optional ``scorer``, ``distiller``,
    ``T`` and ``alpha``. Kernel sizes are the teacher's.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``uniform`` space.

        Attributes:
            max_ratio: Largest ratio, in (0, 1).
            ratio_step: Grid of the ratio (None: continuous).
            scorers: Scorers to choose from per trial (empty: the run's scorer, not searched).
            distillers: Distillers to choose from per trial (empty: not searched).
            search_temperature: Also search the distiller's ``T`` in [1, 8] and ``alpha`` in
                [0.1, 1].
        """

        max_ratio: float = 0.8
        ratio_step: float | None = 0.05
        scorers: tuple[str, ...] = ()
        distillers: tuple[str, ...] = ()
        search_temperature: bool = False

        def __post_init__(self) -> None:
            check_ratio_options(self.max_ratio, self.ratio_step)
            check_choices(self.scorers, self.distillers)

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        suggest_ratio(trial, RATIO, self.config.max_ratio, self.config.ratio_step)
        suggest_choices(trial, self.config)

    def baseline(self, structure: ModelStructure, ratio: float) -> dict[str, Any]:
        cfg = self.config
        return {RATIO: snap_ratio(ratio, cfg.max_ratio, cfg.ratio_step)} | baseline_choices(cfg)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("uniform", UniformSpace)
