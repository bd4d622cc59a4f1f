"""Joining Ray: an embedded instance on this machine or an existing cluster.

For components that fan work out over Ray (the ``distributed`` pruner) and for the search.
Ray is imported only when :func:`ensure_ray` runs.
"""

from __future__ import annotations

import os

__all__ = ["LOOPBACK_ENV", "ensure_ray", "loopback_ray"]

#: Ray reads this once, when it is imported, to bind a single-machine instance to 127.0.0.1
#: instead of the machine's network address (its name speaks of Windows and macOS, where
#: loopback is Ray's default).
LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_ray() -> None:
    """Make an embedded Ray listen on loopback only; call before Ray is first imported."""
    os.environ.setdefault(LOOPBACK_ENV, "0")


def ensure_ray(address: str | None) -> None:
    """Connect to the cluster at ``address``, or start an embedded local Ray (once per process).

    The embedded Ray listens on 127.0.0.1 only when :func:`loopback_ray` ran before Ray was
    first imported, as a search does.
    """
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local" starts a new instance even where another one on this machine could be joined.
        ray.init(address="local", include_dashboard=False, log_to_driver=False)
