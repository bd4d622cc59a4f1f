"""Search spaces: define-by-run functions from an Optuna trial to a student candidate.

A space suggests parameters with stable names, so runs compare on the leaderboard:

- ``ratio`` (one global ratio) and ``ratio:<group>`` (per group, named by its first layer),
- ``kernel:<conv>`` (a kernel size per conv),
- ``scorer``, ``distiller``, ``T``, ``alpha`` (optional component choices).

A space may also fix some of these names to constants (:meth:`SearchSpace.constants`, e.g. the
global ``ratio`` of a kernel-only search). :meth:`Candidate.from_params` turns the suggested
parameters, merged with the constants, back into a plan, in the trial.
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

__all__ = ["DEFAULT_KERNEL_SIZES", "Candidate", "DefineByRun", "ModelStructure", "SearchSpace", "check_kernel_sizes"]

RATIO = "ratio"
RATIO_PREFIX = "ratio:"
KERNEL_PREFIX = "kernel:"
DISTILLER_OPTIONS = ("T", "alpha")
#: The kernel sizes a space or strategy offers when its options name none.
DEFAULT_KERNEL_SIZES = (3, 5, 7)


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


class SearchSpace(abc.ABC):
    """A search-space plugin. Subclasses declare a frozen dataclass ``Config``.

    :meth:`suggest` is a pure define-by-run function: it only calls ``trial.suggest_*`` (no
    training, no I/O), so Optuna samples it fast.
    """

    @abc.abstractmethod
    def suggest(self, trial: optuna.Trial, structure: ModelStructure) -> None:
        """Suggest this space's parameters on ``trial`` (names as in the module docstring)."""

    def baseline(self, structure: ModelStructure, ratio: float) -> dict[str, Any] | None:
        """Parameters of the uniform plan at ``ratio`` in this space's terms, evaluated first so
        the standard recipe is always among the trials; None when the space cannot express it."""
        return None

    def with_ratios(self, structure: ModelStructure, ratios: Mapping[str, float]) -> dict[str, Any] | None:
        """Parameters of the plan with these per-group ratios (and the teacher's kernels) in this
        space's terms, evaluated early as a seeded start; None when the space has no per-group
        ratios."""
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
