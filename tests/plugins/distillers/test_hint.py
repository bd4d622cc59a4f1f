from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.components.distillation import DistillBatch, capture_outputs
from prunetune.errors import UsageError
from prunetune.host.registry import Registry
from prunetune.plugins.distillers import hint
from prunetune.plugins.distillers.hint import HintDistiller
from prunetune.testing.distillers import DistillerConformance, TinyConvNet, tiny_problem


class TestHintConformance(DistillerConformance):
    def make_distiller(self) -> HintDistiller:
        return HintDistiller(HintDistiller.Config())


class TestHintWithLogitsConformance(DistillerConformance):
    def make_distiller(self) -> HintDistiller:
        return HintDistiller(HintDistiller.Config(alpha=0.5, layers=("stage2.1",)))


def _models() -> tuple[TinyConvNet, TinyConvNet]:
    torch.manual_seed(0)
    return TinyConvNet((8, 16)), TinyConvNet((4, 8), kernel_sizes=(5, 3))


def test_adapters_map_student_widths_to_teacher_widths() -> None:
    teacher, student = _models()
    x, _ = tiny_problem(2)
    distiller = HintDistiller(HintDistiller.Config())
    adapters = distiller.bind(student, teacher, x[:1])
    assert isinstance(adapters, nn.ModuleDict)
    assert distiller.student_layers() == distiller.teacher_layers() == ["stage1", "stage2"]
    widths = {k: (m.in_channels, m.out_channels, m.kernel_size) for k, m in adapters.items()}
    assert widths == {"stage1": (4, 8, (1, 1)), "stage2": (8, 16, (1, 1))}


def test_named_layers_with_dots_get_sanitized_keys() -> None:
    teacher, student = _models()
    x, _ = tiny_problem(2)
    distiller = HintDistiller(HintDistiller.Config(layers=("stage2.1",)))
    adapters = distiller.bind(student, teacher, x[:1])
    assert list(adapters.keys()) == ["stage2_1"]
    assert adapters["stage2_1"].in_channels == 8 and adapters["stage2_1"].out_channels == 16


def test_unknown_layer_is_a_usage_error() -> None:
    teacher, student = _models()
    x, _ = tiny_problem(2)
    with pytest.raises(UsageError, match="'nope' is not a layer of the student"):
        HintDistiller(HintDistiller.Config(layers=("nope",))).bind(student, teacher, x[:1])


def test_spatial_mismatch_is_a_usage_error() -> None:
    teacher, student = _models()
    student.stage1[0].padding = (0, 0)  # 5x5 kernel without padding: 8x8 -> 4x4
    x, _ = tiny_problem(2)
    with pytest.raises(UsageError, match="'stage1' outputs 4x4 in the student but 8x8"):
        HintDistiller(HintDistiller.Config(layers=("stage1",))).bind(student, teacher, x[:1])
    # Automatic matching skips mismatched layers; here every feature map differs in size.
    with pytest.raises(UsageError, match="found no layer with the same name and output size"):
        HintDistiller(HintDistiller.Config()).bind(student, teacher, x[:1])


def test_bind_keeps_batchnorm_statistics_and_mode() -> None:
    teacher, student = _models()
    before = student.stage1[1].running_mean.clone()
    x, _ = tiny_problem(2)
    HintDistiller(HintDistiller.Config()).bind(student, teacher, x[:1] + 5.0)
    assert torch.equal(student.stage1[1].running_mean, before)
    assert student.training and teacher.training


def _hint_term(
    distiller: HintDistiller, student: nn.Module, teacher: nn.Module, x: torch.Tensor
) -> torch.Tensor:
    with torch.no_grad(), capture_outputs(teacher, distiller.teacher_layers()) as t_feats:
        teacher(x)
    with capture_outputs(student, distiller.student_layers()) as s_feats:
        logits = student(x)
    batch = DistillBatch(
        logits, None, torch.zeros(len(x), dtype=torch.long), dict(s_feats), dict(t_feats)
    )
    ce = torch.nn.functional.cross_entropy(logits, batch.targets)
    return distiller.loss(batch) - ce


def test_hint_loss_decreases_when_trained() -> None:
    teacher, student = _models()
    teacher.eval()
    x, _ = tiny_problem(32)
    distiller = HintDistiller(HintDistiller.Config(beta=1.0))
    adapters = distiller.bind(student, teacher, x[:1])
    params = [*student.parameters(), *adapters.parameters()]
    opt = torch.optim.Adam(params, lr=0.01)
    first = _hint_term(distiller, student, teacher, x).item()
    for _ in range(30):
        opt.zero_grad()
        _hint_term(distiller, student, teacher, x).backward()
        opt.step()
    last = _hint_term(distiller, student, teacher, x).item()
    assert last < 0.5 * first


def test_adapters_receive_gradients() -> None:
    teacher, student = _models()
    x, y = tiny_problem(4)
    distiller = HintDistiller(HintDistiller.Config())
    adapters = distiller.bind(student, teacher, x[:1])
    with torch.no_grad(), capture_outputs(teacher, distiller.teacher_layers()) as t_feats:
        teacher(x)
    with capture_outputs(student, distiller.student_layers()) as s_feats:
        logits = student(x)
    distiller.loss(DistillBatch(logits, None, y, dict(s_feats), dict(t_feats))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapters.parameters())


def test_options_from_strings_and_validation() -> None:
    registry = Registry()
    hint.prunetune_add_components(registry)
    distiller = registry.create("distiller", "hint", {"layers": "stage1,stage2.1", "beta": "0.5"})
    assert distiller.config.layers == ("stage1", "stage2.1") and distiller.config.beta == 0.5
    with pytest.raises(UsageError, match="beta must be >= 0"):
        registry.create("distiller", "hint", {"beta": "-1"})
    with pytest.raises(UsageError, match="T must be > 0"):
        registry.create("distiller", "hint", {"T": "0"})


class _StridedBlockNet(nn.Module):
    """stage2's first inner conv still runs at stage1's size, and finishes after stage1."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        expand = nn.Conv2d(width, 2 * width, 1)
        self.stage2 = nn.Sequential(
            nn.Sequential(expand, nn.Conv2d(2 * width, width, 3, 2, 1)), nn.ReLU()
        )
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage2(self.stage1(x)).mean((2, 3)))


def test_auto_layers_prefer_stage_containers_over_inner_layers() -> None:
    x, _ = tiny_problem(2)
    distiller = HintDistiller(HintDistiller.Config())
    distiller.bind(_StridedBlockNet(2), _StridedBlockNet(4), x[:1])
    assert distiller.student_layers() == ["stage1", "stage2"]
