"""Shared pieces of the built-in distillers: the hard/soft loss and layer matching by name."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunetune.components.distillation import DistillBatch
from prunetune.errors import UsageError

__all__ = [
    "MatchedLayer",
    "check_kd_weights",
    "hard_soft_loss",
    "kd_kl_term",
    "match_layers",
    "probe_feature_maps",
]


def check_kd_weights(alpha: float, T: float) -> None:
    """Validate the soft-target weight ``alpha`` and temperature ``T``.

    Raises:
        ValueError: ``alpha`` outside ``[0, 1]`` or ``T <= 0``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not T > 0.0:
        raise ValueError(f"T must be > 0, got {T}")


def kd_kl_term(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float
) -> torch.Tensor:
    """``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.

    The ``T^2`` keeps the soft-target gradients on the scale of the hard-label ones
    (Hinton et al. 2015, section 2).
    """
    log_p_student = F.log_softmax(student_logits / T, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / T, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * (T * T)


def hard_soft_loss(batch: DistillBatch, alpha: float, T: float) -> torch.Tensor:
    """``(1 - alpha) * CE(student, y) + alpha * T^2 * KL``; teacher logits unused when alpha is 0.

    Raises:
        ValueError: ``alpha > 0`` and the batch carries no teacher logits.
    """
    ce = F.cross_entropy(batch.student_logits, batch.targets)
    if alpha == 0.0:
        return ce
    if batch.teacher_logits is None:
        raise ValueError("this distiller needs teacher logits, but the batch has none")
    return (1.0 - alpha) * ce + alpha * kd_kl_term(batch.student_logits, batch.teacher_logits, T)


@dataclasses.dataclass(frozen=True)
class MatchedLayer:
    """A layer present under the same name in student and teacher, with its output shapes."""

    name: str
    student_shape: tuple[int, ...]
    teacher_shape: tuple[int, ...]

    @property
    def student_channels(self) -> int:
        return self.student_shape[1]

    @property
    def teacher_channels(self) -> int:
        return self.teacher_shape[1]


def probe_feature_maps(model: nn.Module, example_input: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Output shapes of submodules that return one ``[N, C, H, W]`` tensor per forward.

    One forward pass in eval mode without gradients, so BatchNorm statistics stay untouched;
    every module's training flag is restored afterwards. Modules called more than once per pass
    (a shared ReLU) are left out: their output has no single meaning. The dict is in the order
    the modules finished, so a stage container comes after its children.
    """
    counts: dict[str, int] = {}
    shapes: dict[str, tuple[int, ...]] = {}

    def make_hook(name: str):  # type: ignore[no-untyped-def]
        def hook(module: nn.Module, args: object, output: object) -> None:
            counts[name] = counts.get(name, 0) + 1
            if isinstance(output, torch.Tensor) and output.dim() == 4:
                shapes[name] = tuple(output.shape)

        return hook

    modes = {m: m.training for m in model.modules()}
    handles = [m.register_forward_hook(make_hook(n)) for n, m in model.named_modules() if n]
    try:
        model.eval()
        with torch.no_grad():
            model(example_input[:1])
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
    return {n: s for n, s in shapes.items() if counts[n] == 1}


def _auto_layers(
    student: dict[str, tuple[int, ...]], teacher: dict[str, tuple[int, ...]]
) -> list[str]:
    # A stage is a run of layers at one spatial size; its output is the shallowest module
    # (the stage container rather than its last ReLU) that finishes last in the run.
    candidates = [
        n
        for n, shape in teacher.items()
        if n in student and student[n][2:] == shape[2:] and shape[2] * shape[3] > 1
    ]
    runs: list[list[str]] = []
    for name in candidates:
        if runs and teacher[runs[-1][-1]][2:] == teacher[name][2:]:
            runs[-1].append(name)
        else:
            runs.append([name])
    chosen = []
    for run in runs:
        depth = min(n.count(".") for n in run)
        chosen.append([n for n in run if n.count(".") == depth][-1])
    return chosen


def match_layers(
    student: nn.Module,
    teacher: nn.Module,
    example_input: torch.Tensor,
    layers: Sequence[str],
    owner: str,
) -> list[MatchedLayer]:
    """The layers a feature distiller compares, with their output shapes.

    Args:
        student: The (possibly pruned) student; same layer names as the teacher.
        teacher: The teacher.
        example_input: One input batch, on the models' device.
        layers: Qualified layer names; empty chooses the output of every stage. Among the
            layers with the same name and spatial size in both models, in the order they
            finish, a stage is a run at one spatial size (larger than 1x1); its output is the
            shallowest layer of the run that finishes last.
        owner: Who asks, for messages, e.g. ``"distiller 'hint'"``.

    Raises:
        UsageError: a named layer is missing from either model, does not return a 4-D tensor,
            or has different spatial sizes in student and teacher; or none match.
    """
    s_maps = probe_feature_maps(student, example_input)
    t_maps = probe_feature_maps(teacher, example_input)
    names = list(layers) or _auto_layers(s_maps, t_maps)
    if not names:
        raise UsageError(
            f"{owner} found no layer with the same name and output size in student and "
            "teacher; name them with layers=NAME,NAME"
        )
    matched = []
    for name in names:
        for side, maps in (("student", s_maps), ("teacher", t_maps)):
            if name not in maps:
                raise UsageError(
                    f"{owner} layer {name!r} is not a layer of the {side} that is called once "
                    "and returns an [N, C, H, W] tensor"
                )
        s_shape, t_shape = s_maps[name], t_maps[name]
        if s_shape[2:] != t_shape[2:]:
            raise UsageError(
                f"{owner} layer {name!r} outputs {s_shape[2]}x{s_shape[3]} in the student "
                f"but {t_shape[2]}x{t_shape[3]} in the teacher"
            )
        matched.append(MatchedLayer(name, s_shape, t_shape))
    return matched
