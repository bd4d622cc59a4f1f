"""The per-layer latency table: interpolation, monotonicity, the fixed part, the cache, and the
latency budget's reachability check. Timings are faked (a cost model of each layer) except in
one loose comparison with a real measurement."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.plugins.models.resnet import ResNetFactory
from prunetune.searching.prepare import _check_reachable
from prunetune.searching.spec import SearchSpec
from prunetune.structure.kernels import kernel_layers
from prunetune.structure.measure import cpu_latency_ms
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import MacsCounter
from prunetune.student.latency import LatencyTable, isolated_latency, latency_table
from tests.core.toy import ConcatDepthwise, Residual

BATCH = 8
FIXED_MS, PER_ACTIVATION_MS = 5.0, 1e-4


def _layer_cost(module: nn.Module, x_shape: torch.Size, out_shape: torch.Size) -> float:
    """A cost bilinear in a layer's input and output channels, as a conv's roughly is."""
    batch = x_shape[0]
    if isinstance(module, nn.Linear):
        return 1e-5 * batch * module.in_features * module.out_features + 0.01 * module.in_features + 0.1
    assert isinstance(module, nn.Conv2d)
    k = module.kernel_size[0] * module.kernel_size[1]
    pairs = module.in_channels // module.groups * module.out_channels * k * out_shape[2] * out_shape[3]
    return 1e-7 * batch * pairs + 0.01 * module.in_channels + 0.02 * module.out_channels + 0.1


class FakeTimer:
    """Milliseconds from :func:`_layer_cost`; a whole model costs its layers, a fixed part and a
    part per activation. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, module: nn.Module, x: torch.Tensor) -> float:
        self.calls += 1
        total, activations = 0.0, 0

        def hook(layer: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
            nonlocal total, activations
            total += _layer_cost(layer, args[0].shape, out.shape)
            activations += out[0].numel()

        layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        handles = [m.register_forward_hook(hook) for m in layers]
        try:
            with torch.no_grad():
                module(x)
        finally:
            for handle in handles:
                handle.remove()
        if module in layers:  # a layer alone: no fixed part
            return total
        return total + FIXED_MS + PER_ACTIVATION_MS * activations


def true_ms(model: nn.Module, example: torch.Tensor) -> float:
    return FakeTimer()(model, torch.zeros(BATCH, *example.shape[1:]))


def _resnet() -> nn.Module:
    return ResNetFactory(ResNetFactory.Config(width=4)).build(1, 10, 16).eval()


MODELS = {
    "resnet": (_resnet, torch.zeros(1, 1, 16, 16)),
    "concat-depthwise": (ConcatDepthwise, torch.zeros(1, 3, 8, 8)),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_the_table_is_exact_for_costs_bilinear_in_the_channels(name: str, tmp_path: Path) -> None:
    build, example = MODELS[name]
    model = build()
    table = latency_table(model, example, BATCH, 1, (3, 5), cache_dir=tmp_path, timer=FakeTimer())
    counter = MacsCounter(model, example)
    groups = [g.name for g in counter.groups()]
    plans = [StudentPlan(), StudentPlan(ratio=0.3), StudentPlan(ratio=0.75, round_to=2),
             StudentPlan(ratio=0.2, ratios={groups[0]: 0.6}, kernels={next(iter(kernel_layers(model))): 5})]
    for plan in plans:
        # Off the grid (0.3, 0.75, mixed ratios and a bigger kernel): interpolation is exact here.
        assert table.predict(plan) == pytest.approx(true_ms(counter.architecture(plan), example), rel=1e-6)
    assert table.fixed_ms == pytest.approx(FIXED_MS) and table.per_activation_ms == pytest.approx(PER_ACTIVATION_MS)


def test_an_unmeasured_kernel_size_is_scaled_by_area(tmp_path: Path) -> None:
    model, example = ConcatDepthwise(), torch.zeros(1, 3, 8, 8)
    table = latency_table(model, example, BATCH, 1, (), cache_dir=tmp_path, timer=FakeTimer())  # own sizes only
    layer = table.layers["a"]
    grid = table.entries[layer.entry]["grids"]
    assert list(grid) == ["3"]
    three = table.predict(StudentPlan())
    assert table.predict(StudentPlan(kernels={"a": 5})) > three
    assert table.predict(StudentPlan(kernels={"a": 1})) < three


def test_predictions_never_grow_as_channels_go_even_from_noisy_timings(tmp_path: Path) -> None:
    rng = random.Random(0)
    model, example = _resnet(), torch.zeros(1, 1, 16, 16)
    table = latency_table(model, example, BATCH, 1, (3,), cache_dir=tmp_path, timer=lambda m, x: rng.uniform(0.1, 10))
    counter = MacsCounter(model, example)
    groups = [g.name for g in counter.groups()]
    ratios = [0.0, 0.1, 0.3, 0.5, 0.7, 0.9]
    uniform = [table.predict(StudentPlan(ratio=r)) for r in ratios]
    assert uniform == sorted(uniform, reverse=True)
    for group in groups:  # one group cut further, the others fixed
        alone = [table.predict(StudentPlan(ratio=0.2, ratios={group: r})) for r in ratios]
        assert all(b <= a + 1e-9 for a, b in zip(alone, alone[1:])), group


def test_a_cached_table_is_not_measured_again(tmp_path: Path) -> None:
    model, example = _resnet(), torch.zeros(1, 1, 16, 16)
    timer = FakeTimer()
    first = latency_table(model, example, BATCH, 1, (3, 5), cache_dir=tmp_path, timer=timer)
    measured = timer.calls
    assert measured > 0 and not first.cached and first.path(tmp_path).is_file()
    again = latency_table(_resnet(), example, BATCH, 1, (3, 5), cache_dir=tmp_path, timer=timer)
    assert timer.calls == measured and again.cached
    plan = StudentPlan(ratio=0.4, kernels={"stem.conv": 5})
    assert again.predict(plan) == pytest.approx(first.predict(plan))
    # Another batch, thread count or set of kernel sizes is another table.
    for batch, threads, sizes in ((BATCH * 2, 1, (3, 5)), (BATCH, 2, (3, 5)), (BATCH, 1, (3,))):
        before = timer.calls
        latency_table(model, example, batch, threads, sizes, cache_dir=tmp_path, timer=timer)
        assert timer.calls > before
    # A damaged file is measured again and replaced.
    first.path(tmp_path).write_text("{not json")
    before = timer.calls
    assert not latency_table(model, example, BATCH, 1, (3, 5), cache_dir=tmp_path, timer=timer).cached
    assert timer.calls > before and json.loads(first.path(tmp_path).read_text())["key"] == first.key


def test_save_false_leaves_the_cache_alone_until_saved(tmp_path: Path) -> None:
    model, example = ConcatDepthwise(), torch.zeros(1, 3, 8, 8)
    table = latency_table(model, example, BATCH, 1, (), cache_dir=tmp_path, timer=FakeTimer(), save=False)
    assert not any(tmp_path.iterdir())
    table.save(tmp_path)
    assert latency_table(model, example, BATCH, 1, (), cache_dir=tmp_path, timer=FakeTimer()).cached


def test_a_pickled_table_travels_without_its_counter(tmp_path: Path) -> None:
    model, example = ConcatDepthwise(), torch.zeros(1, 3, 8, 8)
    table = latency_table(model, example, BATCH, 1, (), cache_dir=tmp_path, timer=FakeTimer())
    copy = pickle.loads(pickle.dumps(table))
    plan = StudentPlan(ratio=0.5)
    with pytest.raises(RuntimeError, match="bind"):
        copy.predict(plan)
    counter = MacsCounter(model, example)
    assert copy.bind(counter).predict(plan) == pytest.approx(table.predict(plan))
    assert copy.predict_model(counter.architecture(plan)) == pytest.approx(table.predict(plan))
    assert LatencyTable.from_json(table.to_json()).predict_model(model) == pytest.approx(table.predict(StudentPlan()))


def test_real_timings_predict_a_tiny_model_roughly(tmp_path: Path) -> None:
    model, example = Residual(), torch.zeros(1, 3, 16, 16)
    table = latency_table(model, example, 64, 1, (3,), cache_dir=tmp_path)
    counter = MacsCounter(model, example)
    for plan in (StudentPlan(), StudentPlan(ratio=0.5)):
        measured = min(cpu_latency_ms(counter.architecture(plan), (3, 16, 16), 64, repeats=5) for _ in range(2))
        # Loose: the machine may be busy, and layers this small time as much malloc as
        # arithmetic; a table off by more than 3x would be of no use.
        assert measured / 3 < table.predict(plan) < measured * 3


def test_isolated_latency_times_each_plan_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import prunetune.structure.measure as measure_module

    seen: list[tuple[int, int]] = []

    def fake(model: nn.Module, shape: tuple[int, int, int], batch: int, repeats: int, warmup: int = 2) -> float:
        seen.append((batch, torch.get_num_threads()))
        return float(sum(p.numel() for p in model.parameters()))

    monkeypatch.setattr(measure_module, "cpu_latency_ms", fake)
    latency = isolated_latency(ConcatDepthwise(), torch.zeros(1, 3, 8, 8), batch=32, threads=2, rounds=2)
    assert latency(StudentPlan(ratio=0.5)) < latency(StudentPlan())
    assert latency(StudentPlan(ratio=0.5)) == latency(StudentPlan(ratio=0.5))
    assert seen == [(32, 2)] * 4  # two rounds per plan, each plan once
    assert torch.get_num_threads() == 1  # restored (the suite runs on one thread)


def _spec(**changes: object) -> SearchSpec:
    return dataclasses.replace(SearchSpec(latency_batch=BATCH, latency_threads=1, progress=False), **changes)


def test_an_unreachable_latency_budget_is_refused_with_the_reachable_range(tmp_path: Path) -> None:
    model, example = _resnet(), torch.zeros(1, 1, 16, 16)
    table = latency_table(model, example, BATCH, 1, (3,), cache_dir=tmp_path, timer=FakeTimer())
    fastest = table.predict(StudentPlan(ratio=0.9))
    _check_reachable(model, example, _spec(max_latency=fastest * 1.01), table)
    with pytest.raises(UsageError) as caught:
        _check_reachable(model, example, _spec(max_latency=fastest * 0.5), table)
    message = str(caught.value)
    assert "\n" not in message and "no plan can meet --max-latency" in message
    assert f"reachable: {math.ceil(fastest * 10) / 10:g} ms to" in message
    assert f"{table.predict(StudentPlan()):.1f} ms, the teacher" in message
    _check_reachable(model, example, _spec(max_latency="none"), table)  # no cap: nothing to reach


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "fast", True, [1]])
def test_bad_latency_budgets_are_refused(bad: object) -> None:
    with pytest.raises(UsageError, match="--max-latency must be a positive number of milliseconds, uniform or none"):
        _spec(max_latency=bad)


