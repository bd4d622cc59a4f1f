"""A conformance suite for model plugins (teacher factories).

Subclass :class:`ModelConformance` in a test module, name the subclass ``Test...`` and
implement :meth:`~ModelConformance.make_factory`; pytest then runs every check on your model::

    from prunetune.testing.models import ModelConformance

    class TestMyModel(ModelConformance):
        supported_inputs = ((3, 32),)  # (channels, image size) pairs the model takes

        def make_factory(self):
            return MyFactory(MyFactory.Config(width=4))

Keep the model small (few channels): every check builds it several times and prunes it once,
with the ``channel`` pruner and the ``l1`` scorer, as a compression run would.
"""

from __future__ import annotations

import abc
import functools

import torch
from torch import nn

from prunetune.components.models import ModelFactory
from prunetune.components.pruning import PruneRecord
from prunetune.errors import UsageError
from prunetune.host.manager import Host
from prunetune.host.registry import Registry
from prunetune.structure.groups import find_groups
from prunetune.structure.kernels import apply_kernels, kernel_layers
from prunetune.structure.measure import count_macs_params
from prunetune.structure.plan import StudentPlan
from prunetune.student.surgery import build_student
from prunetune.testing.contract import check_component_contract, eval_outputs, state_shapes

__all__ = ["ModelConformance"]

#: Not 10, so a model that ignores ``num_classes`` fails.
NUM_CLASSES = 7


@functools.cache
def _registry() -> Registry:
    return Host.create().registry


class ModelConformance(abc.ABC):
    """Checks every model factory must pass; subclass it as ``Test...``, implement ``make_factory``."""

    #: ``(in_channels, image_size)`` pairs the factory takes; the first is the one pruned.
    supported_inputs: tuple[tuple[int, int], ...] = ((1, 28), (3, 32), (3, 28), (1, 32))

    @abc.abstractmethod
    def make_factory(self) -> ModelFactory:
        """A fresh factory under test, configured small."""

    def _build(self, in_channels: int, image_size: int, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return self.make_factory().build(in_channels, NUM_CLASSES, image_size)

    def _input(self, batch: int = 2, seed: int = 0) -> torch.Tensor:
        channels, size = self.supported_inputs[0]
        return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))

    def test_component_contract(self) -> None:
        check_component_contract(self.make_factory(), ModelFactory, "model")

    def test_logits_for_every_supported_input(self) -> None:
        assert self.supported_inputs, "list at least one (in_channels, image_size) pair"
        for channels, size in self.supported_inputs:
            model = self._build(channels, size)
            assert isinstance(model, nn.Module)
            out = eval_outputs(model, torch.randn(2, channels, size, size))
            assert out.shape == (2, NUM_CLASSES), f"{channels}x{size}x{size} gave {tuple(out.shape)}"
            assert torch.isfinite(out).all(), f"{channels}x{size}x{size} gave non-finite logits"

    def test_builds_a_new_model_each_time(self) -> None:
        channels, size = self.supported_inputs[0]
        first, second = self._build(channels, size), self._build(channels, size)
        assert first is not second
        storage = {p.data_ptr() for p in first.parameters() if p.numel()}
        shared = [name for name, p in second.named_parameters() if p.numel() and p.data_ptr() in storage]
        assert not shared, f"two builds share weights: {', '.join(shared[:3])}"

    def test_same_seed_same_weights(self) -> None:
        channels, size = self.supported_inputs[0]
        first, second = self._build(channels, size, seed=3), self._build(channels, size, seed=3)
        a, b = first.state_dict(), second.state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

    def test_refuses_inputs_it_cannot_take(self) -> None:
        channels, size = self.supported_inputs[0]
        factory = self.make_factory()
        try:
            model = factory.build(channels, NUM_CLASSES, 1)
        except UsageError:
            pass
        else:  # a model that builds for 1x1 images must take them
            assert eval_outputs(model, torch.randn(2, channels, 1, 1)).shape == (2, NUM_CLASSES)
        try:
            factory.build(0, NUM_CLASSES, size)
        except UsageError:
            return
        raise AssertionError("a model of 0 input channels must be refused with a UsageError")

    def test_channel_groups_have_stable_names(self) -> None:
        # Plans and pruning records name groups: a rebuilt model must have the same ones.
        channels, size = self.supported_inputs[0]
        x = self._input(1)
        first = find_groups(self._build(channels, size, seed=0), x)
        second = find_groups(self._build(channels, size, seed=1), x)
        assert first, "prunetune finds no prunable channel group in the model"
        assert [(g.name, g.size) for g in first] == [(g.name, g.size) for g in second]

    def test_pruned_student_is_smaller_and_reloads(self) -> None:
        channels, size = self.supported_inputs[0]
        teacher = self._build(channels, size).eval()
        pruner = _registry().create("pruner", "channel")
        scorer = _registry().create("scorer", "l1")
        example = self._input(1)
        student, record = build_student(teacher, StudentPlan(ratio=0.5), pruner, scorer, example)
        x = self._input(3, seed=1)
        assert eval_outputs(student, x).shape == (3, NUM_CLASSES)
        macs_t, params_t = count_macs_params(teacher, (channels, size, size))
        macs_s, params_s = count_macs_params(student, (channels, size, size))
        assert macs_s < macs_t and params_s < params_t, "halving every group saved nothing"
        # As a checkpoint reloads it: a fresh build, the record replayed, the weights loaded.
        rebuilt = self._build(channels, size, seed=1)
        _registry().create("pruner", "channel").replay(
            rebuilt, PruneRecord.from_dict(record.to_dict()), torch.zeros_like(example)
        )
        assert state_shapes(rebuilt) == state_shapes(student), "the pruning record replays to another model"
        rebuilt.load_state_dict(student.state_dict())
        torch.testing.assert_close(eval_outputs(rebuilt, x), eval_outputs(student, x), atol=1e-5, rtol=1e-5)

    def test_larger_kernels_compute_the_same(self) -> None:
        # A plan may resize any conv kernel_layers lists; the model must use the new conv.
        channels, size = self.supported_inputs[0]
        model = self._build(channels, size).eval()
        x = self._input(2)
        expected = eval_outputs(model, x)
        layers = kernel_layers(model)
        apply_kernels(model, {name: k + 2 for name, k in layers.items()})
        assert all(k == layers[name] + 2 for name, k in kernel_layers(model).items())
        torch.testing.assert_close(eval_outputs(model, x), expected, atol=1e-5, rtol=1e-4)
        if not layers:
            return
        modules = dict(model.named_modules())
        with torch.no_grad():
            for name in layers:
                modules[name].weight.zero_()  # type: ignore[operator]
        assert not torch.allclose(eval_outputs(model, x), expected), "the model still runs the old convs"
