from __future__ import annotations

import torch
from torch import nn

from prunetune.structure.measure import count_macs_params, cpu_latency_ms, file_size_bytes, measure


def test_macs_and_params_of_a_known_conv() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))
    macs, params = count_macs_params(model, (1, 8, 8))
    assert params == 4 * 9
    assert macs == 4 * 9 * 8 * 8


def test_latency_is_positive_and_grows_with_batch() -> None:
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    small = cpu_latency_ms(model, (1, 16, 16), batch=1, repeats=5)
    large = cpu_latency_ms(model, (1, 16, 16), batch=64, repeats=5)
    assert 0 < small < large


def test_file_size_tracks_parameters() -> None:
    small, big = nn.Linear(10, 10), nn.Linear(100, 100)
    assert file_size_bytes(big) > 10 * file_size_bytes(small)


def test_measure_collects_everything_and_counts_sparsity() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False))
    with torch.no_grad():
        model[0].weight[:1] = 0
    m = measure(model, accuracy=50.0, input_shape=(1, 8, 8), repeats=2)
    assert m.accuracy == 50.0 and m.macs == 4 * 9 * 64 and m.params == 36
    assert m.sparsity == 0.25
    assert m.latency_b1_ms > 0 and m.latency_b256_ms > 0 and m.file_bytes > 0
