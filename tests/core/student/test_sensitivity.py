from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from prunetune.components.spaces import ModelStructure
from prunetune.host.manager import Host
from prunetune.plugins.models.resnet import ResNetFactory
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.budget import CostLimit, student_macs
from prunetune.student.sensitivity import group_sensitivity, sensitivity_plan
from prunetune.student.surgery import build_student

EXAMPLE = torch.zeros(1, 1, 28, 28)


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    torch.manual_seed(0)
    return ResNetFactory(ResNetFactory.Config(width=8)).build(1, 10, 28).eval()


@pytest.fixture(scope="module")
def groups(teacher: nn.Module) -> list[str]:
    return list(ModelStructure.of(teacher, EXAMPLE).groups)


def test_sensitivity_is_the_loss_rise_of_pruning_one_group_alone(teacher, groups):
    registry = Host.create().registry
    torch.manual_seed(1)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    scores = group_sensitivity(teacher, groups, 0.5, registry.create("pruner", "channel"),
                               registry.create("scorer", "l1"), x, y)
    assert set(scores) == set(groups)
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())  # teacher untouched
    with torch.no_grad():
        base = nn.functional.cross_entropy(teacher(x), y).item()
    name = groups[1]
    student, _ = build_student(teacher, StudentPlan(ratios={name: 0.5}), registry.create("pruner", "channel"),
                               registry.create("scorer", "l1"), x[:1])
    with torch.no_grad():
        assert scores[name] == pytest.approx(nn.functional.cross_entropy(student.eval()(x), y).item() - base)
    assert len(set(scores.values())) > 1


def test_the_plan_cuts_the_least_sensitive_group_hardest_and_fits_the_budget(teacher, groups):
    budget = int(0.3 * count_macs_params(teacher, (1, 28, 28))[0])
    sensitivity = {g: 1.0 for g in groups} | {groups[0]: 4.0, groups[-1]: 0.25}
    plan = sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9)
    assert plan is not None
    ratios = plan.ratios
    assert ratios[groups[-1]] > ratios[groups[1]] > ratios[groups[0]]
    assert ratios[groups[1]] == pytest.approx(2 * ratios[groups[0]])  # (4 / 1) ** 0.5
    assert student_macs(teacher, plan, EXAMPLE) <= budget
    # The smallest scale that fits: a little less pruning everywhere goes over the budget.
    looser = StudentPlan(ratios={g: max(r - 0.02, 0.0) for g, r in ratios.items()})
    assert student_macs(teacher, looser, EXAMPLE) > budget


def test_power_zero_gives_the_uniform_plan(teacher, groups):
    budget = int(0.5 * count_macs_params(teacher, (1, 28, 28))[0])
    plan = sensitivity_plan(teacher, dict(zip(groups, range(1, len(groups) + 1))), budget, EXAMPLE, 0.9, power=0.0)
    assert plan is not None and len(set(plan.ratios.values())) == 1


def test_no_plan_when_even_the_largest_ratios_do_not_fit(teacher, groups):
    assert sensitivity_plan(teacher, {g: 1.0 for g in groups}, 1, EXAMPLE, max_ratio=0.5) is None


def test_on_a_grid_the_plan_that_fits_is_the_one_on_the_grid(teacher, groups):
    budget = int(0.3 * count_macs_params(teacher, (1, 28, 28))[0])
    sensitivity = {g: 1.0 for g in groups} | {groups[0]: 4.0, groups[-1]: 0.25}
    down = lambda ratios: {g: math.floor(r / 0.1 + 1e-9) * 0.1 for g, r in ratios.items()}  # noqa: E731
    free = sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9)
    plan = sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9, on_grid=down)
    assert free is not None and plan is not None
    assert all(abs(r / 0.1 - round(r / 0.1)) < 1e-6 for r in plan.ratios.values())
    assert student_macs(teacher, plan, EXAMPLE) <= budget
    # Rounding the free plan down would have gone over the budget: the grid plan cuts more.
    assert student_macs(teacher, StudentPlan(ratios=down(free.ratios)), EXAMPLE) > budget
    assert sum(plan.ratios.values()) > sum(down(free.ratios).values())


def test_a_further_limit_is_met_by_scaling_the_plan_keeping_its_shape(teacher, groups):
    budget = int(0.5 * count_macs_params(teacher, (1, 28, 28))[0])
    sensitivity = {g: 1.0 for g in groups} | {groups[0]: 4.0, groups[-1]: 0.25}
    free = sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9)
    # A cost that binds before the MACs do: the kept share of the first two groups.
    cost = lambda plan: sum(1 - plan.ratios.get(g, plan.ratio) for g in groups[:2])  # noqa: E731
    assert free is not None
    limit = 0.8 * cost(free)
    plan = sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9,
                            limits=[CostLimit("kept", cost, limit)])
    assert plan is not None and cost(plan) <= limit < cost(free)
    assert student_macs(teacher, plan, EXAMPLE) < budget  # the limit bound, not the MACs
    assert plan.ratios[groups[1]] == pytest.approx(2 * plan.ratios[groups[0]])  # the same shape
    assert sensitivity_plan(teacher, sensitivity, budget, EXAMPLE, max_ratio=0.9,
                            limits=[CostLimit("kept", cost, 0.0)]) is None  # even max_ratio keeps channels
