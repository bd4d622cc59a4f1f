"""The ``structure_diversity`` strategy: a greedy, layer-by-layer choice of kernel sizes.

The design notes' "structure diversity" (sections 3.4 and 4.2). The *Fixed Net* is the run's
teacher: frozen, it is the template whose outputs (and features, with the ``hint`` distiller)
guide every candidate's distillation. The *Optimal Net* is found one layer at a time:

1. The starting structure is the space's baseline (the uniform plan meeting the MACs budget,
   with the teacher's kernel sizes); its ratios stay fixed throughout (a trial still repairs a
   candidate whose larger kernels exceed the budget, as in any search).
2. For the next layer, one candidate per kernel size is trained (Ray Tune runs them in
   parallel); the candidate of the current size is the current structure, measured already,
   so it is not trained again.
3. The size with the lowest validation loss is chosen. Its change is accepted if that
   candidate's validation accuracy beats the current structure's; otherwise the previous
   structure is kept and the search stops (or, with ``stop_early=false``, moves on).
4. Repeat until every layer is done, or Tune's ``num_samples`` is spent.

Fine-tuning: every trial distils its student from the teacher for the run's ``--epochs``, so the
chosen candidate's trial *is* the replaced structure fine-tuned with the distiller; a second
trial of the same parameters (same seed) would only repeat it. The best structure found is then
distilled again for ``--final-epochs``, as for any search. Stride variants are not searched:
a new stride changes every later feature map's size, which kernel-size surgery does not do.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from prunetune import hookimpl
from prunetune.components.spaces import DEFAULT_KERNEL_SIZES, DefineByRun, check_kernel_sizes, kernel_param
from prunetune.components.strategy import Strategy
from prunetune.errors import UsageError

if TYPE_CHECKING:
    import optuna
    from ray.tune.search import Searcher

    from prunetune.host.registry import Registry

__all__ = [
    "GreedyKernelSearch",
    "LayerStep",
    "Outcome",
    "StructureDiversitySearch",
    "StructureDiversityStrategy",
    "choose_size",
    "prunetune_add_components",
]

#: The metric that picks a layer's kernel size, and the one that accepts the change.
LOSS = "val_loss"
ACCURACY = "val_accuracy"
#: What a searcher answers when it has nothing more to propose (Ray's ``Searcher.FINISHED``).
FINISHED = "FINISHED"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a finished trial measured; a failed or unmeasured trial ranks last."""

    val_loss: float = math.inf
    val_accuracy: float = -math.inf

    @classmethod
    def of(cls, result: Mapping[str, Any] | None, error: bool = False) -> Outcome:
        """The outcome of a trial's final ``result`` (None, an error or NaNs rank last)."""
        if error or not result:
            return cls()
        return cls(_number(result.get(LOSS), math.inf), _number(result.get(ACCURACY), -math.inf))


