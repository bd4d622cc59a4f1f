from __future__ import annotations

import pytest

from prunetune.errors import UsageError
from prunetune.structure.plan import StudentPlan


def test_round_trip() -> None:
    plan = StudentPlan(ratio=0.3, ratios={"a": 0.5}, kernels={"b": 5}, round_to=8)
    assert StudentPlan.from_dict(plan.to_dict()) == plan


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_range(ratio: float) -> None:
    with pytest.raises(UsageError, match=r"outside \[0, 1\)"):
        StudentPlan(ratio=ratio)
    with pytest.raises(UsageError, match="layer 'a'"):
        StudentPlan(ratios={"a": ratio})


@pytest.mark.parametrize("size", [0, -3, 4])
def test_bad_kernel_sizes(size: int) -> None:
    with pytest.raises(UsageError, match="not a positive odd integer"):
        StudentPlan(kernels={"conv": size})


def test_unknown_keys_and_bad_round_to() -> None:
    with pytest.raises(UsageError, match="unknown keys"):
        StudentPlan.from_dict({"ratio": 0.1, "colour": 1})
    with pytest.raises(UsageError, match="round_to"):
        StudentPlan(round_to=0)
