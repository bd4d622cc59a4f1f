"""The adaptive-BatchNorm proxy, the screen of random plans, and ``--screen`` in a search."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from prunetune.components.data import DataSplits
from prunetune.components.spaces import Candidate, ModelStructure
from prunetune.host.manager import Host
from prunetune.plugins.models.resnet import ResNetFactory
from prunetune.searching import run as search
from prunetune.searching.prepare import prepare_search
from prunetune.searching.spec import SCREEN_FILE, SearchSpec
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import CostLimit, MacsCounter, repair
from prunetune.student.proxy import ProxyData, proxy_accuracy, recalibrate_bn, screen
from prunetune.student.surgery import build_student
from prunetune.training.loop import evaluate
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import train_supervised

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def data() -> DataSplits:
    return Host.create().registry.create("dataset", "fashion_mnist_demo", {"limit": 1000}).load(0, 0.2)


@pytest.fixture(scope="module")
def teacher(data: DataSplits) -> nn.Module:
    """A small resnet trained to about 70% validation accuracy (a few seconds)."""
    torch.manual_seed(0)
    model = ResNetFactory(ResNetFactory.Config(width=8)).build(1, 10, 28)
    train_supervised(model, data.train_x, data.train_y, TrainRecipe(epochs=6, batch_size=32, lr=0.05, seed=0), CPU,
                     progress=False)
    return model.eval()


@pytest.fixture(scope="module")
def proxy_data(data: DataSplits) -> ProxyData:
    return ProxyData.of((data.train_x, data.train_y), (data.val_x, data.val_y), seed=0)


def test_recalibration_sets_the_running_statistics_to_those_of_the_batches() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3)
    model = nn.Sequential(conv, nn.Dropout(0.5), nn.BatchNorm2d(4, momentum=0.3)).eval()
    bn = model[2]
    bn.running_mean.fill_(7.0)
    bn.running_var.fill_(9.0)
    batches = [torch.randn(16, 3, 8, 8) * (i + 1) + i for i in range(3)]
    recalibrate_bn(model, batches)
    with torch.no_grad():
        outs = [conv(x) for x in batches]  # dropout off: only the BatchNorm layers train
    # A cumulative average over the batches: every batch counts alike, none of the old values remain.
    mean = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    var = torch.stack([o.transpose(0, 1).reshape(4, -1).var(1, unbiased=True) for o in outs]).mean(0)
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert int(bn.num_batches_tracked) == 3
    assert not any(m.training for m in model.modules()) and bn.momentum == 0.3  # modes and momentum restored


def test_the_proxy_restores_the_accuracy_that_wrong_statistics_destroy(teacher, data, proxy_data) -> None:
    accuracy, _ = evaluate(teacher, data.val_x, data.val_y, CPU)
    assert accuracy > 50
    broken = copy.deepcopy(teacher)
    for module in broken.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean += 3.0
            module.running_var *= 50.0
    assert evaluate(broken, data.val_x, data.val_y, CPU)[0] < 20
    # Statistics recomputed on the training distribution give the teacher's accuracy back.
    assert proxy_accuracy(broken, proxy_data.bn_batches, data.val_x, data.val_y, CPU) == pytest.approx(accuracy, abs=3)


def test_a_recalibrated_pruned_student_scores_far_above_the_same_student_as_pruned(teacher, data, proxy_data) -> None:
    registry = Host.create().registry
    student, _ = build_student(teacher, StudentPlan(ratio=0.3), registry.create("pruner", "channel"),
                               registry.create("scorer", "l1"), data.train_x[:1], proxy_data.calibration)
    as_pruned, _ = evaluate(student, data.val_x, data.val_y, CPU)
    assert proxy_accuracy(student, proxy_data.bn_batches, data.val_x, data.val_y, CPU) > as_pruned + 15


def test_the_screen_returns_in_budget_plans_best_first_and_the_same_for_a_seed(teacher, data, proxy_data) -> None:
    registry = Host.create().registry
    example = data.train_x[:1]
    structure = ModelStructure.of(teacher, example)
    budget = int(0.4 * count_macs_params(teacher, data.input_shape)[0])
    before = {k: v.clone() for k, v in teacher.state_dict().items()}

    def run(seed: int) -> list:
        return screen(teacher, registry.create("search_space", "ratio_only"), structure, registry.create("scorer", "l1"),
                      registry.create("pruner", "channel"), proxy_data, 5, seed, budget_macs=budget)

    results = run(0)
    assert 0 < len(results) <= 5
    assert [r.proxy_accuracy for r in results] == sorted((r.proxy_accuracy for r in results), reverse=True)
    counter = MacsCounter(teacher, example)
    for r in results:
        # The plan scored is the one the trial of these parameters trains: repaired, within the budget.
        fix = repair(teacher, Candidate.from_params(r.params).plan, budget, example, counter=counter)
        assert fix.feasible and fix.plan == r.plan and fix.macs == r.macs <= budget
    assert run(0) == results
    assert [r.params for r in run(1)] != [r.params for r in results]
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # teacher untouched


def test_the_screen_repairs_plans_to_a_further_limit_as_trials_do(teacher, data, proxy_data) -> None:
    registry = Host.create().registry
    example = data.train_x[:1]
    structure = ModelStructure.of(teacher, example)
    budget = int(0.6 * count_macs_params(teacher, data.input_shape)[0])
    counter = MacsCounter(teacher, example)
    # A cost that binds before the MACs budget: half of it, in MACs again.
    limit = CostLimit("macs_again", lambda plan: float(counter.macs(plan)), budget / 2)
    results = screen(teacher, registry.create("search_space", "ratio_only"), structure, registry.create("scorer", "l1"),
                     registry.create("pruner", "channel"), proxy_data, 4, 0, budget_macs=budget, limits=[limit])
    assert results
    for r in results:
        fix = repair(teacher, Candidate.from_params(r.params).plan, budget, example, counter=counter, limits=[limit])
        assert fix.plan == r.plan and r.macs <= budget / 2


def test_infeasible_candidates_are_skipped(teacher, data, proxy_data) -> None:
    registry = Host.create().registry
    structure = ModelStructure.of(teacher, data.train_x[:1])
    results = screen(teacher, registry.create("search_space", "ratio_only"), structure, registry.create("scorer", "l1"),
                     registry.create("pruner", "channel"), proxy_data, 3, 0, budget_macs=1)
    assert results == []


TINY = dict(dataset_options={"limit": 300}, model_options={"width": 4}, teacher_epochs=1, epochs=1,
            final_epochs=1, progress=False)


def test_a_search_with_screen_tries_the_best_screened_plans_after_the_seeded_ones(tmp_path: Path) -> None:
    # No latency cap: random plans grow kernels, and few of those are as fast as the uniform
    # student (the screen's latency repair is tested above, on its own).
    spec = SearchSpec(run_root=str(tmp_path / "runs"), leaderboard=str(tmp_path / "board"), max_macs=0.3,
                      max_latency="none", num_samples=7, screen=6, **TINY)  # type: ignore[arg-type]
    lines: list[str] = []
    run = prepare_search(spec, echo=lines.append)
    assert any(re.fullmatch(r"screened 6 plans( \(\d within the budget\))? in [\d.]+ s; best proxy [\d.]+%", line)
               for line in lines), lines
    assert run.screened and all(r.macs <= run.inputs.budget_macs for r in run.screened)
    seeded = [p for p in (run.baseline, *run.seeded) if p]
    room = spec.num_samples - len(seeded) - 1  # the searcher keeps one trial of its own
    assert run.first_points == [*seeded, *[dict(r.params) for r in run.screened[:room]]]
    # screen.json, written by run_search once the run folder exists: every screened plan, best first.
    run.run_dir.mkdir(parents=True)
    search._write_screen(run)
    saved = json.loads((run.run_dir / SCREEN_FILE).read_text())
    assert saved["sampled"] == 6
    assert [r["proxy_accuracy"] for r in saved["results"]] == [r.proxy_accuracy for r in run.screened]
    assert [r["plan"] for r in saved["results"]] == [r.plan.to_dict() for r in run.screened]
    assert [r["tried_first"] for r in saved["results"]] == [i < room for i in range(len(run.screened))]
    # Without a budget nothing is screened, and the run says why.
    lines.clear()
    unbudgeted = prepare_search(dataclasses.replace(spec, max_macs=None, name="no-budget"), echo=lines.append)
    assert unbudgeted.screened == () and any("needs a --max-macs budget" in line for line in lines)
