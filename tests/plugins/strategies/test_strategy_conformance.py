"""Every built-in strategy passes the shared strategy conformance suite."""

from __future__ import annotations

import pytest

from prunetune.components.strategy import Strategy
from prunetune.plugins.strategies.optuna import OptunaStrategy
from prunetune.plugins.strategies.structure_diversity import StructureDiversityStrategy
from prunetune.testing.strategies import StrategyConformance

pytest.importorskip("ray.tune.search.optuna")


class TestOptunaTPE(StrategyConformance):
    multi_objective = True

    def make_strategy(self) -> Strategy:
        return OptunaStrategy(OptunaStrategy.Config(n_startup_trials=3))


class TestOptunaNSGA2(StrategyConformance):
    multi_objective = True

    def make_strategy(self) -> Strategy:
        return OptunaStrategy(OptunaStrategy.Config(sampler="nsga2"))


class TestOptunaRandom(StrategyConformance):
    multi_objective = True

    def make_strategy(self) -> Strategy:
        return OptunaStrategy(OptunaStrategy.Config(sampler="random"))


class TestStructureDiversity(StrategyConformance):
    def make_strategy(self) -> Strategy:
        return StructureDiversityStrategy(StructureDiversityStrategy.Config(stop_early=False))


class TestStructureDiversityOwnSizes(StrategyConformance):
    def make_strategy(self) -> Strategy:
        return StructureDiversityStrategy(StructureDiversityStrategy.Config(kernel_sizes=(3, 9)))
