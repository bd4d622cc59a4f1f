"""Every built-in scorer passes the shared scorer conformance suite."""

from __future__ import annotations

from prunetune.components.scoring import Scorer
from prunetune.plugins.scorers.bn_scale import BNScaleScorer
from prunetune.plugins.scorers.flops import FlopsScorer
from prunetune.plugins.scorers.l0 import L0Scorer
from prunetune.plugins.scorers.l1 import L1Scorer
from prunetune.plugins.scorers.l2 import L2Scorer
from prunetune.plugins.scorers.random import RandomScorer
from prunetune.plugins.scorers.taylor import TaylorScorer
from prunetune.testing.scorers import ScorerConformance


class TestL0(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return L0Scorer(L0Scorer.Config())


class TestL1(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return L1Scorer(L1Scorer.Config())


class TestL1WithInputs(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return L1Scorer(L1Scorer.Config(include_inputs=True))


class TestL2(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return L2Scorer(L2Scorer.Config())


class TestFlops(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return FlopsScorer(FlopsScorer.Config())


class TestTaylor(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return TaylorScorer(TaylorScorer.Config())


class TestBNScale(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return BNScaleScorer(BNScaleScorer.Config())


class TestRandom(ScorerConformance):
    def make_scorer(self) -> Scorer:
        return RandomScorer(RandomScorer.Config())
