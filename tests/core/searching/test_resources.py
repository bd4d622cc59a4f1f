from __future__ import annotations

import os

import pytest
import torch

from prunetune.errors import UsageError
from prunetune.searching.resources import check_local_fit, local_resources


def test_local_resources_are_this_machines() -> None:
    found = local_resources()
    assert 1 <= found["CPU"] <= (os.cpu_count() or 1)
    assert found["GPU"] == torch.cuda.device_count()


@pytest.mark.parametrize(("cpus", "gpus"), [(1.0, 0.0), (2.0, 0.0), (1.0, 0.25), (2.0, 1.0)])
def test_a_trial_that_fits(cpus: float, gpus: float) -> None:
    check_local_fit(cpus, gpus, {"CPU": 2.0, "GPU": 1.0})


@pytest.mark.parametrize(
    ("cpus", "gpus", "resources", "message"),
    [
        (3.0, 0.0, {"CPU": 2.0, "GPU": 0.0}, r"--cpus-per-trial 3 is more than this machine's 2 CPUs \(valid: up to 2"),
        (1.0, 0.5, {"CPU": 2.0, "GPU": 0.0}, r"--gpus-per-trial 0.5 .* which has no GPU \(valid: 0 to 0"),
        (1.0, 2.0, {"CPU": 8.0, "GPU": 1.0}, r"--gpus-per-trial 2 .* which has 1 GPU\(s\) \(valid: 0 to 1"),
    ],
)
def test_a_trial_no_node_can_hold_is_a_usage_error(cpus: float, gpus: float, resources: dict[str, float],
                                                   message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_local_fit(cpus, gpus, resources)