def test_the_latency_cap_defaults_to_the_uniform_student_with_a_macs_budget() -> None:
    assert _spec().latency_cap == "none"
    assert _spec(max_macs=0.5).latency_cap == "uniform"
    assert _spec(max_macs=0.5, max_latency="none").latency_cap == "none"
    assert _spec(max_latency=12).latency_cap == 12.0
    with pytest.raises(UsageError, match="--max-latency uniform needs --max-macs"):
        _spec(max_latency="uniform")
    with pytest.raises(UsageError, match="--latency-batch must be a whole number of at least 1"):
        _spec(latency_batch=0)
    assert SearchSpec().latency_threads == torch.get_num_threads()  # recorded when made
    spec = _spec(max_macs=0.5, max_latency=20.0, latency_threads=3)
    assert SearchSpec.from_json(spec.to_json()) == spec
    assert SearchSpec.from_json(_spec(max_macs=0.5).to_json()).latency_cap == "uniform"
    # A search.json from before --max-latency: that run had no latency cap, and keeps none.
    old = {k: v for k, v in json.loads(_spec(max_macs=0.5).to_json()).items() if not k.startswith(("max_latency", "latency_"))}
    assert SearchSpec.from_json(json.dumps(old)).latency_cap == "none"


def test_measuring_leaves_the_callers_random_state_alone(tmp_path: Path) -> None:
    model, example = ConcatDepthwise(), torch.zeros(1, 3, 8, 8)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    latency_table(model, example, BATCH, 1, (3,), cache_dir=tmp_path, timer=FakeTimer())  # makes layers
    isolated_latency(model, example, BATCH, 1, repeats=1, rounds=1)(StudentPlan(ratio=0.5))  # random inputs
    assert torch.equal(torch.rand(4), expected)
