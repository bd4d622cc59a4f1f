"""Every built-in pruner passes the shared pruner conformance suite."""

from __future__ import annotations

import pytest

from prunetune.components.pruning import Pruner
from prunetune.plugins.pruners.blockwise import BlockwisePruner
from prunetune.plugins.pruners.channel import ChannelPruner
from prunetune.plugins.pruners.distributed import DistributedPruner
from prunetune.plugins.pruners.layerwise import LayerwisePruner
from prunetune.plugins.pruners.magnitude import MagnitudePruner
from prunetune.plugins.pruners.mask import MaskPruner
from prunetune.testing.pruners import PrunerConformance


class TestChannel(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return ChannelPruner(ChannelPruner.Config())


class TestMask(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return MaskPruner(MaskPruner.Config())


class TestLayerwise(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return LayerwisePruner(LayerwisePruner.Config(retrain_steps=2, progress=False))


class TestBlockwise(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return BlockwisePruner(BlockwisePruner.Config())


class TestMagnitude(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return MagnitudePruner(MagnitudePruner.Config())


# Every prune scores on Ray tasks: an embedded Ray takes seconds to start on the test machine,
# so these join the session's two-node cluster and run only where Ray tests run.
@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
class TestDistributed(PrunerConformance):
    def make_pruner(self) -> Pruner:
        return DistributedPruner(DistributedPruner.Config(workers=2))
