"""Candidate: the one conversion between a space's parameters and a plan, both ways."""

from __future__ import annotations

import pytest

from prunetune.components.spaces import Candidate, DefineByRun, ModelStructure, kernel_param, ratio_param
from prunetune.structure.plan import StudentPlan
from prunetune.testing.spaces import ConformanceSpace

CANDIDATES = [
    Candidate(StudentPlan(ratio=0.3)),
    Candidate(StudentPlan(ratios={"stem": 0.25, "wide": 0.5}, kernels={"stem": 5})),
    Candidate(StudentPlan(ratio=0.1, ratios={"stem": 0.4}), "l1", "hinton", {"T": 2.0, "alpha": 0.7}),
    Candidate(StudentPlan(kernels={"block": 7})),
]


@pytest.mark.parametrize("candidate", CANDIDATES)
def test_params_read_back_as_the_same_candidate(candidate):
    assert Candidate.from_params(candidate.params()) == candidate


def test_params_name_the_global_ratio_only_where_it_matters():
    assert Candidate(StudentPlan(ratios={"stem": 0.2})).params() == {ratio_param("stem"): 0.2}
    assert Candidate(StudentPlan(kernels={"stem": 5})).params() == {"ratio": 0.0, kernel_param("stem"): 5}


def test_from_params_rounds_optunas_stepped_floats():
    plan = Candidate.from_params({"ratio:stem": 0.6000000000000001, "ratio": 0.30000000000000004}).plan
    assert plan.ratios == {"stem": 0.6} and plan.ratio == 0.3


STRUCTURE = ModelStructure(groups={"stem": 8, "wide": 16}, kernels={"stem": 3})


def test_bound_space_points_leave_out_the_constants():
    bound = DefineByRun(ConformanceSpace(ConformanceSpace.Config(temperature=2.0)), STRUCTURE)
    point = bound.with_ratios({"stem": 0.33})
    assert point == {"ratio:stem": 0.3, "ratio:wide": 0.0, "kernel:stem": 3}
    assert bound.baseline(0.2) == {"ratio:stem": 0.2, "ratio:wide": 0.2, "kernel:stem": 3}
    assert bound.candidate(point).distiller_options == {"T": 2.0}


def test_on_grid_is_the_spaces_own_rounding():
    bound = DefineByRun(ConformanceSpace(ConformanceSpace.Config()), STRUCTURE)
    assert bound.on_grid({"stem": 0.47, "wide": 0.9}) == {"stem": 0.4, "wide": 0.5}  # down; clipped to 0.5
