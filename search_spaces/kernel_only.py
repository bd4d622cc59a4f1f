"""The ``kernel_only`` search space: a kernel size per conv, at one fixed pruning ratio."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from prunetune import hookimpl
from prunetune.components.spaces import (
    DEFAULT_KERNEL_SIZES,
    RATIO,
    Candidate,
    ModelStructure,
    SearchSpace,
    check_kernel_sizes,
)
from prunetune.search_spaces._common import (
    baseline_candidate,
    baseline_kernels,
    check_choices,
    check_ratio,
    suggest_choices,
    suggest_kernels,
)
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    import optuna

    from prunetune.host.registry import Registry

__all__ = ["KernelOnlySpace", "prunetune_add_components"]


class KernelOnlySpace(SearchSpace):
    """A kernel size per conv, with every group pruned at one fixed ratio.

    Parameters: ``kernel:<conv>`` from ``kernel_sizes`` for every conv with a kernel larger than
    1x1, plus the optional ``scorer``, ``distiller``, ``T`` and ``alpha``. The fixed ratio is the
    constant ``ratio`` (see :meth:`constants`).
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``kernel_only`` space.

        Attributes:
            ratio: Pruning ratio of every group, in [0, 1); not searched.
            kernel_sizes: Kernel sizes each conv may take (positive, odd).
            scorers: Scorers to choose from per trial (empty: the run's scorer, not searched).
            distillers: Distillers to choose from per trial (empty: not searched).
            search_temperature: Also search the distiller's ``T`` in [1, 8] and ``alpha`` in
                [0.1, 1].
        """

        ratio: float = 0.0
        kernel_sizes: tuple[int, ...] = DEFAULT_KERNEL_SIZES
        scorers: tuple[str, ...] = ()
        distillers: tuple[str, ...] = ()
        search_temperature: bool = False

        def __post_init__(self) -> None:
            check_ratio(self.ratio, "ratio")
            check_kernel_sizes(self.kernel_sizes)
            check_choices(self.scorers, self.distillers)

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        suggest_kernels(trial, structure, self.config.kernel_sizes)
        suggest_choices(trial, self.config)

    def kernel_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.kernel_sizes)

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate:
        """The teacher's kernel sizes: the ratio is the configured constant, not ``ratio``."""
        cfg = self.config
        plan = StudentPlan(ratio=cfg.ratio, kernels=baseline_kernels(structure, cfg.kernel_sizes))
        return baseline_candidate(plan, cfg)

    def constants(self) -> dict[str, Any]:
        return {RATIO: self.config.ratio}


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_search_space("kernel_only", KernelOnlySpace)
