"""Search spaces: define-by-run functions from an Optuna trial to a student candidate.

A space suggests parameters with stable names, so runs compare on the leaderboard:

- ``ratio`` (one global ratio) and ``ratio:<group>`` (per group, named by its first layer),
- ``kernel:<conv>`` (a kernel size per conv),
- ``scorer``, ``distiller``, ``T``, ``alpha`` (optional component choices).

A space may also fix some of these names to constants (:meth:`SearchSpace.constants`, e.g. the
global ``ratio`` of a kernel-only search).

:class:`Candidate` is the one owner of the conversion between parameters and plans:
:meth:`Candidate.from_params` reads the suggested parameters (merged with the constants) in the
trial, and :meth:`Candidate.params` writes a candidate in those names, for the points a search
evaluates first. Apart from :meth:`SearchSpace.suggest`, a space speaks in candidates.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import kernel_layers
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    import optuna

__all__ = [
    "DEFAULT_KERNEL_SIZES",
    "Candidate",
    "DefineByRun",
    "ModelStructure",
    "SearchSpace",
    "check_kernel_sizes",
    "kernel_param",
    "ratio_param",
]

RATIO = "ratio"
RATIO_PREFIX = "ratio:"
KERNEL_PREFIX = "kernel:"
DISTILLER_OPTIONS = ("T", "alpha")
#: The kernel sizes a space or strategy offers when its options name none.
DEFAULT_KERNEL_SIZES = (3, 5, 7)


def ratio_param(group: str) -> str:
    """The name of ``group``'s pruning ratio among a space's parameters."""
    return RATIO_PREFIX + group


def kernel_param(conv: str) -> str:
    """The name of ``conv``'s kernel size among a space's parameters."""
    return KERNEL_PREFIX + conv


def check_kernel_sizes(sizes: Sequence[int]) -> None:
    """Raise ValueError unless ``sizes`` is a non-empty list of distinct positive odd integers."""
    if not sizes:
        raise ValueError("kernel_sizes must name at least one size")
    bad = [s for s in sizes if isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % 2 == 0]
    if bad:
        listed = ", ".join(map(str, bad))
        raise ValueError(f"kernel_sizes must be positive odd integers (got {listed})")
    if len(set(sizes)) != len(sizes):
        raise ValueError(f"kernel_sizes has duplicates: {tuple(sizes)}")


@dataclasses.dataclass(frozen=True)
class ModelStructure:
    """What a search space may vary in a teacher.

    Attributes:
        groups: Prunable group name -> number of channels.
        kernels: Conv layer name -> kernel size, for convs with a kernel larger than 1.
    """

    groups: Mapping[str, int]
    kernels: Mapping[str, int]

    @classmethod
    def of(cls, model: nn.Module, example_input: torch.Tensor) -> ModelStructure:
        """The structure of ``model``."""
        groups = {g.name: g.size for g in find_groups(model, example_input)}
        return cls(groups=groups, kernels=dict(kernel_layers(model)))


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One student to train: a plan, and optionally its own scorer and distiller settings."""

    plan: StudentPlan
    scorer: str | None = None
    distiller: str | None = None
    distiller_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], round_to: int | None = None) -> Candidate:
        """The candidate a space's suggested parameters describe."""
        # Rounded: Optuna's stepped floats arrive as 0.6000000000000001.
        ratios = {k[len(RATIO_PREFIX):]: round(float(v), 6) for k, v in params.items() if k.startswith(RATIO_PREFIX)}
        kernels = {k[len(KERNEL_PREFIX):]: int(v) for k, v in params.items() if k.startswith(KERNEL_PREFIX)}
        plan = StudentPlan(ratio=round(float(params.get(RATIO, 0.0)), 6), ratios=ratios, kernels=kernels, round_to=round_to)
        options = {k: params[k] for k in DISTILLER_OPTIONS if k in params}
        return cls(plan, params.get("scorer"), params.get("distiller"), options)

    def params(self) -> dict[str, Any]:
        """This candidate in a space's parameter names: the inverse of :meth:`from_params` for
        the plan's ratios and kernels and the component choices. The global ``ratio`` is named
        only where it matters: when it is not 0, or when no group has a ratio of its own."""
        plan = self.plan
        out: dict[str, Any] = {}
        if plan.ratio != 0.0 or not plan.ratios:
            out[RATIO] = plan.ratio
        out |= {ratio_param(g): r for g, r in plan.ratios.items()}
        out |= {kernel_param(c): k for c, k in plan.kernels.items()}
        if self.scorer is not None:
            out["scorer"] = self.scorer
        if self.distiller is not None:
            out["distiller"] = self.distiller
        return out | {k: self.distiller_options[k] for k in DISTILLER_OPTIONS if k in self.distiller_options}


