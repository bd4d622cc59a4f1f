"""What ``prunetune search`` takes: :class:`SearchSpec`, its checks and its ``search.json``."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prunetune.errors import UsageError
from prunetune.jobs.spec import JobSpec
from prunetune.structure.plan import MAX_RATIO

__all__ = ["OBJECTIVES", "SCHEDULERS", "SCREEN_FILE", "SPEC_FILE", "SearchSpec"]

#: Objective name -> (reported metric, mode).
OBJECTIVES = {
    "accuracy": ("val_accuracy", "max"),
    "macs": ("macs", "min"),
    "params": ("params", "min"),
    "latency": ("latency_b256_ms", "min"),
}
#: Ray Tune trial schedulers a search may use.
SCHEDULERS = ("fifo", "asha")
SPEC_FILE = "search.json"
SCREEN_FILE = "screen.json"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclasses.dataclass(frozen=True)
class SearchSpec(JobSpec):
    """Everything ``prunetune search`` takes: the shared settings, then the search's own.
    Serialised to ``search.json`` for ``--resume``."""

    space: str = "per_layer"
    strategy: str = "optuna"
    space_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    strategy_options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    max_macs: float | None = None
    max_latency: float | str | None = None  # ms, "uniform" or "none"; None: see latency_cap
    latency_batch: int = 256
    latency_threads: int | None = None  # None: torch.get_num_threads() when the spec is made
    max_ratio: float = MAX_RATIO
    round_to: int | None = None
    objectives: tuple[str, ...] = ("accuracy",)
    num_samples: int = 12
    max_concurrent: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    scheduler: str = "fifo"
    address: str | None = None
    storage: str | None = None
    epochs: int = 2
    final_epochs: int = 5
    run_root: str = "runs"
    name: str | None = None
    leaderboard: str = "leaderboard"
    screen: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        checks = [
            (self.max_macs is None or 0.0 < self.max_macs <= 1.0, f"--max-macs must be in (0, 1], got {self.max_macs}"),
            (0.0 < self.max_ratio < 1.0, f"--max-ratio must be in (0, 1), got {self.max_ratio}"),
            (self.num_samples >= 1, f"--num-samples must be at least 1, got {self.num_samples}"),
            (self.max_concurrent is None or self.max_concurrent >= 1, f"--max-concurrent must be at least 1, got {self.max_concurrent}"),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be positive, got {self.cpus_per_trial}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must be 0 or more, got {self.gpus_per_trial}"),
            (self.scheduler in SCHEDULERS, f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.final_epochs >= 0, f"--final-epochs must be 0 or more, got {self.final_epochs}"),
            (self.screen >= 0, f"--screen must be 0 or more, got {self.screen}"),
            (len(self.objectives) >= 1 and self.objectives[0] == "accuracy",
             f"--objectives must start with accuracy, got {','.join(self.objectives)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UsageError(message)
        self._check_latency()
        unknown = [o for o in self.objectives if o not in OBJECTIVES]
        if unknown:
            raise UsageError(f"unknown objective {', '.join(unknown)} (valid: {', '.join(OBJECTIVES)})")
        if self.name is not None and not _PLAIN_NAME.fullmatch(self.name):
            raise UsageError(f"--name {self.name!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                             "not starting with '.'), not a path")

    def _check_latency(self) -> None:
        cap = self.max_latency
        number = isinstance(cap, (int, float)) and not isinstance(cap, bool)
        if not (cap is None or cap in ("uniform", "none") or (number and math.isfinite(cap) and cap > 0)):
            raise UsageError(f"--max-latency must be a positive number of milliseconds, uniform or none, got {cap}")
        if cap == "uniform" and self.max_macs is None:
            raise UsageError("--max-latency uniform needs --max-macs: the uniform student of that budget sets the cap")
        for option, value in (("--latency-batch", self.latency_batch), ("--latency-threads", self.latency_threads)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{option} must be a whole number of at least 1, got {value}")
        if self.latency_threads is None:  # recorded, so a resumed run times as this one did
            import torch  # here, not above: the command line reads this module's defaults

            object.__setattr__(self, "latency_threads", torch.get_num_threads())

    @property
    def latency_cap(self) -> float | str:
        """``--max-latency`` as the search applies it: milliseconds per batch of
        ``latency_batch`` images; ``"uniform"``, the predicted latency of the uniform student of
        the MACs budget (the default with ``--max-macs``); or ``"none"`` (the default without)."""
        if self.max_latency is None:
            return "uniform" if self.max_macs is not None else "none"
        return float(self.max_latency) if not isinstance(self.max_latency, str) else self.max_latency

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["objectives"] = list(self.objectives)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = SPEC_FILE) -> SearchSpec:
        """The spec a run folder holds.

        Raises:
            UsageError: ``text`` is not a search spec: not JSON, unknown or missing settings,
                values of the wrong type or out of range.
        """
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{source} is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{source} must hold a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"{source} has unknown settings {', '.join(unknown)}")
        # A run from before --max-latency ran without a latency cap: it resumes and reruns so.
        data.setdefault("max_latency", "none")
        if "schedule" not in data:
            # A run from before the one-cycle recipe resumes and reruns with the recipe it began
            # with: cosine, no Nesterov, and hinton's alpha then (0.9) unless the run set one.
            data |= {"schedule": "cosine", "nesterov": False}
            if data.get("distiller", cls.distiller) == "hinton" and isinstance(data.get("distiller_options", {}), dict):
                data["distiller_options"] = {"alpha": 0.9, **data.get("distiller_options", {})}
        if "objectives" in data:
            if not isinstance(data["objectives"], list) or not all(isinstance(o, str) for o in data["objectives"]):
                raise UsageError(f"{source}: objectives must be a list of names")
            data["objectives"] = tuple(data["objectives"])
        for key, value in data.items():
            if key.endswith("_options") and not isinstance(value, dict):
                raise UsageError(f"{source}: {key} must be a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:  # a value of the wrong type reached a check
            raise UsageError(f"{source} holds a setting of the wrong type ({exc})") from None

    def with_absolute_paths(self) -> SearchSpec:
        """This spec with its local paths absolute, so a run resumes from any directory."""
        def absolute(path: str | None) -> str | None:
            return path if path is None or "://" in path else str(Path(path).resolve())

        # Dataset options name their files plugin by plugin: those naming an existing path.
        dataset_options = {k: absolute(v) if isinstance(v, str) and v and Path(v).exists() else v
                           for k, v in self.dataset_options.items()}
        return dataclasses.replace(
            self, run_root=absolute(self.run_root), leaderboard=absolute(self.leaderboard),
            teacher_checkpoint=absolute(self.teacher_checkpoint), storage=absolute(self.storage),
            dataset_options=dataset_options,
        )
