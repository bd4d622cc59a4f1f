from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.components.selection import group_ratios
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.plugins.models.resnet import ResNetFactory
from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import kernel_layers
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import CostLimit, MacsCounter, repair, student_macs
from prunetune.student.latency import latency_table
from prunetune.student.surgery import build_student
from tests.core.student.test_latency import BATCH, FakeTimer
from tests.core.toy import ConcatDepthwise

EXAMPLE = torch.zeros(1, 1, 28, 28)
SHAPE = (1, 28, 28)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    return ResNetFactory(ResNetFactory.Config(width=8)).build(1, 10, 28).eval()


@pytest.fixture(scope="module")
def teacher_macs(teacher: nn.Module) -> int:
    return count_macs_params(teacher, SHAPE)[0]


def real_macs(teacher: nn.Module, plan: StudentPlan, example: torch.Tensor) -> int:
    registry = Host.create().registry
    student, _ = build_student(
        teacher, plan, registry.create("pruner", "channel"), registry.create("scorer", "l1"), example
    )
    return count_macs_params(student, tuple(example.shape[1:]))[0]


@pytest.mark.parametrize(
    "plan",
    [
        StudentPlan(ratio=0.5),
        StudentPlan(
            ratio=0.3,
            ratios={"layer1.0.conv2": 0.6, "layer3.0.conv1": 0.75},
            kernels={"stem.conv": 5, "layer2.0.conv1": 1, "layer3.0.conv2": 7},
            round_to=2,
        ),
    ],
)
def test_student_macs_is_the_real_students(teacher, plan):
    before = dict(kernel_layers(teacher))
    assert student_macs(teacher, plan, EXAMPLE) == real_macs(teacher, plan, EXAMPLE)
    assert kernel_layers(teacher) == before


def test_student_macs_cuts_each_concatenated_branch_by_its_share():
    toy, example = ConcatDepthwise(), torch.zeros(1, 3, 8, 8)
    plan = StudentPlan(ratio=0.5, ratios={"pw": 0.25}, kernels={"dw": 5})
    assert student_macs(toy, plan, example) == real_macs(toy, plan, example)


def test_a_plan_within_budget_comes_back_untouched(teacher, teacher_macs):
    plan = StudentPlan(ratio=0.2, kernels={"stem.conv": 5})
    result = repair(teacher, plan, teacher_macs, EXAMPLE)
    assert result.plan is plan
    assert (result.feasible, result.repaired) == (True, False)
    assert result.macs == student_macs(teacher, plan, EXAMPLE)


def test_an_over_budget_plan_is_pushed_under_it(teacher, teacher_macs):
    plan = StudentPlan(ratio=0.1, ratios={"layer2.0.conv1": 0.5}, kernels={"layer1.0.conv1": 5})
    budget = int(0.4 * teacher_macs)
    assert student_macs(teacher, plan, EXAMPLE) > budget
    result = repair(teacher, plan, budget, EXAMPLE, max_ratio=0.9)
    assert (result.feasible, result.repaired) == (True, True)
    assert result.macs <= budget
    assert result.macs == real_macs(teacher, result.plan, EXAMPLE)
    assert result.plan.kernels == plan.kernels
    groups = find_groups(teacher, EXAMPLE)
    assert set(result.plan.ratios) == {g.name for g in groups}
    before, after = group_ratios(groups, plan), group_ratios(groups, result.plan)
    assert all(before[name] <= after[name] <= 0.9 for name in before)
    assert any(before[name] < after[name] for name in before)


def test_an_impossible_budget_is_reported_infeasible(teacher, teacher_macs):
    plan = StudentPlan(ratio=0.3)
    result = repair(teacher, plan, int(0.001 * teacher_macs), EXAMPLE, max_ratio=0.9)
    assert (result.feasible, result.repaired) == (False, True)
    assert result.macs > 0.001 * teacher_macs
    assert list(result.plan.ratios.values()) == pytest.approx([0.9] * len(result.plan.ratios))


def test_a_counter_is_reused_across_repairs(teacher, teacher_macs):
    counter = MacsCounter(teacher, EXAMPLE)
    first = repair(teacher, StudentPlan(ratio=0.1), int(0.5 * teacher_macs), EXAMPLE, counter=counter)
    again = repair(teacher, StudentPlan(ratio=0.1), int(0.5 * teacher_macs), EXAMPLE, counter=counter)
    assert first == again


def test_bad_arguments_are_refused(teacher):
    with pytest.raises(ValueError, match="max_ratio"):
        repair(teacher, StudentPlan(), 1, EXAMPLE, max_ratio=1.0)
    with pytest.raises(UsageError, match="nope"):
        student_macs(teacher, StudentPlan(ratios={"nope": 0.5}), EXAMPLE)


def test_repair_meets_a_latency_budget_beside_the_macs_one(teacher, teacher_macs, tmp_path):
    table = latency_table(teacher, EXAMPLE, BATCH, 1, (3, 5, 7), cache_dir=tmp_path, timer=FakeTimer())
    plan = StudentPlan(ratio=0.1, kernels={"layer1.0.conv1": 7, "layer2.0.conv2": 7})
    cap = table.predict(StudentPlan(ratio=0.5))
    assert table.predict(plan) > cap
    limit = CostLimit("latency_b256_ms", table.predict, cap)
    # Latency alone: no MACs budget.
    fix = repair(teacher, plan, None, EXAMPLE, limits=[limit])
    assert (fix.feasible, fix.repaired) == (True, True)
    assert fix.costs["latency_b256_ms"] == table.predict(fix.plan) <= cap
    assert fix.plan.kernels == plan.kernels  # kernel sizes are kept; channels pay for them
    # Both budgets: the tighter one decides, and both hold.
    loose_macs = repair(teacher, plan, teacher_macs, EXAMPLE, limits=[limit])
    assert loose_macs.plan == fix.plan
    tight = int(0.2 * teacher_macs)
    both = repair(teacher, plan, tight, EXAMPLE, limits=[limit])
    assert both.feasible and both.macs <= tight and both.costs["latency_b256_ms"] <= cap
    # A plan within both comes back untouched, its cost reported.
    fine = repair(teacher, StudentPlan(ratio=0.6), teacher_macs, EXAMPLE, limits=[limit])
    assert not fine.repaired and fine.costs["latency_b256_ms"] <= cap
    # Out of reach: the most-pruned plan, infeasible.
    never = repair(teacher, plan, None, EXAMPLE, limits=[CostLimit("latency_b256_ms", table.predict, 1e-9)])
    assert not never.feasible and never.repaired and never.costs["latency_b256_ms"] > 1e-9
