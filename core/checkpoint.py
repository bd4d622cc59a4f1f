"""Students on disk: a JSON description plus a state_dict, never pickled code.

The file is what ``torch.save`` writes for ``{"format", "meta", "state_dict"}``, where ``meta``
is a JSON string. Loading uses ``torch.load(weights_only=True)`` and rebuilds the architecture
from ``meta``: the model factory, the plan's kernel sizes, then the pruner's record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prunetune.errors import UsageError
from prunetune.files import save_atomically
from prunetune.kernels import apply_kernels
from prunetune.models import resolve_model
from prunetune.plan import StudentPlan
from prunetune.pruning import PruneRecord

if TYPE_CHECKING:
    from prunetune.registry import Registry

__all__ = ["FORMAT", "load_student", "rebuild_student", "save_student"]

FORMAT = "prunetune-student/1"


def save_student(path: str | os.PathLike[str], model: nn.Module, meta: dict[str, Any]) -> None:
    """Write ``model``'s weights and ``meta`` (JSON-able; see :func:`rebuild_student`) atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "meta": json.dumps(meta, sort_keys=True),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    save_atomically(payload, path)


def rebuild_student(registry: Registry, meta: dict[str, Any]) -> nn.Module:
    """The student's architecture, freshly initialised, from its description.

    ``meta`` holds ``model`` (zoo name or ``module:factory``), ``model_options``,
    ``input_shape`` ``[C, H, W]``, ``num_classes``, ``plan``, ``pruner``, ``pruner_options``
    and ``record``.
    """
    c, h, _ = meta["input_shape"]
    factory = resolve_model(registry, meta["model"], meta.get("model_options", {}))
    model = factory.build(c, int(meta["num_classes"]), h)
    plan = StudentPlan.from_dict(meta["plan"])
    apply_kernels(model, plan.kernels)
    pruner = registry.create("pruner", meta["pruner"], meta.get("pruner_options", {}))
    example = torch.zeros(1, *meta["input_shape"])
    pruner.replay(model, PruneRecord.from_dict(meta["record"]), example)
    return model


def load_student(registry: Registry, path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Load a student written by :func:`save_student`: ``(model in eval mode, meta)``.

    Raises:
        UsageError: the file is missing, not a prunetune student, or its weights do not fit
            its plan.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"student checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's input
        raise UsageError(f"{str(path)!r} is not a readable prunetune student ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{str(path)!r} is not a prunetune student (expected format {FORMAT})")
    meta = json.loads(payload["meta"])
    model = rebuild_student(registry, meta)
    missing, unexpected = _key_mismatch(model, payload["state_dict"])
    if missing or unexpected:
        raise UsageError(
            f"checkpoint {str(path)!r} does not fit its plan: "
            f"missing {', '.join(missing[:5]) or 'none'}; unexpected {', '.join(unexpected[:5]) or 'none'}"
        )
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UsageError(f"checkpoint {str(path)!r} does not fit its plan: {first}") from None
    return model.eval(), meta


def _key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
