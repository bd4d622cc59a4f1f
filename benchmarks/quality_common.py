"""What the quality benchmark's methods share: the run's settings and each teacher."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.quality_tp import TPRecipe
from prunetune.host.registry import Registry

__all__ = ["CONTROLLED", "Bench", "Teacher", "find", "slug"]

# SearchSpec fields the benchmark sets itself: --search-args may not override them.
CONTROLLED = ("model", "model_options", "dataset", "dataset_options", "teacher_checkpoint", "seed", "max_macs",
              "num_samples", "epochs", "final_epochs", "run_root", "name", "leaderboard", "progress", "val_fraction")


@dataclasses.dataclass
class Teacher:
    """One trained teacher and what every student of it shares."""

    name: str
    model: nn.Module
    path: Path
    source: str
    macs: int
    row: dict[str, Any]
    logits: dict[int, tuple[torch.Tensor, float]] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Bench:
    """The run's settings and shared inputs."""

    args: argparse.Namespace
    registry: Registry
    recipe: TPRecipe
    search_args: dict[str, Any]
def slug(name: str) -> str:
    return name.replace(":", "-").replace(".", "-")


def find(results: list[dict[str, Any]], teacher: str, method: str, budget: float, seed: int) -> dict[str, Any] | None:
    """The stored result of one student, or None."""
    return next((r for r in results if (r["teacher"], r["method"], r["seed"]) == (teacher, method, seed)
                 and abs(r["budget"] - budget) < 1e-9), None)
