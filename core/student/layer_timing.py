"""Timing a teacher's convs and linears one by one, on a grid of kept channel counts and kernel
sizes: the measurements a :class:`~prunetune.student.latency.LatencyTable` is built from."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunetune.structure import measure
from prunetune.student.budget import MacsCounter

__all__ = [
    "FRACTIONS", "KERNEL_SIZES", "REPEATS", "WARMUP", "Seen", "Timer", "cpu_model", "cut_dims",
    "measure_entry", "signature", "time_forward", "trace_layers",
]

#: Kept fractions of a layer's channels that are timed (per dimension a group can cut): 0.1 is
#: what ``--max-ratio 0.9`` keeps. Five points per dimension halved the error of three on the
#: benchmark (benchmarks/latency_table.py) and keep the zoo resnet's table well under a minute at
#: batch 256 on 2 threads of an idle machine.
FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)
#: Kernel sizes timed for every conv a plan may resize (:func:`prunetune.structure.kernels.kernel_layers`).
KERNEL_SIZES = (1, 3, 5, 7)
#: Timed runs per grid point (their median is kept), after one warm-up run.
REPEATS = 3
WARMUP = 1
#: Times one forward pass of a module on an input: milliseconds.
Timer = Callable[[nn.Module, torch.Tensor], float]


def time_forward(module: nn.Module, x: torch.Tensor, repeats: int = REPEATS, warmup: int = WARMUP) -> float:
    """Median wall time of ``module(x)`` in milliseconds (:func:`prunetune.structure.measure.time_forward`
    with the table's repeats)."""
    return measure.time_forward(module, x, repeats, warmup)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


@dataclasses.dataclass(frozen=True)
class Seen:
    """A conv or linear as the teacher's forward pass ran it."""

    module: nn.Module
    input_shape: tuple[int, ...]  # per image
    output_numel: int  # per image
    calls: int


def trace_layers(model: nn.Module, example: torch.Tensor) -> dict[str, Seen]:
    seen: dict[str, list[Any]] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            calls = seen[name][3] + 1 if name in seen else 1
            seen[name] = [module, tuple(args[0].shape[1:]), output[:1].numel(), calls]
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example[:1].to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return {name: Seen(*values) for name, values in seen.items()}


def cut_dims(counter: MacsCounter) -> tuple[set[str], set[str]]:
    """Names of the layers whose input, and whose output, channels some group cuts."""
    cut_in, cut_out = set(), set()
    for group in counter.groups():
        for member in group.members:
            if member.role == "in":
                cut_in.add(member.name)
            elif member.role == "out":
                cut_out.add(member.name)
    return cut_in, cut_out


def _padding(conv: nn.Conv2d, size: int) -> tuple[int, int] | str | None:
    """The padding that keeps the output size with a ``size`` kernel; None when there is none."""
    if conv.padding == "same":
        return "same"
    padding = (0, 0) if conv.padding == "valid" else conv.padding
    new = [p + d * (size - k) // 2 for k, p, d in zip(conv.kernel_size, padding, conv.dilation)]
    return None if min(new) < 0 else (new[0], new[1])


def signature(name: str, seen: Seen, cut_in: set[str], cut_out: set[str], resizable: set[str],
               kernel_sizes: Sequence[int]) -> dict[str, Any]:
    module = seen.module
    if isinstance(module, nn.Linear):
        return {"kind": "linear", "in": module.in_features, "out": module.out_features, "bias": module.bias is not None,
                "input": list(seen.input_shape[:-1]), "cut_in": name in cut_in, "cut_out": name in cut_out,
                "kernels": [1]}
    assert isinstance(module, nn.Conv2d)
    own = module.kernel_size[0]
    sizes = {own}
    if name in resizable:
        sizes |= {k for k in kernel_sizes if _padding(module, k) is not None}
    depthwise = module.groups == module.in_channels and module.groups > 1
    return {"kind": "conv", "in": module.in_channels, "out": module.out_channels, "kernel": list(module.kernel_size),
            "stride": list(module.stride), "padding": module.padding if isinstance(module.padding, str) else list(module.padding),
            "dilation": list(module.dilation), "groups": module.groups, "depthwise": depthwise,
            "bias": module.bias is not None, "padding_mode": module.padding_mode, "input": list(seen.input_shape[1:]),
            "cut_in": name in cut_in or (depthwise and name in cut_out), "cut_out": name in cut_out and not depthwise,
            "kernels": sorted(sizes)}


def _grid(size: int, cut: bool, fractions: Sequence[float], multiple: int = 1) -> list[int]:
    if not cut:
        return [size]
    counts = {min(size, multiple * max(1, math.ceil(round(size * f) / multiple))) for f in fractions}
    return sorted(counts | {size})


def _conv(sig: dict[str, Any], cin: int, cout: int, size: int) -> nn.Conv2d:
    own = sig["kernel"][0]
    template = nn.Conv2d(1, 1, tuple(sig["kernel"]), padding=sig["padding"] if isinstance(sig["padding"], str)
                         else tuple(sig["padding"]), dilation=tuple(sig["dilation"]))
    kernel = tuple(sig["kernel"]) if size == own else (size, size)
    padding = template.padding if size == own else _padding(template, size)
    groups = cin if sig["depthwise"] else sig["groups"]
    return nn.Conv2d(cin, cout, kernel, stride=tuple(sig["stride"]), padding=padding,  # type: ignore[arg-type]
                     dilation=tuple(sig["dilation"]), groups=groups, bias=sig["bias"], padding_mode=sig["padding_mode"])


def _monotone(ms: list[list[float]]) -> list[list[float]]:
    """Each time lowered to the least time of any point with as many or more channels in both
    counts: times never fall as either count grows. A lower point, not a higher one, gives way,
    because timing noise on a busy machine only ever adds time."""
    out = [row[:] for row in ms]
    for i in reversed(range(len(out))):
        row = out[i]
        for j in reversed(range(len(row))):
            above = out[i + 1][j] if i + 1 < len(out) else math.inf
            right = row[j + 1] if j + 1 < len(row) else math.inf
            row[j] = min(row[j], above, right)
    return out


def measure_entry(sig: dict[str, Any], batch: int, fractions: Sequence[float], timer: Timer) -> dict[str, Any]:
    if sig["kind"] == "linear":
        ins, outs = _grid(sig["in"], sig["cut_in"], fractions), _grid(sig["out"], sig["cut_out"], fractions)
        grids = {"1": [[timer(nn.Linear(ci, co, bias=sig["bias"]), torch.randn(batch, *sig["input"], ci)) for co in outs]
                       for ci in ins]}
        return {"in": ins, "out": outs, "grids": {k: _monotone(v) for k, v in grids.items()}}
    multiple = 1 if sig["depthwise"] else sig["groups"]
    ins = _grid(sig["in"], sig["cut_in"], fractions, multiple)
    # A depthwise conv's outputs follow its inputs (a multiple of them): one dimension.
    outs = [sig["out"]] if sig["depthwise"] else _grid(sig["out"], sig["cut_out"], fractions, multiple)
    per_input = sig["out"] // sig["in"]
    grids = {}
    for size in sig["kernels"]:
        ms = []
        for ci in ins:
            x = torch.randn(batch, ci, *sig["input"])
            couts = [ci * per_input] if sig["depthwise"] else outs
            ms.append([timer(_conv(sig, ci, co, size), x) for co in couts])
        grids[str(size)] = _monotone(ms)
    return {"in": ins, "out": outs, "grids": grids}
