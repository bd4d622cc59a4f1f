from __future__ import annotations

import pytest
import torch

from prunetune.errors import UsageError
from prunetune.training.devices import describe_device, select_device


def test_auto_and_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("cpu") == torch.device("cpu")


def test_bad_specs() -> None:
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        select_device("gpu0")
    with pytest.raises(UsageError, match="unsupported device"):
        select_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error() -> None:
    with pytest.raises(UsageError, match="has no CUDA GPU"):
        select_device("cuda")


def test_a_device_is_described_by_what_runs_the_work() -> None:
    torch.set_num_threads(1)
    assert describe_device(torch.device("cpu")) == "cpu x1"
    if torch.cuda.is_available():
        assert describe_device(torch.device("cuda")) == torch.cuda.get_device_name(0)
