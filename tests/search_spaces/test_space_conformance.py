"""Every built-in search space (and the reference space) passes the shared conformance suite."""

from __future__ import annotations

from prunetune.components.spaces import SearchSpace
from prunetune.search_spaces.kernel_only import KernelOnlySpace
from prunetune.search_spaces.per_layer import PerLayerSpace
from prunetune.search_spaces.ratio_only import RatioOnlySpace
from prunetune.search_spaces.uniform import UniformSpace
from prunetune.testing.spaces import ConformanceSpace, SearchSpaceConformance

CHOICES = {"scorers": ("l1", "l2"), "distillers": ("hinton", "none"), "search_temperature": True}


class TestPerLayer(SearchSpaceConformance):
    def make_space(self) -> SearchSpace:
        return PerLayerSpace(PerLayerSpace.Config())


class TestPerLayerContinuousWithChoices(SearchSpaceConformance):
    ratio_step = 1e-6

    def make_space(self) -> SearchSpace:
        return PerLayerSpace(PerLayerSpace.Config(ratio_step=None, **CHOICES))


class TestPerLayerWithoutTheTeachersKernel(SearchSpaceConformance):
    def make_space(self) -> SearchSpace:
        return PerLayerSpace(PerLayerSpace.Config(kernel_sizes=(5, 7)))


class TestUniform(SearchSpaceConformance):
    def make_space(self) -> SearchSpace:
        return UniformSpace(UniformSpace.Config())


class TestRatioOnly(SearchSpaceConformance):
    def make_space(self) -> SearchSpace:
        return RatioOnlySpace(RatioOnlySpace.Config(**CHOICES))


class TestKernelOnly(SearchSpaceConformance):
    def make_space(self) -> SearchSpace:
        return KernelOnlySpace(KernelOnlySpace.Config(ratio=0.25))


class TestReferenceSpace(SearchSpaceConformance):
    ratio_step = 0.1

    def make_space(self) -> SearchSpace:
        return ConformanceSpace(ConformanceSpace.Config())
