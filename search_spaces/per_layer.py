"""The ``per_layer`` search space: a pruning ratio per group and a kernel size per conv."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prunetune import hookimpl
from prunetune.components.spaces import DEFAULT_KERNEL_SIZES, Candidate, ModelStructure, SearchSpace, check_kernel_sizes
from prunetune.search_spaces._common import (
    RatioSpaceConfig,
    baseline_candidate,
    baseline_kernels,
    snapped_ratios,
    suggest_choices,
    suggest_group_ratios,
    suggest_kernels,
)
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    import optuna

    from prunetune.host.registry import Registry

__all__ = ["PerLayerSpace", "prunetune_add_components"]


class PerLayerSpace(SearchSpace):
    """A pruning ratio per channel group and a kernel size per conv (the full per-layer search).

    Parameters: ``ratio:<group>`` in ``[0, max_ratio]`` for every group and ``kernel:<conv>``
    from ``kernel_sizes`` for every conv with a kernel larger than 1x1, plus the optional
    ``scorer``, ``distiller``, ``T`` and ``alpha``.
    """

    @dataclasses.dataclass(frozen=True)
    class Config(RatioSpaceConfig):
        """Options of the ``per_layer`` space: those of a ratio space (see
        :class:`~prunetune.search_spaces._common.RatioSpaceConfig`), and

        Attributes:
            kernel_sizes: Kernel sizes each conv may take (positive, odd).
        """

        kernel_sizes: tuple[int, ...] = DEFAULT_KERNEL_SIZES

        def __post_init__(self) -> None:
            super().__post_init__()
            check_kernel_sizes(self.kernel_sizes)

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        cfg = self.config
        suggest_group_ratios(trial, structure, cfg.max_ratio, cfg.ratio_step)
        suggest_kernels(trial, structure, cfg.kernel_sizes)
        suggest_choices(trial, cfg)

    def kernel_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.kernel_sizes)

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate:
        return self.with_ratios(structure, dict.fromkeys(structure.groups, ratio))

    def with_ratios(self, structure: ModelStructure, ratios: Mapping[str, float]) -> Candidate:
        cfg = self.config
        plan = StudentPlan(ratios=snapped_ratios(structure, ratios, cfg.max_ratio, cfg.ratio_step),
                           kernels=baseline_kernels(structure, cfg.kernel_sizes))
        return baseline_candidate(plan, cfg)


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("per_layer", PerLayerSpace)
