"""The ``optuna`` strategy: Ray Tune's OptunaSearch with a seeded TPE, NSGA-II or random sampler."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prunetune import hookimpl
from prunetune.strategy import Strategy

if TYPE_CHECKING:
    import optuna
    from ray.tune.search import Searcher

    from prunetune.registry import Registry

__all__ = ["SAMPLERS", "OptunaStrategy", "prunetune_add_components"]

SAMPLERS = ("tpe", "nsga2", "random")
_MODES = ("max", "min")


class OptunaStrategy(Strategy):
    """Optuna's TPE, NSGA-II or random sampler, single- or multi-objective (Pareto).

    Several metrics make a multi-objective study; TPE and NSGA-II both handle it.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``optuna`` strategy.

        Attributes:
            sampler: ``tpe``, ``nsga2`` or ``random``.
            n_startup_trials: Random trials before TPE starts modelling (TPE only), >= 0.
        """

        sampler: str = "tpe"
        n_startup_trials: int = 5

        def __post_init__(self) -> None:
            if self.sampler not in SAMPLERS:
                valid = ", ".join(SAMPLERS)
                raise ValueError(f"sampler must be one of {valid} (got {self.sampler!r})")
            if self.n_startup_trials < 0:
                raise ValueError(f"n_startup_trials must be >= 0 (got {self.n_startup_trials})")

    def __init__(self, config: Config) -> None:
        self.config = config

    def sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        """The configured Optuna sampler, seeded with ``seed``."""
        import optuna

        if self.config.sampler == "tpe":
            return optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=self.config.n_startup_trials
            )
        if self.config.sampler == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed)
        return optuna.samplers.RandomSampler(seed=seed)

    def searcher(
        self,
        space: Callable[[optuna.Trial], None],
        metrics: Sequence[str],
        modes: Sequence[str],
        seed: int,
        points_to_evaluate: Sequence[dict[str, Any]] = (),
    ) -> Searcher:
        """An ``OptunaSearch`` over ``space``; see :meth:`Strategy.searcher`.

        Raises:
            ValueError: no metric, a mode per metric missing, or a mode other than max/min.
        """
        if not metrics or len(metrics) != len(modes):
            raise ValueError(
                f"need one mode per metric (metrics {list(metrics)}, modes {list(modes)})"
            )
        bad = [m for m in modes if m not in _MODES]
        if bad:
            raise ValueError(f"modes must be 'max' or 'min' (got {bad})")
        from ray.tune.search.optuna import OptunaSearch

        # OptunaSearch makes a multi-objective study only when metric and mode are lists.
        several = len(metrics) > 1
        return OptunaSearch(
            space=space,
            metric=list(metrics) if several else metrics[0],
            mode=list(modes) if several else modes[0],
            points_to_evaluate=[dict(p) for p in points_to_evaluate] or None,
            # The seed lives in the sampler: OptunaSearch ignores its own once a sampler is given.
            sampler=self.sampler(seed),
        )


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_strategy("optuna", OptunaStrategy)
