"""The ``ratio_only`` search space: a pruning ratio per group, kernel sizes left as they are."""

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
    suggest_group_ratios,
)
from prunetune.spaces import RATIO_PREFIX, ModelStructure, SearchSpace

if TYPE_CHECKING:
    import optuna

    from prunetune.registry import Registry

__all__ = ["RatioOnlySpace", "prunetune_add_components"]


class RatioOnlySpace(SearchSpace):
    """A pruning ratio per channel group; the teacher's kernel sizes are kept.

    Parameters: ``ratio:<group>`` in ``[0, max_ratio]`` for every group, plus the optional
    ``scorer``, ``distiller``, ``T`` and ``alpha``.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``ratio_only`` space.

        Attributes:
            max_ratio: Largest ratio a group may get, in (0, 1).
            ratio_step: Grid of the ratios (None: continuous).
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
        suggest_group_ratios(trial, structure, self.config.max_ratio, self.config.ratio_step)
        suggest_choices(trial, self.config)

    def baseline(self, structure: ModelStructure, ratio: float) -> dict[str, Any]:
        cfg = self.config
        snapped = snap_ratio(ratio, cfg.max_ratio, cfg.ratio_step)
        params: dict[str, Any] = {RATIO_PREFIX + group: snapped for group in structure.groups}
        return params | baseline_choices(cfg)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("ratio_only", RatioOnlySpace)
