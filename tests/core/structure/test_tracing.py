"""Tracing: every output in training mode, statistics untouched, Torch-Pruning's reshape failure tolerated."""

from __future__ import annotations

import torch
from torch_pruning.dependency import index_mapping

from prunetune.structure.tracing import traced_groups
from tests.core import patterns


def test_aux_heads_are_traced_and_batchnorm_statistics_left_alone() -> None:
    model = patterns.Aux().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _, traced = traced_groups(model, torch.randn(1, 1, 12, 12))
    names = {m.name for _, members in traced for m in members}
    assert {"aux_conv", "aux_fc"} <= names  # the aux head runs in training mode only
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_torch_prunings_reshape_mapping_is_made_tolerant_once() -> None:
    import prunetune.structure.tracing  # noqa: F401 - the import patches it

    assert getattr(index_mapping.update_reshape_index_mapping, "tolerant", False)
