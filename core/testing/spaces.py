"""A conformance suite for search-space plugins, and a small reference space.

Subclass :class:`SearchSpaceConformance` in a test module, name the subclass ``Test...`` and
implement :meth:`~SearchSpaceConformance.make_space`; pytest then runs every check on your
space, with real Optuna trials (Optuna must be installed)::

    from prunetune.testing.spaces import SearchSpaceConformance

    class TestMySpace(SearchSpaceConformance):
        ratio_step = 0.05  # the grid your space snaps ratios onto (1e-6 when continuous)

        def make_space(self):
            return MySpace(MySpace.Config())

The checks run on the structure of :func:`~prunetune.testing.scorers.conformance_model`
(groups ``stem`` and ``wide``, 3x3 convs ``stem``, ``block``, ``wide`` and ``depthwise``).
"""

from __future__ import annotations

import abc
import dataclasses
import math
import pickle
import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from prunetune.components.spaces import (
    DISTILLER_OPTIONS,
    RATIO,
    Candidate,
    DefineByRun,
    ModelStructure,
    SearchSpace,
    check_kernel_sizes,
    kernel_param,
    ratio_param,
)
from prunetune.structure.plan import StudentPlan
from prunetune.testing.scorers import conformance_model

if TYPE_CHECKING:
    import optuna

from prunetune.testing.contract import check_component_contract, scramble_global_rngs

__all__ = ["ConformanceSpace", "SearchSpaceConformance", "conformance_structure", "effective_plan"]

_CHOICES = ("scorer", "distiller", *DISTILLER_OPTIONS)


def conformance_structure() -> ModelStructure:
    """The structure of :func:`~prunetune.testing.scorers.conformance_model`."""
    return ModelStructure.of(conformance_model(), torch.randn(1, 3, 8, 8))


def effective_plan(plan: StudentPlan, structure: ModelStructure) -> tuple[dict[str, float], dict[str, int]]:
    """Each group's ratio and each conv's kernel size in ``plan`` (the global ``ratio`` where a
    group has none of its own, the teacher's size where a conv has none)."""
    ratios = {g: float(plan.ratios.get(g, plan.ratio)) for g in structure.groups}
    return ratios, {c: int(plan.kernels.get(c, k)) for c, k in structure.kernels.items()}


def _snap(ratio: float, step: float, top: float) -> float:
    return min(max(round(step * math.floor(ratio / step + 1e-9), 10), 0.0), top)


class ConformanceSpace(SearchSpace):
    """Reference space: a ratio per group on a grid and a kernel size per conv, ``T`` fixed.

    Parameters: ``ratio:<group>`` in ``[0, max_ratio]`` by ``ratio_step`` and
    ``kernel:<conv>`` from ``kernel_sizes``; the constant ``T``.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the reference space.

        Attributes:
            max_ratio: Largest ratio, a multiple of ``ratio_step``.
            ratio_step: Grid of the ratios.
            kernel_sizes: Kernel sizes each conv may take.
            temperature: The fixed distillation temperature ``T``.
        """

        max_ratio: float = 0.5
        ratio_step: float = 0.1
        kernel_sizes: tuple[int, ...] = (3, 5, 7)
        temperature: float = 4.0

        def __post_init__(self) -> None:
            check_kernel_sizes(self.kernel_sizes)

    def __init__(self, config: Config) -> None:
        self.config = config

    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        cfg = self.config
        for group in structure.groups:
            trial.suggest_float(ratio_param(group), 0.0, cfg.max_ratio, step=cfg.ratio_step)
        for conv in structure.kernels:
            trial.suggest_categorical(kernel_param(conv), cfg.kernel_sizes)

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate:
        return self.with_ratios(structure, dict.fromkeys(structure.groups, ratio))

    def with_ratios(self, structure: ModelStructure, ratios: Mapping[str, float]) -> Candidate:
        cfg = self.config
        snapped = {g: _snap(ratios.get(g, 0.0), cfg.ratio_step, cfg.max_ratio) for g in structure.groups}
        kernels = {conv: min(cfg.kernel_sizes, key=lambda s: (abs(s - size), s))
                   for conv, size in structure.kernels.items()}
        return Candidate(StudentPlan(ratios=snapped, kernels=kernels))

    def constants(self) -> dict[str, Any]:
        return {"T": self.config.temperature}

    def kernel_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.kernel_sizes)