def _number(value: Any, missing: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return missing
    return missing if math.isnan(number) else number


@dataclasses.dataclass(frozen=True)
class LayerStep:
    """One layer's diversification: each size's outcome, the size chosen, and the verdict.

    Attributes:
        layer: The conv whose kernel size was varied.
        outcomes: Kernel size -> outcome of the candidate with that size.
        chosen: The size with the lowest validation loss.
        accepted: Whether the chosen size beat the previous structure's validation accuracy.
    """

    layer: str
    outcomes: Mapping[int, Outcome]
    chosen: int
    accepted: bool


def choose_size(outcomes: Mapping[int, Outcome]) -> int:
    """The size with the lowest validation loss; the smaller kernel on a tie."""
    return min(outcomes, key=lambda size: (outcomes[size].val_loss, size))


class GreedyKernelSearch:
    """The greedy kernel-size search (see the module docstring), with Ray Tune's searcher API.

    Ray-free, so this module imports cheaply; :class:`StructureDiversitySearch` is the same
    class made a Ray ``Searcher``. Its whole state is plain data, so :meth:`save` pickles it and
    ``Tuner.restore`` resumes it.

    Attributes:
        history: Every layer decided so far, in order.
        current: Parameters of the structure kept so far.
        current_outcome: What that structure measured (ranks last until the baseline's
            result arrives).
    """

    def __init__(
        self,
        baseline: Mapping[str, Any],
        layers: Mapping[str, int],
        sizes: Sequence[int],
        constants: Mapping[str, Any] | None = None,
        stop_early: bool = True,
    ) -> None:
        """Start from ``baseline``.

        Args:
            baseline: Parameters of the starting structure (evaluated first).
            layers: Conv name -> its teacher kernel size, in the order to diversify them.
            sizes: Kernel sizes each layer may take.
            constants: Parameters added to every suggestion (those a space fixes).
            stop_early: Stop at the first layer whose change does not improve accuracy.
        """
        self.current: dict[str, Any] = dict(baseline)
        self.current_outcome = Outcome()
        self.history: list[LayerStep] = []
        self._layers = dict(layers)
        self._order = list(layers)
        self._sizes = tuple(sizes)
        self._constants = dict(constants or {})
        self._stop_early = stop_early
        self._index = 0  # the layer being diversified
        self._queue: list[int | None] = [None]  # sizes still to suggest; None: the baseline
        self._pending: dict[str, int | None] = {}
        self._outcomes: dict[int, Outcome] = {}
        self._finished = False

    @property
    def finished(self) -> bool:
        """Whether the search has nothing left to propose."""
        return self._finished

    def set_search_properties(self, metric: str | None, mode: str | None, config: dict[str, Any],
                              **spec: Any) -> bool:
        # The parameters come from the baseline and the layer list, not from Tune's config.
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        """The next candidate's parameters, None while candidates run, or ``FINISHED``."""
        if self._finished:
            return FINISHED
        if not self._queue:
            return None
        size = self._queue.pop(0)
        self._pending[trial_id] = size
        return self._params(size) | self._constants

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None,
                          error: bool = False) -> None:
        """Record a candidate's outcome; decide the layer once all its candidates are in."""
        if trial_id not in self._pending:
            return
        size = self._pending.pop(trial_id)
        outcome = Outcome.of(result, error)
        if size is None:
            self.current_outcome = outcome
        else:
            self._outcomes[size] = outcome
        if not self._pending and not self._queue:
            if size is not None:
                self._decide()
            self._start_layer()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "wb") as f:
            pickle.dump(self._state(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            self.__dict__.update(pickle.load(f))

    def _state(self) -> dict[str, Any]:
        # Only this class's fields: Ray's Searcher keeps its own (metric, mode) in the object.
        names = ("current", "current_outcome", "history", "_layers", "_order", "_sizes", "_constants",
                 "_stop_early", "_index", "_queue", "_pending", "_outcomes", "_finished")
        return {name: getattr(self, name) for name in names}

    def _layer(self) -> str:
        return self._order[self._index]

    def _size_now(self, layer: str) -> int:
        return int(self.current.get(kernel_param(layer), self._layers[layer]))

    def _params(self, size: int | None) -> dict[str, Any]:
        if size is None:
            return dict(self.current)
        return self.current | {kernel_param(self._layer()): size}

    def _start_layer(self) -> None:
        """Queue the next layer's new candidates; decide at once any layer that needs none."""
        while self._index < len(self._order) and not self._finished:
            now = self._size_now(self._layer())
            self._outcomes = {now: self.current_outcome} if now in self._sizes else {}
            self._queue = [s for s in self._sizes if s != now]
            if self._queue:
                return
            self._decide()
        self._finished = True

    def _decide(self) -> None:
        """Keep the layer's best size if it improves accuracy; then move on, or stop."""
        layer = self._layer()
        chosen = choose_size(self._outcomes)
        best = self._outcomes[chosen]
        accepted = best.val_accuracy > self.current_outcome.val_accuracy
        self.history.append(LayerStep(layer, dict(self._outcomes), chosen, accepted))
        if accepted:
            self.current = self.current | {kernel_param(layer): chosen}
            self.current_outcome = best
        elif self._stop_early:
            self._finished = True
        self._index += 1
        self._outcomes = {}


def _ray_searcher_class() -> type:
    """:class:`GreedyKernelSearch` as a Ray Tune ``Searcher`` (Tune accepts no other kind),
    made once."""
    made = globals().get("StructureDiversitySearch")
    if made is not None:
        return made
    from ray.tune.search import Searcher

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        Searcher.__init__(self, metric=ACCURACY, mode="max")
        GreedyKernelSearch.__init__(self, *args, **kwargs)

    doc = "A :class:`GreedyKernelSearch` that Ray Tune runs (a ``ray.tune.search.Searcher``)."
    made = type("StructureDiversitySearch", (GreedyKernelSearch, Searcher),
                {"__init__": __init__, "__module__": __name__, "__doc__": doc})
    globals()["StructureDiversitySearch"] = made
    return made


if TYPE_CHECKING:

    class StructureDiversitySearch(GreedyKernelSearch, Searcher):
        """A :class:`GreedyKernelSearch` that Ray Tune runs (a ``ray.tune.search.Searcher``)."""


def __getattr__(name: str) -> Any:
    # Made on first use, so that loading the plugin does not import Ray; pickle finds the
    # class here by name, as it would a class defined at module level.
    if name == "StructureDiversitySearch":
        return _ray_searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class StructureDiversityStrategy(Strategy):
    """Per layer, the kernel size of lowest distillation loss, kept while accuracy improves.

    The design notes' structure diversity (Fixed Net / Optimal Net): the searcher ranks a
    layer's candidates by ``val_loss`` and accepts the change on ``val_accuracy``. It is
    deterministic, so ``seed`` is unused, and single-objective.
    """

    @dataclasses.dataclass(frozen=True)
    class Config:
        """Options of the ``structure_diversity`` strategy.

        Attributes:
            layers: Convs to diversify, in the model's order (empty: every conv with a kernel
                larger than 1x1).
            kernel_sizes: Sizes to try per layer (empty: the search space's ``kernel_sizes``,
                else 3, 5, 7).
            stop_early: Stop at the first layer whose change does not improve validation
                accuracy, as the design notes say; false keeps that layer's size and goes on.
        """

        layers: tuple[str, ...] = ()
        kernel_sizes: tuple[int, ...] = ()
        stop_early: bool = True

        def __post_init__(self) -> None:
            if self.kernel_sizes:
                check_kernel_sizes(self.kernel_sizes)
            if len(set(self.layers)) != len(self.layers):
                raise ValueError(f"layers has duplicates: {self.layers}")

    def __init__(self, config: Config) -> None:
        self.config = config

    def searcher(
        self,
        space: Callable[[optuna.Trial], None],
        metrics: Sequence[str],
        modes: Sequence[str],
        seed: int,
        points_to_evaluate: Sequence[dict[str, Any]] = (),
    ) -> StructureDiversitySearch:
        """The greedy searcher, starting from ``points_to_evaluate[0]``; see :meth:`Strategy.searcher`.

        ``space`` is a :class:`~prunetune.components.spaces.DefineByRun`: its structure names the layers
        and its space gives the kernel sizes and the constants. Other points are not used.

        Raises:
            UsageError: several objectives, no starting point, or an unknown layer name.
        """
        if len(metrics) != 1:
            raise UsageError(
                f"strategy 'structure_diversity' optimises accuracy only (got objectives {list(metrics)})")
        if not points_to_evaluate:
            raise UsageError("strategy 'structure_diversity' starts from the search space's baseline, "
                             "and this space has none")
        if not isinstance(space, DefineByRun):
            raise UsageError(
                "strategy 'structure_diversity' needs a search space bound to the teacher's structure")
        return _ray_searcher_class()(
            baseline=points_to_evaluate[0],
            layers=self._layers(space.structure.kernels),
            sizes=self.config.kernel_sizes or space.space.kernel_sizes() or DEFAULT_KERNEL_SIZES,
            constants=space.space.constants(),
            stop_early=self.config.stop_early,
        )

    def kernel_sizes(self) -> tuple[int, ...]:
        return tuple(self.config.kernel_sizes or ())

    def _layers(self, kernels: Mapping[str, int]) -> dict[str, int]:
        unknown = [name for name in self.config.layers if name not in kernels]
        if unknown:
            valid = ", ".join(kernels) or "none"
            raise UsageError(
                f"strategy 'structure_diversity': no resizable conv {', '.join(unknown)} (valid: {valid})")
        wanted = set(self.config.layers or kernels)
        return {name: size for name, size in kernels.items() if name in wanted}


@hookimpl
def prunetune_add_components(registry: Registry) -> None:
    registry.add_strategy("structure_diversity", StructureDiversityStrategy)