class SearchSpace(abc.ABC):
    """A search-space plugin. Subclasses declare a frozen dataclass ``Config``.

    :meth:`suggest` is a pure define-by-run function: it only calls ``trial.suggest_*`` (no
    training, no I/O), so Optuna samples it fast.
    """

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        """Suggest this space's parameters on ``trial`` (names as in the module docstring)."""

    def baseline(self, structure: ModelStructure, ratio: float) -> Candidate | None:
        """The uniform plan at ``ratio`` as this space holds it (on its grid, the teacher's
        kernels), evaluated first so the standard recipe is always among the trials; None when
        the space cannot express it. Its :meth:`Candidate.params`, with :meth:`constants`, must
        be exactly what :meth:`suggest` asks for."""
        return None

    def with_ratios(self, structure: ModelStructure, ratios: Mapping[str, float]) -> Candidate | None:
        """The plan with these per-group ratios (and the teacher's kernels) as this space holds
        it, evaluated early as a seeded start; None when the space has no per-group ratios. A
        group missing from ``ratios`` gets 0."""
        return None

    def constants(self) -> dict[str, Any]:
        """Parameters this space fixes rather than searches, in the same names as the suggested
        ones; the trial merges them into the suggested parameters (``trial.params | constants``)
        before :meth:`Candidate.from_params`. Empty by default."""
        return {}

    def kernel_sizes(self) -> tuple[int, ...]:
        """The kernel sizes this space may give a conv; empty (the default) where it changes none.
        The search times each of them for the latency table."""
        return ()


@dataclasses.dataclass(frozen=True)
class DefineByRun:
    """A space bound to a teacher's structure: the ``(trial) -> constants`` function Optuna runs.

    A plain picklable object (not a closure), since searchers save their state with ``pickle``.
    """

    space: SearchSpace
    structure: ModelStructure

    def __call__(self, trial: optuna.Trial) -> dict[str, Any] | None:
        self.space.suggest(trial, self.structure)
        return dict(self.space.constants()) or None

    def point(self, candidate: Candidate) -> dict[str, Any]:
        """``candidate`` as a point a searcher evaluates: its parameters less the constants,
        which the trial adds back (as it does to every suggestion)."""
        constants = self.space.constants()
        return {k: v for k, v in candidate.params().items() if k not in constants}

    def candidate(self, params: Mapping[str, Any], round_to: int | None = None) -> Candidate:
        """The candidate of a trial's suggested ``params`` and the space's constants."""
        return Candidate.from_params(dict(params) | self.space.constants(), round_to)

    def baseline(self, ratio: float) -> dict[str, Any] | None:
        """The point of the space's uniform plan at ``ratio`` (see :meth:`SearchSpace.baseline`)."""
        candidate = self.space.baseline(self.structure, ratio)
        return None if candidate is None else self.point(candidate)

    def on_grid(self, ratios: Mapping[str, float]) -> dict[str, float] | None:
        """Per-group ``ratios`` as the space holds them (on its grid); None where it has none."""
        candidate = self.space.with_ratios(self.structure, ratios)
        return None if candidate is None else dict(candidate.plan.ratios)

    def with_ratios(self, ratios: Mapping[str, float]) -> dict[str, Any] | None:
        """The point of the plan with per-group ``ratios`` (see :meth:`SearchSpace.with_ratios`)."""
        candidate = self.space.with_ratios(self.structure, ratios)
        return None if candidate is None else self.point(candidate)
