"""The plugin host: a fresh pluggy manager per run, built-ins and third parties alike.

Built-in plugins are declared under ``[project.entry-points.prunetune]`` in prunetune's own
pyproject, so they load through exactly the path a third-party package takes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import pluggy

from prunetune.host import hookspecs
from prunetune.host.registry import Registry

__all__ = ["DISABLE_ENV", "ENTRY_POINT_GROUP", "Host", "make_plugin_manager"]

ENTRY_POINT_GROUP = "prunetune"
DISABLE_ENV = "PRUNETUNE_DISABLE_PLUGINS"


def _blocked_from_env(environ: Mapping[str, str]) -> list[str]:
    return [n.strip() for n in environ.get(DISABLE_ENV, "").split(",") if n.strip()]


def make_plugin_manager(
    extra_plugins: Iterable[object] = (),
    environ: Mapping[str, str] | None = None,
) -> pluggy.PluginManager:
    """A new plugin manager with every plugin of the ``prunetune`` entry-point group loaded.

    Args:
        extra_plugins: Plugin objects registered directly (tests, embedding applications).
        environ: Where to read ``PRUNETUNE_DISABLE_PLUGINS`` (a comma-separated list of plugin
            names to block); defaults to ``os.environ``.
    """
    pm = pluggy.PluginManager("prunetune")
    pm.add_hookspecs(hookspecs)
    for name in _blocked_from_env(os.environ if environ is None else environ):
        pm.set_blocked(name)
    pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        pm.register(plugin)
    pm.check_pending()
    return pm


class Host:
    """Typed access to the hooks; the rest of prunetune never spells ``pm.hook``."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self._registry: Registry | None = None

    @classmethod
    def create(
        cls, extra_plugins: Iterable[object] = (), environ: Mapping[str, str] | None = None
    ) -> Host:
        """A host over a fresh plugin manager (see :func:`make_plugin_manager`)."""
        return cls(make_plugin_manager(extra_plugins, environ))

    @property
    def registry(self) -> Registry:
        """Every component the plugins offer, collected once per host."""
        if self._registry is None:
            self._registry = self._collect_components()
        return self._registry

    def _collect_components(self) -> Registry:
        registry = Registry()
        dists = {id(plugin): dist for plugin, dist in self.pm.list_plugin_distinfo()}
        # Call each implementation on its own so every component knows which plugin (and
        # which distribution) it came from.
        for impl in reversed(self.pm.hook.prunetune_add_components.get_hookimpls()):
            dist = dists.get(id(impl.plugin))
            registry._set_origin(
                impl.plugin_name,
                dist.project_name if dist is not None else "-",
                dist.version if dist is not None else "-",
            )
            impl.function(registry=registry)
        registry._set_origin("-", "-", "-")
        return registry

    def trial_result(self, run: str, trial: str, metrics: dict[str, Any]) -> None:
        """Tell every observer that ``trial`` of ``run`` finished."""
        self.pm.hook.prunetune_trial_result(run=run, trial=trial, metrics=metrics)

    def run_finished(self, run: str, summary: dict[str, Any]) -> None:
        """Tell every observer that ``run`` finished."""
        self.pm.hook.prunetune_run_finished(run=run, summary=summary)
