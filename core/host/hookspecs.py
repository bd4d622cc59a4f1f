"""Every hook prunetune calls, grouped by lifecycle.

Plugins implement them with :data:`prunetune.hookimpl`. Third-party packages expose a module
under the entry-point group ``prunetune``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from prunetune.host.registry import Registry

__all__ = ["hookimpl", "hookspec"]

hookspec = pluggy.HookspecMarker("prunetune")
hookimpl = pluggy.HookimplMarker("prunetune")


# -- start-up ------------------------------------------------------------------------------


@hookspec
def prunetune_add_components(registry: Registry) -> None:
    """Add models, datasets, scorers, pruners, distillers, search spaces or strategies.

    Called once per plugin manager, for every plugin (not firstresult). A name must be unique
    per kind across all plugins; a second offer is an error naming both plugins.

    :param registry: the registry to fill, e.g. ``registry.add_scorer("l1", L1Scorer)``.
    """


# -- during a run --------------------------------------------------------------------------


@hookspec
def prunetune_trial_result(run: str, trial: str, metrics: dict[str, Any]) -> None:
    """Observe one finished trial or student (loggers, trackers).

    Called for every plugin (not firstresult); return values are ignored.

    :param run: the run id.
    :param trial: the trial id within the run.
    :param metrics: what the leaderboard records for it (accuracy, MACs, plan, status...).
    """


# -- end of a run --------------------------------------------------------------------------


@hookspec
def prunetune_run_finished(run: str, summary: dict[str, Any]) -> None:
    """Observe the end of a run (export, notify).

    Called for every plugin (not firstresult); return values are ignored.

    :param run: the run id.
    :param summary: the final student's metrics and where its files are.
    """
