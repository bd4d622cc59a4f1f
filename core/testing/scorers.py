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

from prunetune.components.scoring import ScoreContext, Scorer
from prunetune.structure.groups import ChannelGroup, find_groups
from prunetune.testing.contract import check_component_contract

__all__ = [
    "ConformanceNet",
    "ModelSnapshot",
    "ScorerConformance",
    "conformance_context",
    "conformance_model",
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
    ranges = {
        "weight": (0.5, 1.5),
        "bias": (-0.1, 0.1),
        "running_mean": (-0.1, 0.1),
        "running_var": (0.5, 1.5),
    }
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                for name, (low, high) in ranges.items():
                    getattr(module, name).uniform_(low, high)
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


_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


@dataclasses.dataclass
class ModelSnapshot:
    """Everything a scorer must leave as it found it.

    Attributes:
        tensors: Copies of the state dict (``state:NAME``) and of each ``.grad``
            (``grad:NAME``, ``None`` when unset).
        flags: ``requires_grad:NAME``, ``training:NAME`` and ``hooks:NAME`` (hook counts).
    """

    tensors: dict[str, torch.Tensor | None]
    flags: dict[str, object]

    @classmethod
    def of(cls, model: nn.Module) -> ModelSnapshot:
        tensors: dict[str, torch.Tensor | None] = {
            f"state:{k}": v.detach().clone() for k, v in model.state_dict().items()
        }
        flags: dict[str, object] = {}
        for name, param in model.named_parameters():
            tensors[f"grad:{name}"] = None if param.grad is None else param.grad.clone()
            flags[f"requires_grad:{name}"] = param.requires_grad
        for name, module in model.named_modules():
            flags[f"training:{name}"] = module.training
            flags[f"hooks:{name}"] = tuple(len(getattr(module, d, {})) for d in _HOOK_DICTS)
        return cls(tensors, flags)

    def changes(self, later: ModelSnapshot) -> list[str]:
        """The keys whose value differs in ``later``."""
        changed = [k for k, v in self.flags.items() if later.flags.get(k) != v]
        for key, old in self.tensors.items():
            new = later.tensors.get(key)
            if (old is None) != (new is None) or (
                old is not None and new is not None and not torch.equal(old, new)
            ):
                changed.append(key)
        return changed


def _assert_unchanged(before: ModelSnapshot, model: nn.Module) -> None:
    changed = before.changes(ModelSnapshot.of(model))
    assert not changed, f"the scorer changed the model: {', '.join(changed)}"


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
        check_component_contract(self.make_scorer(), Scorer, "scorer")

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
        before = ModelSnapshot.of(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_unchanged(before, model)

    def test_leaves_existing_grads_alone(self) -> None:
        model, groups, ctx = self._setup()
        for param in model.parameters():
            param.grad = torch.full_like(param, 0.25)
        before = ModelSnapshot.of(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_unchanged(before, model)

    def test_leaves_train_mode_and_batchnorm_statistics(self) -> None:
        model, groups, ctx = self._setup()
        model.train()
        before = ModelSnapshot.of(model)
        self.make_scorer().score_groups(groups, ctx)
        _assert_unchanged(before, model)

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
