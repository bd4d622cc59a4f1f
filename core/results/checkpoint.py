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

from prunetune.components.models import ModelSpec
from prunetune.components.pruning import PruneRecord
from prunetune.errors import UsageError
from prunetune.files import save_atomically
from prunetune.structure.kernels import apply_kernels
from prunetune.structure.plan import StudentPlan

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["FORMAT", "REQUIRED_META", "load_student", "rebuild_student", "save_student"]

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


#: What a student's description must hold to rebuild it.
REQUIRED_META = ("model", "input_shape", "num_classes", "plan", "pruner", "record")


def rebuild_student(registry: Registry, meta: dict[str, Any], model: str | nn.Module | None = None,
                    what: str = "the student's description") -> nn.Module:
    """The student's architecture from its description: freshly initialised, or, for a model
    handed over as an object, a copy of that object, cut as the description says.

    ``meta`` holds ``model`` (zoo name, ``torchvision:NAME``/``timm:NAME``, ``module:factory``
    or ``object:Class``), ``model_options``, ``logits`` and ``heads`` where set,
    ``input_shape`` ``[C, H, W]``, ``num_classes``, ``plan``, ``pruner``, ``pruner_options``
    and ``record``. A ``module:factory`` is imported only when ``model``, the caller's own
    choice (the command line's ``--model``), names the same one; a student of a model handed
    over as a Python object takes that object as ``model``.

    Raises:
        UsageError: the description names code the caller did not give, or another model.
    """
    net = ModelSpec.from_meta(meta, model, what).build(registry)
    plan = StudentPlan.from_dict(meta["plan"])
    apply_kernels(net, plan.kernels)
    pruner = registry.create("pruner", meta["pruner"], meta.get("pruner_options", {}))
    example = torch.zeros(1, *meta["input_shape"])
    pruner.replay(net, PruneRecord.from_dict(meta["record"]), example)
    return net


def _read_payload(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(meta, state_dict)`` of a student file, each checked for shape, not yet for fit."""
    name = str(path)
    if path.is_dir():
        raise UsageError(f"student checkpoint {name!r} is a folder, not a file")
    if not path.is_file():
        raise UsageError(f"student checkpoint {name!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - any unreadable file is the user's input
        raise UsageError(f"{name!r} is not a readable prunetune student (truncated, or not a torch file)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{name!r} is not a prunetune student (expected format {FORMAT})")
    try:
        meta = json.loads(payload.get("meta"))
    except (TypeError, ValueError):
        raise UsageError(f"{name!r} is not a prunetune student: its description is not JSON") from None
    if not isinstance(meta, dict):
        raise UsageError(f"{name!r} is not a prunetune student: its description is not a JSON object")
    lacking = [key for key in REQUIRED_META if key not in meta]
    if lacking:
        raise UsageError(f"{name!r} is not a prunetune student: its description lacks {', '.join(lacking)}")
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UsageError(f"{name!r} is not a prunetune student: it holds no state_dict of tensors")
    return meta, state


def load_student(registry: Registry, path: str | os.PathLike[str],
                 model: str | nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load a student written by :func:`save_student`: ``(model in eval mode, meta)``.

    Args:
        registry: Where zoo models and pruners are looked up.
        path: The student file.
        model: The ``package.module:factory`` the caller trusts, when the student was built
            from one (the file alone never makes prunetune import code); or the model object
            a student of a model handed over in Python was made from.

    Raises:
        UsageError: the file is missing, not a prunetune student, names code not given as
            ``model``, or its weights do not fit its plan.
    """
    path = Path(path)
    meta, state = _read_payload(path)
    what = f"student {str(path)!r}"
    try:
        net = rebuild_student(registry, meta, model, what)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - a description that does not rebuild is the user's input
        reason = (str(exc).strip().splitlines() or [""])[0]
        raise UsageError(f"{what} has a description that does not rebuild: {type(exc).__name__}: {reason}") from None
    missing, unexpected = _key_mismatch(net, state)
    if missing or unexpected:
        raise UsageError(
            f"checkpoint {str(path)!r} does not fit its plan: "
            f"missing {', '.join(missing[:5]) or 'none'}; unexpected {', '.join(unexpected[:5]) or 'none'}"
        )
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1].strip()
        raise UsageError(f"checkpoint {str(path)!r} does not fit its plan: {first}") from None
    return net.eval(), meta


def _key_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)