class _SuggestOnlyTrial:
    """A trial that lets a space call ``suggest_*`` and read its parameters, and nothing else."""

    _READABLE = frozenset({"params", "distributions", "number"})

    def __init__(self, trial: optuna.Trial) -> None:
        self._trial = trial

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("suggest_") and name not in self._READABLE:
            raise AssertionError(f"suggest used trial.{name}: a space may only call trial.suggest_*")
        return getattr(self._trial, name)


def _study(seed: int) -> optuna.Study:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


class SearchSpaceConformance(abc.ABC):
    """Checks every search space must pass; subclass it as ``Test...`` and implement
    ``make_space``.

    Attributes:
        ratio_step: How far a ratio of :meth:`~SearchSpace.baseline` or
            :meth:`~SearchSpace.with_ratios` may lie from the one asked for (the space's grid).
        baseline_ratios: The uniform ratios asked of ``baseline``.
        seeded_ratios: Per-group ratios asked of ``with_ratios`` (one per group, in turn).
        trials: How many random trials the sampling checks draw.
    """

    ratio_step: float = 0.05
    baseline_ratios: tuple[float, ...] = (0.0, 0.3, 0.52)
    seeded_ratios: tuple[float, ...] = (0.37, 0.1, 0.6)
    trials: int = 8

    @abc.abstractmethod
    def make_space(self) -> SearchSpace:
        """A fresh instance of the space under test."""

    def make_structure(self) -> ModelStructure:
        """The structure searched; override to test on another model."""
        return conformance_structure()

    def _sample(self, space: SearchSpace | DefineByRun, seed: int = 0) -> list[dict[str, Any]]:
        bound = space if isinstance(space, DefineByRun) else DefineByRun(space, self.make_structure())
        study, out = _study(seed), []
        for _ in range(self.trials):
            trial = study.ask()
            bound.space.suggest(_SuggestOnlyTrial(trial), bound.structure)  # type: ignore[arg-type]
            out.append(dict(trial.params))
            study.tell(trial, 0.0)
        return out

    def _sizes(self, space: SearchSpace, teacher: int) -> set[int]:
        return set(space.kernel_sizes()) | {teacher}

    def _check_replays(self, space: SearchSpace, candidate: Candidate, what: str) -> None:
        """``candidate`` is one of the space's own: suggest on a FixedTrial of its parameters asks
        exactly for them, and they read back as the same candidate."""
        import optuna

        point, constants = candidate.params(), space.constants()
        again = Candidate.from_params(point | constants)
        assert again.plan == candidate.plan, f"{what}: its parameters read back as {again.plan}, not {candidate.plan}"
        assert (again.scorer, again.distiller) == (candidate.scorer, candidate.distiller), f"{what}: choices lost"
        searched = {k: v for k, v in point.items() if k not in constants}
        assert all(point[k] == v for k, v in constants.items() if k in point), f"{what} contradicts constants()"
        trial = optuna.trial.FixedTrial(searched)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            space.suggest(trial, self.make_structure())  # type: ignore[arg-type]
        # Optuna warns, rather than raises, on a fixed value outside its distribution.
        outside = [w for w in caught if not issubclass(w.category, DeprecationWarning)]
        assert not outside, f"{what} is outside the space: {outside[0].message}"
        assert trial.params == searched, f"{what} names other parameters than suggest does"

    def test_declares_config_and_description(self) -> None:
        check_component_contract(self.make_space(), SearchSpace, "search space")

    def test_suggest_only_suggests_and_is_seeded(self) -> None:
        scramble_global_rngs(1)
        first = self._sample(self.make_space(), seed=3)
        scramble_global_rngs(2)
        assert first == self._sample(self.make_space(), seed=3), "same seed, other parameters"
        assert all(first), "suggest suggested nothing"

    def test_parameter_names_are_the_known_ones(self) -> None:
        space, structure = self.make_space(), self.make_structure()
        known = {RATIO, *_CHOICES, *map(ratio_param, structure.groups), *map(kernel_param, structure.kernels)}
        for params in self._sample(space):
            unknown = set(params | space.constants()) - known
            assert not unknown, f"parameters no plan reads, or of no group or conv: {sorted(unknown)}"

    def test_suggested_candidates_fit_the_structure(self) -> None:
        space, structure = self.make_space(), self.make_structure()
        for params in self._sample(space):
            plan = Candidate.from_params(params | space.constants()).plan
            assert set(plan.ratios) <= set(structure.groups), f"ratios of no group: {dict(plan.ratios)}"
            assert set(plan.kernels) <= set(structure.kernels), f"kernels of no conv: {dict(plan.kernels)}"
            for name, ratio in {RATIO: plan.ratio, **plan.ratios}.items():
                assert 0.0 <= ratio < 1.0, f"{name} = {ratio}"
            for conv, size in plan.kernels.items():
                allowed = self._sizes(space, structure.kernels[conv])
                assert size % 2 == 1 and size in allowed, f"kernel:{conv} = {size}, not in {sorted(allowed)}"

    def test_kernel_sizes_are_distinct_odd_ints(self) -> None:
        sizes = self.make_space().kernel_sizes()
        assert isinstance(sizes, tuple), f"kernel_sizes() gave a {type(sizes).__name__}"
        if sizes:
            check_kernel_sizes(sizes)

    def test_baseline_is_the_uniform_plan_with_the_teachers_kernels(self) -> None:
        space, structure = self.make_space(), self.make_structure()
        fixed = space.constants().get(RATIO)
        for asked in self.baseline_ratios:
            point = space.baseline(structure, asked)
            if point is None:
                continue
            ratios, kernels = effective_plan(point.plan, structure)
            # A space that fixes the global ratio as a constant keeps it (kernel_only does).
            want = asked if fixed is None else float(fixed)
            assert len(set(ratios.values())) == 1, f"baseline({asked}) is not uniform: {ratios}"
            assert all(abs(r - want) <= self.ratio_step + 1e-9 for r in ratios.values()), (
                f"baseline({asked}) has ratios {ratios}, want {want} within {self.ratio_step}")
            self._check_teachers_kernels(space, structure, kernels, f"baseline({asked})")
            self._check_replays(space, point, f"baseline({asked})")

    def test_with_ratios_round_trips_the_ratios(self) -> None:
        space, structure = self.make_space(), self.make_structure()
        wanted = {g: self.seeded_ratios[i % len(self.seeded_ratios)] for i, g in enumerate(structure.groups)}
        point = space.with_ratios(structure, wanted)
        if point is None:
            return
        ratios, kernels = effective_plan(point.plan, structure)
        for group, ratio in wanted.items():
            assert abs(ratios[group] - ratio) <= self.ratio_step + 1e-9, (
                f"with_ratios gave {group} {ratios[group]}, asked {ratio} (grid {self.ratio_step})")
        self._check_teachers_kernels(space, structure, kernels, "with_ratios")
        self._check_replays(space, point, "with_ratios")

    def _check_teachers_kernels(
        self, space: SearchSpace, structure: ModelStructure, kernels: Mapping[str, int], what: str
    ) -> None:
        offered = space.kernel_sizes()
        for conv, teacher in structure.kernels.items():
            # Where the space cannot give the teacher's size, any size it offers will do.
            if not offered or teacher in offered:
                assert kernels[conv] == teacher, f"{what} changes {conv}'s kernel to {kernels[conv]}"
            else:
                assert kernels[conv] in offered, f"{what} gives {conv} kernel {kernels[conv]}"

    def test_bound_space_pickles(self) -> None:
        bound = DefineByRun(self.make_space(), self.make_structure())
        copy = pickle.loads(pickle.dumps(bound))
        assert self._sample(copy, seed=5) == self._sample(bound, seed=5)
        study = _study(0)
        assert copy(study.ask()) == (dict(bound.space.constants()) or None)
