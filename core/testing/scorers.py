"""A conformance suite for scorer plugins.

Subclass :class:`ScorerConformance` in a test module, name the subclass ``Test...`` and
implement :meth:`~ScorerConformance.make_scorer`; pytest then runs every check on your scorer::

    from prunetune.testing.scorers import ScorerConformance

    class TestMyScorer(ScorerConformance):
        def make_scorer(self):
            return MyScorer(MyScorer.Config())

The checks run on :func:`conformance_model`, a small CNN with a residual add, a concatenation,
a depthwise conv and a linear head after a flatten, scored with two calibration batches.
"""

from __future__ import annotations

import abc
import dataclasses

import torch
from torch import nn

from prunetune.groups import ChannelGroup, find_groups
from prunetune.scoring import ScoreContext, Scorer

__all__ = [
    "ConformanceNet",
    "ScorerConformance",
    "conformance_context",
    "conformance_model",
    "model_snapshot",
]

NUM_CLASSES = 3


class ConformanceNet(nn.Module):
    """Stem, a residual block, two concatenated branches of different kernels, a depthwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(4)
        self.block = nn.Conv2d(4, 4, 3, padding=1)
        self.block_bn = nn.BatchNorm2d(4)
        self.wide = nn.Conv2d(4, 3, 3, padding=1)
        self.narrow = nn.Conv2d(4, 2, 1)
        self.depthwise = nn.Conv2d(5, 5, 3, padding=1, groups=5, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.head = nn.Linear(5 * 2 * 2, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = x + torch.relu(self.block_bn(self.block(x)))
        x = torch.cat([self.wide(x), self.narrow(x)], dim=1)
        x = torch.relu(self.depthwise(x))
        return self.head(self.pool(x).flatten(1))


def conformance_model(seed: int = 0) -> nn.Module:
    """A :class:`ConformanceNet` in eval mode, with seeded weights and non-trivial BN stats."""
    torch.manual_seed(seed)
    model = ConformanceNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.uniform_(module.bias, -0.1, 0.1)
            nn.init.uniform_(module.running_mean, -0.1, 0.1)
            nn.init.uniform_(module.running_var, 0.5, 1.5)
    return model.eval()


def conformance_context(model: nn.Module, seed: int = 0, batches: int = 2) -> ScoreContext:
    """A context with a ``[1, 3, 8, 8]`` example input and ``batches`` labelled batches of 4."""
    generator = torch.Generator().manual_seed(1234)
    calibration = [
        (
            torch.randn(4, 3, 8, 8, generator=generator),
            torch.randint(0, NUM_CLASSES, (4,), generator=generator),
        )
        for _ in range(batches)
    ]
    example = torch.randn(1, 3, 8, 8, generator=generator)
    return ScoreContext(model=model, example_input=example, calibration=calibration, seed=seed)


def model_snapshot(model: nn.Module) -> dict[str, object]:
    """Everything a scorer must leave as it found it: state, grads, flags, modes and hooks."""
    hook_dicts = (
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
    )
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "grads": {
            n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()
        },
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "training": {n: m.training for n, m in model.named_modules()},
        "hooks": {
            n: tuple(len(getattr(m, d, {})) for d in hook_dicts) for n, m in model.named_modules()
        },
    }


def _assert_same(before: dict[str, object], after: dict[str, object]) -> None:
    for key in ("requires_grad", "training", "hooks"):
        assert before[key] == after[key], f"the scorer changed the model's {key}"
    for kind in ("state", "grads"):
        old, new = before[kind], after[kind]
        assert isinstance(old, dict) and isinstance(new, dict)
        for name, value in old.items():
            other = new[name]
            same = (
                value is None and other is None
                if value is None or other is None
                else torch.equal(value, other)
            )
            assert same, f"the scorer changed {kind} of {name}"


class ScorerConformance(abc.ABC):
    """Checks every scorer must pass; subclass it as ``Test...`` and implement ``make_scorer``."""

    @abc.abstractmethod
    def make_scorer(self) -> Scorer:
        """A fresh instance of the scorer under test."""

    def make_model(self) -> nn.Module:
        """The model scored; override to test on another one."""
        return conformance_model()

    def _setup(self, seed: int = 0) -> tuple[nn.Module, list[ChannelGroup], ScoreContext]:
        model = self.make_model()
        ctx = conformance_context(model, seed=seed)
        return model, find_groups(model, ctx.example_input), ctx

    def test_declares_config_and_description(self) -> None:
        scorer = self.make_scorer()
        config_cls = getattr(type(scorer), "Config", None)
        assert config_cls is not None and dataclasses.is_dataclass(config_cls)
        assert config_cls.__dataclass_params__.frozen, "Config must be a frozen dataclass"
        type(scorer)(config_cls())
        doc = (type(scorer).__doc__ or "").strip()
        assert doc, "the scorer's docstring's first line is its description"

    def test_one_finite_score_per_channel(self) -> None:
        _, groups, ctx = self._setup()
        assert len(groups) >= 2
        scores = self.make_scorer().score_groups(groups, ctx)
        assert set(scores) == {g.name for g in groups}
        for group in groups:
            value = scores[group.name]
            assert isinstance(value, torch.Tensor), group.name
            assert value.shape == (group.size,), group.name
            assert value.is_floating_point(), group.name
            assert torch.isfinite(value).all(), group.name

    def test_score_matches_score_groups_shape(self) -> None:
        _, groups, ctx = self._setup()
        scorer = self.make_scorer()
        for group in groups:
            value = scorer.score(group, ctx)
            assert value.shape == (group.size,) and torch.isfinite(value).all()

    def test_deterministic_for_the_same_seed(self) -> None:
        first = self._scores(seed=7)
        second = self._scores(seed=7)
        assert first.keys() == second.keys()
        for name in first:
            assert torch.allclose(first[name], second[name]), name

    def test_leaves_the_model_unchanged(self) -> None:
        model, groups, ctx = self._setup()
        frozen = next(model.parameters())
        frozen.requires_grad_(False)
        before = model_snapshot(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_same(before, model_snapshot(model))

    def test_leaves_existing_grads_alone(self) -> None:
        model, groups, ctx = self._setup()
        for param in model.parameters():
            param.grad = torch.full_like(param, 0.25)
        before = model_snapshot(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_same(before, model_snapshot(model))

    def test_leaves_train_mode_and_batchnorm_statistics(self) -> None:
        model, groups, ctx = self._setup()
        model.train()
        before = model_snapshot(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_same(before, model_snapshot(model))

    def test_works_without_calibration_unless_it_needs_data(self) -> None:
        scorer = self.make_scorer()
        if scorer.needs_data:
            return
        _, groups, ctx = self._setup()
        ctx = dataclasses.replace(ctx, calibration=())
        scores = scorer.score_groups(groups, ctx)
        assert all(torch.isfinite(scores[g.name]).all() for g in groups)

    def _scores(self, seed: int) -> dict[str, torch.Tensor]:
        _, groups, ctx = self._setup(seed=seed)
        return self.make_scorer().score_groups(groups, ctx)
