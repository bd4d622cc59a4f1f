"""Pieces shared by the built-in search spaces: option checks, suggestions and baselines."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from prunetune.components.spaces import Candidate, ModelStructure, kernel_param, ratio_param
from prunetune.structure.plan import SAMPLED_MAX_RATIO, StudentPlan

if TYPE_CHECKING:
    import optuna

__all__ = [
    "ALPHA_RANGE",
    "BASELINE_ALPHA",
    "BASELINE_T",
    "T_RANGE",
    "ChoiceOptions",
    "RatioSpaceConfig",
    "baseline_candidate",
    "baseline_kernels",
    "check_choices",
    "check_ratio",
    "check_ratio_options",
    "snapped_ratios",
    "nearest_kernel",
    "ratio_grid_top",
    "snap_ratio",
    "suggest_choices",
    "suggest_group_ratios",
    "suggest_kernels",
    "suggest_ratio",
]

T_RANGE = (1.0, 8.0)
ALPHA_RANGE = (0.1, 1.0)
# The standard recipe's soft-target settings (the hinton distiller's defaults), for baselines.
BASELINE_T = 4.0
BASELINE_ALPHA = 0.5
# Grid values are rounded to this many decimals, so 7 * 0.05 reads 0.35 and not 0.35000000000000003.
_DECIMALS = 10


class ChoiceOptions(Protocol):
    """The config fields of the optional component choices."""

    @property
    def scorers(self) -> tuple[str, ...]: ...

    @property
    def distillers(self) -> tuple[str, ...]: ...

    @property
    def search_temperature(self) -> bool: ...


def check_ratio(ratio: float, what: str) -> None:
    """Raise ValueError unless ``ratio`` is in [0, 1)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"{what} must be in [0, 1) (got {ratio})")


def check_ratio_options(max_ratio: float, ratio_step: float | None) -> None:
    """Raise ValueError unless ``max_ratio`` is in (0, 1) and ``ratio_step`` in (0, max_ratio]."""
    if not 0.0 < max_ratio < 1.0:
        raise ValueError(f"max_ratio must be in (0, 1) (got {max_ratio})")
    if ratio_step is not None and not 0.0 < ratio_step <= max_ratio:
        raise ValueError(
            f"ratio_step must be in (0, max_ratio={max_ratio}] or None (got {ratio_step})"
        )


def check_choices(scorers: Sequence[str], distillers: Sequence[str]) -> None:
    """Raise ValueError on an empty name or a duplicate in ``scorers`` or ``distillers``."""
    for what, names in (("scorers", scorers), ("distillers", distillers)):
        if any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"{what} must be non-empty names (got {tuple(names)})")
        if len(set(names)) != len(names):
            raise ValueError(f"{what} has duplicates: {tuple(names)}")


def ratio_grid_top(max_ratio: float, step: float | None) -> float:
    """The largest searchable ratio: ``max_ratio``, or the last grid point not above it."""
    if step is None:
        return max_ratio
    return round(step * math.floor(max_ratio / step + 1e-9), _DECIMALS)


def snap_ratio(ratio: float, max_ratio: float, step: float | None) -> float:
    """``ratio`` rounded down onto the ``step`` grid and clipped to [0, top of the grid].

    Down, so that under a budget the trial's repair (which raises every ratio by one common
    fraction until the plan fits) lands on the plan ``ratio`` stands for, at the budget: the
    exact uniform ratio for a baseline. Rounding up would cut more than needed (at a 10% budget
    a uniform 0.71 became 0.75, about 7% of the MACs).
    """
    top = ratio_grid_top(max_ratio, step)
    if step is not None:
        ratio = round(step * math.floor(ratio / step + 1e-9), _DECIMALS)
    return min(max(ratio, 0.0), top)


def snapped_ratios(
    structure: ModelStructure, ratios: Mapping[str, float], max_ratio: float, step: float | None
) -> dict[str, float]:
    """The ratio of every group of ``structure``, each snapped onto the grid (see
    :func:`snap_ratio`); a group missing from ``ratios`` gets 0."""
    return {g: snap_ratio(ratios.get(g, 0.0), max_ratio, step) for g in structure.groups}


def suggest_ratio(trial: optuna.Trial, name: str, max_ratio: float, step: float | None) -> float:
    """Suggest ratio ``name`` in [0, max_ratio], on the ``step`` grid when there is one."""
    return trial.suggest_float(name, 0.0, ratio_grid_top(max_ratio, step), step=step)


def suggest_group_ratios(
    trial: optuna.Trial, structure: ModelStructure, max_ratio: float, step: float | None
) -> None:
    """Suggest ``ratio:<group>`` for every group of ``structure``."""
    for group in structure.groups:
        suggest_ratio(trial, ratio_param(group), max_ratio, step)


def suggest_kernels(trial: optuna.Trial, structure: ModelStructure, sizes: Sequence[int]) -> None:
    """Suggest ``kernel:<conv>`` from ``sizes`` for every resizable conv of ``structure``."""
    for conv in structure.kernels:
        trial.suggest_categorical(kernel_param(conv), tuple(sizes))


def suggest_choices(trial: optuna.Trial, options: ChoiceOptions) -> None:
    """Suggest ``scorer``, ``distiller``, ``T`` and ``alpha`` where ``options`` asks for them."""
    if options.scorers:
        trial.suggest_categorical("scorer", tuple(options.scorers))
    if options.distillers:
        trial.suggest_categorical("distiller", tuple(options.distillers))
    if options.search_temperature:
        trial.suggest_float("T", *T_RANGE)
        trial.suggest_float("alpha", *ALPHA_RANGE)


def nearest_kernel(size: int, sizes: Sequence[int]) -> int:
    """The size in ``sizes`` closest to ``size``; the smaller one on a tie."""
    return min(sizes, key=lambda s: (abs(s - size), s))


def baseline_kernels(structure: ModelStructure, sizes: Sequence[int]) -> dict[str, int]:
    """The teacher's kernel size (or the nearest one in ``sizes``) of every conv."""
    return {conv: nearest_kernel(k, sizes) for conv, k in structure.kernels.items()}


def baseline_candidate(plan: StudentPlan, options: ChoiceOptions) -> Candidate:
    """``plan`` with the first scorer and distiller offered, and the standard recipe's ``T`` and
    ``alpha`` where they are searched."""
    distiller_options: dict[str, Any] = {}
    if options.search_temperature:
        distiller_options = {"T": BASELINE_T, "alpha": BASELINE_ALPHA}
    return Candidate(plan, options.scorers[0] if options.scorers else None,
                     options.distillers[0] if options.distillers else None, distiller_options)


@dataclasses.dataclass(frozen=True)
class RatioSpaceConfig:
    """Options of a space that searches pruning ratios (one global, or one per group).

    Attributes:
        max_ratio: Largest ratio sampled for a group, in (0, 1); the search's ``--max-ratio``
            caps what the budget repair may raise it to.
        ratio_step: Grid of the ratios (None: continuous).
        scorers: Scorers to choose from per trial (empty: the run's scorer, not searched).
        distillers: Distillers to choose from per trial (empty: not searched).
        search_temperature: Also search the distiller's ``T`` in [1, 8] and ``alpha`` in
            [0.1, 1].
    """

    max_ratio: float = SAMPLED_MAX_RATIO
    ratio_step: float | None = 0.05
    scorers: tuple[str, ...] = ()
    distillers: tuple[str, ...] = ()
    search_temperature: bool = False

    def __post_init__(self) -> None:
        check_ratio_options(self.max_ratio, self.ratio_step)
        check_choices(self.scorers, self.distillers)
