"""Device selection: ``auto`` takes a GPU when there is one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from prunetune.errors import UsageError

__all__ = ["describe_device", "select_device", "torch_threads"]


def select_device(spec: str = "auto") -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a :class:`torch.device`.

    Raises:
        UsageError: an unknown spec, or a GPU asked for where none is available.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r} (valid: auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} asked for, but this machine has no CUDA GPU (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist")
    elif device.type != "cpu":
        raise UsageError(f"unsupported device {spec!r} (valid: auto, cpu, cuda, cuda:N)")
    return device


def describe_device(device: torch.device) -> str:
    """What a leaderboard row says ran the work: the GPU's name, or ``cpu xN`` (torch threads)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu x{torch.get_num_threads()}"


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch using ``threads`` threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
