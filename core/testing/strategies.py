"""A conformance suite for strategy plugins, driving their searcher by hand (no Ray, no Tune).

Subclass :class:`StrategyConformance` in a test module, name the subclass ``Test...``,
implement :meth:`~StrategyConformance.make_strategy` and say whether the strategy takes several
objectives; pytest then runs every check on it (Ray Tune and Optuna must be installed, but no
Ray cluster is started)::

    from prunetune.testing.strategies import StrategyConformance

    class TestMyStrategy(StrategyConformance):
        multi_objective = False  # several metrics raise a one-line UsageError

        def make_strategy(self):
            return MyStrategy(MyStrategy.Config())

The searcher samples :class:`~prunetune.testing.spaces.ConformanceSpace` (override
:meth:`~StrategyConformance.make_space`) bound to the structure of
:func:`~prunetune.testing.scorers.conformance_model`, starting from the space's baseline; each
suggestion is completed at once with :func:`conformance_result` of its parameters.
"""

from __future__ import annotations

import abc
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from prunetune.components.spaces import (
    Candidate,
    DefineByRun,
    ModelStructure,
    SearchSpace,
    check_kernel_sizes,
)
from prunetune.components.strategy import Strategy
from prunetune.errors import UsageError
from prunetune.testing.contract import check_component_contract, scramble_global_rngs
from prunetune.testing.spaces import ConformanceSpace, conformance_structure

if TYPE_CHECKING:
    from ray.tune.search import Searcher

__all__ = ["StrategyConformance", "conformance_result"]

METRIC = "val_accuracy"


