"""The ``optuna`` strategy: Ray Tune's OptunaSearch with a seeded TPE, NSGA-II or random sampler."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from prunetune import hookimpl
from prunetune.components.strategy import Strategy

if TYPE_CHECKING:
    import optuna
    from ray.tune.search import Searcher

    from prunetune.host.registry import Registry

__all__ = ["SAMPLERS", "OptunaStrategy", "prunetune_add_components"]

SAMPLERS = ("tpe", "nsga2", "random")
_MODES = ("max", "min")
_LOCKS = {type(threading.Lock()): threading.Lock, type(threading.RLock()): threading.RLock}


class _PicklesWithoutLocks:
    """Pickles a sampler without its thread locks, which are made anew when it is unpickled.

    Tune pickles the searcher, sampler included, into the experiment (``Tuner`` and every
    snapshot); Optuna 5.1's NSGA-II sampler holds a lock, which cannot be pickled.
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        locks = {k: type(v) for k, v in state.items() if type(v) in _LOCKS}
        for key in locks:
            del state[key]
        state["_prunetune_locks"] = [(k, t is type(threading.RLock())) for k, t in locks.items()]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        locks = state.pop("_prunetune_locks", [])
        self.__dict__.update(state)
        for key, reentrant in locks:
            setattr(self, key, threading.RLock() if reentrant else threading.Lock())


_SAMPLER_CLASSES = {"tpe": "TPESampler", "nsga2": "NSGAIISampler", "random": "RandomSampler"}


class _KnowsOnlyItsTrials:
    """Ignores results of trials the searcher never suggested.

    After a driver is killed, ``Tuner.restore`` can bring back a trial that Tune's experiment
    state holds but the searcher's own snapshot, taken a moment earlier, does not; Ray's
    ``OptunaSearch`` then fails the whole resumed search on that trial's first result. The
    searcher only loses what it would have learnt from that one trial.
    """

    _ot_trials: dict[str, Any]

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_result(trial_id, result)  # type: ignore[misc]

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if trial_id in self._ot_trials:
            super().on_trial_complete(trial_id, result, error)  # type: ignore[misc]


def __getattr__(name: str) -> type:
    """``_Picklable<Sampler>`` and ``_ResumableOptunaSearch`` classes, made on first use so that
    Optuna and Ray load only then; a pickled searcher finds its classes here by name, as any
    module-level class."""
    prefix = "_Picklable"
    base_name = name[len(prefix):] if name.startswith(prefix) else None
    if name == "_ResumableOptunaSearch":
        from ray.tune.search.optuna import OptunaSearch

        bases: tuple[type, ...] = (_KnowsOnlyItsTrials, OptunaSearch)
    elif base_name in _SAMPLER_CLASSES.values():
        import optuna

        bases = (_PicklesWithoutLocks, getattr(optuna.samplers, base_name))
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    cls = type(name, bases, {"__module__": __name__})
    globals()[name] = cls
    return cls


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
        cls = __getattr__(f"_Picklable{_SAMPLER_CLASSES[self.config.sampler]}")
        if self.config.sampler == "tpe":
            return cls(seed=seed, n_startup_trials=self.config.n_startup_trials)
        return cls(seed=seed)

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
        # OptunaSearch makes a multi-objective study only when metric and mode are lists.
        several = len(metrics) > 1
        return __getattr__("_ResumableOptunaSearch")(
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
