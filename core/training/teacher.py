"""The teacher: loaded from a checkpoint, or trained once and cached by what defines it."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.components.data import DataSplits
from prunetune.errors import UsageError
from prunetune.files import save_atomically
from prunetune.training.recipe import TrainRecipe
from prunetune.training.train import train_supervised

__all__ = [
    "CACHE_ENV",
    "default_cache_dir",
    "load_teacher_checkpoint",
    "obtain_teacher",
    "teacher_cache_key",
]

#: Environment variable naming the cache directory (default ``~/.cache/prunetune``).
CACHE_ENV = "PRUNETUNE_CACHE"

# Bump when the cached file's layout or the training code changes what a key produces.
_CACHE_FORMAT = 1

# Recipe fields added after caches existed, with the value every earlier teacher was trained
# with: left out of the key at that value, so those caches still hit.
_LATER_FIELDS = {"nesterov": False}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def teacher_cache_key(
    model_spec: Mapping[str, Any], data_fingerprint: str, recipe: TrainRecipe
) -> str:
    """The sha256 of a canonical JSON of everything that determines a trained teacher.

    Args:
        model_spec: What builds the model (e.g. its name and options), JSON-able.
        data_fingerprint: :attr:`prunetune.components.data.DataSplits.fingerprint`.
        recipe: The teacher's training recipe.
    """
    payload = {
        "format": _CACHE_FORMAT,
        "model": dict(model_spec),
        "data": data_fingerprint,
        "recipe": {k: v for k, v in dataclasses.asdict(recipe).items()
                   if k not in _LATER_FIELDS or v != _LATER_FIELDS[k]},
    }
    return hashlib.sha256(_canonical(payload).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$PRUNETUNE_CACHE``, else ``~/.cache/prunetune``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "prunetune"


def _list(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _fit_problems(model: nn.Module, state: Mapping[str, Any]) -> str:
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    ]
    if missing:
        problems.append(f"missing keys {_list(missing)}")
    if unexpected:
        problems.append(f"unexpected {_list(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch {_list(wrong)}")
    return "; ".join(problems)


def _read_state_dict(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise UsageError(f"{what} {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or pickled-code files
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UsageError(f"{what} {path} cannot be read as tensors: {first_line}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise UsageError(f"{what} {path} holds a {type(obj).__name__}, not a state_dict")
    # Checkpoints saved from nn.DataParallel prefix every key with "module.".
    if obj and all(isinstance(k, str) and k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_teacher_checkpoint(
    model: nn.Module, path: str | os.PathLike[str], model_name: str
) -> None:
    """Load a state_dict file into ``model``, strictly.

    Accepts a plain state_dict or a dict with key ``"state_dict"``; loaded with
    ``weights_only=True``, so no pickled code runs.

    Raises:
        UsageError: the file is missing or unreadable, or its tensors do not fit the model.
    """
    path = Path(path)
    state = _read_state_dict(path, "teacher checkpoint")
    problems = _fit_problems(model, state)
    if problems:
        raise UsageError(f"teacher checkpoint {path} does not fit model {model_name}: {problems}")
    model.load_state_dict(state)


def _load_cached(model: nn.Module, path: Path) -> bool:
    # A cache entry that no longer fits (model code changed under the same spec) is retrained.
    try:
        state = _read_state_dict(path, "cached teacher")
    except UsageError:
        return False
    if _fit_problems(model, state):
        return False
    model.load_state_dict(state)
    return True


def _train_and_cache(
    model: nn.Module,
    model_spec: Mapping[str, Any],
    data: DataSplits,
    recipe: TrainRecipe,
    device: torch.device,
    path: Path,
    progress: bool,
) -> None:
    val = (data.val_x, data.val_y)
    train_supervised(model, data.train_x, data.train_y, recipe, device, progress, val=val)
    what = {
        "model": dict(model_spec),
        "data": data.fingerprint,
        "recipe": dataclasses.asdict(recipe),
    }
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_atomically({"state_dict": state, "meta": json.loads(_canonical(what))}, path)


def obtain_teacher(
    build: Callable[[], nn.Module],
    model_spec: Mapping[str, Any],
    data: DataSplits,
    recipe: TrainRecipe,
    device: torch.device,
    checkpoint: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> tuple[nn.Module, str]:
    """The teacher, from ``checkpoint``, else from the cache, else trained and cached.

    Args:
        build: Makes a freshly initialised model.
        model_spec: What ``build`` builds, JSON-able; its ``"name"`` (or ``"model"``) value
            names the model in messages.
        data: Training (and validation, shown in progress) data.
        recipe: The teacher's training recipe (part of the cache key).
        device: Where the teacher is trained and returned.
        checkpoint: A state_dict file to load instead of training.
        cache_dir: Defaults to :func:`default_cache_dir`; teachers live in ``teachers/KEY.pt``.
        progress: Show a progress bar while training.

    Returns:
        ``(teacher on device in eval mode, where it came from)``; the latter is
        ``"checkpoint PATH"``, ``"cache PATH"`` or ``"trained, cached at PATH"``.

    Raises:
        UsageError: ``checkpoint`` is missing, unreadable, or does not fit the model.
    """
    model = build()
    if checkpoint is not None:
        name = model_spec.get("name") or model_spec.get("model") or "model"
        load_teacher_checkpoint(model, checkpoint, str(name))
        source = f"checkpoint {checkpoint}"
    else:
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        key = teacher_cache_key(model_spec, data.fingerprint, recipe)
        path = root / "teachers" / f"{key}.pt"
        if path.is_file() and _load_cached(model, path):
            source = f"cache {path}"
        else:
            _train_and_cache(model, model_spec, data, recipe, device, path, progress)
            source = f"trained, cached at {path}"
    return model.to(device).eval(), source
