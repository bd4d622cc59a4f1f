"""What one trial asks of Ray, checked against what the embedded Ray will have.

Ray Tune waits, silently and for ever, for a trial that no node can hold; on this machine
nothing will ever be added, so such a request is a usage error before anything runs.
"""

from __future__ import annotations

import os

import torch

from prunetune.errors import UsageError

__all__ = ["check_local_fit", "local_resources"]


def local_resources() -> dict[str, float]:
    """The CPUs and GPUs an embedded Ray finds on this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return {"CPU": float(cpus), "GPU": float(torch.cuda.device_count())}


def check_local_fit(cpus_per_trial: float, gpus_per_trial: float, resources: dict[str, float]) -> None:
    """Raise :class:`UsageError` unless one trial fits in ``resources`` (one machine's).

    Raises:
        UsageError: more CPUs or GPUs per trial than the machine has.
    """
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus_per_trial > cpus:
        raise UsageError(f"--cpus-per-trial {cpus_per_trial:g} is more than this machine's {cpus:g} CPUs "
                         f"(valid: up to {cpus:g}, or --address of a Ray cluster with bigger nodes)")
    if gpus_per_trial > gpus:
        have = "has no GPU" if gpus == 0 else f"has {gpus:g} GPU(s)"
        raise UsageError(f"--gpus-per-trial {gpus_per_trial:g} asks for more than this machine, which {have} "
                         f"(valid: 0 to {gpus:g}, or --address of a Ray cluster with GPUs)")
