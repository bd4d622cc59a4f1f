"""Session-wide test settings: a private teacher cache, one thread per test process, and one
Ray instance (a two-node cluster on 127.0.0.1)."""

from __future__ import annotations

from prunetune.components.cluster import loopback_ray

loopback_ray()  # before anything imports Ray: test traffic stays on the loopback address

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.distributions import install_distribution  # noqa: E402


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A test on the Ray cluster is a search or a fan-out: seconds to minutes on 2 cores.
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    mp = pytest.MonkeyPatch()
    mp.setenv("PRUNETUNE_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.delenv("PRUNETUNE_DISABLE_PLUGINS", raising=False)
    yield
    mp.undo()


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    # The suite's models are tiny: thread start-up costs more than it saves on 2 cores.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


THIRD_PARTY_MODULE = '''
"""A third-party package's prunetune plugin."""
import torch
from prunetune import hookimpl
from prunetune.host.options import EmptyConfig
from prunetune.components.scoring import Scorer


class LastFirstScorer(Scorer):
    """Scores channels by reversed index (a third-party test scorer)."""

    Config = EmptyConfig

    def __init__(self, config):
        self.config = config

    def score(self, group, ctx):
        return torch.arange(group.size, 0, -1, dtype=torch.float32)


@hookimpl
def prunetune_add_components(registry):
    registry.add_scorer("last_first", LastFirstScorer)
'''


@pytest.fixture
def third_party_scorer(tmp_path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An installed distribution ``thirdparty-scorer 1.2`` whose entry point adds a scorer.

    It is a real ``.dist-info`` folder on ``sys.path``, found by ``importlib.metadata`` as any
    installed package is. Returns the scorer's name.
    """
    root = tmp_path / "site"
    install_distribution(root, "thirdparty-scorer", "1.2", "thirdparty_scorer", THIRD_PARTY_MODULE, "lastfirst")
    monkeypatch.syspath_prepend(str(root))
    return "last_first"


@pytest.fixture(scope="session")
def ray_cluster(_private_cache: None):  # type: ignore[no-untyped-def]
    """The session's one Ray instance: a real two-node cluster on this machine (1 CPU each).

    In-process searches reuse the connection; subprocess drivers connect to ``.address``.
    """
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()
