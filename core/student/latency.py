"""A per-layer latency table: what a student costs on this CPU, predicted without running it.

Trials run side by side on the same cores, so a latency a trial measured said as much about its
neighbours as about its student (issue 10). Instead the driver measures, before any trial
starts and once per machine, architecture, batch and thread count, how long each conv and
linear of the teacher takes on its own, at a grid of kept channel counts and at every kernel
size a plan may give it. A plan's latency is then the sum of its layers' times, interpolated on
that grid, plus the rest of the forward pass.

What is timed and what is folded:

- Every ``nn.Conv2d`` and ``nn.Linear`` the teacher's forward pass runs, alone, on a random
  input of its spatial size in the teacher (channel pruning and kernel surgery keep spatial
  sizes), at the kept fractions :data:`FRACTIONS` of its input and of its output channels (only
  of a dimension some channel group can cut; a depthwise conv has one, its channels), and at
  its own kernel size and each of ``kernel_sizes`` its padding allows. Layers of equal shape
  share one set of measurements. A layer the forward pass calls twice counts twice.
- Everything else (BatchNorm, activations, additions, pooling, the framework's per-call cost)
  is the *fixed part*, ``a + b * activations``, where ``activations`` is the number of values
  the convs and linears put out per image (what BatchNorm and activations then touch). ``a``
  and ``b`` come from two whole-model timings, of the teacher and of its half-width student,
  each minus its layers' sum from the table (both clamped to be non-negative).

Between grid points a layer's time is bilinear in its two channel counts, which is exact for
the usual cost model of a conv (a fixed cost, a cost per input and per output channel, and one
per pair of them). Below the smallest grid point it stays at that point's time, so it never
under-predicts there. Each grid is made non-decreasing in both counts (a point's median is
lowered to that of any point with more channels that took less: noise only ever adds time), so
a prediction never grows as channels go, and budget repair can bisect on it. A kernel size that
was not measured is scaled from the nearest measured one by the ratio of their areas.

Measuring leaves the caller's random state alone (the teacher's initialisation comes next).

Tables are cached as JSON under ``<cache>/latency`` (see
:func:`prunetune.training.teacher.default_cache_dir`), keyed by the model's layers and structure, the
input shape, batch, threads, grid, kernel sizes, torch version and CPU model."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.files import write_text_atomically
from prunetune.structure.kernels import kernel_layers
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import LayerShape, MacsCounter, layer_shapes
from prunetune.student.layer_timing import (
    FRACTIONS,
    KERNEL_SIZES,
    REPEATS,
    WARMUP,
    Timer,
    cpu_model,
    cut_dims,
    measure_entry,
    signature,
    time_forward,
    trace_layers,
)
from prunetune.training.devices import torch_threads

__all__ = ["CACHE_FOLDER", "LatencyTable", "isolated_latency", "latency_table"]

#: Where tables go, under the prunetune cache folder.
CACHE_FOLDER = "latency"
# Bump when what a key measures changes.
_FORMAT = 1

def _position(grid: Sequence[int], x: float) -> tuple[int, int, float]:
    """Neighbouring indices of ``x`` on ``grid`` and the weight of the upper one (clamped)."""
    if x <= grid[0]:
        return 0, 0, 0.0
    if x >= grid[-1]:
        return len(grid) - 1, len(grid) - 1, 0.0
    upper = next(i for i, g in enumerate(grid) if g >= x)
    lower = upper - 1
    return lower, upper, (x - grid[lower]) / (grid[upper] - grid[lower])


def _bilinear(entry: Mapping[str, Any], ms: list[list[float]], cin: float, cout: float) -> float:
    i0, i1, wi = _position(entry["in"], cin)
    j0, j1, wj = _position(entry["out"], cout)
    low = ms[i0][j0] * (1 - wj) + ms[i0][j1] * wj
    high = ms[i1][j0] * (1 - wj) + ms[i1][j1] * wj
    return low * (1 - wi) + high * wi


def _layer_ms(entry: Mapping[str, Any], shape: LayerShape) -> float:
    grids = entry["grids"]
    size = str(shape.kernel)
    if size in grids:
        scale = 1.0
    else:  # the nearest measured size, scaled by area (the larger one on a tie)
        size = min(grids, key=lambda k: (abs(int(k) - shape.kernel), -int(k)))
        scale = shape.kernel**2 / int(size) ** 2
    return scale * _bilinear(entry, grids[size], shape.in_channels, shape.out_channels)


@dataclasses.dataclass(frozen=True)
class _Layer:
    entry: str  # key into LatencyTable.entries
    calls: int  # times the forward pass runs it
    spatial_out: int  # output values per image per output channel


class LatencyTable:
    """Per-layer CPU times of one teacher's students at one batch size and thread count.

    Made by :func:`latency_table`. :meth:`predict` needs the teacher's :class:`MacsCounter`
    (:meth:`bind`); :meth:`predict_model` and :meth:`predict_layers` need nothing more. A table
    pickles without its counter, so it travels to trials in their inputs.

    Attributes:
        key: The cache key (sha256 of what the table depends on).
        batch: Images per forward pass.
        threads: Torch threads it was measured with.
        fixed_ms: ``a`` of the fixed part ``a + b * activations``.
        per_activation_ms: ``b``.
        teacher_ms: The teacher's whole forward pass, as measured.
        seconds: How long measuring the table took.
        cached: Whether it was read from the cache.
    """

    def __init__(self, key: str, batch: int, threads: int, layers: Mapping[str, _Layer],
                 entries: Mapping[str, Mapping[str, Any]], fixed_ms: float, per_activation_ms: float,
                 teacher_ms: float, seconds: float, cached: bool = False) -> None:
        self.key = key
        self.batch = batch
        self.threads = threads
        self.layers = dict(layers)
        self.entries = dict(entries)
        self.fixed_ms = fixed_ms
        self.per_activation_ms = per_activation_ms
        self.teacher_ms = teacher_ms
        self.seconds = seconds
        self.cached = cached
        self._counter: MacsCounter | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The counter holds copies of the teacher; a worker binds its own.
        return {**self.__dict__, "_counter": None}

    def bind(self, counter: MacsCounter) -> LatencyTable:
        """A copy of this table that predicts plans of ``counter``'s teacher."""
        bound = copy.copy(self)
        bound._counter = counter
        return bound

    def layer_sum_ms(self, shapes: Mapping[str, LayerShape]) -> float:
        """The table's time of the layers alone (no fixed part)."""
        return sum(info.calls * _layer_ms(self.entries[info.entry], shapes[name])
                   for name, info in self.layers.items() if name in shapes)

    def activations(self, shapes: Mapping[str, LayerShape]) -> int:
        """Values the convs and linears of a model of these shapes put out per image."""
        return sum(info.calls * shapes[name].out_channels * info.spatial_out
                   for name, info in self.layers.items() if name in shapes)

    def predict_layers(self, shapes: Mapping[str, LayerShape]) -> float:
        """Predicted milliseconds per batch of a model whose convs and linears have these shapes
        (by the teacher's names; a layer the model lacks costs nothing)."""
        fixed = self.fixed_ms + self.per_activation_ms * self.activations(shapes)
        return self.layer_sum_ms(shapes) + fixed

    def predict_model(self, model: nn.Module) -> float:
        """Predicted milliseconds per batch of ``model``, a student of the table's teacher."""
        return self.predict_layers(layer_shapes(model))

    def predict(self, plan: StudentPlan) -> float:
        """Predicted milliseconds per batch of ``plan``'s student (channel pruning by ratios).

        Raises:
            RuntimeError: the table is not bound to a counter (:meth:`bind`).
            UsageError: the plan names a layer that is not in the teacher.
        """
        if self._counter is None:
            raise RuntimeError("a LatencyTable predicts plans once bound to its teacher's MacsCounter (bind)")
        return self.predict_layers(self._counter.layer_shapes(plan))

    def to_json(self) -> str:
        data = {k: v for k, v in self.__dict__.items() if k not in ("_counter", "cached")}
        data["layers"] = {name: dataclasses.asdict(info) for name, info in self.layers.items()}
        return json.dumps({"format": _FORMAT, **data}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LatencyTable:
        """A table :meth:`to_json` wrote.

        Raises:
            ValueError: not such a table (KeyError and TypeError are turned into it).
        """
        try:
            data = json.loads(text)
            if data.pop("format") != _FORMAT:
                raise ValueError("another table format")
            data["layers"] = {name: _Layer(**info) for name, info in data["layers"].items()}
            return cls(**data, cached=True)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a latency table: {exc}") from None

    def path(self, cache_dir: Path | None = None) -> Path:
        """Where the table is cached."""
        return _cache_folder(cache_dir) / f"{self.key}.json"

    def save(self, cache_dir: Path | None = None) -> None:
        """Write the table to the cache (atomically)."""
        write_text_atomically(self.to_json(), self.path(cache_dir))


def _cache_folder(cache_dir: Path | None) -> Path:
    from prunetune.training.teacher import default_cache_dir

    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / CACHE_FOLDER


def _fixed_part(table: LatencyTable, model: nn.Module, counter: MacsCounter, x: torch.Tensor,
                timer: Timer) -> tuple[float, float, float]:
    """``(a, b, teacher ms)``: the fixed part ``a + b * activations``, from the teacher's and its
    half-width student's whole forward passes (``model`` in eval mode) less their layers' table
    sums."""
    half = StudentPlan(ratio=0.5)
    points = []
    for net, shapes in ((model, layer_shapes(model)), (counter.architecture(half), counter.layer_shapes(half))):
        total = timer(net, x)
        points.append((table.activations(shapes), total - table.layer_sum_ms(shapes), total))
    (act_t, rest_t, teacher_ms), (act_h, rest_h, _) = points
    slope = max(0.0, (rest_t - rest_h) / (act_t - act_h)) if act_t > act_h else 0.0
    fixed = rest_t - slope * act_t
    if fixed < 0:  # noise: all of the rest scales with the activations
        fixed, slope = 0.0, max(0.0, rest_t) / act_t if act_t else 0.0
    return fixed, slope, teacher_ms


def latency_table(model: nn.Module, example_input: torch.Tensor, batch: int = 256, threads: int | None = None,
                  kernel_sizes: Sequence[int] = KERNEL_SIZES, *, fractions: Sequence[float] = FRACTIONS,
                  cache_dir: Path | None = None, timer: Timer | None = None, save: bool = True,
                  counter: MacsCounter | None = None) -> LatencyTable:
    """``model``'s latency table at ``batch`` and ``threads``: from the cache, else measured.

    Measure it where nothing else runs on the same cores (the search's driver does, before
    any trial starts). Weights do not matter: an untrained copy of the teacher does.

    Args:
        model: The teacher (only its architecture counts); left untouched.
        example_input: A batch shaped like the model's input (its first item is used).
        batch: Images per timed forward pass.
        threads: Torch threads to time with (default: the current count).
        kernel_sizes: Sizes to time for every conv a plan may resize (those its padding
            allows), besides its own.
        fractions: Kept channel fractions to time, per dimension a group can cut.
        cache_dir: Where tables are cached (default: ``<prunetune cache>/latency``).
        timer: Times one forward pass (default: :func:`time_forward`); tests inject one.
        save: Write a newly measured table to the cache (else call :meth:`LatencyTable.save`).
        counter: ``model``'s :class:`MacsCounter` to reuse (one is made when None).

    Returns:
        The table, bound to ``counter``.
    """
    threads = threads or torch.get_num_threads()
    timer = timer or time_forward
    counter = counter or MacsCounter(model, example_input)
    seen = trace_layers(model, example_input)
    cut_in, cut_out = cut_dims(counter)
    resizable = set(kernel_layers(model))
    signatures = {name: signature(name, s, cut_in, cut_out, resizable, kernel_sizes) for name, s in seen.items()}
    described = {
        "format": _FORMAT, "model": f"{type(model).__module__}.{type(model).__qualname__}", "structure": repr(model),
        "input": list(example_input.shape[1:]), "layers": signatures, "batch": batch, "threads": threads,
        "fractions": list(fractions), "repeats": [REPEATS, WARMUP], "torch": torch.__version__, "cpu": cpu_model(),
    }
    key = hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()
    path = _cache_folder(cache_dir) / f"{key}.json"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            table = LatencyTable.from_json(path.read_text())
            if table.key == key:
                return table.bind(counter)

    started = time.perf_counter()
    ids = {name: hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:16]
           for name, sig in signatures.items()}
    layers = {name: _Layer(ids[name], s.calls, s.output_numel // signatures[name]["out"]) for name, s in seen.items()}
    entries: dict[str, dict[str, Any]] = {}
    on_cpu = next(model.parameters()).device.type == "cpu"
    timed = model if on_cpu else copy.deepcopy(model).cpu()
    timed_counter = counter if on_cpu else MacsCounter(timed, example_input.cpu())
    was_training = timed.training
    timed.eval()
    try:
        # Random inputs and layers from a forked RNG: the caller's (the teacher's init) is untouched.
        with torch_threads(threads), torch.random.fork_rng(devices=[]):
            for name, sig in signatures.items():
                if ids[name] not in entries:
                    entries[ids[name]] = measure_entry(sig, batch, fractions, timer)
            table = LatencyTable(key, batch, threads, layers, entries, 0.0, 0.0, 0.0, 0.0)
            x = torch.randn(batch, *example_input.shape[1:])
            fixed, slope, teacher_ms = _fixed_part(table, timed, timed_counter, x, timer)
    finally:
        timed.train(was_training)
    table = LatencyTable(key, batch, threads, layers, entries, fixed, slope, teacher_ms, time.perf_counter() - started)
    if save:
        table.save(cache_dir)
    return table.bind(counter)


def isolated_latency(teacher: nn.Module, example_input: torch.Tensor, batch: int, threads: int,
                     repeats: int = 5, rounds: int = 3) -> Callable[[StudentPlan], float]:
    """A function timing the architecture of a plan's student, memoised per plan: the least of
    ``rounds`` medians of :func:`prunetune.structure.measure.cpu_latency_ms` (``repeats`` runs each) at
    ``batch`` on ``threads`` threads. The least median shrugs off a moment's load elsewhere.
    Which channels a student keeps does not change its latency, so the first ones are kept
    (:meth:`MacsCounter.architecture`). Call it only while nothing else runs on these cores.
    """
    from prunetune.structure.measure import cpu_latency_ms

    counter = MacsCounter(teacher, example_input)
    shape = tuple(example_input.shape[1:])
    times: dict[str, float] = {}

    def latency(plan: StudentPlan) -> float:
        key = plan.to_json()
        if key not in times:
            model = counter.architecture(plan)
            with torch_threads(threads), torch.random.fork_rng(devices=[]):
                times[key] = min(cpu_latency_ms(model, shape, batch, repeats)  # type: ignore[arg-type]
                                 for _ in range(rounds))
        return times[key]

    return latency
