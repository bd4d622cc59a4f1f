"""The rules a cut must follow: segments, blocks, ties, and the groups no cut fits."""

from __future__ import annotations

import torch
from torch import nn

from prunetune.structure.constraints import blocks_of, whole_reason
from prunetune.structure.groups import find_groups
from prunetune.structure.tracing import Member
from tests.core import patterns

X = torch.randn(1, 1, 12, 12)


def member(module: nn.Module, role: str, idxs: list[int], roots: list[int] | None = None) -> Member:
    return Member("m", module, role, idxs, idxs if roots is None else roots)


def test_blocks_of_grouped_convs_and_group_norms_but_not_depthwise() -> None:
    assert blocks_of(member(nn.Conv2d(8, 8, 3, groups=4), "out", list(range(8))), 8) == 4
    assert blocks_of(member(nn.GroupNorm(2, 8), "norm", list(range(8))), 8) == 2
    assert blocks_of(member(nn.Conv2d(8, 8, 3, groups=8), "out", list(range(8))), 8) == 1
    assert blocks_of(member(nn.Conv2d(8, 8, 3), "in", list(range(8))), 8) == 1
    # A grouped conv that sees the group's channels in another order fits no equal cut.
    assert blocks_of(member(nn.Conv2d(8, 8, 3, groups=4), "in", list(range(8)), [1, 0, *range(2, 8)]), 8) is None


def test_whole_reasons() -> None:
    conv = nn.Conv2d(3, 8, 3)
    assert whole_reason([member(conv, "out", list(range(8)))], [list(range(8))], [1]) is None
    assert "reshape" in (whole_reason([member(conv, "out", list(range(4)))], [list(range(4))], [1]) or "")
    consumer = Member("next", nn.Conv2d(10, 4, 1), "in", list(range(8)), list(range(8)))
    sliced = [member(conv, "out", list(range(8))), consumer]
    assert "through a slice" in (whole_reason(sliced, [list(range(8))], [1, 1], {"next"}) or "")


def test_a_plain_concat_has_no_ties_and_a_ghost_residual_has_pairs() -> None:
    assert all(not g.ties for g in find_groups(patterns.Ghost(), X))
    stem = next(g for g in find_groups(patterns.GhostResidual(), X) if g.name == "stem")
    assert stem.ties == [[i, i + 8] for i in range(8)]
    assert stem.patterned([3]) == [3, 11]  # cutting one cuts its partner
