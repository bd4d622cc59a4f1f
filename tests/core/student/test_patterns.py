"""Each pattern of real architectures prunes correctly, or its group is left whole with one line.

Correct means: the pruned student computes what the teacher computes with the same channels
zeroed (their producers' kernels and biases and their norms' scale and shift), to 1e-5.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import pytest
import torch
from torch import nn

from prunetune.host.manager import Host
from prunetune.structure.groups import find_groups
from prunetune.structure.outputs import select_output
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student
from tests.core import patterns

X = torch.randn(8, 1, 12, 12, generator=torch.Generator().manual_seed(0))


def trained_like(model: nn.Module) -> nn.Module:
    """``model`` with random norm statistics and scales, so that zeroed channels show."""
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.5, 0.5)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def masked(teacher: nn.Module, removed: Mapping[str, Sequence[int]]) -> nn.Module:
    """A copy of ``teacher`` with ``removed``'s channels zeroed where they are made."""
    model = copy.deepcopy(teacher)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = {g.name: g for g in find_groups(model, X[:1])}
    with torch.no_grad():
        for name, channels in removed.items():
            cut = set(channels)
            for member in groups[name].producers + groups[name].norms:
                idxs = [i for i, root in zip(member.idxs, member.root_idxs) if root in cut]
                for param in (member.module.weight, member.module.bias):
                    if param is not None:
                        param[idxs] = 0
    return model


def prune(teacher: nn.Module, ratio: float = 0.5, **plan: object) -> tuple[nn.Module, dict[str, list[int]]]:
    registry = Host.create().registry
    pruner, scorer = registry.create("pruner", "channel", {}), registry.create("scorer", "l1", {})
    plan_ = StudentPlan(ratio=ratio, **plan)  # type: ignore[arg-type]
    student, record = build_student(teacher, plan_, pruner, scorer, X[:1])
    return student.eval(), {k: list(v) for k, v in record.removed.items()}


def check_equivalent(teacher: nn.Module, ratio: float = 0.5, **plan: object) -> tuple[nn.Module, dict[str, list[int]]]:
    student, removed = prune(teacher, ratio, **plan)
    assert removed, "nothing was cut"
    with torch.no_grad():
        torch.testing.assert_close(student(X), masked(teacher, removed)(X), atol=1e-5, rtol=1e-5)
    return student, removed


def test_grouped_convs_lose_the_same_positions_in_every_group() -> None:
    teacher = trained_like(patterns.Grouped())
    groups = {g.name: g for g in find_groups(teacher, X[:1])}
    assert (groups["a"].blocks, groups["b"].blocks, groups["stem"].blocks) == (4, 4, 1)
    student, removed = check_equivalent(teacher)
    for name in ("a", "b"):
        positions = [{c % 8 for c in removed[name] if c // 8 == block} for block in range(4)]
        assert all(p == positions[0] for p in positions) and len(positions[0]) == 4
    assert student.b.weight.shape == (16, 4, 3, 3) and student.b.groups == 4


def test_grouped_convs_under_global_ranking_and_round_to() -> None:
    teacher = trained_like(patterns.Grouped())
    _, removed = check_equivalent(teacher, 0.0, macs_target=0.5)
    assert all(len(removed[name]) % 4 == 0 for name in ("a", "b") if name in removed)
    check_equivalent(teacher, 0.3, round_to=8)


def test_group_norm_groups_lose_equal_shares() -> None:
    # No zeroing equals this cut: GroupNorm's statistics are over the channels a group keeps.
    teacher = trained_like(patterns.GroupNormNet())
    assert next(g for g in find_groups(teacher, X[:1]) if g.name == "stem").blocks == 4
    student, removed = prune(teacher)
    assert [sum(c // 4 == block for c in removed["stem"]) for block in range(4)] == [2, 2, 2, 2]
    assert student.gn.num_channels == 8 and student.gn.num_groups == 4 and student(X).shape == (8, 10)


def test_ghost_branches_tied_by_a_depthwise_conv_are_cut_together() -> None:
    teacher = trained_like(patterns.Ghost())
    student, removed = check_equivalent(teacher)
    assert student.primary.out_channels == student.cheap.out_channels == 6
    assert student.out.in_channels == 12


@pytest.mark.parametrize(
    ("model", "whole", "why"),
    [
        (patterns.Ghost(keep=20), "primary", "reach out through a slice"),
        (patterns.Shuffle(), "stem", "pass through a reshape"),
    ],
    ids=["ghost-sliced", "shuffle"],
)
def test_groups_no_cut_fits_are_left_whole_with_one_line(model: nn.Module, whole: str, why: str) -> None:
    teacher = trained_like(model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        student, removed = check_equivalent(teacher)
    lines = {str(w.message) for w in caught}
    assert any(line.startswith(f"group {whole!r} is left whole: its channels {why}") for line in lines), lines
    assert all("\n" not in line for line in lines)
    assert whole not in removed


def test_aux_heads_are_cut_with_the_layers_that_feed_them() -> None:
    teacher = trained_like(patterns.Aux())
    student, removed = check_equivalent(teacher)
    assert "mid" in removed and student.aux_conv.in_channels == student.mid.out_channels == 12
    assert "aux_fc" not in removed and student.aux_fc.out_features == 10
    out, aux = student.train()(X)  # the training-mode forward runs the aux head on the cut channels
    assert out.shape == aux.shape == (8, 10)


def test_a_model_returning_logits_and_aux_keeps_both_heads_and_selects_the_logits() -> None:
    teacher = trained_like(patterns.TupleOut())
    names = {g.name for g in find_groups(teacher, X[:1])}
    assert {"fc", "aux_fc"}.isdisjoint(names) and "aux_conv" in names  # output layers are never cut
    select_output(teacher, 0, heads=["aux_conv"])
    assert "aux_conv" not in {g.name for g in find_groups(teacher, X[:1])}  # a named head is not cut either
    student, removed = check_equivalent(teacher)
    assert student(X).shape == (8, 10) and torch.equal(student(X), student.heads(X)[0])
    assert student.fc.out_features == student.aux_fc.out_features == 10 and "aux_conv" not in removed


def test_ghost_channels_tied_across_the_residual_stream_are_cut_as_pairs() -> None:
    teacher = trained_like(patterns.GhostResidual())
    group = next(g for g in find_groups(teacher, X[:1]) if g.name == "stem")
    assert group.ties == [[i, i + 8] for i in range(8)]  # channel i of x1 and of depthwise(x1)
    student, removed = check_equivalent(teacher)
    assert all(c + 8 in removed["stem"] for c in removed["stem"] if c < 8) and len(removed["stem"]) == 8
    assert student.stem.out_channels == 8 and student.primary.out_channels == student.cheap.out_channels == 4
    _, ranked = check_equivalent(teacher, 0.0, macs_target=0.5)  # global ranking cuts whole pairs too
    assert all((c + 8 if c < 8 else c - 8) in ranked["stem"] for c in ranked.get("stem", []))


@pytest.mark.parametrize("model", [patterns.Grouped, patterns.GhostResidual, patterns.Aux, patterns.Shuffle],
                         ids=lambda m: m.__name__)
@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_the_budgets_macs_count_is_the_students(model: type[nn.Module], ratio: float) -> None:
    from prunetune.structure.measure import count_macs_params
    from prunetune.student.budget import MacsCounter

    teacher = trained_like(model())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        student, _ = prune(teacher, ratio)
        predicted = MacsCounter(teacher, X[:1]).macs(StudentPlan(ratio=ratio))
    assert predicted == count_macs_params(student, (1, 12, 12))[0]
