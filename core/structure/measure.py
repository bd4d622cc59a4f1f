"""What a student costs and how well it does: accuracy, MACs, params, latency, file size."""

from __future__ import annotations

import copy
import dataclasses
import io
import statistics
import time

import torch
import torch_pruning as tp
from torch import nn

__all__ = ["Measurement", "count_macs_params", "cpu_latency_ms", "file_size_bytes", "measure", "time_forward", "weight_sparsity"]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One model's numbers. Latencies are CPU medians in milliseconds per batch."""

    accuracy: float
    macs: int
    params: int
    latency_b1_ms: float
    latency_b256_ms: float
    file_bytes: int
    sparsity: float

    def to_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


def count_macs_params(model: nn.Module, input_shape: tuple[int, int, int]) -> tuple[int, int]:
    """Multiply-accumulates of one forward pass of one image, and the parameter count."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    example = torch.zeros(1, *input_shape, device=device)
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    model.train(was_training)
    return int(macs), int(params)


def cpu_latency_ms(
    model: nn.Module, input_shape: tuple[int, int, int], batch: int, repeats: int, warmup: int = 2
) -> float:
    """Median wall time of a forward pass of ``batch`` images on the CPU, in milliseconds."""
    cpu_model = copy.deepcopy(model).cpu().eval()
    return time_forward(cpu_model, torch.randn(batch, *input_shape), repeats, warmup)


def time_forward(module: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> float:
    """Median wall time of ``module(x)`` in milliseconds, in inference mode, after ``warmup`` runs."""
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            start = time.perf_counter()
            module(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def file_size_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict as ``torch.save`` writes it."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def weight_sparsity(model: nn.Module) -> float:
    """Fraction of conv and linear weights that are exactly zero."""
    total = zeros = 0
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
            total += module.weight.numel()
            zeros += int((module.weight == 0).sum())
    return zeros / total if total else 0.0


def measure(
    model: nn.Module,
    accuracy: float,
    input_shape: tuple[int, int, int],
    repeats: int = 10,
) -> Measurement:
    """Everything but accuracy, which the caller evaluates on the split it chose."""
    macs, params = count_macs_params(model, input_shape)
    return Measurement(
        accuracy=accuracy,
        macs=macs,
        params=params,
        latency_b1_ms=cpu_latency_ms(model, input_shape, 1, repeats * 3),
        latency_b256_ms=cpu_latency_ms(model, input_shape, 256, repeats),
        file_bytes=file_size_bytes(model),
        sparsity=weight_sparsity(model),
    )
