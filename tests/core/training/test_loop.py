"""The step every training stage takes: the chosen samples, one optimizer step, the loss watched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunetune.errors import TrainingDiverged
from prunetune.training.loop import LossWatch, optimizer_step


def test_one_step_takes_the_chosen_samples_and_moves_the_weights() -> None:
    model = nn.Linear(3, 2)
    before = model.weight.detach().clone()
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 0, 1, 0, 1])
    seen = []

    def step(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        seen.append((xb, yb, idx))
        logits = model(xb)
        return nn.functional.cross_entropy(logits, yb), logits

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    idx = torch.tensor([4, 1])
    cpu = torch.device("cpu")
    loss, logits, labels = optimizer_step(step, opt, x, y, idx, cpu, LossWatch(cpu), "t")
    assert torch.equal(seen[0][0], x[idx]) and torch.equal(labels, y[idx]) and logits.shape == (2, 2)
    assert loss.item() > 0 and not torch.equal(model.weight, before)


def test_a_non_finite_loss_is_caught() -> None:
    model = nn.Linear(3, 2)
    watch = LossWatch(torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def step(xb: torch.Tensor, yb: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return model(xb).sum() * float("nan"), model(xb)

    with pytest.raises(TrainingDiverged):
        optimizer_step(step, opt, torch.randn(2, 3), torch.zeros(2, dtype=torch.long), torch.arange(2),
                       torch.device("cpu"), watch, "t")
        watch.check("t")
