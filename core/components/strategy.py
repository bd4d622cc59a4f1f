"""Search strategies: what proposes the next candidate to train."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from ray.tune.search import Searcher

__all__ = ["Strategy"]


class Strategy(abc.ABC):
    """A strategy plugin: builds the Ray Tune searcher of a run.

    Subclasses declare a frozen dataclass ``Config``.
    """

    @abc.abstractmethod
    def searcher(
        self,
        space: Callable[[optuna.Trial], None],
        metrics: Sequence[str],
        modes: Sequence[str],
        seed: int,
        points_to_evaluate: Sequence[dict[str, Any]] = (),
    ) -> Searcher:
        """A searcher sampling ``space`` for ``metrics`` (``"max"``/``"min"`` in ``modes``).

        Args:
            space: The define-by-run space function.
            metrics: Objective names; more than one asks for a multi-objective (Pareto) search.
            modes: ``"max"`` or ``"min"`` per metric.
            seed: Seed of the sampler.
            points_to_evaluate: Parameters to try first (e.g. the uniform baseline).
        """

    def kernel_sizes(self) -> tuple[int, ...]:
        """The kernel sizes this strategy may give a conv beyond its space's; empty (the
        default) where it proposes none of its own. The search times each for the latency table."""
        return ()
