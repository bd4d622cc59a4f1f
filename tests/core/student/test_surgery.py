"""The student's output shape is checked against the teacher's, without changing either."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.student.surgery import check_output_shape


def _net(classes: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, classes))


def test_a_student_with_another_output_shape_is_refused_naming_the_pruner() -> None:
    with pytest.raises(ValueError, match=r"pruner 'odd' changed the model's output shape from \(10,\) to \(7,\)"):
        check_output_shape("odd", _net(10), _net(7), torch.zeros(1, 1, 8, 8))


def test_the_check_leaves_modes_and_statistics_as_they_were() -> None:
    teacher, student = _net(10).eval(), _net(10).train()
    before = student[1].running_mean.clone()
    check_output_shape("channel", teacher, student, torch.randn(1, 1, 8, 8))
    assert student.training and all(m.training for m in student.modules()) and not teacher.training
    assert torch.equal(student[1].running_mean, before)
