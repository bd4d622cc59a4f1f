"""Picking the logits of a model that returns several outputs, by a hook that keeps layer names."""

from __future__ import annotations

import collections
import copy

import pytest
import torch

from prunetune.errors import UsageError
from prunetune.structure.outputs import all_outputs, flat_tensors, heads_of, pick, select_output
from tests.core import patterns

X = torch.randn(2, 1, 12, 12)
Outputs = collections.namedtuple("Outputs", ["logits", "aux"])


def test_pick_reads_indices_names_and_keys() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert pick((a, b), 1) is b and pick((a, b), "1") is b and pick((a, b), -1) is b
    assert pick(Outputs(a, b), "aux") is b and pick({"main": a}, "main") is a


@pytest.mark.parametrize(("output", "key", "message"), [
    ((torch.zeros(1), torch.zeros(1)), 2, r"returns 2 outputs: --logits 2 is not one of them \(0..1\)"),
    (Outputs(torch.zeros(1), None), "aux", "output 'aux' of the model is a NoneType, not a tensor"),
    ({"main": torch.zeros(1)}, "aux", r"has no 'aux' \(it has main\)"),
    (Outputs(torch.zeros(1), torch.zeros(1)), "nope", r"\(0..1 or logits, aux\)"),
])
def test_a_wrong_key_is_one_line(output: object, key: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        pick(output, key)  # type: ignore[arg-type]


def test_select_output_keeps_layer_names_copies_and_can_be_set_again() -> None:
    model = select_output(patterns.TupleOut(), 1, heads=["aux_conv"])
    names = [n for n, _ in patterns.TupleOut().named_modules()]
    assert [n for n, _ in model.named_modules()] == names
    assert torch.equal(model(X), model.heads(X)[1]) and heads_of(model) == ("aux_conv",)
    select_output(model, 0)
    assert torch.equal(copy.deepcopy(model)(X), model.heads(X)[0]) and heads_of(model) == ()
    with all_outputs(model):
        assert isinstance(model(X), tuple)
    with pytest.raises(UsageError, match="--classifier names no layer of the model: nope"):
        select_output(model, 0, heads=["nope"])


def test_flat_tensors_leaves_out_what_is_not_a_tensor() -> None:
    a, b = torch.zeros(1), torch.ones(1)
    assert [t.item() for t in flat_tensors((a, None, {"x": [b]}))] == [0.0, 1.0]
