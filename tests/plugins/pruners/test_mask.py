from __future__ import annotations

import torch

from prunetune.components.pruning import PruneJob
from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.plugins.pruners.mask import MaskPruner
from prunetune.structure.groups import ChannelGroup
from prunetune.structure.measure import count_macs_params, weight_sparsity
from prunetune.structure.plan import StudentPlan
from tests.core.toy import ConcatDepthwise, Residual


class ByIndex(Scorer):
    """Channel i scores i."""

    def score(self, group: ChannelGroup, ctx: ScoreContext) -> torch.Tensor:
        return torch.arange(group.size, dtype=torch.float32)


def test_mask_zeroes_the_same_choice_and_keeps_the_shape() -> None:
    model = ConcatDepthwise()
    macs = count_macs_params(model, (3, 8, 8))
    record = MaskPruner(MaskPruner.Config()).prune(
        PruneJob(model, StudentPlan(ratio=0.5), ByIndex(), ScoreContext(model, torch.randn(1, 3, 8, 8)))
    )
    assert not record.physical
    assert record.removed["a"] == list(range(8)) + list(range(16, 32))
    assert count_macs_params(model, (3, 8, 8)) == macs
    assert model.a.weight[:8].abs().sum() == 0 and model.a.weight[8:].abs().sum() > 0
    assert model.b.weight[:16].abs().sum() == 0 and model.b.bias[:16].abs().sum() == 0
    assert model.bn.weight[:8].abs().sum() == 0 and model.bn.weight[16:32].abs().sum() == 0
    assert weight_sparsity(model) > 0.2


def test_masked_kernels_stay_zero_through_training() -> None:
    model = Residual()
    MaskPruner(MaskPruner.Config()).prune(
        PruneJob(model, StudentPlan(ratio=0.5), ByIndex(), ScoreContext(model, torch.randn(1, 3, 8, 8)))
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-3)
    for _ in range(3):
        loss = model(torch.randn(4, 3, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    model(torch.randn(1, 3, 8, 8))
    assert model.conv1.weight[:6].abs().sum() == 0
    assert model.stem.weight[:4].abs().sum() == 0 and model.conv2.weight[:4].abs().sum() == 0
    assert model.conv1.weight[6:].abs().sum() > 0


def test_a_state_dict_taken_before_the_next_forward_pass_holds_the_zeros() -> None:
    model = Residual()
    MaskPruner(MaskPruner.Config()).prune(
        PruneJob(model, StudentPlan(ratio=0.5), ByIndex(), ScoreContext(model, torch.randn(1, 3, 8, 8)))
    )
    with torch.no_grad():  # what an optimiser step may do to masked entries
        model.conv1.weight[:6] += 1.0
        model.bn1.bias[:6] += 1.0
    state = model.state_dict()
    assert state["conv1.weight"][:6].abs().sum() == 0 and state["bn1.bias"][:6].abs().sum() == 0
    assert state["conv1.weight"][6:].abs().sum() > 0


def test_a_macs_target_is_taken_with_one_line_saying_the_dense_macs_stay() -> None:
    import warnings

    model = Residual()
    plan = StudentPlan(macs_target=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        record = MaskPruner(MaskPruner.Config()).prune(
            PruneJob(model, plan, ByIndex(), ScoreContext(model, torch.randn(1, 3, 8, 8))))
    assert record.removed and any("dense MACs stay the teacher's" in str(w.message) for w in caught)