def conformance_result(params: Mapping[str, Any]) -> dict[str, float]:
    """A trial's made-up final result: accuracy falls with the ratios and favours kernel size 5;
    ``val_loss`` is ``1 - val_accuracy``; ``macs`` grows with the kept channels and kernels."""
    plan = Candidate.from_params(params).plan
    ratios, kernels = list(plan.ratios.values()), list(plan.kernels.values())
    keep = 1.0 - (sum(ratios) / len(ratios) if ratios else plan.ratio)
    accuracy = 0.5 + 0.4 * keep + 0.01 * sum(k == 5 for k in kernels)
    macs = keep * keep * (1.0 + sum(k * k for k in kernels))
    return {METRIC: accuracy, "val_loss": 1.0 - accuracy, "macs": macs}


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def _logged_warnings() -> Iterator[list[str]]:
    # Ray's OptunaSearch logs, rather than raises, a result its study refuses; Ray's loggers
    # may not propagate to the root.
    handler = _Warnings()
    loggers = [logging.getLogger(), logging.getLogger("ray")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _drive(searcher: Searcher, steps: int, prefix: str = "t", fail_first: bool = False) -> list[dict[str, Any]]:
    """Up to ``steps`` suggestions, each completed before the next; stops when none comes."""
    out: list[dict[str, Any]] = []
    for i in range(steps):
        trial_id = f"{prefix}{i}"
        params = searcher.suggest(trial_id)
        if not isinstance(params, dict):  # None (nothing now) or Searcher.FINISHED
            break
        out.append(params)
        if fail_first and i == 0:
            searcher.on_trial_complete(trial_id, None, error=True)
        else:
            searcher.on_trial_complete(trial_id, conformance_result(params))
    return out


class StrategyConformance(abc.ABC):
    """Checks every strategy must pass; subclass it as ``Test...`` and implement
    ``make_strategy``.

    Attributes:
        multi_objective: Whether the strategy runs a search for several metrics (else it must
            refuse them with a one-line :class:`~prunetune.errors.UsageError`).
        steps: How many trials the checks drive.
        baseline_ratio: The uniform ratio of the space's baseline, the first point to evaluate.
    """

    multi_objective: bool = False
    steps: int = 8
    baseline_ratio: float = 0.3

    @abc.abstractmethod
    def make_strategy(self) -> Strategy:
        """A fresh instance of the strategy under test."""

    def make_space(self) -> SearchSpace:
        """The space searched; override to test with another one."""
        return ConformanceSpace(ConformanceSpace.Config())

    def make_structure(self) -> ModelStructure:
        """The structure the space is bound to; override to test on another model."""
        return conformance_structure()

    def _baseline(self) -> dict[str, Any]:
        point = DefineByRun(self.make_space(), self.make_structure()).baseline(self.baseline_ratio)
        assert point is not None, "make_space() must give a space with a baseline"
        return point

    def _searcher(
        self, seed: int = 0, metrics: Sequence[str] = (METRIC,), modes: Sequence[str] = ("max",)
    ) -> Searcher:
        bound = DefineByRun(self.make_space(), self.make_structure())
        return self.make_strategy().searcher(bound, list(metrics), list(modes), seed,
                                             points_to_evaluate=[self._baseline()])

    def _names(self) -> set[str]:
        """The parameters the space suggests, with its constants."""
        import optuna

        space, trial = self.make_space(), optuna.trial.FixedTrial(self._baseline())
        space.suggest(trial, self.make_structure())  # type: ignore[arg-type]
        return set(trial.params) | set(space.constants())

    def test_declares_config_and_description(self) -> None:
        check_component_contract(self.make_strategy(), Strategy, "strategy")

    def test_searcher_is_a_ray_searcher(self) -> None:
        from ray.tune.search import Searcher

        assert isinstance(self._searcher(), Searcher), "Tune runs nothing but a ray.tune.search.Searcher"

    def test_first_suggestion_is_the_first_point_to_evaluate(self) -> None:
        first = self._searcher().suggest("t0")
        assert first == self._baseline() | self.make_space().constants()

    def test_suggestions_are_points_of_the_space(self) -> None:
        space, structure, names = self.make_space(), self.make_structure(), self._names()
        suggested = _drive(self._searcher(), self.steps)
        assert len(suggested) >= 2, "the searcher proposed nothing beyond the first point"
        offered = set(space.kernel_sizes()) | set(self.make_strategy().kernel_sizes())
        for params in suggested:
            assert set(params) == names, f"suggested {sorted(params)}, the space has {sorted(names)}"
            assert all(params[k] == v for k, v in space.constants().items()), "constants changed"
            plan = Candidate.from_params(params).plan
            assert set(plan.ratios) <= set(structure.groups)
            for conv, size in plan.kernels.items():
                # The latency table times only the sizes the space and strategy declare.
                allowed = offered | {structure.kernels[conv]}
                assert size in allowed, f"kernel:{conv} = {size}, declared {sorted(allowed)}"

    def test_same_seed_same_suggestions(self) -> None:
        scramble_global_rngs(1)
        first = _drive(self._searcher(seed=3), self.steps)
        scramble_global_rngs(2)
        assert first == _drive(self._searcher(seed=3), self.steps)

    def test_several_objectives_work_or_are_refused(self) -> None:
        metrics, modes = [METRIC, "macs"], ["max", "min"]
        if not self.multi_objective:
            with pytest.raises(UsageError) as caught:
                self._searcher(metrics=metrics, modes=modes)
            message = str(caught.value).strip()
            assert message and "\n" not in message, f"not one line: {message!r}"
            return
        with _logged_warnings() as logged:
            searcher = self._searcher(metrics=metrics, modes=modes)
            suggested = _drive(searcher, self.steps)
        assert len(suggested) >= 2
        assert list(searcher.metric) == metrics, f"the searcher optimises {searcher.metric!r}"
        assert not logged, f"the searcher warned: {logged[0]}"

    def test_a_failed_trial_does_not_stop_the_search(self) -> None:
        suggested = _drive(self._searcher(), self.steps, fail_first=True)
        assert len(suggested) >= 2, "no suggestion after the first trial failed"

    def test_kernel_sizes_are_distinct_odd_ints(self) -> None:
        sizes = self.make_strategy().kernel_sizes()
        assert isinstance(sizes, tuple), f"kernel_sizes() gave a {type(sizes).__name__}"
        if sizes:
            check_kernel_sizes(sizes)

    def test_pickled_searcher_goes_on_alike(self) -> None:
        from ray import cloudpickle

        searcher = self._searcher(seed=1)
        _drive(searcher, 2)
        # Tune pickles the searcher into its experiment state and restores it on resume.
        copy = cloudpickle.loads(cloudpickle.dumps(searcher))
        assert _drive(copy, self.steps, prefix="u") == _drive(searcher, self.steps, prefix="u")
