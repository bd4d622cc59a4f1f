"""StudentPlan: how much to prune each group and which kernel size each conv gets."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from prunetune.errors import UsageError

__all__ = ["MAX_RATIO", "SAMPLED_MAX_RATIO", "StudentPlan"]

#: The most any group may lose where nothing else says: a budget's repair never cuts deeper.
MAX_RATIO = 0.9
#: The largest ratio a search space samples for a group when its options name none. Below
#: :data:`MAX_RATIO` (the search's ``--max-ratio``, the cap of its budget repair) on purpose: the
#: repair raises every ratio of a plan over budget, and a group sampled at the cap would leave no
#: room to take its share.
SAMPLED_MAX_RATIO = 0.8


def _check_ratio(ratio: float, where: str) -> None:
    if not 0.0 <= ratio < 1.0:
        raise UsageError(f"{where} ratio {ratio} is outside [0, 1)")


def _check_kernel(size: int, where: str) -> None:
    if size <= 0 or size % 2 == 0:
        raise UsageError(f"{where} kernel size {size} is not a positive odd integer (1, 3, 5, 7...)")


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what} must be a number, got {json.dumps(value)}")
    return float(value)


def _integer(value: Any, what: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{what} must be an integer, got {json.dumps(value)}")
    return value


def _table(data: Mapping[str, Any], key: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise UsageError(f"plan's {key} must be a JSON object of layer name -> value, got {json.dumps(value)}")
    return {str(k): v for k, v in value.items()}


@dataclasses.dataclass(frozen=True)
class StudentPlan:
    """Per-layer pruning ratios and kernel sizes, keyed by stable layer names.

    Attributes:
        ratio: The ratio of every group not named in ``ratios``.
        ratios: Ratio per group; a key may name any producer layer of the group.
        kernels: New kernel size per conv layer name (odd, positive).
        round_to: Keep channel counts multiples of this (None: any count).
        macs_target: Global ranking: cut the lowest-ranked channels across all groups (scores
            normalised per group) until the model's MACs are at most this fraction of what
            they were; ``ratio``/``ratios`` are then ignored. None: local ranking by ratios.
        max_ratio: Under global ranking, no group loses more than this share of its channels.
    """

    ratio: float = 0.0
    ratios: Mapping[str, float] = dataclasses.field(default_factory=dict)
    kernels: Mapping[str, int] = dataclasses.field(default_factory=dict)
    round_to: int | None = None
    macs_target: float | None = None
    max_ratio: float = MAX_RATIO

    def __post_init__(self) -> None:
        _check_ratio(self.ratio, "pruning")
        for name, ratio in self.ratios.items():
            _check_ratio(ratio, f"layer {name!r} pruning")
        for name, size in self.kernels.items():
            _check_kernel(size, f"layer {name!r}")
        if self.round_to is not None and self.round_to < 1:
            raise UsageError(f"round_to {self.round_to} must be a positive integer")
        if self.macs_target is not None and not 0.0 < self.macs_target <= 1.0:
            raise UsageError(f"MACs target {self.macs_target} is outside (0, 1]")
        _check_ratio(self.max_ratio, "maximum")

    def to_dict(self) -> dict[str, Any]:
        return {
            "ratio": self.ratio,
            "ratios": dict(self.ratios),
            "kernels": dict(self.kernels),
            "round_to": self.round_to,
            "macs_target": self.macs_target,
            "max_ratio": self.max_ratio,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudentPlan:
        """A plan from its JSON form; every value's type is checked (no silent conversion).

        Raises:
            UsageError: an unknown key, or a value of the wrong type or out of range.
        """
        if not isinstance(data, Mapping):
            raise UsageError(f"a plan must be a JSON object, got {type(data).__name__}")
        valid = ("ratio", "ratios", "kernels", "round_to", "macs_target", "max_ratio")
        unknown = set(data) - set(valid)
        if unknown:
            raise UsageError(f"plan has unknown keys {sorted(unknown)} (valid: {', '.join(valid)})")
        target, round_to = data.get("macs_target"), data.get("round_to")
        return cls(
            ratio=_number(data.get("ratio", 0.0), "plan's ratio"),
            ratios={k: _number(v, f"plan's ratio of {k!r}") for k, v in _table(data, "ratios").items()},
            kernels={k: _integer(v, f"plan's kernel size of {k!r}") for k, v in _table(data, "kernels").items()},
            round_to=None if round_to is None else _integer(round_to, "plan's round_to"),
            macs_target=None if target is None else _number(target, "plan's macs_target"),
            max_ratio=_number(data.get("max_ratio", 0.9), "plan's max_ratio"),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)
